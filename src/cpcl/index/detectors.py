"""Person detectors for footage: boxes from a file, OpenCV's HOG people detector, or a YOLO-family ONNX model.

`make_detector("NAME[:ARG]", ...)` builds one from `DETECTORS`:

    detections:FILE   boxes from any external detector: MOTChallenge det.txt (frame from 1, id, left, top,
                      width, height, conf, ...; commas or blanks) or COCO results JSON ([{"image_id": frame
                      from 1, "bbox": [x, y, w, h], "score", "category_id"}], category 1 = person)
    hog               OpenCV's HOG + linear SVM people detector (cv2.HOGDescriptor_getDefaultPeopleDetector)
    onnx:MODEL.onnx   a YOLO-family model through onnxruntime: NCHW float input in [0, 1] (letterboxed, grey
                      114 padding), output [1, 4 + C, N] (YOLOv8 / 11: cx, cy, w, h, class scores) or
                      [1, N, 5 + C] (YOLOv5 / 7: cx, cy, w, h, objectness, class scores), the longer axis
                      being the N candidates; class 0 (COCO's person) is kept, then a score threshold and NMS

A detector's `detect(frame, index)` takes one RGB frame [H, W, 3] uint8 and its 0-based index and returns
`Detection`s with integer boxes inside the frame. Nothing read from a file is executed: the detections
file is parsed as text or JSON, the ONNX graph is run by onnxruntime.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from cpcl.utils.errors import ConfigError, DataError
from cpcl.utils.optional import require

COCO_PERSON = 1  # category_id of a person in COCO results
YOLO_PERSON = 0  # class index of a person in COCO-trained YOLO models
LETTERBOX_GREY = 114  # padding value of the YOLO letterbox
DEFAULT_ONNX_SIZE = 640  # input side when the model's input shape is dynamic
MIN_BOX = 2  # boxes narrower or lower than this many pixels (after clipping) are dropped
HOG_STRIDE = (8, 8)  # HOG: window stride in pixels
HOG_PADDING = (8, 8)  # HOG: padding around the frame
HOG_SCALE = 1.05  # HOG: image pyramid step
HOG_BORDER = 0.125  # HOG: border added on every side (edge pixels repeated), share of the frame height: the
# window's margin below the feet of a person 3/4 of the frame tall, so one standing at the bottom still fits a window
HOG_WINDOW_MARGIN = (0.25, 0.125)  # HOG: the 64x128 window holds the person with 16 px on every side (Dalal-Triggs)


@dataclass(frozen=True)
class Detection:
    """One detected person."""

    box: tuple[int, int, int, int]  # x, y, width, height in frame pixels, inside the frame
    score: float  # the detector's confidence (its own scale: a probability for ONNX, an SVM margin for HOG)


class Detector(Protocol):
    def wants(self, index: int) -> bool:
        """Whether frame `index` may hold detections (False: the frame need not be decoded)."""

    def detect(self, frame: np.ndarray, index: int) -> list[Detection]:
        """RGB frame [H, W, 3] uint8 -> its detections."""


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [N, 4] and b [M, 4], each x, y, width, height -> [N, M]."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the boxes [N, 4] (x, y, w, h) kept, best score first; a box
    overlapping a kept, better one by more than `iou` is dropped."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    overlaps = box_iou(boxes, boxes)
    kept: list[int] = []
    for i in order:
        if all(overlaps[i, j] <= iou for j in kept):
            kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def clip_box(box: Any, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A box x, y, w, h (floats) rounded to whole pixels inside a width x height frame; None when too small."""
    x0, y0 = max(0, round(float(box[0]))), max(0, round(float(box[1])))
    x1, y1 = min(width, round(float(box[0]) + float(box[2]))), min(height, round(float(box[1]) + float(box[3])))
    if x1 - x0 < MIN_BOX or y1 - y0 < MIN_BOX:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def _finite(values: list[Any], where: str, what: str) -> list[float]:
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != len(values) or not all(math.isfinite(v) for v in numbers):
        raise DataError(f"{where}: {what}, got {values!r}")
    return numbers


