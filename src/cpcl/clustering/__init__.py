"""Clustering layer: k-reciprocal Jaccard distance (sparse, exact) and DBSCAN pseudo labels.

Imports numpy / scipy / scikit-learn / faiss / torch and `cpcl.utils` only.
"""

from cpcl.clustering.dbscan import (
    ClusterConfig,
    ClusterResult,
    cluster_features,
    dbscan_precomputed,
    relabel_consecutive,
)
from cpcl.clustering.jaccard import CONVENTIONS, expanded_weights, jaccard_distance_sparse, sparse_jaccard
from cpcl.clustering.knn import (
    KNN_BACKENDS,
    FeatureError,
    JaccardOptions,
    check_features,
    knn_device,
    nearest_neighbours,
)

__all__ = [
    "CONVENTIONS",
    "KNN_BACKENDS",
    "ClusterConfig",
    "ClusterResult",
    "FeatureError",
    "JaccardOptions",
    "check_features",
    "cluster_features",
    "dbscan_precomputed",
    "expanded_weights",
    "jaccard_distance_sparse",
    "knn_device",
    "nearest_neighbours",
    "relabel_consecutive",
    "sparse_jaccard",
]
