"""Feature validation and k-nearest-neighbour search for the clustering layer (docs/method.md step 2).

The neighbour lists follow one deterministic rule, shared with the slow reference in the tests:
row i starts with i itself, then the other points by cosine similarity descending, ties broken
by index ascending. Two exact engines give these lists ("auto", the default, takes whichever a
probe measured faster on this machine and size: `cpcl.clustering.probe`):
  - "flat": torch, fp32, on the GPU when there is one. Tiles x_a x_b^T of the upper
    triangle of blocks are computed once each and serve the rows of block a and, transposed,
    those of block b, with a running top-k per row. Bit-identical rows are searched once, so
    copies of a point get equal similarities whatever the BLAS kernel does at a tile's edge.
  - "faiss_flat": faiss IndexFlatIP (its bundled BLAS is several times slower on some CPUs).
Neither keeps the right members of a group of equal similarities at the k-th place by itself,
so a row whose k-th kept similarity equals the next one is searched again, deeper, until the
tie group is complete. "hnsw" (faiss HNSW graph) is approximate and used as it comes.

`JaccardOptions` (how the neighbours, and from them the sparse Jaccard distance, are computed) lives here:
`cpcl.clustering.jaccard` imports this module, never the other way round.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import faiss
import numpy as np
import torch

from cpcl.clustering.probe import fastest_engine
from cpcl.utils.errors import ConfigError, CpclError
from cpcl.utils.runtime import resolve_device

log = logging.getLogger(__name__)

_TOPK_GROUPS = 8  # columns per group in the two-pass tile top-k of the "flat" kNN (speed only)


@dataclass(frozen=True)
class JaccardOptions:
    """How the sparse Jaccard distance is computed. With an exact kNN backend ("auto", "flat",
    "faiss_flat") none of these change the result beyond float rounding, only speed and memory;
    "hnsw" trades exactness for speed."""

    knn_backend: str = "auto"  # auto: flat or faiss_flat, the faster here (a probe, remembered in the cache folder) | flat: exact, torch fp32 | faiss_flat: exact, faiss IndexFlatIP | hnsw: approximate
    knn_device: str = "auto"  # where flat runs: auto (a CUDA tensor's device, else a GPU if any, else cpu) | cpu | cuda:N
    knn_block: int = 4096  # points per block of the "flat" kNN (memory: two block x block fp32 tiles)
    knn_probe_points: int = 4096  # sample the "auto" probe times both exact engines on (once per machine and sample size)
    hnsw_m: int = 32  # HNSW graph degree (hnsw backend only)
    hnsw_ef_construction: int = 200  # HNSW build-time beam width (hnsw backend only)
    hnsw_ef_search: int = 128  # HNSW query-time beam width, raised to k if smaller (hnsw only)
    prefix_fraction: float = 0.6  # prefix ends when the row mass left < this * tau; 1 = shortest
    row_chunk: int = 2048  # rows per candidate-generation chunk (bounds peak memory)
    verify_rows: int = 64  # rows per exact-verification block (dense rows x touched columns)
    norm_tol: float = 1e-3  # tolerated |norm - 1| of a feature row

    def __post_init__(self) -> None:
        if self.knn_backend != AUTO and self.knn_backend not in KNN_BACKENDS:
            raise ConfigError(
                f"knn_backend: unknown {self.knn_backend!r}; valid: {sorted([AUTO, *KNN_BACKENDS])}"
            )
        if not 0.0 <= self.prefix_fraction <= 1.0:
            raise ConfigError(
                f"prefix_fraction: expected 0 <= value <= 1, got {self.prefix_fraction}"
            )
        positive = ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "row_chunk", "verify_rows",
                    "knn_block", "knn_probe_points")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if not self.norm_tol > 0:
            raise ConfigError(f"norm_tol: expected a positive float, got {self.norm_tol}")
        if self.knn_device != "auto":
            try:
                torch.device(self.knn_device)
            except RuntimeError:
                raise ConfigError(f"knn_device: {self.knn_device!r} is not valid; use auto, cpu, cuda "
                                  "or cuda:N") from None


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


def knn_device(feats: Any, name: str) -> torch.device:
    """Where the torch kNN runs. name "auto": a CUDA tensor's own device, else the first CUDA
    device if there is one, else the CPU; any other name as `resolve_device` reads it."""
    if name == "auto" and isinstance(feats, torch.Tensor) and feats.device.type == "cuda":
        return feats.device
    return resolve_device(name)


@contextlib.contextmanager
def _ieee_fp32() -> Iterator[None]:
    """fp32 matmuls in full precision (no TF32 / bf16 passes) inside the block, restored after."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def copy_groups(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group bit-identical rows: first [M] (the lowest point index of each group, ascending) and
    of_point [N] (each point's group, 0..M-1). Rows are compared on their first 16 columns, and
    those sharing them on every byte."""
    n, d = feats.shape
    head = np.ascontiguousarray(feats[:, : min(d, 16)])
    _, head_group, head_count = np.unique(head.view(np.dtype((np.void, head.shape[1] * 4))).ravel(),
                                          return_inverse=True, return_counts=True)
    group = np.arange(n)
    maybe = np.flatnonzero(head_count[head_group] > 1)
    if maybe.size:
        rows = np.ascontiguousarray(feats[maybe]).view(np.dtype((np.void, d * 4))).ravel()
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        group[maybe] = maybe[first][inverse]  # the lowest index holding the same bytes
    return np.unique(group, return_inverse=True)


def _house_order(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of (similarity, index) [m, w] sorted by similarity descending, ties by index ascending."""
    idx, perm = idx.sort(dim=1)
    vals, perm2 = vals.gather(1, perm).sort(dim=1, descending=True, stable=True)
    return vals, idx.gather(1, perm2)


def _tile_top(tile: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """topk(tile, k, dim=1) for tile [m, w] (contiguous, or the transpose of a contiguous one)
    in two passes: the maxima of column groups {s, s + w/g, ...}, then the columns of the k
    groups with the largest maxima, which hold every value of the row's top k (a group outside
    them has a max no larger than k other values). Same values as topk; at a tie at the last
    place, possibly other members."""
    m, w = tile.shape
    g = _TOPK_GROUPS
    k = min(k, w)
    stride = w // g
    if w % g or stride < k:
        return tile.topk(k, dim=1)
    if tile.is_contiguous():
        group_max = tile.view(m, g, stride).amax(1)  # [m, stride]
    else:
        group_max = tile.T.view(g, stride, m).amax(0).T
    _, groups = group_max.topk(k, dim=1)  # [m, k]
    cols = (groups[:, :, None] + stride * torch.arange(g, device=tile.device)).view(m, k * g)
    vals, pos = tile.gather(1, cols).topk(k, dim=1)
    return vals, cols.gather(1, pos)


def _merge_top(vals: torch.Tensor, idx: torch.Tensor, tile: torch.Tensor, col_ids: torch.Tensor) -> None:
    """Fold tile [m, w] (similarities to the points col_ids [w]) into the running top-k of its m
    rows, vals / idx [m, k] (views, updated in place)."""
    tile_vals, tile_pos = _tile_top(tile, vals.shape[1])
    both_vals = torch.cat([vals, tile_vals], 1)
    both_idx = torch.cat([idx, col_ids[tile_pos]], 1)
    top_vals, pos = both_vals.topk(vals.shape[1], dim=1)
    vals.copy_(top_vals)
    idx.copy_(both_idx.gather(1, pos))


def _blocked_top(u: torch.Tensor, of_point: torch.Tensor, depth: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each distinct vector u [M, D], the `depth` points (of N, its own copies included) of
    largest similarity: vals [M, depth] fp32 descending, idx [M, depth] point indices. Copies
    share one column of each tile, so they get equal values. The values are exact; which members
    of a group of equal values at the last place are kept is not defined. depth <= N."""
    m, n = u.shape[0], of_point.numel()
    by_group = torch.argsort(of_point, stable=True)  # points, grouped
    edges = torch.searchsorted(of_point[by_group], torch.arange(0, m + block, block, device=u.device))
    edges = edges.clamp(max=n).tolist()

    def columns(b0: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Points of the groups in block b0 and their column in that block's tile (None: identity)."""
        points = by_group[edges[b0 // block] : edges[b0 // block + 1]]
        return points, None if m == n else of_point[points] - b0

    vals = torch.full((m, depth), float("-inf"), device=u.device)
    idx = torch.full((m, depth), -1, dtype=torch.long, device=u.device)
    buffer = torch.empty(min(m, block) ** 2, device=u.device)  # one tile's memory, reused
    for a0 in range(0, m, block):
        a1 = min(m, a0 + block)
        points_a, cols_a = columns(a0)
        for b0 in range(a0, m, block):
            b1 = min(m, b0 + block)
            points_b, cols_b = columns(b0)
            tile = torch.mm(u[a0:a1], u[b0:b1].T, out=buffer[: (a1 - a0) * (b1 - b0)].view(a1 - a0, b1 - b0))
            _merge_top(vals[a0:a1], idx[a0:a1], tile if cols_b is None else tile[:, cols_b], points_b)
            if a0 != b0:
                tile_t = tile.T if cols_a is None else tile.T[:, cols_a]
                _merge_top(vals[b0:b1], idx[b0:b1], tile_t, points_a)
    return vals, idx


def _complete_rows(u: torch.Tensor, of_point: torch.Tensor, points: torch.Tensor,
                   others: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `others` neighbours of `points` [p] in the house order, exactly: each row's
    similarities are computed whole and searched deeper (doubling) until the k-th value is
    strictly above the last one looked at, so the tie group at the k-th place is complete."""
    n = of_point.numel()
    sims = (u[of_point[points]] @ u.T)[:, of_point]  # [p, N]
    sims[torch.arange(points.numel(), device=u.device), points] = float("-inf")
    depth = min(n - 1, 2 * (others + 1))
    while True:
        vals, idx = sims.topk(depth, dim=1)
        if depth == n - 1 or bool((vals[:, others - 1] > vals[:, -1]).all()):
            vals, idx = _house_order(vals, idx)
            return vals[:, :others], idx[:, :others]
        depth = min(n - 1, 2 * depth)


def _torch_exact(
    feats: np.ndarray, keep: int, opts: JaccardOptions, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbour lists [N, keep] (rank, sims) in the house order, torch fp32 on `device`.

    Bit-identical rows are searched once (`copy_groups`), so copies tie exactly whatever the
    BLAS kernel does at tile edges; each point then drops itself from its group's list.
    """
    n = feats.shape[0]
    rank = np.empty((n, keep), np.int64)
    sims = np.empty((n, keep), np.float32)
    rank[:, 0] = np.arange(n)
    sims[:, 0] = np.einsum("ij,ij->i", feats, feats)
    others = keep - 1
    if others == 0:
        return rank, sims
    first, of_point_np = copy_groups(feats)
    depth = min(n, keep + 1)  # self, the kept others and one more: shows a tie at the k-th place
    with torch.no_grad(), _ieee_fp32():
        u = torch.from_numpy(feats[first]).to(device)
        of_point = torch.from_numpy(of_point_np).to(device)
        vals, idx = _house_order(*_blocked_top(u, of_point, depth, opts.knn_block))
        vals, idx = vals[of_point], idx[of_point]  # [N, depth], each point's group list
        points = torch.arange(n, device=device)
        not_self = torch.argsort((idx == points[:, None]).to(torch.int8), dim=1, stable=True)
        width = min(keep, n - 1)
        vals, idx = vals.gather(1, not_self[:, :width]), idx.gather(1, not_self[:, :width])
        if depth < n:
            redo = torch.nonzero(vals[:, others - 1] == vals[:, others]).flatten()
        else:
            redo = points[:0]  # every point is in every list: ties are already in index order
        vals, idx = vals[:, :others].contiguous(), idx[:, :others].contiguous()
        if redo.numel():
            log.debug("re-searching %d rows with a tie at the k-th neighbour", redo.numel())
        chunk = max(1, opts.knn_block**2 // n)  # rows whose whole similarity rows fill one tile
        for start in range(0, redo.numel(), chunk):
            rows = redo[start : start + chunk]
            vals[rows], idx[rows] = _complete_rows(u, of_point, rows, others)
    rank[:, 1:] = idx.cpu().numpy()
    sims[:, 1:] = vals.cpu().numpy()
    return rank, sims


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


def _faiss_search(
    feats: np.ndarray, keep: int, opts: JaccardOptions, device: torch.device,
    build: Callable[[np.ndarray, int, Any], faiss.Index], exact: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists [N, keep] from a faiss index on the CPU (`device` is not used). With an
    exact index, rows whose keep-th entry ties with the last result are searched again with
    twice the depth until the tie group is complete."""
    n = feats.shape[0]
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
    return rank, sims


# name -> search(feats [N, D] float32, keep, options, device) -> (rank, sims) [N, keep].
KNN_BACKENDS: dict[str, Callable[[np.ndarray, int, Any, torch.device], tuple[np.ndarray, np.ndarray]]] = {
    "flat": _torch_exact,
    "faiss_flat": partial(_faiss_search, build=_build_flat, exact=True),
    "hnsw": partial(_faiss_search, build=_build_hnsw, exact=False),
}
AUTO = "auto"  # knn_backend: the faster of EXACT_BACKENDS here, measured (cpcl.clustering.probe)
EXACT_BACKENDS = {name: KNN_BACKENDS[name] for name in ("flat", "faiss_flat")}


def nearest_neighbours(
    feats: np.ndarray, k: int, backend: str, opts: JaccardOptions, device: torch.device | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The first min(k, N) entries of every point's ranking, in the house order.

    feats: [N, D] float32, L2-normalised (see `check_features`). Returns
    rank: [N, K] int64 with rank[:, 0] = arange(N), then neighbours by cosine similarity
    descending, ties by index ascending; sims: [N, K] float32, the matching similarities.
    Exact for "flat", "faiss_flat" and "auto" (one of them). device: where "flat" runs (None:
    `opts.knn_device`).
    """
    if backend != AUTO and backend not in KNN_BACKENDS:
        raise CpclError(f"unknown knn backend {backend!r}; valid: {sorted([AUTO, *KNN_BACKENDS])}")
    device = device if device is not None else knn_device(feats, opts.knn_device)
    keep = min(k, feats.shape[0])
    found = None
    if backend == AUTO:  # the probe may have searched all of feats already: its winner's lists are kept
        choice = fastest_engine(feats, keep, opts, device, EXACT_BACKENDS)
        backend, found = choice.engine, choice.found
    rank, sims = found if found is not None else KNN_BACKENDS[backend](feats, keep, opts, device)
    if (rank < 0).any():
        raise CpclError(
            f"knn backend {backend!r} found fewer than {keep} neighbours for "
            "some points; raise hnsw_ef_search or use knn_backend=flat"
        )
    return rank, sims
