"""Nearest-neighbour backends over an index's embeddings: faiss exact search, IVF for large galleries, and a
Milvus collection (`cpcl.index.milvus`, where the vectors live outside the folder).

Embeddings are L2-normalised, so inner product is cosine similarity: scores lie in [-1, 1]. A
backend answers `search(queries [Q, D], k, allowed)` with (scores [Q, k], ids [Q, k]) in
descending score order; a slot without a result (fewer than k allowed rows) has id -1 and score
-inf. `allowed` ([N] bool, or None for all) restricts the search to rows that pass a metadata
filter, inside faiss (an ID selector): the best passing rows come back (IVF: among the lists it
visits), not a top-k filtered afterwards. Milvus filters by `filters` (`cpcl.index.search.Filters`, the same
rows) inside the collection; the faiss backends need only the mask. `close` releases what a backend holds
open (Milvus: its connection; faiss: nothing).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import faiss
import numpy as np

from cpcl.index.config import IndexConfig
from cpcl.index.milvus import MilvusBackend
from cpcl.utils.errors import ConfigError
from cpcl.utils.files import atomic_write

if TYPE_CHECKING:
    from cpcl.index.search import Filters

log = logging.getLogger(__name__)


class Backend(Protocol):
    """What a search backend offers (see the module docstring)."""

    name: str
    max_rows: int | None  # the most rows one search returns (Milvus: 16,384); None: every row

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, filters: Filters | None = None
               ) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, path: Path) -> None: ...

    def close(self) -> None: ...

    @classmethod
    def open(cls, embeddings: np.ndarray | None, config: IndexConfig, saved: Path | None = None) -> Backend: ...


def _selector(allowed: np.ndarray | None) -> faiss.IDSelector | None:
    """A faiss bitmap selector of the rows where `allowed` [N] is True (None: every row)."""
    if allowed is None:
        return None
    bits = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")  # faiss reads bit i of byte i // 8
    selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
    selector.referenced_bits = bits  # the selector points into `bits`: keep it alive as long as it is
    return selector


def _normalise_empty(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """faiss marks missing results with id -1 and a score of -FLT_MAX; make the score -inf."""
    scores = scores.copy()
    scores[ids < 0] = -np.inf
    return scores, ids


class ExactBackend:
    """Brute-force inner product over every row (faiss IndexFlatIP): exact top-k."""

    name = "exact"
    max_rows = None

    def __init__(self, embeddings: np.ndarray, config: IndexConfig):
        self.index = faiss.IndexFlatIP(embeddings.shape[1])
        self.index.add(np.ascontiguousarray(embeddings, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, filters: Filters | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """queries [Q, D] float32 -> (scores [Q, k], ids [Q, k]), exact, best first."""
        selector = _selector(allowed)  # held here: faiss keeps only a pointer to it
        params = faiss.SearchParameters(sel=selector) if selector is not None else None
        return _normalise_empty(*self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k,
                                                   params=params))

    @classmethod
    def open(cls, embeddings: np.ndarray, config: IndexConfig, saved: Path | None = None) -> ExactBackend:
        """Build over `embeddings` [N, D]; there is nothing saved to reuse (adding rows is a copy)."""
        return cls(embeddings, config)

    def save(self, path: Path) -> None:
        """Nothing to save: the flat index is rebuilt from the embeddings in a moment."""

    def close(self) -> None:
        """Nothing to release: the index is memory, freed with the object."""


class IVFBackend:
    """Inverted lists over k-means cells (faiss IndexIVFFlat, inner product): visits `nprobe` lists a query."""

    name = "ivf"
    max_rows = None

    def __init__(self, embeddings: np.ndarray, config: IndexConfig, index: faiss.Index | None = None):
        self.config = config
        self.index = index if index is not None else self._train(embeddings, config)
        self.index.nprobe = min(config.nprobe, self.index.nlist)

    @staticmethod
    def _train(embeddings: np.ndarray, config: IndexConfig) -> faiss.Index:
        """Train the k-means quantizer on a sample of `embeddings` [N, D], then add every row."""
        n, dim = embeddings.shape
        nlist = max(1, min(config.nlist, n // config.min_per_list))
        rng = np.random.default_rng(config.seed)
        sample_size = min(n, nlist * config.train_per_list)
        sample = embeddings[np.sort(rng.choice(n, sample_size, replace=False))] if sample_size < n else embeddings
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = config.seed
        index.cp.niter = config.kmeans_iterations
        log.info("training IVF: %d lists on %d of %d vectors", nlist, sample_size, n)
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
        return index

    @classmethod
    def open(cls, embeddings: np.ndarray, config: IndexConfig, saved: Path | None = None) -> IVFBackend:
        """The index saved at `saved` when it holds exactly the rows of `embeddings` [N, D], else a new one."""
        if saved is not None and saved.is_file():
            index = faiss.read_index(str(saved))
            if index.ntotal == len(embeddings) and index.d == embeddings.shape[1]:
                return cls(embeddings, config, index=index)
            log.info("saved IVF index %s holds %d rows, the gallery %d: training a new one", saved,
                     index.ntotal, len(embeddings))
        return cls(embeddings, config)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, filters: Filters | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """queries [Q, D] float32 -> (scores [Q, k], ids [Q, k]), approximate, best first."""
        selector = _selector(allowed)  # held here: faiss keeps only a pointer to it
        params = faiss.SearchParametersIVF(nprobe=self.index.nprobe, sel=selector)
        return _normalise_empty(*self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k,
                                                   params=params))

    def save(self, path: Path) -> None:
        """Write the trained index to `path` (temporary file, then rename)."""
        atomic_write(path, lambda stream: faiss.write_index(self.index, faiss.PyCallbackIOWriter(stream.write)))

    def close(self) -> None:
        """Nothing to release: the index is memory, freed with the object."""


INDEX_BACKENDS: dict[str, type] = {"exact": ExactBackend, "ivf": IVFBackend, "milvus": MilvusBackend}


def backend_name(count: int, config: IndexConfig) -> str:
    """'milvus' for a Milvus index; else 'ivf' for galleries of at least `config.ivf_threshold` rows, 'exact' below."""
    if config.backend == "milvus":
        return "milvus"
    return "ivf" if count >= config.ivf_threshold else "exact"


def make_backend(name: str, embeddings: np.ndarray | None, config: IndexConfig, saved: Path | None = None
                 ) -> Backend:
    """The backend `name` over `embeddings` [N, D] (Milvus: None, the collection holds them), reusing what is saved
    at `saved` where it matches."""
    if name not in INDEX_BACKENDS:
        raise ConfigError(f"unknown index backend '{name}'; valid: {', '.join(sorted(INDEX_BACKENDS))}")
    return INDEX_BACKENDS[name].open(embeddings, config, saved)