def read_mot(path: Path, text: str) -> dict[int, list[tuple[list[float], float]]]:
    """MOTChallenge det.txt -> 0-based frame index -> [(box x, y, w, h, conf)]."""
    table: dict[int, list[tuple[list[float], float]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f for f in re.split(r"[,\s]+", line.strip()) if f]
        if len(fields) < 7:
            raise DataError(f"{path}:{number}: a MOTChallenge detection has at least 7 fields (frame, id, left, "
                            f"top, width, height, conf), got {len(fields)}")
        frame, _, x, y, w, h, conf = _finite(fields[:7], f"{path}:{number}", "expected numbers")
        if frame < 1 or frame != int(frame):
            raise DataError(f"{path}:{number}: the frame number counts from 1, got {fields[0]}")
        table.setdefault(int(frame) - 1, []).append(([x, y, w, h], conf))
    return table


def read_coco(path: Path, text: str) -> dict[int, list[tuple[list[float], float]]]:
    """COCO results JSON -> 0-based frame index -> [(box x, y, w, h, score)] of persons (category 1 or none)."""
    try:
        items = json.loads(text)
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: COCO results are a JSON list of {{image_id, bbox, score}} objects")
    table: dict[int, list[tuple[list[float], float]]] = {}
    for number, item in enumerate(items):
        where = f"{path}: item {number}"
        if not isinstance(item, dict) or "image_id" not in item or "bbox" not in item:
            raise DataError(f"{where}: expected an object with image_id and bbox")
        if item.get("category_id", COCO_PERSON) != COCO_PERSON:
            continue
        frame = item["image_id"]
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 1:
            raise DataError(f"{where}: image_id is the frame number, an integer from 1, got {frame!r}")
        bbox = item["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{where}: bbox must be 4 numbers [x, y, width, height], got {bbox!r}")
        box = _finite(bbox, where, "bbox must be 4 numbers [x, y, width, height]")
        score = _finite([item.get("score", 1.0)], where, "score must be a number")[0]
        table.setdefault(frame - 1, []).append((box, score))
    return table


class DetectionsFile:
    """Boxes of one source from a MOTChallenge det.txt or COCO results JSON (see the module docstring)."""

    def __init__(self, path: Path, threshold: float | None):
        path = Path(path).expanduser()
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"detections file {path} cannot be read: {err}") from None
        self.table = read_coco(path, text) if path.suffix.lower() == ".json" else read_mot(path, text)
        self.threshold = threshold

    def wants(self, index: int) -> bool:
        return index in self.table

    def detect(self, frame: np.ndarray, index: int) -> list[Detection]:
        height, width = frame.shape[:2]
        found = []
        for box, score in self.table.get(index, []):
            clipped = clip_box(box, width, height)
            if clipped is not None and (self.threshold is None or score >= self.threshold):
                found.append(Detection(clipped, score))
        return found


class HogDetector:
    """OpenCV's HOG people detector (a linear SVM on 64x128 windows; persons under ~100 px tall are missed).

    The frame gets a border (`HOG_BORDER`) so that persons at its edges fit a window. Its boxes are detection
    windows, which hold the person with a margin (`HOG_WINDOW_MARGIN`); they are shrunk to the person.
    `threshold` is the SVM margin a window must reach (detectMultiScale's hitThreshold).
    """

    def __init__(self, threshold: float | None):
        cv2 = require("cv2", "opencv-python", "the hog detector", "footage")
        self.cv2 = cv2
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.threshold = 0.0 if threshold is None else threshold

    def wants(self, index: int) -> bool:
        return True

    def detect(self, frame: np.ndarray, index: int) -> list[Detection]:
        height, width = frame.shape[:2]
        border = round(HOG_BORDER * height)
        grey = self.cv2.copyMakeBorder(self.cv2.cvtColor(frame, self.cv2.COLOR_RGB2GRAY), border, border, border,
                                       border, self.cv2.BORDER_REPLICATE)
        if grey.shape[0] < self.hog.winSize[1] or grey.shape[1] < self.hog.winSize[0]:
            return []  # no window fits (and OpenCV's detectMultiScale crashes the process on such a frame)
        rects, weights = self.hog.detectMultiScale(grey, hitThreshold=self.threshold, winStride=HOG_STRIDE,
                                                   padding=HOG_PADDING, scale=HOG_SCALE)
        mx, my = HOG_WINDOW_MARGIN
        found = []
        for (x, y, w, h), score in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            x, y = x - border, y - border
            clipped = clip_box((x + mx * w, y + my * h, w * (1 - 2 * mx), h * (1 - 2 * my)), width, height)
            if clipped is not None:
                found.append(Detection(clipped, float(score)))
        return found


