"""Pseudo labels for one epoch (docs/method.md steps 2-3): cluster each modality, copy image labels
to their pairs, mine outliers. Also the oracle's labels (true ids) and the `oracle_` cluster
quality diagnostics; those two are the only readers of person ids here, and neither feeds the
CPCL path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from cpcl.clustering import ClusterConfig, cluster_features
from cpcl.clustering.oplm import mine_outliers
from cpcl.clustering.select import SelectionGrid, select_clustering
from cpcl.engine.config import CpclSection


@dataclass
class PairLabels:
    image: torch.Tensor  # [P] image pseudo label of each pair's image, -1 = outlier
    text: torch.Tensor  # [P] text pseudo label of each pair's caption, -1 = outlier
    stats: dict[str, float] = field(default_factory=dict)  # counts and timings for the epoch log


def _count(labels: torch.Tensor) -> tuple[int, int]:
    """(clusters, outliers) of a label vector."""
    return int(labels.max()) + 1 if len(labels) else 0, int((labels < 0).sum())


def cluster_pairs(
    image_feats: torch.Tensor, text_feats: torch.Tensor, image_index: torch.Tensor,
    cluster: ClusterConfig, cpcl: CpclSection, text_cluster: ClusterConfig | None = None,
) -> PairLabels:
    """image_feats [N_img, D], text_feats [P, D] (one per caption = pair), image_index [P].

    Images are clustered once per unique image; their labels are copied to each of their pairs.
    `text_cluster` clusters the captions when given (a setting chosen per modality), else `cluster`.
    """
    start = time.perf_counter()
    image_labels = torch.from_numpy(cluster_features(image_feats.numpy(), cluster).labels).long()
    image_seconds = time.perf_counter() - start
    text_labels = torch.from_numpy(cluster_features(text_feats.numpy(), text_cluster or cluster).labels).long()
    text_seconds = time.perf_counter() - start - image_seconds
    pair_image = image_labels[image_index]
    mined = mine_outliers(pair_image, text_labels, image_feats[image_index], text_feats, cpcl.oplm, cpcl.theta)
    image_clusters, image_outliers = _count(image_labels)
    text_clusters, text_outliers = _count(text_labels)
    stats = {
        "image_clusters": image_clusters, "image_outliers": image_outliers,
        "text_clusters": text_clusters, "text_outliers": text_outliers,
        "oplm_rescued_images": mined.rescued_images, "oplm_rescued_texts": mined.rescued_texts,
        "pairs_unlabelled": int(((mined.image_labels < 0) & (mined.text_labels < 0)).sum()),
        "cluster_image_seconds": image_seconds, "cluster_text_seconds": text_seconds,
    }
    return PairLabels(mined.image_labels, mined.text_labels, stats)


def select_on_val(image_feats: torch.Tensor, text_feats: torch.Tensor, image_ids: torch.Tensor,
                  caption_ids: torch.Tensor, base: ClusterConfig, grid: SelectionGrid,
                  ) -> tuple[ClusterConfig, ClusterConfig, dict[str, float]]:
    """The image and the caption clustering settings chosen on the val split: val image features
    [N, D] with their person ids [N], val caption features [M, D] with theirs [M]. The ids are
    the val split's (as checkpoint selection reads them), never the training split's.
    Returns (image setting, caption setting, stats for the epoch log)."""
    stats: dict[str, float] = {}
    chosen = []
    for modality, feats, ids in (("image", image_feats, image_ids), ("text", text_feats, caption_ids)):
        selection = select_clustering(feats.numpy(), ids.numpy(), base, grid)
        chosen.append(selection.config)
        stats.update({f"select_{modality}_k1": selection.config.k1, f"select_{modality}_eps": selection.config.eps,
                      f"select_{modality}_min_samples": selection.config.min_samples,
                      f"select_{modality}_val_precision": selection.scores["precision"],
                      f"select_{modality}_val_recall": selection.scores["recall"],
                      f"select_{modality}_val_f": selection.scores["f"]})
    return chosen[0], chosen[1], stats


def oracle_pair_labels(oracle_person_ids: torch.Tensor) -> PairLabels:
    """The oracle baseline: true identities (mapped to 0..K-1) as both modalities' labels."""
    labels = torch.unique(oracle_person_ids, return_inverse=True)[1]
    clusters = int(labels.max()) + 1
    stats = {"image_clusters": clusters, "image_outliers": 0, "text_clusters": clusters, "text_outliers": 0}
    return PairLabels(labels.clone(), labels.clone(), stats)


def oracle_cluster_quality(labels: torch.Tensor, oracle_person_ids: torch.Tensor, prefix: str) -> dict[str, float]:
    """Diagnostics against true ids, for the log only: NMI, ARI (outliers as singletons), purity."""
    y = labels.numpy().copy()
    outliers = y < 0
    y[outliers] = y.max(initial=-1) + 1 + np.arange(int(outliers.sum()))  # each outlier its own cluster
    truth = oracle_person_ids.numpy()
    clustered = ~outliers
    purity = 0.0
    if clustered.any():
        combos, counts = np.unique(np.stack([y[clustered], truth[clustered]], 1), axis=0, return_counts=True)
        majority = np.zeros(int(combos[:, 0].max()) + 1, dtype=np.int64)
        np.maximum.at(majority, combos[:, 0], counts)  # largest true-id share of each cluster
        purity = float(majority.sum()) / int(clustered.sum())
    return {
        f"oracle_{prefix}_nmi": float(normalized_mutual_info_score(truth, y)),
        f"oracle_{prefix}_ari": float(adjusted_rand_score(truth, y)),
        f"oracle_{prefix}_purity": purity,
    }
