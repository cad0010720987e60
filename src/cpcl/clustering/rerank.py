"""k-reciprocal re-ranking of a gallery for one query at a time (docs/method.md, Evaluation: re-ranking).

Zhong et al.'s re-ranking (CVPR 2017) adapted to text queries over an image gallery. The gallery side is
the clustering's k-reciprocal structure on the gallery alone (`jaccard.py`, convention `zhong`): V_G and
its query expansion V'_G over gallery-gallery similarities. A query q (any modality) with cosine
similarities s(q, g) to the gallery:
  N(q) = its k1 most similar gallery items (ties: the lower index). A query has no reciprocity check: its
    similarities to images are not on the scale of the image-image ones a check would compare them with,
    and a single query has no other queries to be ranked among.
  E(q) = N(q), grown by R_G(c, round(k1/2)) for each c in N(q) that shares more than 2/3 of that set's
    members with N(q) (the clustering's rule, with N(q) in place of R(q, k1)).
  V_q = softmax over g in E(q) of -(2 - 2 s(q, g)); V'_q = (V_q + V_G[g_1] + ... + V_G[g_{k2-1}]) / k2 over
    q's k2 - 1 most similar gallery items (k2 = 1: V'_q = V_q).
  J(q, g) = 1 - m / (2 - m), m = sum_k min(V'_q[k], V'_G[g, k]) (1 where their supports do not meet).
  d*(q, g) = (1 - lambda) J(q, g) + lambda (1 - s(q, g)) / 2; the gallery is ranked by d* ascending.
Queries are re-ranked independently (no query enters the gallery's neighbourhoods), so a query ranks the
same alone (search) as among all of a split's captions (evaluation), up to float rounding. lambda = 1 keeps
the original order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from cpcl.clustering.jaccard import (check_jaccard_params, kreciprocal_weights, neighbourhoods, query_expansion,
                                     reciprocal_sets)
from cpcl.clustering.knn import JaccardOptions, check_features, nearest_neighbours
from cpcl.utils.errors import ConfigError

CONVENTION = "zhong"  # the gallery's neighbourhood sizes: Zhong et al.'s (k1 + 1 members, self included)


@dataclass(frozen=True)
class RerankConfig:
    """Parameters of the re-ranking (defaults: Zhong et al.'s)."""

    k1: int = 20  # a query's gallery neighbours N(q), and the gallery's k-reciprocal neighbourhood size
    k2: int = 6  # query expansion: the query and its k2 - 1 nearest gallery items (1 = none)
    lambda_value: float = 0.3  # weight of the original distance (1 - s) / 2 in the final distance
    search: JaccardOptions = field(default_factory=JaccardOptions)  # how the gallery's neighbours are found

    def __post_init__(self) -> None:
        check_jaccard_params(self.k1, self.k2, 0.0)
        if not 0.0 <= self.lambda_value <= 1.0:
            raise ConfigError(f"rerank lambda_value: expected 0 <= value <= 1, got {self.lambda_value}")


@dataclass(frozen=True)
class RerankGallery:
    """A gallery prepared for re-ranking: what does not depend on the query, built once."""

    feats: np.ndarray  # [G, D] float32, L2-normalised
    weights: sp.csr_matrix  # V_G [G, G], rows sum to 1
    expanded_t: sp.csr_matrix  # V'_G transposed [G (column k), G (gallery item)]: the min-sums walk columns
    half: sp.csr_matrix  # R_G(g, round(k1/2)) as a symmetric 0/1 pattern [G, G]
    half_sizes: np.ndarray  # [G] |R_G(g, round(k1/2))|
    config: RerankConfig


def prepare_gallery(gallery_feats: object, config: RerankConfig) -> RerankGallery:
    """gallery_feats: [G, D] numpy array or torch tensor, L2-normalised (FeatureError otherwise)."""
    x = check_features(gallery_feats, config.search.norm_tol)
    sizes = neighbourhoods(CONVENTION, config.k1, config.k2)
    rank, sims = nearest_neighbours(x, sizes.depth, config.search.knn_backend, config.search)
    weights = kreciprocal_weights(x, rank, sims, sizes)
    expanded = query_expansion(weights, rank, sizes.expansion)
    half = reciprocal_sets(rank, sizes.half)
    return RerankGallery(x, weights, expanded.T.tocsr(), half, np.diff(half.indptr), config)


def _top_k_exact(sims: np.ndarray, k: int) -> np.ndarray:
    """`top_k`'s columns as a set, unordered, for rows whose k-th value is tied past the k-th place."""
    b, g = sims.shape
    kth = np.partition(sims, g - k, axis=1)[:, g - k]  # the k-th largest value of each row
    above, tied = sims > kth[:, None], sims == kth[:, None]
    room = k - above.sum(axis=1)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room[:, None]))  # the lowest-index ties first
    return np.nonzero(chosen)[1].reshape(b, k)


