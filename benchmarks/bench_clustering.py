"""Benchmark the clustering phase: sparse Jaccard + DBSCAN (cpcl.clustering) with each exact kNN
engine (torch "flat", faiss "faiss_flat", and "auto", the default: whichever a probe on a sample
measures faster, here probed afresh in every run), against a dense N x N reference written the way public
re-ranking code is (dense float32 distance, V, V_qe and Jaccard matrices; loops over rows; an
inverted index for the min-sums), in the configured convention (default cluster_contrast).

    PYTHONPATH=src python benchmarks/bench_clustering.py
    PYTHONPATH=src python benchmarks/bench_clustering.py --compare 5000 --fast 34000 --repeats 1

Every case runs in a fresh subprocess, so its peak RSS (getrusage of that child) is its own;
"baseline" is a child that only imports the libraries and builds the features. Times are wall
clock of the clustering call alone (features excluded), median over --repeats runs, the engines
and the dense reference interleaved so that they see the same machine load. Prints markdown
tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_features(n: int, dim: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[n, dim] float32 unit vectors with person-like structure, and true ids [n] (< 0: singleton).

    x = normalise(0.8 mu + 0.5 s_g + c_k + 0.9 e): mu shared by all (CLIP features are far from
    isotropic), s_g shared by a group of 20 identities (confusable look-alikes), c_k per identity
    (2-10 points each), e per point. 15% of the points are singletons with their own c. Built in
    row chunks so that the features themselves are the only large allocation.
    """
    rng = np.random.default_rng(seed)

    def unit(m: int) -> np.ndarray:
        v = rng.standard_normal((m, dim), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    sizes = rng.integers(2, 11, size=n)
    sizes = sizes[np.cumsum(sizes) <= n - int(0.15 * n)]
    n_ident = sizes.size
    ids = np.concatenate([np.repeat(np.arange(n_ident), sizes), -1 - np.arange(n - sizes.sum())])
    n_groups = n_ident // 20 + 1
    group = np.where(ids >= 0, ids // 20, rng.integers(0, n_groups, n))
    centre = np.where(ids >= 0, ids, n_ident - 1 - ids)  # singletons get centres past the ids
    mu, groups, centres = unit(1), unit(n_groups), unit(n_ident + n - sizes.sum())
    order = rng.permutation(n)
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 8192):
        rows = order[s : s + 8192]
        part = 0.8 * mu + 0.5 * groups[group[rows]] + centres[centre[rows]] + 0.9 * unit(rows.size)
        x[s : s + 8192] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return x, ids[order]


def _k_reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[np.nonzero(backward == i)[0]]


def dense_reference(x: np.ndarray, k1: int, k2: int, eps: float, min_samples: int,
                    convention: str) -> np.ndarray:
    """Labels from dense N x N float32 matrices, as public k-reciprocal re-ranking code does.

    convention "cluster_contrast": the neighbour lists hold k1 points, self included (its kNN
    search returns k1); "zhong": a full ranking (k1 + 1 and k2 are all that is read)."""
    import torch
    from sklearn.cluster import DBSCAN

    n = len(x)
    xt = torch.from_numpy(x)
    dist = torch.mm(xt, xt.t())  # [N, N] similarity, turned into distance in place below
    width = k1 if convention == "cluster_contrast" else max(k1 + 1, k2)
    rank = torch.topk(dist, min(n, width), dim=1).indices.numpy()
    dist = dist.mul_(-2.0).add_(2.0).numpy()
    not_first = np.flatnonzero(rank[:, 0] != np.arange(n))  # self first (exact ties only)
    for i in not_first:
        rest = rank[i][rank[i] != i]
        rank[i] = np.concatenate([[i], rest])[: rank.shape[1]]
    v = np.zeros((n, n), np.float32)
    for i in range(n):
        rec = _k_reciprocal(rank, i, k1)
        grown = rec
        for c in rec:
            cand = _k_reciprocal(rank, c, int(round(k1 / 2)))
            if len(np.intersect1d(cand, rec, assume_unique=True)) > 2 / 3 * len(cand):
                grown = np.append(grown, cand)
        grown = np.unique(grown)
        w = np.exp(-dist[i, grown])
        v[i, grown] = w / w.sum()
    del dist
    if k2 > 1:
        vq = np.empty_like(v)
        for s in range(0, n, 256):
            vq[s : s + 256] = v[rank[s : s + 256, :k2]].mean(axis=1)
        v = vq
        del vq
    rows, cols = np.nonzero(v)
    by_col = np.argsort(cols, kind="stable")
    inv_index = np.split(rows[by_col], np.cumsum(np.bincount(cols, minlength=n))[:-1])
    jac = np.zeros((n, n), np.float32)
    for i in range(n):
        acc = np.zeros(n, np.float32)
        for j in np.flatnonzero(v[i]):
            acc[inv_index[j]] += np.minimum(v[i, j], v[inv_index[j], j])
        jac[i] = 1.0 - acc / (2.0 - acc)
    del v
    np.maximum(jac, 0.0, out=jac)
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(jac)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


ENGINES = ("flat", "faiss_flat")  # exact kNN backends compared: torch, faiss IndexFlatIP
ENGINE_NAMES = {"flat": "torch", "faiss_flat": "faiss", "auto": "auto"}


def probed_clustering(x: np.ndarray) -> tuple[object, float, str]:
    """cluster_features with knn_backend "auto" and an empty probe cache: (result, probe seconds,
    the engine picked). The probe inside it is timed apart (its seconds are also in the result's kNN
    seconds: at most knn_probe_points points, the probe's search is the kNN search)."""
    from cpcl.clustering import ClusterConfig, JaccardOptions, cluster_features
    from cpcl.clustering import knn, probe

    cfg = ClusterConfig(search=JaccardOptions(knn_device="cpu"))
    timed = {}

    def fastest_engine(*args):
        start = time.perf_counter()
        choice = probe.fastest_engine(*args)
        timed["seconds"], timed["engine"] = time.perf_counter() - start, choice.engine
        return choice

    knn.fastest_engine = fastest_engine  # this process runs one case
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CPCL_CACHE"] = cache
        result = cluster_features(x, cfg)
    return result, timed["seconds"], timed["engine"]


def child(method: str, n: int, seed: int, labels_out: Path) -> dict:
    """One case in this (fresh) process; returns times, peak RSS and cluster counts."""
    from cpcl.clustering import ClusterConfig, JaccardOptions, cluster_features, relabel_consecutive

    cfg = ClusterConfig()
    x, _ = make_features(n, seed=seed)
    out: dict = {"method": method, "n": n}
    if method in ENGINES:
        res = cluster_features(x, ClusterConfig(search=JaccardOptions(knn_backend=method, knn_device="cpu")))
        labels, out["seconds"], out["n_pairs"] = res.labels, res.seconds, res.n_pairs
    elif method == "auto":
        res, probe_seconds, out["picked"] = probed_clustering(x)
        labels, out["n_pairs"] = res.labels, res.n_pairs
        out["seconds"] = {**res.seconds, "probe": probe_seconds, "knn": res.seconds["knn"] - probe_seconds}
    elif method == "dense":
        start = time.perf_counter()
        dense = dense_reference(x, cfg.k1, cfg.k2, cfg.eps, cfg.min_samples, cfg.convention)
        labels = relabel_consecutive(dense)
        out["seconds"] = {"total": time.perf_counter() - start}
    else:
        labels = np.full(n, -1, np.int64)
        out["seconds"] = {"total": 0.0}
    np.save(labels_out, labels)
    out.update(peak_rss_mb=_peak_rss_mb(), clusters=int(labels.max()) + 1,
               outliers=int((labels < 0).sum()))
    return out


def run_case(method: str, n: int, seed: int) -> tuple[dict, np.ndarray]:
    """Run `child` in a subprocess and return its record and labels."""
    with tempfile.TemporaryDirectory() as tmp:
        labels_path = Path(tmp) / "labels.npy"
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--n", str(n),
               "--seed", str(seed), "--labels-out", str(labels_path)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        return record, np.load(labels_path)


def compare_table(sizes: list[int], seed: int, repeats: int) -> list[str]:
    from sklearn.metrics import adjusted_rand_score

    lines = ["| N | torch s | faiss s | dense s | faiss / torch | dense / torch | torch peak RSS MB | "
             "faiss peak RSS MB | dense peak RSS MB | baseline RSS MB | labels identical (ARI vs dense) | "
             "clusters / outliers |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        base, _ = run_case("baseline", n, seed)
        runs: dict[str, list] = {m: [] for m in (*ENGINES, "dense")}
        for _ in range(repeats):  # interleaved, so all see the same machine load
            for method in runs:
                runs[method].append(run_case(method, n, seed))
        t = {m: float(np.median([r["seconds"]["total"] for r, _ in rs])) for m, rs in runs.items()}
        rss = {m: max(r["peak_rss_mb"] for r, _ in rs) for m, rs in runs.items()}
        labels = {m: rs[0][1] for m, rs in runs.items()}
        same = all(np.array_equal(labels[m], labels["dense"]) for m in ENGINES)
        ari = min(adjusted_rand_score(labels["dense"], labels[m]) for m in ENGINES)
        first = runs["flat"][0][0]
        lines.append(
            f"| {n:,} | {t['flat']:.2f} | {t['faiss_flat']:.2f} | {t['dense']:.2f} | "
            f"{t['faiss_flat'] / t['flat']:.2f}x | {t['dense'] / t['flat']:.1f}x | {rss['flat']:,.0f} | "
            f"{rss['faiss_flat']:,.0f} | {rss['dense']:,.0f} | {base['peak_rss_mb']:,.0f} | "
            f"{'yes' if same else 'NO'} ({ari:.6f}) | {first['clusters']:,} / {first['outliers']:,} |"
        )
    return lines


def fast_table(sizes: list[int], seed: int, repeats: int) -> list[str]:
    lines = ["| N | engine | probe s | kNN s | sparse Jaccard s | DBSCAN s | total s | peak RSS MB | "
             "baseline RSS MB | pairs J<=eps | clusters / outliers | labels = torch's |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        base, _ = run_case("baseline", n, seed)
        recs = {}
        for _ in range(repeats):  # interleaved, so the engines see the same machine load
            for method in (*ENGINES, "auto"):
                recs.setdefault(method, []).append(run_case(method, n, seed))
        for method in (*ENGINES, "auto"):
            runs = recs[method]
            rec, labels = runs[0]
            s = {key: float(np.median([r["seconds"][key] for r, _ in runs])) for key in rec["seconds"]}
            same = np.array_equal(labels, recs["flat"][0][1])
            name = ENGINE_NAMES[method]
            if method == "auto":
                name += " (picked " + ", ".join(sorted({ENGINE_NAMES[r["picked"]] for r, _ in runs})) + ")"
            probe = f"{s['probe']:.2f}" if "probe" in s else "-"
            lines.append(
                f"| {n:,} | {name} | {probe} | {s['knn']:.2f} | {s['jaccard']:.2f} | {s['dbscan']:.2f} | "
                f"{s['total']:.2f} | {max(r['peak_rss_mb'] for r, _ in runs):,.0f} | "
                f"{base['peak_rss_mb']:,.0f} | {rec['n_pairs']:,} | {rec['clusters']:,} / {rec['outliers']:,} | "
                f"{'yes' if same else 'NO'} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=int, nargs="*", default=[5000, 20000],
                        help="sizes run with both kNN engines and the dense reference")
    parser.add_argument("--fast", type=int, nargs="*", default=[34000, 68000],
                        help="sizes run with both kNN engines only, time split by stage")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=[*ENGINES, "auto", "dense", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.n, args.seed, args.labels_out)))
        return 0
    import faiss
    import torch

    print(f"threads: torch {torch.get_num_threads()}, faiss/OpenMP {faiss.omp_get_max_threads()}, "
          f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start; "
          f"repeats {args.repeats} (median time, max RSS)\n")
    if args.compare:
        print("\n".join(compare_table(args.compare, args.seed, args.repeats)) + "\n")
    if args.fast:
        print("\n".join(fast_table(args.fast, args.seed, args.repeats)))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
