"""Footage sources: videos and folders of frames, how they are sampled, and what the index remembers of each.

A source is a video file or a folder of frame images (its image files, in natural order: frame2
before frame10), named by its path relative to the index's root. A video is decoded by OpenCV (whose
wheels carry FFmpeg) or, when OpenCV cannot open it, by PyAV (FFmpeg's libraries); either turns frames
as the file's rotation metadata says. Frames are counted from 0 in the records (detections files count
from 1, as MOTChallenge does). Sampling keeps every N-th frame (`every`) or about `sample_fps` frames a
second (the first frame of each 1/fps interval by the source's stated rate). A video frame's offset is
its timestamp in the file, so variable frame rates keep true times; a frame folder's is its index over
`--source-fps`. With a start time, a record's `time` is start + offset.

`SourceState` is what the manifest saves of a source (settings, frame size, how far it was scanned),
so that a build killed at any moment continues after the frames whose detections are already in
whole shards, and a finished source is not scanned again.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cpcl.index.config import MAX_DETECTIONS
from cpcl.index.gallery import IMAGE_SUFFIXES, relative_to_root, utc_iso
from cpcl.utils.errors import DataError, SearchIndexError
from cpcl.utils.optional import require

KINDS = ("video", "frames")
FFMPEG_QUIET = -8  # FFmpeg's AV_LOG_QUIET
FRAME_CACHE = 16  # decoded frames the web app keeps (a page of results often shows several crops of one frame)


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digit runs by value: frame2 < frame10."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def frame_files(folder: Path) -> list[Path]:
    """The image files directly in `folder` (not hidden), in natural order: its frames."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
             and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


