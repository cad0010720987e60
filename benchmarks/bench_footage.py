"""Recall and precision at IoU 0.5 of cpcl's `hog` detector (OpenCV's HOG people detector) on SynthPedes scenes.

    PYTHONPATH=src python benchmarks/bench_footage.py                      # 4 scenes x 48 frames, 640 x 360
    PYTHONPATH=src python benchmarks/bench_footage.py --scenes 8 --thresholds 0 0.5 1
    PYTHONPATH=src python benchmarks/bench_footage.py --speed --every 2    # indexing with and without tracking

Renders the scenes of `cpcl synth --footage` in memory (same seed, same frames), runs the detector on
every frame, and matches its boxes to the true ones the usual way: detections by score, best first,
each to the unmatched true box it overlaps most if that IoU is at least 0.5; a detection left over is a
false positive, a true box left over a miss. Prints one table row per score threshold (HOG's SVM
margin), then the recall by person height and by how much of the person nearer persons hide (true
boxes are amodal), at the default threshold.

With --speed, the scenes are written as videos and indexed as `cpcl index build --video V --every N` does
(decode, detect, embed: the indexing of cpcl before tracking), through the true boxes' det.txt and through the
detector; beside it, what tracking adds: the tracker and appearance re-linking over the index's records
(`cpcl.index.tracks.link_tracks`, run when an index is opened), timed in the same run. Numbers are what they
are: nothing here is a target.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from cpcl.index.config import IndexConfig
from cpcl.index.detectors import box_iou, make_detector
from cpcl.index.encoder import Encoder
from cpcl.index.footage import SourceState
from cpcl.index.ingest import FootageOptions, build_footage_index
from cpcl.index.store import IndexStore
from cpcl.index.tracks import link_tracks
from cpcl.synth.config import FootageConfig
from cpcl.synth.footage import FOOTAGE_DIR, render_scene, write_footage

HEIGHTS = (0, 128, 192, 10_000)  # person height buckets, pixels
VISIBLE = (0.0, 0.5, 0.9, 1.01)  # visible share buckets


def match(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray, iou: float) -> tuple[int, np.ndarray]:
    """(true positives, [T] bool: which true boxes were found) of detections [D, 4] with scores [D]."""
    found = np.zeros(len(truth), dtype=bool)
    if len(boxes) == 0 or len(truth) == 0:
        return 0, found
    overlaps = box_iou(boxes, truth)
    hits = 0
    for d in np.argsort(-scores, kind="stable"):
        candidates = np.where(found, -1.0, overlaps[d])
        t = int(np.argmax(candidates))
        if candidates[t] >= iou:
            found[t] = True
            hits += 1
    return hits, found


def visible_share(boxes: list[list[int]]) -> list[float]:
    """Share of each box (drawn far to near, in this order) not covered by the boxes drawn after it."""
    shares = []
    for i, (x, y, w, h) in enumerate(boxes):
        mask = np.ones((h, w), dtype=bool)
        for ox, oy, ow, oh in boxes[i + 1:]:
            mask[max(0, oy - y):max(0, oy + oh - y), max(0, ox - x):max(0, ox + ow - x)] = False
        shares.append(float(mask.mean()))
    return shares


def bucket(values: np.ndarray, edges: tuple, found: np.ndarray, label: str) -> list[str]:
    rows = []
    for lo, hi in zip(edges, edges[1:]):
        inside = (values >= lo) & (values < hi)
        if inside.any():
            rows.append(f"| {label} {lo:g}-{hi:g} | {int(inside.sum())} | {found[inside].mean():.3f} |")
    return rows


def speed(cfg: FootageConfig, detector: str, every: int, checkpoint: str) -> None:
    """Index each scene's video (true boxes, then `detector`) and track its records, timing both."""
    logging.basicConfig(level=logging.WARNING)
    encoder = Encoder.load(Path(checkpoint), device="cpu", precision="fp32")
    start = time.perf_counter()
    import trackers  # noqa: F401  (imported once a process, when the first index with footage is opened)
    print(f"importing the trackers package: {time.perf_counter() - start:.2f} s (once a process)")
    print(f"indexing {cfg.scenes} SynthPedes videos x {cfg.frames} frames ({cfg.width}x{cfg.height}), --every {every}, "
          f"model {checkpoint} on the CPU\n")
    print("| detector | frames | detections | build s (decode, detect, embed) | tracking s | "
          "(build + tracking) / build |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        scenes = write_footage(Path(tmp), cfg)
        for name in ("true boxes", detector):
            build = track = 0.0
            frames = detections = 0
            for scene in scenes:
                spec = f"detections:{scene / 'det.txt'}" if name == "true boxes" else detector
                out = scene / f"idx_{name.replace(' ', '_').replace(':', '_')}"
                start = time.perf_counter()
                options = FootageOptions("video", (scene / "video.mp4",), spec, every=every)
                report = build_footage_index(encoder, options, out, Path(tmp) / FOOTAGE_DIR, IndexConfig(), 64)
                build += time.perf_counter() - start
                store = IndexStore.open(out)
                embeddings, records = store.read()
                rates = {source: SourceState.from_dict(raw, source).source_fps
                         for source, raw in store.manifest.sources.items()}
                start = time.perf_counter()
                link_tracks(records, embeddings, rates, store.manifest.config)
                track += time.perf_counter() - start
                frames, detections = frames + report.frames, detections + len(records)
            print(f"| {name} | {frames} | {detections} | {build:.1f} | {track:.2f} | {(build + track) / build:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--persons", type=int, default=4)
    parser.add_argument("--size", type=int, nargs=2, default=[640, 360], metavar=("W", "H"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detector", default="hog", help="any cpcl --detector spec (hog, onnx:MODEL.onnx)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--speed", action="store_true", help="time indexing and tracking instead")
    parser.add_argument("--every", type=int, default=2, help="--speed: keep every N-th frame")
    parser.add_argument("--checkpoint", default="synthpedes-small", help="--speed: the model that embeds crops")
    args = parser.parse_args()
    cfg = FootageConfig(scenes=args.scenes, frames=args.frames, persons=args.persons, width=args.size[0],
                        height=args.size[1], seed=args.seed)
    if args.speed:
        speed(cfg, args.detector, args.every, args.checkpoint)
        return
    detector = make_detector(args.detector, threshold=min(args.thresholds))
    frames_seen, seconds, per_frame = 0, 0.0, []
    for scene in range(cfg.scenes):
        frames, gt = render_scene(cfg, scene)
        for index, image in enumerate(frames):
            start = time.perf_counter()
            found = detector.detect(np.asarray(image), index)
            seconds += time.perf_counter() - start
            frames_seen += 1
            truth = [b["box"] for b in gt["boxes"] if b["frame"] == index]
            per_frame.append((np.array([d.box for d in found], dtype=np.float64).reshape(-1, 4),
                              np.array([d.score for d in found]), np.array(truth, dtype=np.float64).reshape(-1, 4),
                              visible_share(truth)))
    total = sum(len(t) for _, _, t, _ in per_frame)
    print(f"{args.detector} on {cfg.scenes} SynthPedes scenes x {cfg.frames} frames ({cfg.width}x{cfg.height}, "
          f"{cfg.persons} persons a scene, heights {cfg.person_height[0]:g}-{cfg.person_height[1]:g} of the frame): "
          f"{total} true boxes, {seconds / frames_seen * 1000:.0f} ms a frame, IoU >= {args.iou}")
    print("\n| threshold | detections | true positives | false positives | missed | recall | precision |")
    print("|---|---|---|---|---|---|---|")
    for threshold in args.thresholds:
        tp = det = 0
        for boxes, scores, truth, _ in per_frame:
            keep = scores >= threshold
            det += int(keep.sum())
            tp += match(boxes[keep], scores[keep], truth, args.iou)[0]
        print(f"| {threshold:g} | {det} | {tp} | {det - tp} | {total - tp} | {tp / max(1, total):.3f} | "
              f"{tp / max(1, det):.3f} |")
    threshold = min(args.thresholds)
    found, heights, shares = [], [], []
    for boxes, scores, truth, visible in per_frame:
        keep = scores >= threshold
        found.append(match(boxes[keep], scores[keep], truth, args.iou)[1])
        heights.append(truth[:, 3])
        shares.extend(visible)
    found_all, heights_all = np.concatenate(found), np.concatenate(heights)
    print(f"\nrecall at threshold {threshold:g}, by true box\n\n| true boxes | count | recall |\n|---|---|---|")
    print("\n".join(bucket(heights_all, HEIGHTS, found_all, "height px")
                    + bucket(np.array(shares), VISIBLE, found_all, "visible share")))


if __name__ == "__main__":
    main()
