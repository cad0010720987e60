"""Choosing the clustering hyperparameters from reference labels (docs/training.md, Clustering).

CUHK-PEDES has about 3 images a person, ICFG-PEDES 11, RSTPReid 5: a k1 / eps / min_samples
that finds people in one chains or shatters them in another. `select_clustering` tries a grid
on features whose true grouping is known (the engine passes the val split's, never the
training split's) and keeps the setting whose partition agrees best with it, by pairwise
F1: precision and recall over the pairs of points put in one cluster (outliers are
singletons, so they make no pair).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from cpcl.clustering.dbscan import ClusterConfig, dbscan_precomputed
from cpcl.clustering.jaccard import expanded_weights, neighbourhoods, sparse_jaccard
from cpcl.clustering.knn import check_features, knn_device, nearest_neighbours
from cpcl.utils.config import Range, check_ranges
from cpcl.utils.errors import ConfigError


@dataclass(frozen=True)
class SelectionGrid:
    """The settings tried: every combination of the four tuples (convention and search as given)."""

    RETIRED: ClassVar[dict[str, str]] = {"beta": "was retired (never set: the selection scores pairwise F1); see "
                                                 "docs/experiments.md (2026-12-07, retired switches)"}
    k1: tuple[int, ...] = (10, 20, 30)  # k-reciprocal neighbourhood sizes
    k2: tuple[int, ...] = (1, 2, 3, 6)  # query-expansion rows (expanding past a person's images mixes people)
    eps: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)  # DBSCAN radii on the Jaccard distance
    min_samples: tuple[int, ...] = (2, 3, 4)  # DBSCAN core-point thresholds

    def __post_init__(self) -> None:
        if not (self.k1 and self.k2 and self.eps and self.min_samples):
            raise ConfigError("cluster selection grid: k1, k2, eps and min_samples each need at least one value")
        check_ranges(self, "cluster_select.grid", {"k1": Range(1), "k2": Range(1), "min_samples": Range(1),
                                                   "eps": Range(0, 1, low_open=True, high_open=True)})

    def settings(self, base: ClusterConfig) -> list[ClusterConfig]:
        """Each grid point as a full config, grouped by (k1, k2); a k2 above k1 is skipped."""
        out = [replace(base, k1=k1, k2=k2, eps=eps, min_samples=min_samples)
               for k1, k2, eps, min_samples in itertools.product(self.k1, self.k2, self.eps, self.min_samples)
               if k2 <= k1]
        if not out:
            raise ConfigError(f"cluster selection grid: every k2 {self.k2} is above every k1 {self.k1}")
        return out


def _pairs(counts: np.ndarray) -> float:
    return float((counts * (counts - 1) // 2).sum())


def pairwise_scores(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pairwise precision, recall and F1 of `labels` ([N], -1 = outlier) against `truth` ([N])."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    clustered = labels >= 0
    _, joint = np.unique(np.stack([labels[clustered], truth[clustered]]), axis=1, return_counts=True)
    _, per_cluster = np.unique(labels[clustered], return_counts=True)
    _, per_truth = np.unique(truth, return_counts=True)
    together, predicted, actual = _pairs(joint), _pairs(per_cluster), _pairs(per_truth)
    precision = together / predicted if predicted else 0.0
    recall = together / actual if actual else 0.0
    denominator = precision + recall
    f1 = 2 * precision * recall / denominator if denominator > 0 else 0.0
    return {"precision": precision, "recall": recall, "f": f1}


@dataclass(frozen=True)
class Selection:
    """The chosen setting and how each setting scored."""

    config: ClusterConfig  # the setting with the best F1 (ties: the first in grid order)
    scores: dict[str, float]  # its precision, recall, f, clusters, outliers
    tried: list[tuple[ClusterConfig, dict[str, float]]]  # every setting with its scores


def select_clustering(feats: np.ndarray, truth: np.ndarray, base: ClusterConfig, grid: SelectionGrid) -> Selection:
    """feats [N, D] L2-normalised, truth [N] the known grouping of the same points.

    Each setting's labels are those `cluster_features` gives it; the work is shared: one kNN
    search at the deepest neighbourhood, one Jaccard matrix per (k1, k2) up to the largest eps
    (DBSCAN ignores the stored distances above its own eps)."""
    x = check_features(feats, base.search.norm_tol)
    settings = grid.settings(base)
    depth = max(neighbourhoods(base.convention, c.k1, c.k2).depth for c in settings)
    rank, sims = nearest_neighbours(x, depth, base.search.knn_backend, base.search,
                                    knn_device(feats, base.search.knn_device))
    tried, dist, key = [], None, None
    for config in settings:
        if (config.k1, config.k2) != key:
            key = (config.k1, config.k2)
            vq = expanded_weights(x, rank, sims, config.k1, config.k2, convention=base.convention)
            dist = sparse_jaccard(vq, max(grid.eps), base.search)
        labels = dbscan_precomputed(dist, config.eps, config.min_samples)
        scores = pairwise_scores(labels, truth)
        scores.update(clusters=float(labels.max() + 1), outliers=float((labels < 0).sum()))
        tried.append((config, scores))
    best_config, best_scores = max(tried, key=lambda item: item[1]["f"])
    return Selection(best_config, best_scores, tried)