@dataclass
class SourceState:
    """One footage source as the manifest records it (under `sources`, keyed by its path relative to the root)."""

    kind: str  # "video" or "frames"
    detector: str  # the --detector it was indexed with
    threshold: float | None  # the detector's score threshold (None: the detector's default)
    every: int  # sampling: keep every N-th frame (1: all) when `sample_fps` is None
    sample_fps: float | None  # sampling: about this many frames a second (needs source_fps)
    source_fps: float | None  # the source's frame rate (None: unknown, so no offsets are recorded)
    start: float | None  # seconds since the epoch of frame 0 (--start), or None
    camera: str | None  # camera name given to its records (--camera), or None
    decoder: str = "opencv"  # videos: the decoder that read it ("opencv" or "pyav"; the page reads it the same way)
    max_detections: int = MAX_DETECTIONS  # detections kept a frame at most (--max-detections)
    size: list[int] | None = None  # [width, height] of its frames, once one was read
    next_frame: int = 0  # every frame before this one is scanned, its detections in shards
    complete: bool = False  # every frame scanned

    def keeps(self, index: int) -> bool:
        """Whether frame `index` is sampled."""
        if self.sample_fps is None:
            return index % self.every == 0
        ratio = self.sample_fps / self.source_fps
        return index == 0 or math.floor(index * ratio) != math.floor((index - 1) * ratio)

    def settings(self) -> dict[str, Any]:
        """What must be the same to continue indexing this source."""
        return {"kind": self.kind, "detector": self.detector, "threshold": self.threshold, "every": self.every,
                "sample_fps": self.sample_fps, "start": self.start, "camera": self.camera,
                "max_detections": self.max_detections}

    def record(self, source: str, index: int, k: int, box: tuple[int, int, int, int], score: float,
               seconds: float | None) -> dict[str, Any]:
        """The index record of detection `k` of frame `index`, whose timestamp the decoder gave as `seconds`
        (None: a frame folder's, index over the source's rate)."""
        record: dict[str, Any] = {"path": f"{source}#{index}:{k}", "source": source, "frame": index,
                                  "box": list(box), "detector_score": round(float(score), 4)}
        if seconds is None and self.source_fps:
            seconds = index / self.source_fps
        offset = None if seconds is None else round(seconds, 3)
        if offset is not None:
            record["offset"] = offset
            if self.start is not None:
                record["time"] = utc_iso(self.start + offset, "milliseconds", f"--start + {offset} s into {source}")
        if self.camera:
            record["camera"] = self.camera
        return record

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> SourceState:
        """From the manifest; SearchIndexError naming the field when it is not what this class writes."""
        names = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or not {"kind", "detector", "every"} <= set(raw) or set(raw) - names:
            found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise SearchIndexError(f"{where}: malformed source entry (fields {found}; expected {sorted(names)}); "
                                   f"build the index again")
        state = cls(**raw)
        if state.kind not in KINDS or not isinstance(state.every, int) or state.every < 1 or \
                state.decoder not in DECODERS:
            raise SearchIndexError(f"{where}: malformed source entry (kind {state.kind!r}, every {state.every!r}, "
                                   f"decoder {state.decoder!r})")
        return state

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class VideoFrames:
    """Frames of a video file through OpenCV, read in order (frames not wanted are grabbed, not converted)."""

    decoder = "opencv"

    def __init__(self, path: Path):
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(FFMPEG_QUIET))  # a file it cannot open is our one line,
        # not FFmpeg's log on stderr (read when OpenCV first uses FFmpeg; a value the user set is kept)
        self.cv2 = require("cv2", "opencv-python", "reading video", "footage")
        self.path = path
        self.capture = self.cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise DataError(f"{path}: OpenCV cannot open this video")
        fps = float(self.capture.get(self.cv2.CAP_PROP_FPS))
        self.fps = fps if math.isfinite(fps) and fps > 0 else None
        self.length: int | None = None  # frames, once read to the end

    def frames(self, start: int, wanted: Callable[[int], bool]) -> Iterator[tuple[int, float | None, np.ndarray]]:
        """(index, timestamp in seconds, RGB [H, W, 3] uint8) of every frame from `start` on for which
        `wanted(index)` is true; DataError when not even the first frame decodes."""
        if self.capture.get(self.cv2.CAP_PROP_POS_FRAMES) != 0:  # read from the first frame, whatever came before
            self.capture.set(self.cv2.CAP_PROP_POS_FRAMES, 0)
        index = 0
        while True:
            if index < start or not wanted(index):
                ok = self.capture.grab()
            else:
                ok, bgr = self.capture.read()
                if ok:  # a timestamp of 0 after the first frame is a container without them: index over rate
                    seconds = self.capture.get(self.cv2.CAP_PROP_POS_MSEC) / 1000
                    yield index, seconds if seconds > 0 or index == 0 else None, self.cv2.cvtColor(
                        bgr, self.cv2.COLOR_BGR2RGB)
            if not ok:
                if index == 0:
                    raise DataError(f"{self.path}: OpenCV opens it but decodes no frame")
                self.length = index
                return
            index += 1

    def frame(self, index: int) -> np.ndarray:
        """One frame by seeking; DataError when the video has no such frame."""
        self.capture.set(self.cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = self.capture.read()
        if not ok:
            raise DataError(f"{self.path}: no frame {index}")
        return self.cv2.cvtColor(bgr, self.cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.capture.release()


class AvFrames:
    """Frames of a video file through PyAV, read in order, turned as its rotation metadata says (as OpenCV does)."""

    decoder = "pyav"

    def __init__(self, path: Path):
        self.av = require("av", "av", "reading video", "footage")
        self.path = path
        try:
            self.container = self.av.open(str(path))
            self.stream = self.container.streams.video[0]
        except self.av.FFmpegError as err:
            raise DataError(f"{path}: PyAV cannot read it ({err.strerror})") from None
        except IndexError:
            raise DataError(f"{path}: PyAV finds no video stream in it") from None
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.length: int | None = None  # frames, once read to the end

    def frames(self, start: int, wanted: Callable[[int], bool]) -> Iterator[tuple[int, float | None, np.ndarray]]:
        """As `VideoFrames.frames`; a decoding error ends the frames with a DataError naming where."""
        index = 0
        try:
            for frame in self.container.decode(self.stream):
                if index >= start and wanted(index):
                    yield index, frame.time, np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"),
                                                                           (frame.rotation or 0) // 90))
                index += 1
        except self.av.FFmpegError as err:
            raise DataError(f"{self.path}: PyAV stops decoding at frame {index} ({err.strerror})") from None
        if index == 0:
            raise DataError(f"{self.path}: PyAV opens it but decodes no frame")
        self.length = index

    def frame(self, index: int) -> np.ndarray:
        """One frame, decoding the video from its start; DataError when it has no such frame."""
        self.container.seek(0)
        for _, _, rgb in self.frames(index, lambda i: i == index):
            return rgb
        raise DataError(f"{self.path}: no frame {index}")

    def close(self) -> None:
        self.container.close()


DECODERS = {"opencv": VideoFrames, "pyav": AvFrames}  # SourceState.decoder -> its reader


def open_video(path: Path, decoder: str | None = None) -> VideoFrames | AvFrames:
    """The frames of a video through `decoder`, or (None) through OpenCV and, when it cannot open it, PyAV;
    DataError saying why when neither can."""
    if decoder is not None:
        return DECODERS[decoder](path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: an empty file, not a video")
    try:
        return VideoFrames(path)
    except DataError:
        try:
            return AvFrames(path)
        except DataError as err:
            raise DataError(f"{err}, nor can OpenCV: not a video, or a broken one") from None


class FolderFrames:
    """Frames of a folder of images (see `frame_files`); a frame that cannot be read is noted in `problems`."""

    def __init__(self, folder: Path, root: Path):
        self.folder, self.root = folder, root
        self.files = frame_files(folder)
        self.fps = None
        self.length = len(self.files)
        self.problems: dict[str, str] = {}

    def file(self, index: int) -> str:
        """Frame `index`'s file, relative to the root."""
        return self.files[index].relative_to(self.root).as_posix()

    def frames(self, start: int, wanted: Callable[[int], bool]) -> Iterator[tuple[int, None, np.ndarray]]:
        """(index, None: no timestamp, RGB [H, W, 3] uint8) of each wanted frame that can be read."""
        for index in range(start, len(self.files)):
            if not wanted(index):
                continue
            try:
                with Image.open(self.files[index]) as image:
                    rgb = np.asarray(image.convert("RGB"))
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                self.problems[self.file(index)] = f"cannot read this frame: {err}"
                continue
            yield index, None, rgb

    def close(self) -> None:
        pass


def open_source(root: Path, source: str, kind: str,
                decoder: str | None = None) -> VideoFrames | AvFrames | FolderFrames:
    """The frames of `source` (relative to `root`); a video through `decoder` (None: see `open_video`)."""
    path = root / source
    return open_video(path, decoder) if kind == "video" else FolderFrames(path, root)


def resolve_sources(paths: list[Path], kind: str, root: Path) -> list[tuple[str, Path]]:
    """(source name relative to `root`, absolute path) of each --video file or --frames folder; DataError for a
    missing one or one outside `root`."""
    out = []
    for given in paths:
        path = given.expanduser().absolute()
        if kind == "video" and not path.is_file():
            raise DataError(f"--video {given}: no such file")
        if kind == "frames" and not path.is_dir():
            raise DataError(f"--frames {given}: not a folder")
        rel = relative_to_root(path, root)
        if rel is None or rel == ".":
            raise DataError(f"{given} is outside the index's root {root}; give --root a folder that holds it")
        out.append((rel, path))
    return out


def common_root(paths: list[Path]) -> Path:
    """The folder holding every path: their parents' common path."""
    return Path(os.path.commonpath([str(p.expanduser().resolve().parent) for p in paths]))


class FrameReader:
    """Frames of the indexed sources for the web app: only a source the manifest lists, only inside the root.

    Keeps the last `FRAME_CACHE` decoded frames; safe from several threads.
    """

    def __init__(self, root: Path, sources: dict[str, SourceState]):
        self.root = root.resolve()
        self.sources = sources
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _inside(self, rel: str) -> Path:
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root) or not path.exists():
            raise DataError(f"{rel} is not inside the index's root")
        return path

    def frame(self, record: dict[str, Any]) -> np.ndarray:
        """The RGB frame [H, W, 3] of a detection record; DataError when its source is not indexed or gone."""
        source, index = record.get("source"), record.get("frame")
        state = self.sources.get(source) if isinstance(source, str) else None
        if state is None or not isinstance(index, int):
            raise DataError("not a detection of an indexed source")
        key = (source, index)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if state.kind == "frames":
            file = self._inside(str(record.get("file", "")))
            if not file.is_relative_to(self._inside(source)):
                raise DataError(f"{record.get('file')} is not a frame of {source}")
            with Image.open(file) as image:
                rgb = np.asarray(image.convert("RGB"))
        else:
            video = open_video(self._inside(source), state.decoder)
            try:
                rgb = video.frame(index)
            finally:
                video.close()
        with self._lock:
            self._cache[key] = rgb
            while len(self._cache) > FRAME_CACHE:
                self._cache.popitem(last=False)
        return rgb


def crop(frame: np.ndarray, box: list[int] | tuple[int, ...]) -> Image.Image:
    """The box x, y, w, h of an RGB frame [H, W, 3] as a PIL image."""
    x, y, w, h = (int(v) for v in box)
    return Image.fromarray(np.ascontiguousarray(frame[y:y + h, x:x + w]))
