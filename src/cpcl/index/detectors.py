"""Person detectors for footage: boxes from a file, OpenCV's HOG people detector, or a YOLO-family ONNX model.

`make_detector("NAME[:ARG]", ...)` builds one from `DETECTORS`:

    detections:FILE   boxes from any external detector: MOTChallenge det.txt (frame from 1, id, left, top,
                      width, height, conf, ...; commas or blanks) or COCO results JSON ([{"image_id": frame
                      from 1, "bbox": [x, y, w, h], "score", "category_id"}], category 1 = person), read by
                      `cpcl.index.boxfiles`
    hog               OpenCV's HOG + linear SVM people detector (cv2.HOGDescriptor_getDefaultPeopleDetector)
    onnx:MODEL.onnx   a YOLO-family model through onnxruntime: NCHW float input in [0, 1] (letterboxed, grey
                      114 padding), output [1, 4 + C, N] (YOLOv8 / 11: cx, cy, w, h, class scores) or
                      [1, N, 5 + C] (YOLOv5 / 7: cx, cy, w, h, objectness, class scores), the longer axis
                      being the N candidates; class 0 (COCO's person) is kept, then a score threshold and NMS

A detector's `detect(frame, index)` takes one RGB frame [H, W, 3] uint8 and its 0-based index and returns
`Detection`s with integer boxes inside the frame, at most `max_detections` of them (the best scoring); a frame it
cannot look at (smaller than HOG's window, which OpenCV would read past) is a `FrameError`, checked before any
native call. Its `Screen` counts the boxes it drops and why (NaN, no size, outside the frame, under the threshold,
over the cap), so that a build that keeps nothing can say why. Nothing read from a file is executed: the
detections file is parsed as text or JSON, the ONNX graph is run by onnxruntime.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from cpcl.index.boxfiles import read_boxes
from cpcl.index.config import MAX_DETECTIONS
from cpcl.utils.errors import ConfigError, DataError
from cpcl.utils.optional import require

YOLO_PERSON = 0  # class index of a person in COCO-trained YOLO models
LETTERBOX_GREY = 114  # padding value of the YOLO letterbox
DEFAULT_ONNX_SIZE = 640  # input side when the model's input shape is dynamic
MIN_BOX = 2  # boxes narrower or lower than this many pixels (after clipping) are dropped
NMS_CANDIDATES = 30_000  # onnx: the best-scoring candidates NMS looks at, at most (as Ultralytics' max_nms)
DROPPED = {  # why a screen dropped boxes -> how the count reads ({frame}: W x H, {threshold}, {limit})
    "nan": "are NaN or infinite",
    "size": "have zero or negative size",
    "outside": "lie outside the {frame} frame",
    "small": f"are under {MIN_BOX} px once clipped to the frame",
    "threshold": "score below the threshold {threshold}",
    "candidates": f"are beyond the {NMS_CANDIDATES:,} best candidates NMS looks at",
    "cap": "exceed the cap of {limit} detections a frame",
    "past_end": "are for frames after the source's last one",  # a detections file's, counted by the build
}
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


class FrameError(DataError):
    """A frame the detector cannot look at (the build skips it and lists it as unreadable)."""


class Detector(Protocol):
    screen: Screen  # what it keeps of its boxes, and the count of what it dropped

    def wants(self, index: int) -> bool:
        """Whether frame `index` may hold detections (False: the frame need not be decoded)."""

    def detect(self, frame: np.ndarray, index: int) -> list[Detection]:
        """RGB frame [H, W, 3] uint8 -> its detections; FrameError for a frame it cannot look at."""

    def past_end(self, frames: int) -> int:
        """Boxes given for frames at or after `frames` (a detections file of a longer video); 0 if none can be."""


def frame_size(frame: np.ndarray) -> tuple[int, int]:
    """(width, height) of an RGB frame; FrameError unless it is [H, W, 3] uint8 with a pixel at least."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 \
            or frame.size == 0:
        shape = list(np.shape(frame))
        raise FrameError(f"a frame of shape {shape} ({getattr(frame, 'dtype', '?')}) is not an RGB image")
    return int(frame.shape[1]), int(frame.shape[0])


