"""Sparse k-reciprocal Jaccard distance (docs/method.md step 2), never an N x N dense matrix.

Definition (d(i, j) = 2 - 2 x_i . x_j on L2-normalised features; rank = `knn.nearest_neighbours`,
whose row i starts with i itself):
  N(i, k1) = rank[i, :a], N(i, kh) = rank[i, :b] with kh = round(k1/2), and query expansion over
  rank[i, :c]; (a, b, c) depend on the convention (`CONVENTIONS`):
    cluster_contrast (default): a = k1, b = kh + 1, c = min(k2, k1): cluster-contrast-reid's
      `compute_jaccard_distance` (CMMT, ICPG, CLPC), whose kNN search returns k1 points, self
      included, so its lists hold k1 columns;
    zhong: a = k1 + 1, b = kh + 1, c = k2: Zhong et al.'s re-ranking code (full ranking).
  R(i, k) = {j in N(i, k) : i in N(j, k)}  (symmetric, i in R(i, k)).
  E(i) = R(i, k1), grown by R(c, kh) for each c in R(i, k1) whose set shares more than
  2/3 of its members with R(i, k1).  V[i, j] = softmax over j in E(i) of -d(i, j).
  V'[i] = mean of V[rank[i, :c]] (query expansion; c = 1 leaves V unchanged).
  m(i, j) = sum_k min(V'[i, k], V'[j, k]);  J(i, j) = max(0, 1 - m / (2 - m)).

Only pairs with J <= max_distance are kept, i.e. m >= tau = 2(1 - eps) / (2 - eps). They are found
exactly by prefix filtering: columns get a global order (rarest first); a row's prefix is its
entries, in that order, until the mass left after them drops below tau' = prefix_fraction * tau.
If row i's prefix ends first, m(i, j) <= sum over shared prefix columns of sqrt(V'_ik V'_jk)
+ (mass of i's suffix) =: bound, since min(a, b) <= sqrt(ab) and every column i holds past its
prefix lies past j's too. A sparse product of the sqrt-prefix matrix gives the bound for every
pair sharing a prefix column (a pair sharing none has bound < tau); pairs with bound >= tau are
verified exactly, block by block, against a dense copy of the block's rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee

from cpcl.clustering.knn import JaccardOptions, check_features, knn_device, nearest_neighbours
from cpcl.utils.errors import ConfigError

log = logging.getLogger(__name__)

_BOUND_SLACK = 1e-9  # float headroom on the pruning bound: keeps candidates, never drops pairs
_SIM_CHUNK = 65536  # pairs whose feature dot product is computed at once (memory bound)


def check_jaccard_params(k1: int, k2: int, max_distance: float) -> None:
    """Raise ConfigError unless k1 >= 1, k2 >= 1 and 0 <= max_distance < 1.

    max_distance < 1 keeps the result sparse: pairs sharing no support have J = 1.
    """
    if int(k1) != k1 or k1 < 1:
        raise ConfigError(f"k1: expected an integer >= 1, got {k1}")
    if int(k2) != k2 or k2 < 1:
        raise ConfigError(f"k2: expected an integer >= 1, got {k2}")
    if not 0.0 <= max_distance < 1.0:
        raise ConfigError(f"eps / max_distance: expected 0 <= value < 1, got {max_distance}")


@dataclass(frozen=True)
class Neighbourhoods:
    """Sizes of the ranking prefixes the distance reads; each counts the point itself."""

    near: int  # members of N(i, k1)
    half: int  # members of N(i, round(k1/2))
    expansion: int  # rows averaged by query expansion (1: none)

    @property
    def depth(self) -> int:
        """Ranking entries needed per point."""
        return max(self.near, self.half, self.expansion)


# convention name -> neighbourhood sizes for (k1, k2); the module docstring defines both.
CONVENTIONS: dict[str, Callable[[int, int], Neighbourhoods]] = {
    "cluster_contrast": lambda k1, k2: Neighbourhoods(k1, round(k1 / 2) + 1, min(k2, k1)),
    "zhong": lambda k1, k2: Neighbourhoods(k1 + 1, round(k1 / 2) + 1, k2),
}


def neighbourhoods(convention: str, k1: int, k2: int) -> Neighbourhoods:
    """The sizes `convention` (a key of CONVENTIONS) gives to k1, k2; ConfigError if unknown."""
    if convention not in CONVENTIONS:
        raise ConfigError(f"convention: unknown {convention!r}; valid: {sorted(CONVENTIONS)}")
    return CONVENTIONS[convention](k1, k2)


def reciprocal_sets(rank: np.ndarray, members: int) -> sp.csr_matrix:
    """R(., k) as a symmetric 0/1 pattern: [N, N] int32 CSR, R[i, j] = 1 iff j in R(i, k).

    rank: [N, K] house-ordered neighbour lists (rank[:, 0] = arange(N)); N(i, k) is
    rank[i, :members], the point itself included.
    """
    n = rank.shape[0]
    cols = rank[:, :members]
    width = cols.shape[1]
    near = sp.csr_matrix(
        (np.ones(cols.size, np.int32), cols.ravel(), np.arange(0, n * width + 1, width)),
        shape=(n, n),
    )
    return near.multiply(near.T).tocsr()


def expanded_sets(rank: np.ndarray, sizes: Neighbourhoods) -> sp.csr_matrix:
    """E(i) for every i as a 0/1 pattern: [N, N] int32 CSR with sorted indices.

    E(i) = R(i, k1) plus R(c, kh), kh = round(k1/2), for each c in R(i, k1) with
    3 |R(c, kh) & R(i, k1)| > 2 |R(c, kh)| (integer form of "> 2/3", no float rounding).
    """
    r1 = reciprocal_sets(rank, sizes.near)
    rh = reciprocal_sets(rank, sizes.half)
    shared = (r1 @ rh).multiply(r1).tocsr()  # [i, c] = |R(i, k1) & R(c, kh)| as rh is symmetric
    sizes_h = np.diff(rh.indptr)
    shared.data = (3 * shared.data > 2 * sizes_h[shared.indices]).astype(np.int32)
    shared.eliminate_zeros()
    grown = (r1 + shared @ rh).tocsr()
    grown.data[:] = 1
    grown.sort_indices()
    return grown


def _pair_sims(
    feats: np.ndarray, rows: np.ndarray, cols: np.ndarray, rank: np.ndarray, sims: np.ndarray,
    chunk: int,
) -> np.ndarray:
    """x_rows . x_cols for pairs [P] sorted by (row, col): looked up in the neighbour lists
    where present, else computed in chunks of `chunk` pairs."""
    n = rank.shape[0]
    by_col = np.argsort(rank, axis=1)
    known = (np.arange(n)[:, None] * n + np.take_along_axis(rank, by_col, 1)).ravel()
    known_sims = np.take_along_axis(sims, by_col, 1).ravel()
    wanted = rows.astype(np.int64) * n + cols
    pos = np.minimum(np.searchsorted(known, wanted), known.size - 1)
    found = known[pos] == wanted
    out = np.empty(rows.size, np.float64)
    out[found] = known_sims[pos[found]]
    missing = np.flatnonzero(~found)
    for s in range(0, missing.size, chunk):
        part = missing[s : s + chunk]
        out[part] = np.einsum("ij,ij->i", feats[rows[part]], feats[cols[part]])
    return out


def kreciprocal_weights(feats: np.ndarray, rank: np.ndarray, sims: np.ndarray, sizes: Neighbourhoods
                        ) -> sp.csr_matrix:
    """V of the module docstring (before query expansion): [N, N] float64 CSR, sorted indices, rows sum to 1.

    feats: [N, D] float32 L2-normalised; rank, sims: [N, K] from `nearest_neighbours`, K >= min(N, sizes.depth).
    """
    n = rank.shape[0]
    pattern = expanded_sets(rank, sizes)
    rows = np.repeat(np.arange(n), np.diff(pattern.indptr))
    sim = _pair_sims(feats, rows, pattern.indices, rank, sims, _SIM_CHUNK)
    weight = np.exp(2.0 * sim - 2.0)  # exp(-d), d = 2 - 2 x_i . x_j
    weight /= np.repeat(np.add.reduceat(weight, pattern.indptr[:-1]), np.diff(pattern.indptr))
    return sp.csr_matrix((weight, pattern.indices, pattern.indptr), shape=(n, n))


def query_expansion(v: sp.csr_matrix, rank: np.ndarray, width: int) -> sp.csr_matrix:
    """V'[i] = mean of V[rank[i, :width]] (width <= 1: V itself); [N, N] float64 CSR, sorted indices."""
    n = rank.shape[0]
    width = min(width, rank.shape[1])
    if width <= 1:
        return v
    indptr = np.arange(0, n * width + 1, width)
    mean = sp.csr_matrix(
        (np.full(n * width, 1.0 / width), rank[:, :width].ravel(), indptr), shape=(n, n)
    )
    vq = (mean @ v).tocsr()
    vq.sort_indices()
    return vq


