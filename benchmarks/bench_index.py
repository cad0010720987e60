"""Benchmark the search index (cpcl.index.backends) on a large gallery: IVF against exact search.

    PYTHONPATH=src python benchmarks/bench_index.py                       # 1M x 512, IVF4096, nprobe 32
    PYTHONPATH=src python benchmarks/bench_index.py --n 100000 --nlist 1024 --nprobe 8 16  # smaller
    PYTHONPATH=src python benchmarks/bench_index.py --nprobe 32 --milvus FLAT IVF_FLAT  # beside Milvus Lite

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
package defaults (k-means on `train_per_list` vectors a list) unless options say otherwise. With `--milvus`,
the gallery also goes, for each index type named, into a Milvus collection through cpcl's `milvus` backend
(`MilvusBackend.put`, `--shard-size` rows a call, as `cpcl index build` writes a shard; then a flush, and the
collection released and loaded again, so its index is built) at `--milvus-uri` (default: a Milvus Lite file
in a temporary folder), and is searched by that backend.

Latency per query: batched = the time of a batch of `--batch` queries / its size, over the batches;
single = one query per call, over calls (`--exact-single` calls for exact and Milvus FLAT); p50 and p99
by nearest rank (over 4 batches p99 is the slowest). faiss uses every core it finds (2 on this project's
machine). recall@k = |top-k ∩ exact top-k| / |exact top-k|, averaged over the queries. Every gallery row also has
a camera (one of 100) and a time (uniform over one day); the filtered query keeps one camera and one hour (about 1 row
in 2,400), each backend its own way (faiss: an ID selector over the rows that pass; Milvus: its boolean
expression), its recall against exact search over the same rows. Build: faiss's training and adding, Milvus's
upserts, flush and load; ingest = rows / build. Memory: faiss, this process's RSS growth while building;
Milvus Lite, its server process's RSS once loaded ("-" for a server elsewhere). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from cpcl.index.backends import ExactBackend, IVFBackend
from cpcl.index.config import MILVUS_INDEXES, IndexConfig
from cpcl.index.milvus import MilvusBackend, is_lite
from cpcl.index.search import Filters
from cpcl.index.store import Manifest

LATENT = 64  # intrinsic dimension of the synthetic embeddings
PER_PERSON = 50  # gallery rows per person
GROUP = 20  # persons per look-alike group
CAMERAS, DAY = 100, 86_400.0  # the gallery's cameras, and the span of its times (seconds)
FILTER = Filters(cameras=("cam07",), time_from=12 * 3600.0, time_to=13 * 3600.0)  # one camera, one hour


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


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank p-th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def batched_ms(search, queries: np.ndarray, k: int, batch: int, **where) -> tuple[float, float, np.ndarray]:
    """(p50, p99) over batches of (batch seconds / batch size), in ms, and the ids found [Q, k]. One request a
    batch: a request of every query would outlast a Milvus request's timeout on exact search."""
    per_query, found = [], []
    for start in range(0, len(queries), batch):
        chunk = queries[start:start + batch]
        began = time.perf_counter()
        found.append(search(chunk, k, **where)[1])
        per_query.append(1000 * (time.perf_counter() - began) / len(chunk))
    return percentile(per_query, 50), percentile(per_query, 99), np.concatenate(found)


def single_ms(search, queries: np.ndarray, k: int) -> tuple[float, float]:
    """(p50, p99) over one-query calls, in ms."""
    times = []
    for row in queries:
        began = time.perf_counter()
        search(row[None], k)
        times.append(1000 * (time.perf_counter() - began))
    return percentile(times, 50), percentile(times, 99)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of |found_i ∩ truth_i| / |truth_i| (slots without a result, id -1, never count; a filter
    passing fewer than k rows leaves fewer in truth_i)."""
    return float(np.mean([len(np.intersect1d(f[f >= 0], t[t >= 0])) / max(1, int((t >= 0).sum()))
                          for f, t in zip(found, truth)]))


def rss_gib(pid: int | str = "self") -> float:
    """Resident memory of a process, GiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return math.nan


def children() -> list[int]:
    """This process's child processes (Milvus Lite's server is one)."""
    own = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == own:
                found.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue
    return found


@dataclass
class Case:
    """What every backend is measured on."""

    queries: np.ndarray  # [Q, D]
    truth: np.ndarray  # [Q, k]: exact top-k
    allowed: np.ndarray  # [N] bool: the rows FILTER passes
    filtered_truth: np.ndarray  # [Q, k]: exact top-k among them
    args: argparse.Namespace


@dataclass
class Built:
    """An index as built, before it is searched."""

    name: str  # the table's index column
    seconds: float  # time to build it (Milvus: to upsert every row, flush and load)
    memory: float | None  # GiB it holds (None: not measured)


def measure(case: Case, built: Built, probe: str, search, singles: int) -> str:
    """One table row: `search(queries, k, allowed=, filters=)` timed at `probe` (its nprobe, "-" for none), its
    recall with and without the filter."""
    args, k = case.args, case.args.k
    name, build, memory = built.name, built.seconds, built.memory
    *batched, found = batched_ms(search, case.queries, k, args.batch)
    single = single_ms(search, case.queries[:singles], k)
    *filtered, filtered_found = batched_ms(search, case.queries, k, args.batch, allowed=case.allowed, filters=FILTER)
    memory_text = f"{memory:.2f}" if memory is not None else "-"
    row = (f"| {name} | {probe} | {build:.1f} | {args.n / build:,.0f} | {batched[0]:.3f} / {batched[1]:.3f} | "
           f"{single[0]:.3f} / {single[1]:.3f} | {recall(found, case.truth):.4f} | {memory_text} | "
           f"{filtered[0]:.3f} | {recall(filtered_found, case.filtered_truth):.4f} |")
    print(row, flush=True)
    return row


