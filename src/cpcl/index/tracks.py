"""One person in consecutive frames is one result: detections linked between consecutive sampled frames.

Within a source, the detections of two consecutive sampled frames (at most the source's sampling
gap apart) are linked when their boxes overlap by at least `link_iou` (IoU) and their embeddings
are at least `link_cosine` similar; pairs are taken most similar first, each detection linked to
at most one in the frame before and one in the frame after. A chain of links is a track. Search
shows the best-scoring detection of a track, with the track's time span. Linking runs when an
index is opened, from the records and embeddings, so it needs nothing stored and follows the
settings in the manifest.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from cpcl.index.detectors import box_iou


@dataclass(frozen=True)
class Span:
    """Where a track is: the frames (and seconds into its source, when known) of its first and last detection."""

    first_frame: int
    last_frame: int
    start: float | None  # offset of the first frame, seconds
    end: float | None  # offset of the last frame, seconds
    detections: int  # detections in the track

    def to_dict(self) -> dict[str, Any]:
        return {"first_frame": self.first_frame, "last_frame": self.last_frame, "start": self.start, "end": self.end,
                "detections": self.detections}


def _link_frames(prev: np.ndarray, cur: np.ndarray, boxes: np.ndarray, embeddings: np.ndarray, iou_min: float,
                 cosine_min: float) -> list[tuple[int, int]]:
    """(row in prev, row in cur) pairs linked between two consecutive frames (greedy, most similar first)."""
    iou = box_iou(boxes[prev], boxes[cur])
    cosine = embeddings[prev] @ embeddings[cur].T
    candidates = np.argwhere((iou >= iou_min) & (cosine >= cosine_min))
    order = np.argsort(-cosine[candidates[:, 0], candidates[:, 1]], kind="stable")
    used_prev, used_cur, pairs = set(), set(), []
    for a, b in candidates[order]:
        if a not in used_prev and b not in used_cur:
            used_prev.add(a)
            used_cur.add(b)
            pairs.append((int(prev[a]), int(cur[b])))
    return pairs


def link_tracks(records: list[dict[str, Any]], embeddings: np.ndarray, gaps: dict[str, int], iou_min: float,
                cosine_min: float) -> np.ndarray:
    """[N] int64: each row's track, named by the row of its first detection. Rows that are not detections (crops),
    and detections of sources missing from `gaps` (source -> largest gap between sampled frames), are their own
    track. embeddings: [N, D], L2-normalised."""
    track = np.arange(len(records), dtype=np.int64)
    frames: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row, record in enumerate(records):
        if record.get("source") in gaps:
            frames[record["source"]][int(record["frame"])].append(row)
    boxes = np.array([r.get("box", (0, 0, 0, 0)) for r in records], dtype=np.float64).reshape(-1, 4)
    for source, by_frame in frames.items():
        previous: tuple[int, np.ndarray] | None = None
        for frame in sorted(by_frame):
            rows = np.array(by_frame[frame], dtype=np.int64)
            if previous is not None and frame - previous[0] <= gaps[source]:
                for a, b in _link_frames(previous[1], rows, boxes, embeddings, iou_min, cosine_min):
                    track[b] = track[a]
            previous = (frame, rows)
    return track


def track_spans(records: list[dict[str, Any]], track: np.ndarray) -> dict[int, Span]:
    """Track -> its `Span`, for every track of detections."""
    members: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row, record in enumerate(records):
        if "source" in record:
            members[int(track[row])].append(record)
    spans = {}
    for key, group in members.items():
        first = min(group, key=lambda r: r["frame"])
        last = max(group, key=lambda r: r["frame"])
        spans[key] = Span(int(first["frame"]), int(last["frame"]), first.get("offset"), last.get("offset"), len(group))
    return spans
