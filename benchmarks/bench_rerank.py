"""Benchmark k-reciprocal re-ranking at evaluation (cpcl.evaluation.metrics.retrieval_metrics with
rerank=RerankConfig(...), cpcl.clustering.rerank) against the plain ranking, at the sizes of the
CUHK-PEDES test split (6,156 captions x 3,074 images) and the ICFG-PEDES test split (19,848 x 19,848).

    PYTHONPATH=src python benchmarks/bench_rerank.py
    PYTHONPATH=src python benchmarks/bench_rerank.py --sizes cuhk --k1 20 --k2 6 --lam 0.3
    PYTHONPATH=src python benchmarks/bench_rerank.py --sizes 600x300x100  # smoke

Features are bench_evaluation.py's: 512-d, L2-normalised, random with person structure (a caption
shares its image's component; R1 ~60-75% without re-ranking). Every case runs in a fresh subprocess,
so its peak RSS (getrusage of that child) is its own; "baseline" only imports and builds the
features. Times are wall clock, features excluded: "prepare" is the gallery's side (kNN, k-reciprocal
sets, weights: once per gallery), "total" the whole re-ranked evaluation including it. The metrics on
these synthetic features only show that re-ranking works; its gain on a real benchmark is measured
there. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench_evaluation import check_sizes, make_features, parse_size, size_arguments

ROOT = Path(__file__).resolve().parents[1]


def child(method: str, size: str, seed: int, k1: int, k2: int, lam: float) -> dict:
    """One case in this (fresh) process: seconds, peak RSS and the metrics."""
    from cpcl.clustering.rerank import RerankConfig, prepare_gallery
    from cpcl.evaluation.metrics import retrieval_metrics

    _, q, g, p = parse_size(size)
    arrays = [torch.from_numpy(a) for a in make_features(q, g, p, seed=seed)]
    config = RerankConfig(k1=k1, k2=k2, lambda_value=lam)
    out: dict = {"method": method}
    start = time.perf_counter()
    if method == "plain":
        out["metrics"] = retrieval_metrics(*arrays)
    elif method == "prepare":
        prepare_gallery(arrays[1], config)
    elif method == "rerank":
        out["metrics"] = retrieval_metrics(*arrays, rerank=config)
    out["seconds"] = time.perf_counter() - start
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def run_case(method: str, args: argparse.Namespace, size: str) -> dict:
    """Run `child` in a subprocess and return its record."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT / 'benchmarks'}")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--sizes", size, "--seed",
           str(args.seed), "--k1", str(args.k1), "--k2", str(args.k2), "--lam", str(args.lam)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{method} {size} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size_arguments(parser)
    parser.add_argument("--k1", type=int, default=20, help="RerankConfig.k1")
    parser.add_argument("--k2", type=int, default=6, help="RerankConfig.k2")
    parser.add_argument("--lam", type=float, default=0.3, help="RerankConfig.lambda_value")
    parser.add_argument("--child", choices=["baseline", "plain", "prepare", "rerank"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_sizes(parser, args.sizes)
    if args.child:
        print(json.dumps(child(args.child, args.sizes[0], args.seed, args.k1, args.k2, args.lam)))
        return 0
    print(f"threads: torch {torch.get_num_threads()}, cpus {os.cpu_count()}; k1 {args.k1}, k2 {args.k2}, "
          f"lambda {args.lam}\n")
    lines = ["| case | Q x G (ids) | plain s | plain peak RSS MB | prepare s | re-ranked s (incl. prepare) | "
             "re-ranked peak RSS MB | baseline RSS MB | R1 plain / re-ranked | mAP plain / re-ranked |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for size in args.sizes:
        name, q, g, p = parse_size(size)
        base, plain, prepare, rerank = (run_case(method, args, size)
                                        for method in ("baseline", "plain", "prepare", "rerank"))
        before, after = plain["metrics"], rerank["metrics"]
        lines.append(f"| {name} | {q:,} x {g:,} ({p:,}) | {plain['seconds']:.2f} | {plain['peak_rss_mb']:,.0f} | "
                     f"{prepare['seconds']:.2f} | {rerank['seconds']:.2f} | {rerank['peak_rss_mb']:,.0f} | "
                     f"{base['peak_rss_mb']:,.0f} | {before['R1']:.2f} / {after['R1']:.2f} | "
                     f"{before['mAP']:.2f} / {after['mAP']:.2f} |")
        print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