def faiss_rows(case: Case, gallery: np.ndarray) -> list[str]:
    """Exact search, then IVF at each `--nprobe`."""
    args = case.args
    began = time.perf_counter()
    exact = ExactBackend(gallery, IndexConfig())
    rows = [measure(case, Built("exact (IndexFlatIP)", time.perf_counter() - began, None), "-", exact.search,
                    args.exact_single)]
    del exact
    config = IndexConfig(nlist=args.nlist, train_per_list=args.train_per_list, ivf_threshold=1)
    before, began = rss_gib(), time.perf_counter()
    ivf = IVFBackend(gallery, config)
    built = Built(f"faiss IVF{ivf.index.nlist},Flat", time.perf_counter() - began, rss_gib() - before)
    for nprobe in args.nprobe:
        ivf.index.nprobe = nprobe
        rows.append(measure(case, built, str(nprobe), ivf.search, args.queries))
    return rows


def milvus_rows(case: Case, gallery: np.ndarray, records: list[dict]) -> list[str]:
    """Each `--milvus` index type: the gallery upserted through cpcl's backend, then searched at each nprobe."""
    args, rows = case.args, []
    for index in args.milvus:
        config = IndexConfig(backend="milvus", milvus_uri=args.milvus_uri, milvus_collection=f"bench_{index.lower()}",
                             milvus_index=index, nlist=args.nlist)
        with MilvusBackend.open(None, config) as collection:
            seconds = _milvus_build(collection, gallery, records, args.shard_size)
            lite = is_lite(args.milvus_uri)
            built = Built(f"Milvus Lite {index}" if lite else f"Milvus {index}", seconds,
                          sum(rss_gib(pid) for pid in children()) if lite else None)
            for nprobe in args.nprobe if index.startswith("IVF") else ["-"]:
                if nprobe != "-":  # the one connection, searching with this nprobe
                    collection.config = replace(config, nprobe=int(nprobe))
                rows.append(measure(case, built, str(nprobe), collection.search,
                                    args.exact_single if index == "FLAT" else args.queries))
            collection.client.release_collection(config.milvus_collection)
    return rows


def _milvus_build(collection: MilvusBackend, gallery: np.ndarray, records: list[dict], shard_size: int) -> float:
    """Seconds to make the collection anew and upsert `gallery` [N, D] with its records, `shard_size` rows a call
    (then flushed and loaded)."""
    name = collection.config.milvus_collection
    collection.client.drop_collection(name)
    collection.create(Manifest("bench", "0" * 64, {}, {}, "/", settings=asdict(collection.config),
                               dim=gallery.shape[1]))
    began = time.perf_counter()
    for start in range(0, len(gallery), shard_size):
        stop = min(len(gallery), start + shard_size)
        collection.put(start, gallery[start:stop], records[start:stop])
    collection.flush()
    collection.client.release_collection(name)
    collection.client.load_collection(name)
    return time.perf_counter() - began


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
    parser.add_argument("--milvus", nargs="+", default=[], choices=MILVUS_INDEXES,
                        help="also measure Milvus with these index types")
    parser.add_argument("--milvus-uri", help="Milvus Lite file or server (default: a temporary Milvus Lite file)")
    parser.add_argument("--shard-size", type=int, default=IndexConfig.shard_size, help="Milvus: rows a write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    began = time.perf_counter()
    gen = Generator(args.n, args.dim, args.seed)
    if args.data == "gaussian":
        gallery, queries = gen.gaussian(args.n), gen.gaussian(args.queries)
    else:
        gallery, queries = gen.gallery(args.n), gen.queries(args.queries)
    rng = np.random.default_rng(args.seed + 1)
    cameras, times = rng.integers(0, CAMERAS, args.n), rng.uniform(0, DAY, args.n)
    allowed = (cameras == 7) & (times >= FILTER.time_from) & (times <= FILTER.time_to)
    print(f"{args.data} gallery {args.n:,} x {args.dim} made in {time.perf_counter() - began:.1f} s "
          f"({int(allowed.sum())} rows pass the filter); faiss {faiss.__version__}, {faiss.omp_get_max_threads()} "
          f"threads; load average {os.getloadavg()[0]:.1f}", flush=True)
    exact = ExactBackend(gallery, IndexConfig())
    case = Case(queries, exact.search(queries, args.k)[1], allowed, exact.search(queries, args.k, allowed)[1], args)
    del exact
    header = (f"| index | nprobe | build s | ingest rows/s | ms/query batched ({args.batch}) p50 / p99 | ms/query "
              f"single p50 / p99 | recall@{args.k} | memory GiB | filtered ms/query batched | filtered "
              f"recall@{args.k} |\n|---|---|---|---|---|---|---|---|---|---|")
    print(header, flush=True)
    rows = faiss_rows(case, gallery)
    if args.milvus:
        records = [{"path": str(i), "camera": f"cam{c:02d}", "time": float(t)} for i, (c, t) in
                   enumerate(zip(cameras.tolist(), times.tolist()))]
        with tempfile.TemporaryDirectory() as folder:
            args.milvus_uri = args.milvus_uri or str(Path(folder) / "bench.db")
            rows += milvus_rows(case, gallery, records)
    print(f"\n{args.n:,} x {args.dim} {args.data} gallery, {args.queries} queries, k={args.k}; load average "
          f"{os.getloadavg()[0]:.1f}\n\n{header}\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
