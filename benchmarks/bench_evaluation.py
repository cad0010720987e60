"""Benchmark text-to-image evaluation (cpcl.evaluation.metrics.retrieval_metrics) at the sizes of
the CUHK-PEDES test split (6,156 captions x 3,074 images, 1,000 ids) and the ICFG-PEDES test split
(19,848 x 19,848, 1,000 ids), side by side with its floor, the float32 similarity matmul alone
(the same query chunks, nothing done with the result), and against a dense brute-force reference
(the full Q x G similarity matrix, a full stable argsort of every row, metrics read off the sorted
match matrix).

    PYTHONPATH=src python benchmarks/bench_evaluation.py
    PYTHONPATH=src python benchmarks/bench_evaluation.py --sizes cuhk --repeats 5
    PYTHONPATH=src python benchmarks/bench_evaluation.py --sizes 600x300x100 --repeats 1  # smoke
    git archive 0a7352a src | tar -x -C /tmp/before   # an earlier cpcl, timed beside this one:
    PYTHONPATH=src python benchmarks/bench_evaluation.py --sizes icfg --before /tmp/before/src

A size is `cuhk`, `icfg` or QxGxP (queries x gallery x person ids). Features are 512-d, L2-
normalised, random with person structure. Every case runs in a fresh subprocess, so its peak
RSS (getrusage of that child) is its own; "baseline" is a child that only imports the libraries
and builds the features. Times are wall clock of the metrics call alone (features excluded),
median over --repeats, matmul, cpcl and dense interleaved so that they share the machine's load;
"cpcl / matmul" is the ratio of the medians. "CPU s" is the processor time of all the process's
threads (cpcl ranks one chunk while the next chunk's matmul runs in another thread: on a shared
machine that third thread also takes a larger share of the cores; the CPU time shows the work
itself). "counting CPU s" is the processor time of the thread that counts the ranks, in
`hit_ranks` alone: the work the evaluation adds to the matmul. The dense reference runs where its
estimated memory fits (--dense-max-gib, and 75% of MemAvailable). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cpcl.evaluation.metrics import CHUNK_SIZE

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"cuhk": (6156, 3074, 1000), "icfg": (19848, 19848, 1000)}  # queries, gallery, ids
METRICS = ("R1", "R5", "R10", "mAP", "mINP")
TARGET = ("icfg", 1.3)  # ICFG-sized evaluation within 1.3x the float32 matmul alone
DENSE_BYTES_PER_PAIR = 17  # float32 similarity + int64 order + int32 gathered ids + bool matches


def parse_size(text: str) -> tuple[str, int, int, int]:
    """'cuhk' | 'icfg' | 'QxGxP' -> (name, queries, gallery, ids)."""
    if text in SIZES:
        return (text, *SIZES[text])
    try:
        q, g, p = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected cuhk, icfg or QxGxP") from None
    if not 0 < p <= g or q <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r}: need Q > 0 and 0 < P <= G")
    return text, q, g, p


def size_arguments(parser: argparse.ArgumentParser) -> None:
    """--sizes and --seed (shared with bench_rerank.py); `check_sizes` validates them after parsing."""
    parser.add_argument("--sizes", nargs="+", default=["cuhk", "icfg"],
                        help="cuhk, icfg or QxGxP (queries x gallery x person ids)")
    parser.add_argument("--seed", type=int, default=0)


def check_sizes(parser: argparse.ArgumentParser, sizes: list[str]) -> None:
    """parser.error (exit 2, one line) for the first size `parse_size` refuses."""
    for size in sizes:
        try:
            parse_size(size)
        except argparse.ArgumentTypeError as err:
            parser.error(str(err))


def make_features(q: int, g: int, p: int, dim: int = 512, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(queries [q, dim], gallery [g, dim], query ids [q], gallery ids [g]); rows unit-norm.

    Every id has >= 1 image, the rest spread at random (CUHK ~3 per id, ICFG ~20); every image
    has >= 1 caption when q >= g. x = normalise(0.8 mu + 0.5 s_grp + c_id + 0.6 v_img + n e):
    mu shared by all, s shared by groups of 20 look-alike ids, c per id, v per image (its captions
    share it), e per row (2.7 for images, 3.3 for captions: R1 ~60-75%, as trained models get).
    """
    rng = np.random.default_rng(seed)

    def unit(m: int) -> np.ndarray:
        v = rng.standard_normal((m, dim), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    gallery_ids = np.concatenate([np.arange(p), rng.integers(0, p, g - p)])
    rng.shuffle(gallery_ids)
    base = np.arange(min(q, g))
    caption_image = np.concatenate([base, rng.integers(0, g, q - base.size)])
    rng.shuffle(caption_image)
    query_ids = gallery_ids[caption_image]
    mu, groups, centres, per_image = unit(1), unit(p // 20 + 1), unit(p), unit(g)

    def build(ids: np.ndarray, images: np.ndarray, noise: float) -> np.ndarray:
        x = 0.8 * mu + 0.5 * groups[ids // 20] + centres[ids] + 0.6 * per_image[images]
        x += noise * unit(len(ids))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    gallery = build(gallery_ids, np.arange(g), 2.7)
    queries = build(query_ids, caption_image, 3.3)
    return queries, gallery, query_ids, gallery_ids


def dense_reference(queries: torch.Tensor, gallery: torch.Tensor, query_ids: torch.Tensor,
                    gallery_ids: torch.Tensor) -> dict[str, float]:
    """Brute force: full [Q, G] similarity, full stable descending argsort per row (ties: lower
    gallery index first, as in retrieval_metrics), boolean match matrix, textbook formulas."""

    sim = queries @ gallery.T  # [Q, G] float32
    order = torch.argsort(sim, dim=1, descending=True, stable=True)  # [Q, G] int64
    del sim
    matches = gallery_ids.int()[order] == query_ids.int()[:, None]  # [Q, G] bool
    del order
    rows, cols = (t.numpy() for t in torch.nonzero(matches, as_tuple=True))  # row-major order
    positions = cols.astype(np.float64) + 1.0  # 1-based ranks of the hits, ascending per row
    n = np.bincount(rows, minlength=len(query_ids)).astype(np.float64)
    starts = np.cumsum(n) - n
    k = np.arange(len(rows)) - starts[rows] + 1.0  # index of each hit within its row
    ap = np.bincount(rows, k / positions, minlength=len(n)) / n
    first = positions[starts.astype(np.int64)]
    last = positions[(starts + n - 1).astype(np.int64)]
    out = {f"R{r}": 100.0 * float(np.mean(first <= r)) for r in (1, 5, 10)}
    out.update(mAP=100.0 * float(ap.mean()), mINP=100.0 * float(np.mean(n / last)))
    return out


def dense_estimate_gib(q: int, g: int) -> float:
    return (DENSE_BYTES_PER_PAIR * q * g + 4 * 512 * (q + g)) / 2**30


def mem_available_gib() -> float:
    """MemAvailable from /proc/meminfo (Linux); infinity elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def matmul_alone(queries: torch.Tensor, gallery: torch.Tensor, chunk_size: int) -> None:
    """The floor: every query chunk's float32 similarities to the gallery, computed and dropped."""
    for start in range(0, len(queries), chunk_size):
        queries[start:start + chunk_size] @ gallery.T


def timed_in_thread(function: Callable, spent: list[float]) -> Callable:
    """`function`, appending the processor time of the calling thread in each call to `spent`."""
    def wrapper(*args, **kwargs):
        start = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent.append(time.thread_time() - start)
    return wrapper


def child(method: str, size: str, seed: int, chunk_size: int) -> dict:
    """One case in this (fresh) process: seconds, peak RSS and the metrics."""
    import cpcl.evaluation.metrics as module

    retrieval_metrics, counting = module.retrieval_metrics, []
    module.hit_ranks = timed_in_thread(module.hit_ranks, counting)  # the rank counting, apart from the matmul
    _, q, g, p = parse_size(size)
    arrays = [torch.from_numpy(a) for a in make_features(q, g, p, seed=seed)]
    metrics: dict[str, float] = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    if method == "fast":
        metrics = retrieval_metrics(*arrays, chunk_size=chunk_size)
    elif method == "dense":
        metrics = dense_reference(*arrays)
    elif method == "matmul":
        matmul_alone(arrays[0], arrays[1], chunk_size)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"method": method, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "counting_cpu_seconds": sum(counting), "peak_rss_mb": peak, "metrics": metrics}


def run_case(method: str, size: str, seed: int, chunk_size: int, src: Path = ROOT / "src") -> dict:
    """Run `child` in a subprocess with cpcl from `src` and return its record."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--sizes", size,
           "--seed", str(seed), "--chunk-size", str(chunk_size)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{method} {size} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(sizes: list[str], args: argparse.Namespace) -> tuple[list[str], dict[str, float]]:
    lines = ["| case | Q x G (ids) | matmul s | cpcl s | cpcl / matmul | before s | before / matmul | "
             "matmul CPU s | cpcl CPU s | counting CPU s | "
             "cpcl peak RSS MB | dense s | "
             "dense peak RSS MB | baseline RSS MB | dense / cpcl | max abs diff | agree 1e-9 | "
             "R1 / R5 / R10 / mAP / mINP |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ratios: dict[str, float] = {}
    dense_cap = min(args.dense_max_gib, 0.75 * mem_available_gib())
    for size in sizes:
        name, q, g, p = parse_size(size)
        estimate = dense_estimate_gib(q, g)
        with_dense = estimate <= dense_cap
        if not with_dense:
            print(f"{name}: dense reference skipped (needs ~{estimate:.1f} GiB, cap {dense_cap:.1f} GiB)")
        base = run_case("baseline", size, args.seed, args.chunk_size)
        runs: dict[str, list[dict]] = {"matmul": [], "fast": [], "before": [], "dense": []}
        methods = ["matmul", "fast"] + ["before"] * bool(args.before) + ["dense"] * with_dense
        for _ in range(args.repeats):  # interleaved, so all see the same machine load
            for method in methods:
                runs[method].append(run_case("fast" if method == "before" else method, size, args.seed,
                                             args.chunk_size, args.before if method == "before" else ROOT / "src"))
        median = {method: float(np.median([r["seconds"] for r in recs])) for method, recs in runs.items() if recs}
        cpu = {method: float(np.median([r["cpu_seconds"] for r in recs])) for method, recs in runs.items() if recs}
        counting = float(np.median([r["counting_cpu_seconds"] for r in runs["fast"]]))
        ratios[name] = median["fast"] / median["matmul"]
        m = runs["fast"][0]["metrics"]
        if runs["dense"]:
            diff = max(abs(m[k] - runs["dense"][0]["metrics"][k]) for k in METRICS)
            cells = [f"{median['dense']:.2f}", f"{max(r['peak_rss_mb'] for r in runs['dense']):,.0f}",
                     f"{base['peak_rss_mb']:,.0f}", f"{median['dense'] / median['fast']:.1f}x", f"{diff:.1e}",
                     str(diff <= 1e-9)]
        else:
            cells = ["-", "-", f"{base['peak_rss_mb']:,.0f}", "-", "-", "-"]
        lines.append(f"| {name} | {q:,} x {g:,} ({p:,}) | {median['matmul']:.2f} | {median['fast']:.2f} | "
                     f"{ratios[name]:.2f}x | "
                     + (f"{median['before']:.2f} | {median['before'] / median['matmul']:.2f}x | " if runs["before"] else "- | - | ")
                     + f"{cpu['matmul']:.2f} | {cpu['fast']:.2f} | {counting:.2f} | "
                     f"{max(r['peak_rss_mb'] for r in runs['fast']):,.0f} | "
                     + " | ".join(cells) + " | " + " / ".join(f"{m[k]:.2f}" for k in METRICS) + " |")
    return lines, ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE, help="retrieval_metrics chunk_size")
    parser.add_argument("--dense-max-gib", type=float, default=12.0,
                        help="run the dense reference only where its estimated memory is below this")
    parser.add_argument("--before", type=Path, metavar="SRC",
                        help="the src folder of another cpcl (an earlier commit): its evaluation timed too, interleaved")
    parser.add_argument("--child", choices=["fast", "dense", "matmul", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_sizes(parser, args.sizes)
    if args.child:
        print(json.dumps(child(args.child, args.sizes[0], args.seed, args.chunk_size)))
        return 0
    print(f"threads: torch {torch.get_num_threads()}, cpus {os.cpu_count()}; repeats {args.repeats} "
          f"(median time, max RSS); chunk_size {args.chunk_size}\n")
    lines, ratios = table(args.sizes, args)
    print("\n".join(lines))
    name, limit = TARGET
    if name in ratios:
        met = "met" if ratios[name] <= limit else "NOT met"
        print(f"\ntarget: {name}-sized evaluation <= {limit}x the float32 matmul alone: {met} ({ratios[name]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
