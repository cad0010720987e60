"""The oracle baseline's labels (true ids) and the `oracle_` diagnostics of pseudo labels against true ids:
with the val selection (`selection.py`, val ids only), the only readers of person ids in training. Neither
feeds a CPCL label."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from cpcl.clustering.select import pairwise_scores
from cpcl.data.records import SplitData
from cpcl.engine.pseudo_labels.base import PairLabels, count


def oracle_pair_person_ids(split: SplitData) -> torch.Tensor | None:
    """True person id of each pair [P], for the oracle baseline and `oracle_` diagnostics only; None when the
    split has no ids."""
    ids = [split.images[c.image_id].person_id for c in split.captions]  # oracle only (and oracle_ diagnostics)
    return None if any(i is None for i in ids) else torch.tensor(ids, dtype=torch.long)


def oracle_pair_labels(oracle_person_ids: torch.Tensor) -> PairLabels:
    """The oracle baseline: true identities (mapped to 0..K-1) as both modalities' labels."""
    labels = torch.unique(oracle_person_ids, return_inverse=True)[1]
    clusters = count(labels)[0]
    stats = {"image_clusters": clusters, "image_outliers": 0, "text_clusters": clusters, "text_outliers": 0}
    return PairLabels(labels.clone(), labels.clone(), stats)


def oracle_cluster_quality(labels: torch.Tensor, oracle_person_ids: torch.Tensor, prefix: str) -> dict[str, float]:
    """Diagnostics against true ids, for the log only: NMI, ARI (outliers as singletons), purity (of the
    clustered points), and pairwise same-person precision and recall (`pairwise_scores`: outliers make no
    pair; recall's denominator counts every pair of one person, outliers included)."""
    y = labels.numpy().copy()
    outliers = y < 0
    y[outliers] = y.max(initial=-1) + 1 + np.arange(int(outliers.sum()))  # each outlier its own cluster
    truth = oracle_person_ids.numpy()
    clustered = ~outliers
    pairwise = pairwise_scores(labels.numpy(), truth)
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
        f"oracle_{prefix}_precision": pairwise["precision"],
        f"oracle_{prefix}_recall": pairwise["recall"],
    }
