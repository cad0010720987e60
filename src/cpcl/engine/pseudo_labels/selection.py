"""The clustering chosen on val (cluster_select.on=val, docs/method.md step 2): per epoch and per thing the
strategy clusters, the grid setting whose clusters of the val split best match its person ids. The ids are
the val split's (as checkpoint selection reads them), never the training split's."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cpcl.clustering.select import SelectionGrid, select_clustering
from cpcl.engine.pseudo_labels.base import ClusterSettings, PairFeatures, Weights, clustered_features


@dataclass(frozen=True)
class ValSplit:
    """The val split's features with its person ids: of each image [N_img] and of each caption [M]."""

    feats: PairFeatures
    image_ids: torch.Tensor
    caption_ids: torch.Tensor


def select_on_val(val: ValSplit, clusters: tuple[str, ...], base: ClusterSettings, grid: SelectionGrid,
                  pair_weights: list[Weights]) -> tuple[ClusterSettings, dict[str, float]]:
    """`base` with each of `clusters` chosen from `grid` on `val`: images against their person ids, captions
    against theirs, pairs (a caption with its image, fused) against the caption's, once per (image, text, cross)
    weights of `pair_weights`: the weights whose best setting scores highest are kept. Returns (settings, the
    `select_` stats of the epoch record)."""
    settings, stats = base, {}
    for name in clusters:
        ids = (val.image_ids if name == "image" else val.caption_ids).numpy()
        tried = pair_weights if name == "pair" else [base.pair_weights]
        best = [(select_clustering(clustered_features(name, val.feats, weights), ids, getattr(base, name), grid),
                 weights) for weights in tried]
        selection, weights = max(best, key=lambda item: item[0].scores["f"])
        settings = settings.chosen(name, selection.config)
        if name == "pair":
            settings = settings.chosen("pair_weights", weights)
            stats.update(select_pair_image_weight=weights[0], select_pair_text_weight=weights[1],
                         select_pair_cross_weight=weights[2])
        config, scores = selection.config, selection.scores
        stats.update({f"select_{name}_k1": config.k1, f"select_{name}_k2": config.k2, f"select_{name}_eps": config.eps,
                      f"select_{name}_min_samples": config.min_samples, f"select_{name}_val_precision":
                      scores["precision"], f"select_{name}_val_recall": scores["recall"],
                      f"select_{name}_val_f": scores["f"]})
    return settings, stats
