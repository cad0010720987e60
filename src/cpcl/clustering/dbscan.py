"""Pseudo labels by DBSCAN on the sparse k-reciprocal Jaccard distance (docs/method.md step 2).

`cluster_features` is the phase function the epoch loop calls once per modality: features in,
labels in {-1, 0..K-1} out (-1 = outlier), with wall-clock times per stage and the process's
peak resident memory for the caller to log.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import DBSCAN

from cpcl.clustering.jaccard import (
    check_jaccard_params,
    expanded_weights,
    neighbourhoods,
    sparse_jaccard,
)
from cpcl.clustering.knn import JaccardOptions, check_features, knn_device, nearest_neighbours
from cpcl.utils.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterConfig:
    """Hyperparameters of the clustering phase (paper defaults)."""

    k1: int = 30  # k-reciprocal neighbourhood size
    k2: int = 6  # query-expansion neighbours, the point itself included (1 = no expansion)
    eps: float = 0.6  # DBSCAN radius on the Jaccard distance, 0 < eps < 1
    min_samples: int = 4  # DBSCAN core-point threshold, the point itself included
    convention: Literal["cluster_contrast", "zhong"] = "cluster_contrast"  # kNN lists: k1 incl. self (the field's code) | k1+1 (Zhong)
    search: JaccardOptions = field(default_factory=JaccardOptions)  # how J is computed (not J)

    def __post_init__(self) -> None:
        check_jaccard_params(self.k1, self.k2, self.eps)
        neighbourhoods(self.convention, self.k1, self.k2)  # ConfigError for an unknown name
        if self.eps <= 0:
            raise ConfigError(f"eps: expected 0 < eps < 1, got {self.eps}")
        if int(self.min_samples) != self.min_samples or self.min_samples < 1:
            raise ConfigError(f"min_samples: expected an integer >= 1, got {self.min_samples}")


@dataclass(frozen=True)
class ClusterResult:
    """Output of `cluster_features`."""

    labels: np.ndarray  # [N] int64 in {-1, 0..K-1}; -1 = outlier
    n_clusters: int  # K
    n_outliers: int  # number of -1 labels
    n_pairs: int  # unordered pairs i != j with J <= eps (the sparse matrix holds 2x + N entries)
    seconds: dict[str, float]  # wall-clock per stage: knn, jaccard, dbscan, total
    peak_rss_mb: float  # high-water resident memory of the whole process so far (getrusage)


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..K-1 in order of first appearance; any negative label becomes -1.

    labels: [N] integers. Returns [N] int64; the partition is unchanged.
    """
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(labels.shape, -1, np.int64)
    clustered = labels >= 0
    uniq, first, inverse = np.unique(labels[clustered], return_index=True, return_inverse=True)
    new_id = np.empty(uniq.size, np.int64)
    new_id[np.argsort(first, kind="stable")] = np.arange(uniq.size)
    out[clustered] = new_id[inverse]
    return out


def dbscan_precomputed(dist: sp.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """sklearn DBSCAN on a sparse precomputed distance matrix; returns [N] int64 labels.

    dist: [N, N] CSR; a stored entry <= eps is a neighbour, an absent one never is. Stored
    zeros count (sklearn keeps explicit zeros of CSR input), so duplicates stay neighbours. Rows
    are reordered by distance first, the layout sklearn expects, to spare it a sorting copy.
    """
    rows = np.repeat(np.arange(dist.shape[0]), np.diff(dist.indptr))
    order = np.lexsort((dist.indices, dist.data, rows))
    by_value = sp.csr_matrix(
        (dist.data[order], dist.indices[order], dist.indptr.copy()), shape=dist.shape
    )
    model = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed")
    return relabel_consecutive(model.fit_predict(by_value))


def _peak_rss_mb() -> float:
    """Process high-water resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def cluster_features(feats: object, cfg: ClusterConfig) -> ClusterResult:
    """Cluster one modality: sparse k-reciprocal Jaccard distance, then DBSCAN.

    feats: [N, D] numpy array or torch tensor, L2-normalised, in dataset order (labels come back
    in the same order). Raises FeatureError for non-finite, wrongly shaped or unnormalised input.
    """
    start = time.perf_counter()
    device = knn_device(feats, cfg.search.knn_device)
    x = check_features(feats, cfg.search.norm_tol)
    depth = neighbourhoods(cfg.convention, cfg.k1, cfg.k2).depth
    rank, sims = nearest_neighbours(x, depth, cfg.search.knn_backend, cfg.search, device)
    t_knn = time.perf_counter()
    vq = expanded_weights(x, rank, sims, cfg.k1, cfg.k2, convention=cfg.convention)
    del rank, sims
    dist = sparse_jaccard(vq, cfg.eps, cfg.search)
    del vq
    t_jac = time.perf_counter()
    labels = dbscan_precomputed(dist, cfg.eps, cfg.min_samples)
    end = time.perf_counter()
    n_clusters = int(labels.max()) + 1 if labels.size else 0
    result = ClusterResult(
        labels=labels,
        n_clusters=n_clusters,
        n_outliers=int((labels < 0).sum()),
        n_pairs=(dist.nnz - dist.shape[0]) // 2,
        seconds={"knn": t_knn - start, "jaccard": t_jac - t_knn, "dbscan": end - t_jac,
                 "total": end - start},
        peak_rss_mb=_peak_rss_mb(),
    )
    log.info("clustered %d points: %d clusters, %d outliers, %.1f s (knn %.1f, jaccard %.1f, "
             "dbscan %.1f)", x.shape[0], n_clusters, result.n_outliers, result.seconds["total"],
             result.seconds["knn"], result.seconds["jaccard"], result.seconds["dbscan"])
    return result
