"""One person, one result: the detections of a source followed by a multi-object tracker, then re-linked by
appearance.

Per source, the detections go through a tracker of the `trackers` package (`TRACKERS`; SORT by default, chosen
on SynthPedes footage over ByteTrack and OC-SORT: a Kalman filter on each box, Hungarian matching on IoU), one
update per frame with detections, at the frame's time (its offset; frame / `ASSUMED_FPS` when the source's rate is
unknown), so the motion model follows the time between sampled frames. A detection the tracker leaves
unmatched is a track of its own. Then appearance re-linking (the BoT-SORT / DeepSORT idea, with cpcl's own
embeddings): a track that ends is joined to one that starts at most `link_seconds` later when the cosine of
their mean embeddings is at least `link_cosine`; the most similar pairs first, each end and each start
joined once. Tracking runs when an index is opened, from its records and embeddings: nothing is stored, and
the settings are the manifest's (`IndexConfig`).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from cpcl.index.config import TRACKERS, IndexConfig
from cpcl.index.detectors import box_iou
from cpcl.utils.optional import require

ASSUMED_FPS = 30.0  # a source whose frame rate is unknown is tracked as if it had this one
SECONDS_PER_BUFFER_FRAME = 1 / 30  # the trackers' lost_track_buffer counts frames of a 30 FPS video
CLEAR_IOU = 0.05  # a box overlapping another detection of its frame more than this is not a track's best crop


def _tracker(config: IndexConfig, fps: float) -> Any:
    """A fresh tracker of the `trackers` package (`config.tracker`) for one source of frame rate `fps`."""
    trackers = require("trackers", "trackers", "tracking footage", "footage")
    return getattr(trackers, TRACKERS[config.tracker])(
        lost_track_buffer=max(1, round(config.lost_seconds / SECONDS_PER_BUFFER_FRAME)), frame_rate=fps,
        minimum_consecutive_frames=1, minimum_iou_threshold=config.link_iou)


@dataclass(frozen=True)
class Track:
    """One person in one source: its detections and what a result shows of them."""

    rows: np.ndarray  # [M] int64: its detections' rows, in frame order
    first_frame: int
    last_frame: int
    start: float | None  # offset of the first frame, seconds (None: the source's rate is unknown)
    end: float | None  # offset of the last frame, seconds
    best: int  # row of its best crop: the largest box no other detection of its frame overlaps (else the largest)
    embedding: np.ndarray  # [D] float32: the mean of its rows' embeddings, L2-normalised

    def to_dict(self) -> dict[str, Any]:
        """Its span, as results carry it."""
        return {"first_frame": self.first_frame, "last_frame": self.last_frame, "start": self.start, "end": self.end,
                "detections": len(self.rows)}

    def strip(self, count: int) -> list[int]:
        """Up to `count` rows spread evenly along the track, first and last included."""
        picks = np.unique(np.linspace(0, len(self.rows) - 1, min(count, len(self.rows))).round().astype(int))
        return [int(self.rows[i]) for i in picks]


def _clock(record: dict[str, Any]) -> float:
    """A detection's time for the tracker, seconds."""
    offset = record.get("offset")
    return float(offset) if offset is not None else int(record["frame"]) / ASSUMED_FPS


