"""Footage into an index: frames read in order, sampled, run through a person detector, crops embedded.

Crops are cut from the decoded frame in memory (written to disk only with `crops`), embedded a
batch at a time and appended a shard at a time; a shard always ends at a frame boundary. After
each shard the manifest records, per source, the first frame not yet scanned (`SourceState`).
A build killed at any moment therefore continues after the last frame whose detections are in
whole shards (the manifest's mark or, if the kill fell between a shard and the manifest, the last
frame in the shards, whichever is later): nothing is embedded twice; frames without detections
after the last mark may be run through the detector again. A source that cannot be read (not a video, empty,
broken part-way) is reported in `SyncReport.failed`, keeping the detections of the frames it gave.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cpcl.index.build import SyncReport, finish_sync, open_for_add, open_or_create, start_sync
from cpcl.index.config import IndexConfig
from cpcl.index.detectors import Detector, make_detector, parse_spec
from cpcl.index.encoder import Encoder
from cpcl.index.footage import SourceState, common_root, crop, open_source, resolve_sources
from cpcl.index.store import IndexStore
from cpcl.utils.errors import ConfigError, DataError, SearchIndexError
from cpcl.utils.files import atomic_write
from cpcl.utils.progress import Progress

log = logging.getLogger(__name__)

CROP_QUALITY = 95  # JPEG quality of crops written with --crops


@dataclass(frozen=True)
class FootageOptions:
    """The footage options of `cpcl index build` / `add`: which sources, how they are sampled and detected."""

    kind: str  # "video" (files) or "frames" (folders of frame images)
    paths: tuple[Path, ...]  # the videos or frame folders
    detector: str  # detections:FILE | hog | onnx:MODEL.onnx
    threshold: float | None = None  # detector score threshold (None: the detector's default)
    nms_iou: float = 0.45  # onnx: boxes overlapping a better one by more than this are dropped
    every: int = 1  # keep every N-th frame
    sample_fps: float | None = None  # or keep about this many frames a second
    source_fps: float | None = None  # the sources' frame rate (frame folders; overrides what a video says)
    start: float | None = None  # seconds since the epoch of each source's first frame
    camera: str | None = None  # camera name given to the records
    crops: Path | None = None  # also write each crop as a JPEG below this folder

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"--every must be at least 1, got {self.every}")
        for name, flag in (("sample_fps", "--fps"), ("source_fps", "--source-fps")):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1e4:
                raise ConfigError(f"{flag} must be a positive number of frames a second, got {value}")
        if self.sample_fps is not None and self.every != 1:
            raise ConfigError("give --every N or --fps F, not both")
        if not 0 < self.nms_iou <= 1:
            raise ConfigError(f"--nms-iou must be in (0, 1], got {self.nms_iou}")
        name, _ = parse_spec(self.detector)
        if name == "detections" and len(self.paths) > 1:
            raise ConfigError(f"--detector {self.detector} holds the boxes of one source, and {len(self.paths)} "
                              f"were given; index one source per command (cpcl index add for the others)")

    def new_state(self, reader: Any, source: str) -> SourceState:
        """The state of a source not indexed yet, read by `reader` (its rate `fps`, None: unknown; its decoder)."""
        source_fps = self.source_fps or reader.fps
        if self.sample_fps is not None and source_fps is None:
            raise ConfigError(f"--fps needs the frame rate of {source}, which it does not say; give --source-fps")
        return SourceState(self.kind, self.detector, self.threshold, self.every, self.sample_fps, source_fps, self.start,
                           self.camera, getattr(reader, "decoder", "opencv"))


def _embed(encoder: Encoder, crops: list, batch_size: int) -> np.ndarray:
    """PIL crops -> [M, D] float32, a batch at a time."""
    parts = [encoder.pil_images(crops[i:i + batch_size]) for i in range(0, len(crops), batch_size)]
    return np.concatenate(parts) if parts else np.empty((0, encoder.dim), dtype=np.float32)


def _write_crop(folder: Path, source: str, index: int, k: int, image) -> str:
    path = folder / source / f"{index:06d}_{k}.jpg"
    atomic_write(path, lambda stream: image.save(stream, format="JPEG", quality=CROP_QUALITY))
    return str(path)


def _scan(store: IndexStore, encoder: Encoder, detector: Detector, source: str, state: SourceState, reader: Any,
          options: FootageOptions, batch_size: int, report: SyncReport, bar: Progress) -> None:
    """Detect and embed `source` from `state.next_frame` on, a shard at a time (see the module docstring)."""
    shard_size = store.manifest.config.shard_size
    crops: list = []
    records: list[dict[str, Any]] = []

    def commit(next_frame: int, complete: bool) -> None:
        if records:
            store.append_shard(_embed(encoder, crops, batch_size), records)
            report.added += len(records)
        state.next_frame, state.complete = next_frame, complete
        store.manifest.sources[source] = state.to_dict()
        store.write_manifest()
        crops.clear()
        records.clear()

    next_frame = state.next_frame
    try:
        for index, seconds, frame in reader.frames(state.next_frame, lambda i: state.keeps(i) and detector.wants(i)):
            if state.size is None:
                state.size = [int(frame.shape[1]), int(frame.shape[0])]
            for k, found in enumerate(detector.detect(frame, index)):
                record = state.record(source, index, k, found.box, found.score, seconds)
                image = crop(frame, found.box)
                if state.kind == "frames":
                    record["file"] = reader.file(index)
                if options.crops is not None:
                    record["crop"] = _write_crop(options.crops, source, index, k, image)
                crops.append(image)
                records.append(record)
            next_frame = index + 1
            report.frames += 1
            bar.update(1)
            if len(records) >= shard_size:
                commit(next_frame, False)
    except DataError:  # the video broke: what was read is kept, and the source stays open for a later run
        commit(next_frame, False)
        raise
    commit(next_frame, True)


def sync_footage(store: IndexStore, encoder: Encoder, options: FootageOptions, batch_size: int) -> SyncReport:
    """Index the footage `options` names into `store`, continuing each source where it stopped."""
    manifest = store.manifest
    sources = resolve_sources(list(options.paths), options.kind, manifest.root)
    last: dict[str, int] = {}
    for record in start_sync(store):
        if "source" in record:
            last[record["source"]] = max(last.get(record["source"], -1), int(record["frame"]))
    detector = make_detector(options.detector, options.threshold, options.nms_iou)
    report = SyncReport(frames=0)
    with Progress(None, "detecting and embedding", "frame") as bar:
        for source, _ in sources:
            saved = SourceState.from_dict(manifest.sources[source], f"{store.directory}: source {source}") \
                if source in manifest.sources else None
            try:
                reader = open_source(manifest.root, source, options.kind, saved.decoder if saved else None)
            except DataError as err:
                report.failed[source] = str(err)
                continue
            try:
                state = options.new_state(reader, source)
                if saved is not None:
                    was, now = saved.settings(), state.settings()
                    if was != now:
                        diff = ", ".join(f"{key} {was[key]!r} (now {now[key]!r})" for key in was if was[key] != now[key])
                        raise SearchIndexError(f"{source} is indexed with {diff}; continue it with the same options, "
                                               f"or index it into another --out")
                    state = saved
                state.next_frame = max(state.next_frame, last.get(source, -1) + 1)
                if state.complete:
                    log.info("%s: indexed to the end already", source)
                    report.already += 1
                    continue
                if state.next_frame:
                    log.info("%s: continuing from frame %d", source, state.next_frame)
                _scan(store, encoder, detector, source, state, reader, options, batch_size, report, bar)
            except DataError as err:
                report.failed[source] = str(err)
            finally:
                reader.close()
                report.unreadable.update(getattr(reader, "problems", {}))
    return finish_sync(store, report)


def build_footage_index(encoder: Encoder, options: FootageOptions, out: Path, root: Path | None,
                        config: IndexConfig, batch_size: int) -> SyncReport:
    """A new index of footage in `out` (or the one there, continued). `root` defaults to the folder holding the
    sources; records name sources relative to it, and the page serves frames only from inside it."""
    root = (root.expanduser() if root else common_root(list(options.paths))).resolve()
    if not root.is_dir():
        raise SearchIndexError(f"--root {root}: not a folder")
    return sync_footage(open_or_create(encoder, root, out, config), encoder, options, batch_size)


def add_footage(encoder: Encoder, index: Path, options: FootageOptions, batch_size: int) -> SyncReport:
    """Footage new to an existing index (sources inside its root); sources already there are continued."""
    return sync_footage(open_for_add(encoder, index), encoder, options, batch_size)
