"""Boxes from an external detector, read as data: MOTChallenge det.txt or COCO results JSON into a `BoxTable`.

MOTChallenge det.txt: one box a line, frame (from 1), id, left, top, width, height, conf, ... (commas or
blanks; `#` comments). COCO results: [{"image_id": frame from 1, "bbox": [x, y, w, h], "score",
"category_id"}], category 1 (a person) or none kept. Every number must be finite; a bad line or item is a
one-line DataError naming it. The table holds numbers in arrays (48 bytes a box), not Python objects.
"""

from __future__ import annotations

import math
import re
import reprlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cpcl.data.readers import parse_json
from cpcl.utils.errors import DataError

COCO_PERSON = 1  # category_id of a person in COCO results
MAX_FRAME = 2**31  # frame numbers above this are refused (no video is that long)


@dataclass(frozen=True)
class BoxTable:
    """Boxes by frame, in the file's order within a frame."""

    frames: np.ndarray  # [N] int64, 0-based frame index, sorted
    boxes: np.ndarray  # [N, 4] float64, x, y, width, height in frame pixels
    scores: np.ndarray  # [N] float64

    @classmethod
    def of(cls, frames: array, values: array) -> BoxTable:
        """From 0-based frames [N] and x, y, w, h, score [5N] in the file's order."""
        order = np.argsort(np.asarray(frames, dtype=np.int64), kind="stable")
        rows = np.asarray(values, dtype=np.float64).reshape(-1, 5)[order]
        return cls(np.asarray(frames, dtype=np.int64)[order], rows[:, :4], rows[:, 4])

    def __contains__(self, frame: int) -> bool:
        index = np.searchsorted(self.frames, frame)
        return bool(index < len(self.frames) and self.frames[index] == frame)

    def of_frame(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes [M, 4], scores [M]) of one frame."""
        start, stop = np.searchsorted(self.frames, [frame, frame + 1])
        return self.boxes[start:stop], self.scores[start:stop]

    def from_frame(self, frame: int) -> int:
        """How many boxes are for frame `frame` or later."""
        return int(len(self.frames) - np.searchsorted(self.frames, frame))


def _finite(values: list[Any], where: str, what: str) -> list[float]:
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError, OverflowError):
        numbers = []
    if len(numbers) != len(values) or not all(math.isfinite(v) for v in numbers):
        raise DataError(f"{where}: {what}, got {reprlib.repr(values)}")
    return numbers


def _frame(value: float, where: str, given: Any) -> int:
    """A frame number counted from 1 -> its 0-based index; DataError when it is not a whole number in range."""
    if not 1 <= value <= MAX_FRAME or value != int(value):
        raise DataError(f"{where}: the frame number counts from 1 (at most {MAX_FRAME}), got {reprlib.repr(given)}")
    return int(value) - 1


def read_mot(path: Path, text: str) -> BoxTable:
    """MOTChallenge det.txt -> its boxes."""
    frames, values = array("q"), array("d")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f for f in re.split(r"[,\s]+", line.strip()) if f]
        if len(fields) < 7:
            raise DataError(f"{path}:{number}: a MOTChallenge detection has at least 7 fields (frame, id, left, "
                            f"top, width, height, conf), got {len(fields)}")
        frame, _, x, y, w, h, conf = _finite(fields[:7], f"{path}:{number}", "expected numbers")
        frames.append(_frame(frame, f"{path}:{number}", fields[0]))
        values.extend((x, y, w, h, conf))
    return BoxTable.of(frames, values)


def read_coco(path: Path, text: str) -> BoxTable:
    """COCO results JSON -> the boxes of persons (category 1 or none)."""
    items = parse_json(text, str(path))
    if not isinstance(items, list):
        raise DataError(f"{path}: COCO results are a JSON list of {{image_id, bbox, score}} objects")
    frames, values = array("q"), array("d")
    for number, item in enumerate(items):
        where = f"{path}: item {number}"
        if not isinstance(item, dict) or "image_id" not in item or "bbox" not in item:
            raise DataError(f"{where}: expected an object with image_id and bbox")
        if item.get("category_id", COCO_PERSON) != COCO_PERSON:
            continue
        frame = item["image_id"]
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise DataError(f"{where}: image_id is the frame number, an integer from 1, got {reprlib.repr(frame)}")
        bbox = item["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{where}: bbox must be 4 numbers [x, y, width, height], got {reprlib.repr(bbox)}")
        box = _finite(bbox, where, "bbox must be 4 numbers [x, y, width, height]")
        score = _finite([item.get("score", 1.0)], where, "score must be a number")[0]
        frames.append(_frame(frame, where, frame))
        values.extend((*box, score))
    return BoxTable.of(frames, values)


def read_boxes(path: Path) -> BoxTable:
    """The boxes of a detections file: COCO results for a .json file, MOTChallenge det.txt otherwise."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"detections file {path} cannot be read: {err}") from None
    return read_coco(path, text) if path.suffix.lower() == ".json" else read_mot(path, text)