def letterbox(frame: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize an RGB frame to fit `size` (H, W) keeping its aspect ratio, centred on grey.

    Returns (image [H, W, 3] uint8, scale, (pad_x, pad_y)): a point x of the frame is at x * scale + pad_x.
    """
    height, width = frame.shape[:2]
    scale = min(size[0] / height, size[1] / width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BILINEAR))
    out = np.full((size[0], size[1], 3), LETTERBOX_GREY, dtype=np.uint8)
    pad_x, pad_y = (size[1] - new_w) // 2, (size[0] - new_h) // 2
    out[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    return out, scale, (float(pad_x), float(pad_y))


def yolo_candidates(output: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A YOLO output [1, 4 + C, N] or [1, N, 5 + C] -> (boxes [N, 4] x, y, w, h in input pixels, person scores [N])."""
    array = np.asarray(output, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or min(array.shape) < 5:
        raise DataError(f"{where}: expected a YOLO output [1, 4 + classes, boxes] or [1, boxes, 5 + classes], "
                        f"got shape {list(np.shape(output))}")
    channels_first = array.shape[0] < array.shape[1]  # YOLOv8 / 11: [4 + C, N]; YOLOv5 / 7: [N, 5 + C]
    rows = array.T if channels_first else array
    if channels_first:
        scores = rows[:, 4 + YOLO_PERSON]
    else:
        scores = rows[:, 4] * rows[:, 5 + YOLO_PERSON]
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    return np.stack([cx - w / 2, cy - h / 2, w, h], axis=1), scores


class OnnxDetector:
    """A YOLO-family person detector run by onnxruntime on the CPU (layouts in the module docstring)."""

    def __init__(self, model: Path, threshold: float | None, nms_iou: float):
        ort = require("onnxruntime", "onnxruntime", "the onnx detector", "footage")
        model = Path(model).expanduser()
        if not model.is_file():
            raise DataError(f"--detector onnx:{model}: no such file")
        try:
            self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for a bad graph
            raise DataError(f"--detector onnx:{model}: onnxruntime cannot load it ({str(err).splitlines()[0]})") \
                from None
        self.model = model
        self.input = self.session.get_inputs()[0]
        shape = list(self.input.shape)
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise DataError(f"--detector onnx:{model}: expected one NCHW RGB input [1, 3, H, W], got {shape}")
        self.size = tuple(int(s) if isinstance(s, int) and s > 0 else DEFAULT_ONNX_SIZE for s in shape[2:])
        self.threshold = 0.25 if threshold is None else threshold
        self.nms_iou = nms_iou

    def wants(self, index: int) -> bool:
        return True

    def detect(self, frame: np.ndarray, index: int) -> list[Detection]:
        height, width = frame.shape[:2]
        image, scale, (pad_x, pad_y) = letterbox(frame, self.size)
        pixels = (image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
        boxes, scores = yolo_candidates(self.session.run(None, {self.input.name: pixels})[0], f"{self.model}")
        keep = np.flatnonzero(scores >= self.threshold)
        keep = keep[nms(boxes[keep], scores[keep], self.nms_iou)]
        found = []
        for (x, y, w, h), score in zip(boxes[keep], scores[keep]):
            clipped = clip_box(((x - pad_x) / scale, (y - pad_y) / scale, w / scale, h / scale), width, height)
            if clipped is not None:
                found.append(Detection(clipped, float(score)))
        return found


def _detections(arg: str, threshold: float | None, nms_iou: float) -> Detector:
    return DetectionsFile(Path(arg), threshold)


def _hog(arg: str, threshold: float | None, nms_iou: float) -> Detector:
    return HogDetector(threshold)


def _onnx(arg: str, threshold: float | None, nms_iou: float) -> Detector:
    return OnnxDetector(Path(arg), threshold, nms_iou)


# name -> (needs an argument after ':', what the argument is, constructor)
DETECTORS: dict[str, tuple[bool, str, Callable[[str, float | None, float], Detector]]] = {
    "detections": (True, "FILE (MOTChallenge det.txt or COCO results .json)", _detections),
    "hog": (False, "", _hog),
    "onnx": (True, "MODEL.onnx", _onnx),
}


def parse_spec(spec: str) -> tuple[str, str]:
    """'NAME[:ARG]' -> (name, arg), checked against `DETECTORS` (ConfigError listing the valid forms)."""
    name, _, arg = spec.partition(":")
    valid = ", ".join(f"{n}:{what}" if needs else n for n, (needs, what, _) in DETECTORS.items())
    if name not in DETECTORS:
        raise ConfigError(f"--detector {spec!r}: unknown detector {name!r}; valid: {valid}")
    needs, what, _ = DETECTORS[name]
    if needs and not arg:
        raise ConfigError(f"--detector {name} needs {what} after a colon: {name}:{what.split()[0]}")
    if not needs and arg:
        raise ConfigError(f"--detector {name} takes no argument, got {spec!r}")
    return name, arg


def normalise_spec(spec: str) -> str:
    """`spec` with its file made absolute (so a build continued from another folder names the same detector)."""
    name, arg = parse_spec(spec)
    return f"{name}:{Path(arg).expanduser().resolve()}" if arg else name


def make_detector(spec: str, threshold: float | None = None, nms_iou: float = 0.45) -> Detector:
    """The detector `spec` names ('detections:FILE', 'hog', 'onnx:MODEL.onnx'; see the module docstring)."""
    name, arg = parse_spec(spec)
    return DETECTORS[name][2](arg, threshold, nms_iou)