def follow(records: list[dict[str, Any]], rows: list[int], tracker: Any) -> list[list[int]]:
    """The rows of one source's detections (in frame order) grouped into tracklets by `tracker`: each a list of
    rows in frame order. Scores are the detector's own scale, so each source's are ranked: a detection's
    confidence is the share of the source's detections scoring at most as much.

    The trackers answer -1 for the detection a tracklet is started from (its id comes with its second
    detection); that detection is found as the one whose box the new tracklet holds (`tracker.tracks`)."""
    sv = require("supervision", "supervision", "tracking footage", "footage")
    scores = np.array([float(records[r].get("detector_score", 1.0)) for r in rows])
    confidence = (np.searchsorted(np.sort(scores), scores, side="right") / max(1, len(scores))).astype(np.float32)
    by_frame: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_frame[int(records[row]["frame"])].append(i)
    tracklets: dict[int, list[int]] = {}
    started: dict[int, tuple[Any, int]] = {}  # id(new tracklet) -> (it, the row it started from), until it has an id
    alone: list[list[int]] = []
    for frame in sorted(by_frame):
        members = by_frame[frame]
        boxes = np.array([records[rows[i]]["box"] for i in members], dtype=np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        detections = sv.Detections(xyxy=boxes, confidence=confidence[members], data={"i": np.arange(len(members))})
        with warnings.catch_warnings():  # duplicate or earlier times are the tracker's to skip; we never send them
            warnings.simplefilter("ignore", UserWarning)
            out = tracker.update(detections, timestamp=_clock(records[rows[members[0]]]))
        untracked = set()
        for i, tracker_id in zip(out.data["i"].tolist(), out.tracker_id.tolist()):
            if tracker_id < 0:
                untracked.add(i)
            else:
                tracklets.setdefault(tracker_id, []).append(rows[members[i]])
        alive = {id(t) for t in tracker.tracks}
        for key in [key for key in started if key not in alive]:  # never matched again: a track of its own
            alone.append([started.pop(key)[1]])
        for t in tracker.tracks:
            if t.tracker_id >= 0 and id(t) in started:
                tracklets[t.tracker_id].insert(0, started.pop(id(t))[1])
            elif t.tracker_id < 0 and id(t) not in started and untracked:
                i = min(untracked, key=lambda i: float(np.abs(boxes[i] - t.get_state_bbox()).sum()))
                untracked.discard(i)
                started[id(t)] = (t, rows[members[i]])
        alone += [[rows[members[i]]] for i in sorted(untracked)]
    return list(tracklets.values()) + alone + [[row] for _, row in started.values()]


def relink(tracklets: list[list[int]], records: list[dict[str, Any]], embeddings: np.ndarray, seconds: float,
           cosine: float) -> list[list[int]]:
    """Tracklets of one source joined by appearance: one that ends and one that starts at most `seconds` later
    (strictly after it) whose mean embeddings have at least `cosine`, most similar pairs first, each end and
    each start joined once. embeddings: [N, D], L2-normalised rows."""
    if len(tracklets) < 2:
        return tracklets
    means = np.stack([embeddings[t].mean(axis=0) for t in tracklets])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    first = np.array([_clock(records[t[0]]) for t in tracklets])
    last = np.array([_clock(records[t[-1]]) for t in tracklets])
    first_frame = np.array([records[t[0]]["frame"] for t in tracklets])
    last_frame = np.array([records[t[-1]]["frame"] for t in tracklets])
    similar = means @ means.T
    gap = first[None, :] - last[:, None]
    candidates = np.argwhere((last_frame[:, None] < first_frame[None, :]) & (gap <= seconds) & (similar >= cosine))
    order = np.argsort(-similar[candidates[:, 0], candidates[:, 1]], kind="stable")
    after: dict[int, int] = {}
    before: set[int] = set()
    for a, b in candidates[order].tolist():
        if a not in after and b not in before:
            after[a] = b
            before.add(b)
    chains = []
    for head in range(len(tracklets)):
        if head in before:
            continue
        chain, at = list(tracklets[head]), head
        while at in after:
            at = after[at]
            chain += tracklets[at]
        chains.append(chain)
    return chains


def _best(rows: list[int], records: list[dict[str, Any]], boxes: np.ndarray, frames: dict[tuple, list[int]]) -> int:
    """The row of the largest box that no other detection of its frame overlaps (else of the largest box)."""
    def clear(row: int) -> bool:
        others = [r for r in frames[(records[row]["source"], records[row]["frame"])] if r != row]
        return not others or float(box_iou(boxes[row], boxes[others]).max()) <= CLEAR_IOU

    area = boxes[:, 2] * boxes[:, 3]
    pool = [r for r in rows if clear(r)] or rows
    return max(pool, key=lambda r: (area[r], -r))


def link_tracks(records: list[dict[str, Any]], embeddings: np.ndarray, rates: dict[str, float | None],
                config: IndexConfig) -> tuple[np.ndarray, dict[int, Track]]:
    """([N] int64: each row's track, named by its lowest row; track -> `Track`) of every detection of the sources
    in `rates` (source -> its frame rate, None when unknown). Other rows (crops) are tracks of their own, without
    a `Track`. embeddings: [N, D], L2-normalised."""
    label = np.arange(len(records), dtype=np.int64)
    by_source: dict[str, list[int]] = defaultdict(list)
    frames: dict[tuple, list[int]] = defaultdict(list)
    for row, record in enumerate(records):
        if record.get("source") in rates:
            by_source[record["source"]].append(row)
            frames[(record["source"], record["frame"])].append(row)
    boxes = np.array([r.get("box", (0, 0, 0, 0)) for r in records], dtype=np.float64).reshape(-1, 4)
    tracks: dict[int, Track] = {}
    for source, rows in by_source.items():
        rows.sort(key=lambda r: (int(records[r]["frame"]), r))
        fps = rates[source] or ASSUMED_FPS
        tracklets = follow(records, rows, _tracker(config, fps))
        for chain in relink(tracklets, records, embeddings, config.link_seconds, config.link_cosine):
            chain.sort(key=lambda r: (int(records[r]["frame"]), r))
            key = min(chain)
            label[chain] = key
            mean = embeddings[chain].mean(axis=0)
            head, tail = records[chain[0]], records[chain[-1]]
            tracks[key] = Track(np.array(chain, dtype=np.int64), int(head["frame"]), int(tail["frame"]),
                                head.get("offset"), tail.get("offset"), _best(chain, records, boxes, frames),
                                (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32))
    return label, tracks
