"""Footage into an index: frames read in order, sampled, run through a person detector, crops embedded.

Crops are cut from the decoded frame in memory (written to disk only with `crops`), embedded a
batch at a time and appended a shard at a time, so memory holds a shard of crops at most: a frame
keeps at most `max_detections` (the best scoring; frames that had more are counted), and a shard
may end inside a frame. After each shard the manifest records, per source, the first frame not yet
scanned whole (`SourceState`). A build killed at any moment therefore continues at the later of
the manifest's mark and the last frame in the whole shards, skipping that frame's detections the
shards hold already (a detector gives a frame's detections in the same order every time): nothing
is embedded twice; frames without detections after the last mark may be run through the detector again.
A source that cannot be read (not a video, empty, broken part-way) is reported in `SyncReport.failed`,
keeping the detections of the frames it gave.

A frame the detector cannot look at (`FrameError`: smaller than HOG's window) is skipped, counted and
listed as unreadable (`SOURCE#FRAME`, or the frame's file). A run that embeds no person from its sources
is a DataError saying why: every frame skipped, none read, or the detector's boxes all dropped (outside
the frame, past the video's end, under the threshold: `Screen`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cpcl.index.build import SyncReport, finish_sync, open_for_add, open_or_create, start_sync
from cpcl.index.config import MAX_DETECTIONS, IndexConfig
from cpcl.index.detectors import DROPPED, Detector, FrameError, make_detector, parse_spec
from cpcl.index.encoder import Encoder
from cpcl.index.footage import SourceState, common_root, crop, open_source, resolve_sources
from cpcl.index.store import IndexStore
from cpcl.utils.errors import ConfigError, DataError, SearchIndexError
from cpcl.utils.files import atomic_write, writing
from cpcl.utils.progress import Progress

log = logging.getLogger(__name__)

CROP_QUALITY = 95  # JPEG quality of crops written with --crops
SKIPPED = "; frame skipped"  # ends the unreadable-list problem of a frame the detector cannot look at


@dataclass(frozen=True)
class FootageOptions:
    """The footage options of `cpcl index build` / `add`: which sources, how they are sampled and detected."""

    kind: str  # "video" (files) or "frames" (folders of frame images)
    paths: tuple[Path, ...]  # the videos or frame folders
    detector: str  # detections:FILE | hog | onnx:MODEL.onnx
    threshold: float | None = None  # detector score threshold (None: the detector's default)
    max_detections: int = MAX_DETECTIONS  # detections kept a frame at most, the best scoring
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
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ConfigError(f"--det-threshold must be a finite number, got {self.threshold}")
        if self.max_detections < 1:
            raise ConfigError(f"--max-detections must be at least 1, got {self.max_detections}")
        if self.crops is not None and self.crops.exists() and not self.crops.is_dir():
            raise ConfigError(f"--crops {self.crops} is a file; give a folder to write the crops into")
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
                           self.camera, getattr(reader, "decoder", "opencv"), self.max_detections)


def _embed(encoder: Encoder, crops: list, batch_size: int) -> np.ndarray:
    """PIL crops -> [M, D] float32, a batch at a time."""
    parts = [encoder.pil_images(crops[i:i + batch_size]) for i in range(0, len(crops), batch_size)]
    return np.concatenate(parts) if parts else np.empty((0, encoder.dim), dtype=np.float32)


def _write_crop(folder: Path, source: str, index: int, k: int, image) -> str:
    path = folder / source / f"{index:06d}_{k}.jpg"
    with writing(path, f"free space or make {folder} writable, then build again (it continues)", SearchIndexError):
        atomic_write(path, lambda stream: image.save(stream, format="JPEG", quality=CROP_QUALITY))
    return str(path)


@dataclass(frozen=True)
class _Scanning:
    """What one `sync_footage` shares between the sources it scans."""

    store: IndexStore  # the index the shards go to
    encoder: Encoder  # embeds the crops
    detector: Detector  # finds the people in a frame
    options: FootageOptions  # the command's footage options
    batch_size: int  # crops embedded at a time
    report: SyncReport  # counts and problems, added to source by source
    bar: Progress  # frames scanned


def _scan(scanning: _Scanning, source: str, state: SourceState, reader: Any, done: int) -> None:
    """Detect and embed `source` from `state.next_frame` on, a shard at a time, leaving out the first `done`
    detections of that frame (the shards hold them; see the module docstring)."""
    store, detector, report = scanning.store, scanning.detector, scanning.report
    shard_size = store.manifest.config.shard_size
    crops: list = []
    records: list[dict[str, Any]] = []

    def commit(next_frame: int, complete: bool) -> None:
        if records:
            store.append_shard(_embed(scanning.encoder, crops, scanning.batch_size), records)
            report.added += len(records)
        state.next_frame, state.complete = next_frame, complete
        store.manifest.sources[source] = state.to_dict()
        store.write_manifest()
        crops.clear()
        records.clear()

    first = next_frame = state.next_frame
    try:
        for index, seconds, frame in reader.frames(first, lambda i: state.keeps(i) and detector.wants(i)):
            try:
                found = detector.detect(frame, index)
                report.frames += 1
                state.size = state.size or [int(frame.shape[1]), int(frame.shape[0])]
            except FrameError as err:
                report.skipped += 1
                report.unreadable[reader.file(index) if state.kind == "frames" else f"{source}#{index}"] = \
                    f"{err}{SKIPPED}"
                found = []
            for k in range(done if index == first else 0, len(found)):
                record = state.record(source, index, k, found[k].box, found[k].score, seconds)
                image = crop(frame, found[k].box)
                if state.kind == "frames":
                    record["file"] = reader.file(index)
                if scanning.options.crops is not None:
                    record["crop"] = _write_crop(scanning.options.crops, source, index, k, image)
                crops.append(image)
                records.append(record)
                if len(records) >= shard_size:
                    commit(index, False)  # inside frame `index`: a build continued here leaves out its first k + 1
            next_frame = index + 1
            scanning.bar.update(1)
    except DataError:  # the video broke: what was read is kept, and the source stays open for a later run
        commit(next_frame, False)
        raise
    if reader.length is not None:
        report.past_end += detector.past_end(reader.length)
    commit(next_frame, True)


def _last_frames(records: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Footage source -> (its last frame with detections in the shards, how many of that frame's detections they
    hold); a source's records are in frame order."""
    last: dict[str, tuple[int, int]] = {}
    for record in records:
        if "source" in record:
            frame, count = last.get(record["source"], (-1, 0))
            now = int(record["frame"])
            if now >= frame:
                last[record["source"]] = (now, count + 1 if now == frame else 1)
    return last


