"""Benchmark the search index (cpcl.index.backends) on a large gallery: IVF against exact search.

    PYTHONPATH=src python benchmarks/bench_index.py                       # 1M x 512, IVF4096, nprobe 32
    PYTHONPATH=src python benchmarks/bench_index.py --n 100000 --nlist 1024 --nprobe 8 16  # smaller

The gallery is synthetic and clustered the way trained person-search embeddings are, not
uniform on the sphere (where no IVF has good recall and nothing real lives): every row is
normalise(0.7 mu + p + 0.6 v + 0.3 e), with mu a direction shared by all (CLIP embeddings are
far from centred), p a per-person vector (about 50 crops a person; persons come in look-alike
groups of 20 sharing part of p), v a per-image vector (pose, background), and p, v drawn in a
64-d latent space mapped linearly to `--dim` (embeddings have a low intrinsic dimension), plus
e, isotropic noise. Queries are new rows of random persons with their own shared direction in
place of mu (CLIP's modality gap: text embeddings sit apart from image ones) and a larger
per-image part (a sentence matches a person, not one crop). Each part is unit-norm before
weighting. `--data gaussian` draws gallery and queries uniform on the sphere instead.

Exact search is faiss IndexFlatIP (cpcl's `exact` backend); IVF is cpcl's `ivf` backend with the
package defaults (k-means on `train_per_list` vectors a list) unless options say otherwise.
Latency per query: batched = the time of a batch of `--batch` queries / its size, median over
batches; single = one query per call, median over calls. faiss uses every core it finds (2 on
this project's machine). recall@k = |IVF top-k ∩ exact top-k| / k, averaged over the queries.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import faiss
import numpy as np

from cpcl.index.backends import ExactBackend, IVFBackend
from cpcl.index.config import IndexConfig

LATENT = 64  # intrinsic dimension of the synthetic embeddings
PER_PERSON = 50  # gallery rows per person
GROUP = 20  # persons per look-alike group


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class Generator:
    """Rows of the clustered synthetic gallery (see the module docstring), made in chunks."""

    def __init__(self, n: int, dim: int, seed: int):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.persons = max(1, n // PER_PERSON)
        self.mix = rng.standard_normal((LATENT, dim), dtype=np.float32) / np.sqrt(LATENT)
        self.mu = _unit(rng.standard_normal((1, dim), dtype=np.float32))  # shared by gallery rows
        self.mu_query = _unit(rng.standard_normal((1, dim), dtype=np.float32))  # shared by queries
        groups = rng.standard_normal((self.persons // GROUP + 1, LATENT), dtype=np.float32)
        own = rng.standard_normal((self.persons, LATENT), dtype=np.float32)
        self.person_latent = groups[np.arange(self.persons) // GROUP] + 0.8 * own

    def rows(self, persons: np.ndarray, shared: np.ndarray, image_weight: float) -> np.ndarray:
        """[len(persons), dim] unit rows for the given person ids."""
        m, dim = len(persons), self.mix.shape[1]
        p = _unit(self.person_latent[persons] @ self.mix)
        v = _unit(self.rng.standard_normal((m, LATENT), dtype=np.float32) @ self.mix)
        e = _unit(self.rng.standard_normal((m, dim), dtype=np.float32))
        return _unit(0.7 * shared + p + image_weight * v + 0.3 * e)

    def gaussian(self, m: int) -> np.ndarray:
        """[m, dim] unit rows uniform on the sphere: no structure at all (the worst case for IVF)."""
        return _unit(self.rng.standard_normal((m, self.mix.shape[1]), dtype=np.float32))

    def gallery(self, n: int, chunk: int = 100_000) -> np.ndarray:
        out = np.empty((n, self.mix.shape[1]), dtype=np.float32)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            out[start:stop] = self.rows(np.arange(start, stop) % self.persons, self.mu, 0.6)
        return out

    def queries(self, q: int) -> np.ndarray:
        return self.rows(self.rng.integers(0, self.persons, q), self.mu_query, 0.9)


def batched_ms(search, queries: np.ndarray, k: int, batch: int) -> float:
    """Median over batches of (batch seconds / batch size), in ms."""
    per_query = []
    for start in range(0, len(queries), batch):
        chunk = queries[start:start + batch]
        began = time.perf_counter()
        search(chunk, k)
        per_query.append((time.perf_counter() - began) / len(chunk))
    return 1000 * statistics.median(per_query)


def single_ms(search, queries: np.ndarray, k: int) -> float:
    """Median over one-query calls, in ms."""
    times = []
    for row in queries:
        began = time.perf_counter()
        search(row[None], k)
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of |found_i ∩ truth_i| / k."""
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery rows")
    parser.add_argument("--dim", type=int, default=512, help="embedding size")
    parser.add_argument("--queries", type=int, default=1024, help="queries (batched and IVF single)")
    parser.add_argument("--exact-single", type=int, default=20, help="single queries timed on exact search")
    parser.add_argument("--batch", type=int, default=256, help="queries per batched call")
    parser.add_argument("--k", type=int, default=10, help="results per query")
    parser.add_argument("--nlist", type=int, default=IndexConfig.nlist, help="IVF lists")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[IndexConfig.nprobe], help="IVF nprobe values")
    parser.add_argument("--train-per-list", type=int, default=IndexConfig.train_per_list,
                        help="IVF k-means sample per list")
    parser.add_argument("--data", choices=["clustered", "gaussian"], default="clustered",
                        help="clustered (like embeddings, see above) or gaussian (uniform on the sphere)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    began = time.perf_counter()
    gen = Generator(args.n, args.dim, args.seed)
    if args.data == "gaussian":
        gallery, queries = gen.gaussian(args.n), gen.gaussian(args.queries)
    else:
        gallery, queries = gen.gallery(args.n), gen.queries(args.queries)
    print(f"{args.data} gallery {args.n:,} x {args.dim} made in {time.perf_counter() - began:.1f} s; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads", flush=True)

    began = time.perf_counter()
    exact = ExactBackend(gallery, IndexConfig())
    exact_build = time.perf_counter() - began
    truth = exact.search(queries, args.k)[1]
    rows = [("exact (IndexFlatIP)", "-", exact_build, batched_ms(exact.search, queries, args.k, args.batch),
             single_ms(exact.search, queries[:args.exact_single], args.k), 1.0)]
    print(f"exact done in {time.perf_counter() - began:.1f} s", flush=True)

    config = IndexConfig(nlist=args.nlist, train_per_list=args.train_per_list, ivf_threshold=1)
    began = time.perf_counter()
    ivf = IVFBackend(gallery, config)
    ivf_build = time.perf_counter() - began
    print(f"IVF{ivf.index.nlist} trained and filled in {ivf_build:.1f} s", flush=True)
    for nprobe in args.nprobe:
        ivf.index.nprobe = nprobe
        found = ivf.search(queries, args.k)[1]
        rows.append((f"IVF{ivf.index.nlist},Flat", str(nprobe), ivf_build,
                     batched_ms(ivf.search, queries, args.k, args.batch), single_ms(ivf.search, queries, args.k),
                     recall(found, truth)))

    print(f"\n{args.n:,} x {args.dim} {args.data} gallery, {args.queries} queries, k={args.k}\n")
    print(f"| index | nprobe | build s | ms/query, batched ({args.batch}) | ms/query, single "
          f"| recall@{args.k} vs exact |")
    print("|---|---|---|---|---|---|")
    for name, nprobe, build, batched, single, rec in rows:
        print(f"| {name} | {nprobe} | {build:.1f} | {batched:.3f} | {single:.3f} | {rec:.4f} |")


if __name__ == "__main__":
    main()
