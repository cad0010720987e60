"""Feature validation and k-nearest-neighbour search for the clustering layer (METHOD.md step 2).

The neighbour lists follow one deterministic rule, shared with the slow reference in the tests:
row i starts with i itself, then the other points by cosine similarity descending, ties broken
by index ascending. faiss alone does not guarantee this at a tie on the k-th place (it keeps an
arbitrary member of a group of equal similarities), so rows whose last kept neighbour ties with
the last one faiss returned are searched again, deeper, until the tie group is complete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import torch

from cpcl.utils.errors import CpclError

if TYPE_CHECKING:
    from cpcl.clustering.jaccard import JaccardOptions

log = logging.getLogger(__name__)


class FeatureError(CpclError, ValueError):
    """Features handed to the clustering layer are not a finite, L2-normalised [N, D] array."""


def check_features(feats: Any, norm_tol: float) -> np.ndarray:
    """Validate features and return them as a C-contiguous float32 numpy array.

    feats: [N, D] numpy array or torch tensor, finite, every row with |norm - 1| <= norm_tol.
    Raises FeatureError naming what was wrong (shape, NaN/inf, which row is not normalised).
    """
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(feats)
    if arr.ndim != 2:
        raise FeatureError(f"features must be a 2-D [N, D] array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FeatureError(f"features must be non-empty [N, D] with N, D >= 1, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise FeatureError(f"features must be floating point, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise FeatureError(f"features contain NaN or inf (first at row {row})")
    norms = np.linalg.norm(arr, axis=1)
    bad = np.abs(norms - 1.0) > norm_tol
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FeatureError(
            f"features must be L2-normalised: row {row} has norm {norms[row]:.6f} "
            f"({int(bad.sum())} rows off by more than {norm_tol}); normalise before clustering"
        )
    return arr


def _build_flat(feats: np.ndarray, depth: int, opts: JaccardOptions) -> faiss.Index:
    """Exact inner-product index (faiss IndexFlatIP); searches use faiss's OpenMP thread count."""
    index = faiss.IndexFlatIP(feats.shape[1])
    index.add(feats)
    return index


def _build_hnsw(feats: np.ndarray, depth: int, opts: JaccardOptions) -> faiss.Index:
    """Approximate inner-product index: an HNSW graph (faiss IndexHNSWFlat), beam >= depth."""
    index = faiss.IndexHNSWFlat(feats.shape[1], opts.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = opts.hnsw_ef_construction
    index.add(feats)
    index.hnsw.efSearch = max(opts.hnsw_ef_search, depth)
    return index


# name -> (index builder(feats, search depth, options), exact?). Exact backends get the
# tie-completing re-search; approximate ones are used as they come.
KNN_BACKENDS: dict[str, tuple[Callable[[np.ndarray, int, Any], faiss.Index], bool]] = {
    "flat": (_build_flat, True),
    "hnsw": (_build_hnsw, False),
}


def _order_rows(
    rows: np.ndarray, sims: np.ndarray, ids: np.ndarray, self_sims: np.ndarray, keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Put each row in the house order and keep its first `keep` entries.

    rows: [m] query indices; sims, ids: [m, k] raw search results (id -1 = missing);
    self_sims: [m]. Returns sims, ids [m, keep]: ids[:, 0] = rows, then similarity descending,
    ties by index ascending; missing entries last (only possible for approximate backends).
    """
    m, k = ids.shape
    is_self = ids == rows[:, None]
    simple = is_self[:, 0] & (ids >= 0).all(axis=1)
    simple &= ~(sims[:, 2:] == sims[:, 1:-1]).any(axis=1)  # no ties after the self column
    out_sims = np.empty((m, keep), np.float32)
    out_ids = np.empty((m, keep), np.int64)
    out_sims[simple] = sims[simple, :keep]
    out_ids[simple] = ids[simple, :keep]
    hard = np.flatnonzero(~simple)
    if hard.size:
        h_ids = np.concatenate([rows[hard, None], np.where(is_self[hard], -1, ids[hard])], axis=1)
        key = np.concatenate([np.full((hard.size, 1), np.inf), sims[hard].astype(np.float64)], 1)
        key[h_ids < 0] = -np.inf
        big = np.where(h_ids < 0, np.iinfo(np.int64).max, h_ids)
        flat_rows = np.repeat(np.arange(hard.size), k + 1)
        order = np.lexsort((big.ravel(), -key.ravel(), flat_rows)).reshape(hard.size, k + 1)
        order = order[:, :keep] - (np.arange(hard.size) * (k + 1))[:, None]
        out_ids[hard] = np.take_along_axis(h_ids, order, 1)
        h_sims = np.concatenate([self_sims[hard, None], sims[hard]], axis=1)
        out_sims[hard] = np.take_along_axis(h_sims, order, 1)
    out_sims[:, 0] = self_sims
    return out_sims, out_ids


def nearest_neighbours(
    feats: np.ndarray, k: int, backend: str, opts: JaccardOptions
) -> tuple[np.ndarray, np.ndarray]:
    """The first min(k, N) entries of every point's ranking, in the house order.

    feats: [N, D] float32, L2-normalised (see `check_features`). Returns
    rank: [N, K] int64 with rank[:, 0] = arange(N), then neighbours by cosine similarity
    descending, ties by index ascending; sims: [N, K] float32, the matching similarities.
    With an exact backend the result is exact: a row whose K-th entry ties with the last result
    faiss returned is searched again with twice the depth until the tie group is complete.
    """
    if backend not in KNN_BACKENDS:
        raise CpclError(f"unknown knn backend {backend!r}; valid: {sorted(KNN_BACKENDS)}")
    build, exact = KNN_BACKENDS[backend]
    n = feats.shape[0]
    keep = min(k, n)
    depth = min(n, keep + 1)
    index = build(feats, depth, opts)
    self_sims = np.einsum("ij,ij->i", feats, feats)
    rank = np.empty((n, keep), np.int64)
    sims = np.empty((n, keep), np.float32)
    todo = np.arange(n)
    while todo.size:
        raw_sims, raw_ids = index.search(feats[todo], depth)
        s, i = _order_rows(todo, raw_sims, raw_ids.astype(np.int64), self_sims[todo], keep)
        rank[todo], sims[todo] = i, s
        if not exact or depth == n or keep == 1:
            break
        todo = todo[s[:, -1] <= raw_sims[:, -1]]  # k-th entry may tie with unseen points
        if todo.size:
            log.debug("re-searching %d rows with a tie at the k-th neighbour", todo.size)
        depth = min(n, 2 * depth)
    if (rank < 0).any():
        raise CpclError(
            f"knn backend {backend!r} found fewer than {keep} neighbours for some points; "
            "raise hnsw_ef_search or use knn_backend=flat"
        )
    return rank, sims