def top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """[B, k] column indices of each row's k largest values, descending, ties by the lower index."""
    b, g = sims.shape
    k = min(k, g)
    cols = np.argpartition(sims, g - k, axis=1)[:, g - k:]  # the k largest, in any order
    kth = np.take_along_axis(sims, cols, 1).min(axis=1)
    unsure = (sims == kth[:, None]).sum(axis=1) > (np.take_along_axis(sims, cols, 1) == kth[:, None]).sum(axis=1)
    if unsure.any():  # a value equal to the k-th was left out: which ones are kept is decided by index
        cols[unsure] = _top_k_exact(sims[unsure], k)
    order = np.lexsort((cols, -np.take_along_axis(sims, cols, 1).astype(np.float64)), axis=1)
    return np.take_along_axis(cols, order, 1)


def _pattern(cols: np.ndarray, size: int) -> sp.csr_matrix:
    """[B, size] 0/1 CSR with ones at cols [B, w]."""
    b, w = cols.shape
    return sp.csr_matrix((np.ones(b * w, np.int32), cols.ravel(), np.arange(0, b * w + 1, w)), shape=(b, size))


def query_weights(sims: np.ndarray, gallery: RerankGallery) -> sp.csr_matrix:
    """V'_q of the module docstring for queries with similarities sims [B, G]: [B, G] float64 CSR."""
    config, g = gallery.config, sims.shape[1]
    order = top_k(sims, max(config.k1, config.k2 - 1))
    near = _pattern(order[:, :config.k1], g)
    shared = (near @ gallery.half).multiply(near).tocsr()  # [q, c] = |N(q) & R_G(c, kh)| for c in N(q)
    shared.data = (3 * shared.data > 2 * gallery.half_sizes[shared.indices]).astype(np.int32)
    shared.eliminate_zeros()
    grown = (near + shared @ gallery.half).tocsr()
    grown.sort_indices()
    rows = np.repeat(np.arange(len(sims)), np.diff(grown.indptr))
    weight = np.exp(2.0 * sims[rows, grown.indices].astype(np.float64) - 2.0)
    weight /= np.repeat(np.add.reduceat(weight, grown.indptr[:-1]), np.diff(grown.indptr))
    v = sp.csr_matrix((weight, grown.indices, grown.indptr), shape=sims.shape)
    width = min(config.k2, g + 1) - 1  # gallery rows averaged with the query's own
    if width < 1:
        return v
    mean = sp.csr_matrix((np.full(len(sims) * width, 1.0), order[:, :width].ravel(),
                          np.arange(0, len(sims) * width + 1, width)), shape=sims.shape)
    return ((v + mean @ gallery.weights) / (width + 1)).tocsr()


def overlaps(vq: sp.csr_matrix, gallery: RerankGallery) -> tuple[np.ndarray, np.ndarray]:
    """m[q, g] = sum_k min(V'_q[k], V'_G[g, k]) where the supports of q and g meet, by walking V'_G's column k
    for every entry (q, k) of V'_q. vq: [B, G]. Returns (flat indices q * G + g [M], m [M]); m = 0 elsewhere."""
    b, g = vq.shape
    cols = gallery.expanded_t
    q_rows = np.repeat(np.arange(b), np.diff(vq.indptr))
    lengths = cols.indptr[vq.indices + 1] - cols.indptr[vq.indices]
    starts = np.repeat(cols.indptr[vq.indices] - (np.cumsum(lengths) - lengths), lengths)
    entries = starts + np.arange(int(lengths.sum()))
    mins = np.minimum(np.repeat(vq.data, lengths), cols.data[entries])
    m = np.bincount(np.repeat(q_rows, lengths) * g + cols.indices[entries], weights=mins, minlength=b * g)
    flat = np.flatnonzero(m)
    return flat, m[flat]


def rerank_distances(query_feats: np.ndarray, gallery: RerankGallery) -> np.ndarray:
    """d*(q, g) of the module docstring for query_feats [B, D] (L2-normalised): [B, G] float64."""
    sims = np.asarray(query_feats, dtype=np.float32) @ gallery.feats.T
    flat, m = overlaps(query_weights(sims, gallery), gallery)
    lam = gallery.config.lambda_value
    out = sims.astype(np.float64)
    out *= -lam / 2
    out += 1.0 - lam / 2  # (1 - lambda) J + lambda (1 - s) / 2 with J = 1 ...
    out.ravel()[flat] -= (1.0 - lam) * np.minimum(m / (2.0 - m), 1.0)  # ... less m / (2 - m) where m > 0
    return out
