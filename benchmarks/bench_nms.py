"""Time and memory of cpcl's NMS (OpenCV's `cv2.dnn.NMSBoxes`) against the greedy pass over an N x N IoU matrix it
replaced, on random boxes.

    PYTHONPATH=src python benchmarks/bench_nms.py                    # 300, 3,000 and 20,000 boxes
    PYTHONPATH=src python benchmarks/bench_nms.py --boxes 300 --repeats 200

Memory is the peak traced by tracemalloc (numpy reports its buffers to it) while one call runs; time is the mean
of `--repeats` calls, untraced. The matrix pass is skipped where its matrix alone would exceed `--matrix-limit` GiB.
Both keep the same boxes (checked).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from cpcl.index.detectors import box_iou, nms


def matrix_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """The replaced NMS: every pair's IoU at once ([N, N] float64), then a greedy pass, best score first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    overlaps = box_iou(boxes, boxes)
    kept: list[int] = []
    for i in order:
        if all(overlaps[i, j] <= iou for j in kept):
            kept.append(int(i))
    return np.array(kept, dtype=np.int64)


def measure(fn, boxes: np.ndarray, scores: np.ndarray, repeats: int) -> tuple[float, float, np.ndarray]:
    """(ms a call, peak MiB traced in one call, the boxes kept)."""
    tracemalloc.start()
    kept = fn(boxes, scores, 0.45)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    start = time.perf_counter()
    for _ in range(repeats):
        fn(boxes, scores, 0.45)
    return (time.perf_counter() - start) / repeats * 1e3, peak, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, nargs="+", default=[300, 3000, 20_000])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--matrix-limit", type=float, default=0.5, help="GiB")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| boxes | NMSBoxes ms | NMSBoxes peak MiB | matrix ms | matrix peak MiB | kept |")
    print("|---|---|---|---|---|---|")
    for n in args.boxes:
        boxes = np.concatenate([rng.uniform(0, 600, (n, 2)), rng.uniform(20, 200, (n, 2))], axis=1)
        scores = rng.uniform(0, 1, n)
        repeats = max(1, args.repeats * 300 // n)
        ms, peak, kept = measure(nms, boxes, scores, repeats)
        if n * n * 8 / 2**30 > args.matrix_limit:
            old = f"skipped | its matrix alone is {n * n * 8 / 2**30:.2f} GiB"
        else:
            old_ms, old_peak, old_kept = measure(matrix_nms, boxes, scores, repeats)
            assert np.array_equal(kept, old_kept), "the two keep different boxes"
            old = f"{old_ms:.2f} | {old_peak:.1f}"
        print(f"| {n:,} | {ms:.2f} | {peak:.1f} | {old} | {len(kept):,} |")


if __name__ == "__main__":
    main()