@dataclass
class Screen:
    """What a detector keeps of the boxes it has for a frame, counting the ones it drops by reason (`DROPPED`)."""

    threshold: float | None = None  # keep boxes scoring at least this (None: any score)
    limit: int = MAX_DETECTIONS  # keep at most this many detections a frame, the best scoring
    dropped: Counter = field(default_factory=Counter)  # reason (a key of DROPPED) -> boxes dropped for it
    capped: int = 0  # frames that had more than `limit` detections

    def _keep(self, keep: np.ndarray, passing: np.ndarray, reason: str) -> np.ndarray:
        self.dropped[reason] += int((keep & ~passing).sum())
        return keep & passing

    def valid(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """[N] bool: which boxes [N, 4] (x, y, w, h) with scores [N] are finite, of positive size and at least the
        threshold."""
        keep = self._keep(np.ones(len(boxes), bool), np.isfinite(boxes).all(axis=1) & np.isfinite(scores), "nan")
        keep = self._keep(keep, (boxes[:, 2] > 0) & (boxes[:, 3] > 0), "size")
        return keep if self.threshold is None else self._keep(keep, scores >= self.threshold, "threshold")

    def best(self, keep: np.ndarray, scores: np.ndarray, limit: int, reason: str) -> np.ndarray:
        """`keep` [N] bool narrowed to its `limit` best-scoring rows (ties: the earlier row)."""
        rows = np.flatnonzero(keep)
        if len(rows) <= limit:
            return keep
        order = rows[np.argsort(-scores[rows], kind="stable")]
        narrowed = np.zeros_like(keep)
        narrowed[order[:limit]] = True
        self.dropped[reason] += len(rows) - limit
        return narrowed

    def keep(self, boxes: Any, scores: Any, width: int, height: int) -> list[Detection]:
        """Boxes x, y, w, h [N, 4] in frame pixels (floats, anything) with scores [N] -> the detections kept, in
        their order: valid, rounded to whole pixels and clipped to the frame, at least MIN_BOX, the `limit` best."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        keep = self.valid(boxes, scores)
        with np.errstate(invalid="ignore", over="ignore"):
            x0, y0 = np.maximum(0, np.round(boxes[:, 0])), np.maximum(0, np.round(boxes[:, 1]))
            x1 = np.minimum(width, np.round(boxes[:, 0] + boxes[:, 2]))
            y1 = np.minimum(height, np.round(boxes[:, 1] + boxes[:, 3]))
            keep = self._keep(keep, (x1 > x0) & (y1 > y0), "outside")
            keep = self._keep(keep, (x1 - x0 >= MIN_BOX) & (y1 - y0 >= MIN_BOX), "small")
        capped = self.best(keep, scores, self.limit, "cap")
        self.capped += int(capped.sum() < keep.sum())
        return [Detection((int(x0[i]), int(y0[i]), int(x1[i] - x0[i]), int(y1[i] - y0[i])), float(scores[i]))
                for i in np.flatnonzero(capped)]


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
    """Greedy non-maximum suppression by OpenCV (`cv2.dnn.NMSBoxes`: O(N) memory): indices of the boxes [N, 4]
    (x, y, w, h, finite, positive size) kept, best score first (ties: the earlier box); a box overlapping a
    kept, better one by more than `iou` is dropped."""
    cv2 = require("cv2", "opencv-python", "non-maximum suppression", "footage")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranks = np.empty(len(order), dtype=np.float64)
    ranks[order] = np.arange(len(order), 0, -1)  # NMSBoxes takes positive scores: our order as 1..N
    kept = cv2.dnn.NMSBoxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4).tolist(), ranks.tolist(), 0.0,
                            float(iou))
    return np.asarray(kept, dtype=np.int64).reshape(-1)


class DetectionsFile:
    """Boxes of one source from a MOTChallenge det.txt or COCO results JSON (`cpcl.index.boxfiles`)."""

    def __init__(self, path: Path, threshold: float | None, max_detections: int = MAX_DETECTIONS):
        self.table = read_boxes(Path(path).expanduser())
        self.screen = Screen(threshold, max_detections)

    def wants(self, index: int) -> bool:
        return index in self.table

    def detect(self, frame: np.ndarray, index: int) -> list[Detection]:
        return self.screen.keep(*self.table.of_frame(index), *frame_size(frame))

    def past_end(self, frames: int) -> int:
        return self.table.from_frame(frames)


class HogDetector:
    """OpenCV's HOG people detector (a linear SVM on 64x128 windows; persons under ~100 px tall are missed).

    The frame gets a border (`HOG_BORDER`) so that persons at its edges fit a window. Its boxes are detection
    windows, which hold the person with a margin (`HOG_WINDOW_MARGIN`); they are shrunk to the person.
    `threshold` is the SVM margin a window must reach (detectMultiScale's hitThreshold).
    """

    def __init__(self, threshold: float | None, max_detections: int = MAX_DETECTIONS):
        cv2 = require("cv2", "opencv-python", "the hog detector", "footage")
        self.cv2 = cv2
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.threshold = 0.0 if threshold is None else threshold
        self.screen = Screen(None, max_detections)  # the threshold is detectMultiScale's

    def wants(self, index: int) -> bool:
        return True

    def past_end(self, frames: int) -> int:
        return 0

    def detect(self, frame: np.ndarray, index: int) -> list[Detection]:
        width, height = frame_size(frame)
        border = round(HOG_BORDER * height)
        window = tuple(self.hog.winSize)
        if width + 2 * border < window[0] or height + 2 * border < window[1]:  # OpenCV would read past the image
            raise FrameError(f"a {width}x{height} frame is too small for the hog detector (with its border, "
                             f"{width + 2 * border}x{height + 2 * border}, under its {window[0]}x{window[1]} window)")
        grey = self.cv2.copyMakeBorder(self.cv2.cvtColor(frame, self.cv2.COLOR_RGB2GRAY), border, border, border,
                                       border, self.cv2.BORDER_REPLICATE)
        rects, weights = self.hog.detectMultiScale(grey, hitThreshold=self.threshold, winStride=HOG_STRIDE,
                                                   padding=HOG_PADDING, scale=HOG_SCALE)
        x, y, w, h = np.asarray(rects, dtype=np.float64).reshape(-1, 4).T
        mx, my = HOG_WINDOW_MARGIN
        boxes = np.stack([x - border + mx * w, y - border + my * h, w * (1 - 2 * mx), h * (1 - 2 * my)], axis=1)
        return self.screen.keep(boxes, np.asarray(weights).reshape(-1), width, height)


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

    def __init__(self, model: Path, threshold: float | None, nms_iou: float, max_detections: int = MAX_DETECTIONS):
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
        self.screen = Screen(0.25 if threshold is None else threshold, max_detections)
        self.nms_iou = nms_iou

    def wants(self, index: int) -> bool:
        return True

    def past_end(self, frames: int) -> int:
        return 0

    def detect(self, frame: np.ndarray, index: int) -> list[Detection]:
        """Candidates that are numbers, of positive size and over the threshold, the best NMS_CANDIDATES of them
        through NMS, then clipped to the frame and capped (`Screen`)."""
        width, height = frame_size(frame)
        image, scale, (pad_x, pad_y) = letterbox(frame, self.size)
        pixels = (image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
        boxes, scores = yolo_candidates(self.session.run(None, {self.input.name: pixels})[0], f"{self.model}")
        with np.errstate(invalid="ignore", over="ignore"):
            boxes = (boxes.astype(np.float64) - [pad_x, pad_y, 0.0, 0.0]) / scale  # frame pixels
        scores = scores.astype(np.float64)
        keep = self.screen.best(self.screen.valid(boxes, scores), scores, NMS_CANDIDATES, "candidates")
        rows = np.flatnonzero(keep)
        rows = rows[nms(boxes[rows], scores[rows], self.nms_iou)]
        return self.screen.keep(boxes[rows], scores[rows], width, height)


def _detections(arg: str, threshold: float | None, nms_iou: float, max_detections: int) -> Detector:
    return DetectionsFile(Path(arg), threshold, max_detections)


def _hog(arg: str, threshold: float | None, nms_iou: float, max_detections: int) -> Detector:
    return HogDetector(threshold, max_detections)


def _onnx(arg: str, threshold: float | None, nms_iou: float, max_detections: int) -> Detector:
    return OnnxDetector(Path(arg), threshold, nms_iou, max_detections)


# name -> (needs an argument after ':', what the argument is, constructor(arg, threshold, nms_iou, max_detections))
DETECTORS: dict[str, tuple[bool, str, Callable[[str, float | None, float, int], Detector]]] = {
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


def make_detector(spec: str, threshold: float | None = None, nms_iou: float = 0.45,
                  max_detections: int = MAX_DETECTIONS) -> Detector:
    """The detector `spec` names ('detections:FILE', 'hog', 'onnx:MODEL.onnx'; see the module docstring)."""
    name, arg = parse_spec(spec)
    return DETECTORS[name][2](arg, threshold, nms_iou, max_detections)