def _why_none(report: SyncReport, detector: Detector, size: list[int] | None, detections_file: bool) -> str:
    """Why a run embedded no person from its sources (the end of a DataError line)."""
    screen = detector.screen
    dropped = {reason: count for reason, count in {**screen.dropped, "past_end": report.past_end}.items() if count}
    also = f"; {report.skipped:,} more frames were skipped (in unreadable.jsonl)" if report.skipped else ""
    also += f"; {len(report.failed):,} sources could not be read to the end (in unreadable.jsonl)" if report.failed \
        else ""
    if dropped:
        frame = "x".join(map(str, size)) if size else "?"
        parts = [f"{count:,} {DROPPED[reason].format(frame=frame, threshold=screen.threshold, limit=screen.limit)}"
                 for reason, count in sorted(dropped.items(), key=lambda item: -item[1])]
        main = max(dropped, key=lambda reason: dropped[reason])
        hint = {"outside": ": is the detections file for another video?", "threshold": "; lower --det-threshold",
                "past_end": ": is the detections file for another video?"}.get(main, "")
        return f"all {sum(dropped.values()):,} boxes of the detector were dropped ({', '.join(parts)}){hint}{also}"
    if report.frames:
        lower = "" if detections_file else "; lower --det-threshold to keep less likely ones"
        return f"the detector found no person in {report.frames:,} frames{lower}{also}"
    if report.skipped:
        first = next(problem for problem in report.unreadable.values() if problem.endswith(SKIPPED))
        return f"all {report.skipped:,} frames read were skipped, first: {first} (all in unreadable.jsonl)"
    if report.already:
        return "it was indexed to the end before, with no person"
    problems = [f"{name}: {problem}" for name, problem in report.unreadable.items()] or [*report.failed.values()]
    return "no frame could be read" + (f" ({problems[0]})" if problems else "")