def expanded_weights(
    feats: np.ndarray, rank: np.ndarray, sims: np.ndarray, k1: int, k2: int, *, convention: str
) -> sp.csr_matrix:
    """V' of the module docstring: [N, N] float64 CSR, sorted indices, every row sums to 1.

    feats: [N, D] float32 L2-normalised; rank, sims: [N, K] from `nearest_neighbours`, K >=
    min(N, neighbourhoods(convention, k1, k2).depth).
    """
    sizes = neighbourhoods(convention, k1, k2)
    return query_expansion(kreciprocal_weights(feats, rank, sims, sizes), rank, sizes.expansion)


@dataclass(frozen=True)
class _Prefixes:
    """Prefix-filter state of V' (see the module docstring)."""

    sqrt_prefix: sp.csr_matrix  # [N, N] sqrt(V') on prefix entries, columns in the global order
    sqrt_prefix_t: sp.csr_matrix  # its transpose, as CSR
    suffix_mass: np.ndarray  # [N] float64 mass of each row past its prefix (< tau')
    prefix_end: np.ndarray  # [N] int64 global position of a row's first suffix column (max if none)


def _prefixes(vq: sp.csr_matrix, tau_prefix: float) -> _Prefixes:
    """Order columns rarest first (ties by index) and split every row into prefix / suffix."""
    n = vq.shape[0]
    freq = np.bincount(vq.indices, minlength=n)
    position = np.empty(n, np.int64)
    position[np.lexsort((np.arange(n), freq))] = np.arange(n)
    ordered = sp.csr_matrix(
        (vq.data.copy(), position[vq.indices], vq.indptr.copy()), shape=vq.shape
    )  # copies: sort_indices below works in place and must not reorder vq
    ordered.sort_indices()
    lengths = np.diff(ordered.indptr)
    data = ordered.data
    total = np.add.reduceat(data, ordered.indptr[:-1])
    before = np.cumsum(data) - data  # mass before each entry, minus its row's offset below
    before -= np.repeat(before[ordered.indptr[:-1]], lengths)
    in_prefix = np.repeat(total, lengths) - before >= tau_prefix
    counts = np.add.reduceat(in_prefix.astype(np.int64), ordered.indptr[:-1])
    prefix_mass = np.add.reduceat(np.where(in_prefix, data, 0.0), ordered.indptr[:-1])
    suffix_mass = np.maximum(total - prefix_mass, 0.0)
    first_suffix = np.minimum(ordered.indptr[:-1] + counts, data.size - 1)
    prefix_end = np.where(counts < lengths, ordered.indices[first_suffix].astype(np.int64), np.iinfo(np.int64).max)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    sqrt_prefix = sp.csr_matrix(
        (np.sqrt(data[in_prefix]), ordered.indices[in_prefix], indptr), shape=vq.shape
    )
    return _Prefixes(sqrt_prefix, sqrt_prefix.T.tocsr(), suffix_mass, prefix_end)