def sync_footage(store: IndexStore, encoder: Encoder, options: FootageOptions, batch_size: int) -> SyncReport:
    """Index the footage `options` names into `store`, continuing each source where it stopped; DataError (after
    the index is written) when no person of its sources is in the index."""
    manifest = store.manifest
    sources = resolve_sources(list(options.paths), options.kind, manifest.root)
    records = start_sync(store)
    last = _last_frames(records)
    detector = make_detector(options.detector, options.threshold, options.nms_iou, options.max_detections)
    report, size = SyncReport(frames=0), None
    with Progress(None, "detecting and embedding", "frame") as bar:
        scanning = _Scanning(store, encoder, detector, options, batch_size, report, bar)
        for source, _ in sources:
            saved = SourceState.from_dict(manifest.sources[source], f"{store.directory}: source {source}") \
                if source in manifest.sources else None
            try:
                reader = open_source(manifest.root, source, options.kind, saved.decoder if saved else None)
            except DataError as err:
                report.failed[source] = str(err)
                continue
            state = None
            try:
                state = _source_state(options, source, reader, saved)
                frame, count = last.get(source, (-1, 0))
                done = 0
                if frame >= state.next_frame:  # the shards went past the manifest's mark, maybe inside a frame
                    state.next_frame, done = frame, count
                if state.complete:
                    log.info("%s: indexed to the end already", source)
                    report.already += 1
                    continue
                if state.next_frame:
                    log.info("%s: continuing from frame %d", source, state.next_frame)
                _scan(scanning, source, state, reader, done)
            except DataError as err:
                report.failed[source] = str(err)
            finally:
                reader.close()
                report.unreadable.update(getattr(reader, "problems", {}))
                size = state.size or size if state is not None else size  # for `_why_none`
    report.capped = detector.screen.capped
    finish_sync(store, report)
    names = {source for source, _ in sources}
    if report.added + sum(record.get("source") in names for record in records) == 0:
        shown = ", ".join(sorted(names)[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        detections_file = parse_spec(options.detector)[0] == "detections"
        raise DataError(f"no person was embedded from {shown}: {_why_none(report, detector, size, detections_file)}")
    return report


def _source_state(options: FootageOptions, source: str, reader: Any, saved: SourceState | None) -> SourceState:
    """The state `source` continues from: the manifest's `saved` (same settings, else refused) or a new one."""
    state = options.new_state(reader, source)
    if saved is None:
        return state
    was, now = saved.settings(), state.settings()
    if was != now:
        diff = ", ".join(f"{key} {was[key]!r} (now {now[key]!r})" for key in was if was[key] != now[key])
        raise SearchIndexError(f"{source} is indexed with {diff}; continue it with the same options, or index it "
                               f"into another --out")
    return saved


def build_footage_index(encoder: Encoder, options: FootageOptions, out: Path, root: Path | None,
                        config: IndexConfig, batch_size: int) -> SyncReport:
    """A new index of footage in `out` (or the one there, continued). `root` defaults to the folder holding the
    sources; records name sources relative to it, and the page serves frames only from inside it."""
    root = (root.expanduser() if root else common_root(list(options.paths))).resolve()
    if not root.is_dir():
        raise SearchIndexError(f"--root {root}: not a folder")
    with open_or_create(encoder, root, out, config) as store:
        return sync_footage(store, encoder, options, batch_size)


def add_footage(encoder: Encoder, index: Path, options: FootageOptions, batch_size: int) -> SyncReport:
    """Footage new to an existing index (sources inside its root); sources already there are continued."""
    with open_for_add(encoder, index) as store:
        return sync_footage(store, encoder, options, batch_size)