def _candidates(pre: _Prefixes, r0: int, r1: int, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), r0 <= i < r1, i < j, whose overlap bound reaches tau; sorted by i."""
    gram = pre.sqrt_prefix[r0:r1] @ pre.sqrt_prefix_t
    pi = np.repeat(np.arange(r0, r1), np.diff(gram.indptr))
    pj = gram.indices.astype(np.int64)
    upper = pj > pi
    pi, pj, partial = pi[upper], pj[upper], gram.data[upper]
    first = np.where(pre.prefix_end[pi] <= pre.prefix_end[pj], pi, pj)
    keep = partial + pre.suffix_mass[first] >= tau - _BOUND_SLACK
    return pi[keep], pj[keep]


def _overlaps(
    vq: sp.csr_matrix, b0: int, b1: int, pi: np.ndarray, pj: np.ndarray, colmap: np.ndarray
) -> np.ndarray:
    """Exact m = sum_k min(V'[i, k], V'[j, k]) for pairs [P >= 1] with b0 <= pi < b1.

    Rows b0..b1 are copied into a dense [b1 - b0, U + 1] block over the U columns they touch
    (the extra column is zero); each pair then walks the entries of row j. colmap: [N] int64
    scratch filled with -1, restored before returning.
    """
    block = vq[b0:b1]
    touched = np.unique(block.indices)
    colmap[touched] = np.arange(touched.size)
    dense = np.zeros((b1 - b0, touched.size + 1))  # colmap -1 -> last column, all zeros
    dense[np.repeat(np.arange(b1 - b0), np.diff(block.indptr)), colmap[block.indices]] = block.data
    lengths = vq.indptr[pj + 1] - vq.indptr[pj]
    starts = np.cumsum(lengths) - lengths
    entries = np.repeat(vq.indptr[pj] - starts, lengths) + np.arange(int(lengths.sum()))
    mine = dense[np.repeat(pi - b0, lengths), colmap[vq.indices[entries]]]
    colmap[touched] = -1
    return np.add.reduceat(np.minimum(mine, vq.data[entries]), starts)


def _local_order(vq: sp.csr_matrix) -> tuple[np.ndarray, sp.csr_matrix]:
    """Renumber points so that rows sharing support sit close together (reverse Cuthill-McKee).

    Returns perm [N] (new index -> old index) and V' with rows and columns renumbered. The
    result of the Jaccard step does not depend on the numbering; its speed does (cache reuse in
    the sparse products, few touched columns per verification block).
    """
    perm = reverse_cuthill_mckee(vq, symmetric_mode=False).astype(np.int64)
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(perm.size)
    rows = vq[perm]
    local = sp.csr_matrix((rows.data, inverse[rows.indices], rows.indptr), shape=vq.shape)
    local.sort_indices()
    return perm, local


def _symmetric_csr(n: int, pi: np.ndarray, pj: np.ndarray, dist: np.ndarray) -> sp.csr_matrix:
    """[N, N] CSR from upper-triangle pairs plus a zero diagonal; explicit zeros are kept."""
    rows = np.concatenate([pi, pj, np.arange(n)])
    cols = np.concatenate([pj, pi, np.arange(n)])
    vals = np.concatenate([dist, dist, np.zeros(n)])
    order = np.lexsort((cols, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return sp.csr_matrix((vals[order], cols[order].astype(np.int32), indptr), shape=(n, n))


def sparse_jaccard(vq: sp.csr_matrix, max_distance: float, opts: JaccardOptions) -> sp.csr_matrix:
    """J(i, j) for every pair with J <= max_distance, diagonal (J = 0) included.

    vq: [N, N] CSR from `expanded_weights` (rows sum to 1, sorted indices). Returns a symmetric
    [N, N] float64 CSR with sorted indices; stored zeros are real distances (duplicates), never
    dropped. Works in chunks of `opts.row_chunk` rows, so memory stays O(N * row support).
    """
    n = vq.shape[0]
    tau = 2.0 * (1.0 - max_distance) / (2.0 - max_distance)  # m >= tau  <=>  J <= max_distance
    perm, vq = _local_order(vq)
    pre = _prefixes(vq, opts.prefix_fraction * tau)
    colmap = np.full(n, -1, np.int64)
    kept_i, kept_j, kept_d = [], [], []
    n_candidates = 0
    for r0 in range(0, n, opts.row_chunk):
        r1 = min(n, r0 + opts.row_chunk)
        pi, pj = _candidates(pre, r0, r1, tau)
        n_candidates += pi.size
        for b0 in range(r0, r1, opts.verify_rows):
            b1 = min(r1, b0 + opts.verify_rows)
            lo, hi = np.searchsorted(pi, [b0, b1])
            if hi == lo:
                continue
            m = _overlaps(vq, b0, b1, pi[lo:hi], pj[lo:hi], colmap)
            dist = np.maximum(1.0 - m / (2.0 - m), 0.0)
            keep = dist <= max_distance
            kept_i.append(pi[lo:hi][keep])
            kept_j.append(pj[lo:hi][keep])
            kept_d.append(dist[keep])
    pi, pj, dist = (np.concatenate(a) if a else np.empty(0) for a in (kept_i, kept_j, kept_d))
    log.debug("sparse Jaccard: %d candidate pairs, %d kept (N=%d)", n_candidates, pi.size, n)
    return _symmetric_csr(n, perm[pi.astype(np.int64)], perm[pj.astype(np.int64)], dist)


def jaccard_distance_sparse(
    feats: object, k1: int, k2: int, max_distance: float, opts: JaccardOptions | None = None, *,
    convention: str,
) -> sp.csr_matrix:
    """k-reciprocal Jaccard distance of L2-normalised features, pairs with J <= max_distance.

    feats: [N, D] numpy array or torch tensor, L2-normalised (FeatureError otherwise).
    convention: a key of CONVENTIONS. Returns a symmetric [N, N] float64 CSR (sorted indices):
    every pair with J <= max_distance stored, diagonal included as explicit zeros; absent pairs
    have J > max_distance.
    """
    opts = opts or JaccardOptions()
    check_jaccard_params(k1, k2, max_distance)
    depth = neighbourhoods(convention, k1, k2).depth
    device = knn_device(feats, opts.knn_device)
    x = check_features(feats, opts.norm_tol)
    rank, sims = nearest_neighbours(x, depth, opts.knn_backend, opts, device)
    vq = expanded_weights(x, rank, sims, k1, k2, convention=convention)
    return sparse_jaccard(vq, max_distance, opts)
