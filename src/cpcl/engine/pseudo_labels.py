"""Pseudo labels for one epoch (docs/method.md steps 2-3b): cluster each modality, copy image labels
to their pairs, mine outliers; or a pairing variant (`labels.mode`, `labels.refine`). Also the oracle's
labels (true ids) and the `oracle_` cluster quality diagnostics; those two are the only readers of
person ids here, and neither feeds the CPCL path (`select_on_val` reads the val split's ids only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from cpcl.clustering import ClusterConfig, cluster_features
from cpcl.clustering.oplm import mine_outliers
from cpcl.clustering.pairing import image_centred_labels, merge_by_captions, pair_features, split_by_captions
from cpcl.clustering.select import SelectionGrid, pairwise_scores, select_clustering
from cpcl.engine.config import CpclSection, LabelsSection

VARIANTS = ("cpcl", "image_centred", "pair_fused")  # labels.mode values (docs/method.md, steps 2-3b)
_CLUSTERED = {"cpcl": ("image", "text"), "image_centred": ("image", "text"), "pair_fused": ("pair",)}


@dataclass
class PairLabels:
    image: torch.Tensor  # [P] image pseudo label of each pair's image, -1 = outlier
    text: torch.Tensor  # [P] text pseudo label of each pair's caption, -1 = outlier
    stats: dict[str, float] = field(default_factory=dict)  # counts and timings for the epoch log
    panel: dict[str, torch.Tensor] = field(default_factory=dict)  # labels.panel: variant -> its image labels [P]
    image_weight: float = 1.0  # multiplier of the cluster terms that read `image` (cpcl.weight_by_val_f)
    text_weight: float = 1.0  # multiplier of the cluster terms that read `text`


@dataclass(frozen=True)
class ClusterSettings:
    """The clustering setting of each thing clustered in one epoch."""

    image: ClusterConfig  # the images
    text: ClusterConfig  # the captions
    pair: ClusterConfig  # the pairs' fused features (labels.mode=pair_fused)
    fused: tuple[float, float, float] | None = None  # the pairs' (image, text, cross) weights; None: labels.fused_*


@dataclass
class Clusterings:
    """DBSCAN's labels of one epoch; None where nothing needed them."""

    image: torch.Tensor | None  # [N_img]
    text: torch.Tensor | None  # [P]
    pair: torch.Tensor | None  # [P]
    stats: dict[str, float]  # clusters, outliers and seconds of each


def _count(labels: torch.Tensor) -> tuple[int, int]:
    """(clusters, outliers) of a label vector."""
    return int(labels.max()) + 1 if len(labels) else 0, int((labels < 0).sum())


def needed_clusterings(labels: LabelsSection) -> tuple[str, ...]:
    """What the epoch clusters ("image", "text", "pair") for labels.mode, labels.refine and labels.panel."""
    modes = VARIANTS if labels.panel else (labels.mode,)
    needed = {name for mode in modes for name in _CLUSTERED[mode]}
    if labels.refine != "off" or labels.panel:
        needed.add("text")  # refinement reads the caption clusters
    return tuple(name for name in ("image", "text", "pair") if name in needed)


def fused_weights(labels: LabelsSection) -> tuple[float, float, float]:
    """labels.fused_* as (image, text, cross)."""
    return labels.fused_image_weight, labels.fused_text_weight, labels.fused_cross_weight


def clustered_features(name: str, image_feats: torch.Tensor, text_feats: torch.Tensor, image_index: torch.Tensor,
                       fused: tuple[float, float, float]) -> np.ndarray:
    """The features clustered as `name`: the images [N_img, D], the captions [P, D], or the pairs [P, D] (each
    caption with its image, fused by `pair_features` with the (image, text, cross) weights `fused`)."""
    if name == "pair":
        return pair_features(image_feats[image_index].numpy(), text_feats.numpy(), *fused)
    return (image_feats if name == "image" else text_feats).numpy()


def cluster_all(image_feats: torch.Tensor, text_feats: torch.Tensor, image_index: torch.Tensor,
                settings: ClusterSettings, labels: LabelsSection, needed: tuple[str, ...]) -> Clusterings:
    """Step 2 for each of `needed`: images [N_img, D], captions [P, D], pairs (fused, `pair_features`)."""
    found: dict[str, torch.Tensor] = {}
    stats: dict[str, float] = {}
    for name in needed:
        start = time.perf_counter()
        feats = clustered_features(name, image_feats, text_feats, image_index, settings.fused or fused_weights(labels))
        found[name] = torch.from_numpy(cluster_features(feats, getattr(settings, name)).labels).long()
        clusters, outliers = _count(found[name])
        stats.update({f"{name}_clusters": clusters, f"{name}_outliers": outliers,
                      f"cluster_{name}_seconds": time.perf_counter() - start})
    return Clusterings(found.get("image"), found.get("text"), found.get("pair"), stats)


def refine_labels(labels: torch.Tensor, text_labels: torch.Tensor, image_index: torch.Tensor,
                  image_feats: torch.Tensor, section: LabelsSection, refine: str) -> tuple[torch.Tensor, dict]:
    """Step 3b's refinement of per-pair labels [P] by the caption clusters [P]: split, merge, or both."""
    out, stats = labels.numpy(), {}
    if refine in ("split", "both"):
        out, stats["refine_split"] = split_by_captions(out, text_labels.numpy(), image_index.numpy(),
                                                       image_feats.numpy(), section.split_agreement,
                                                       section.split_min_pairs)
    if refine in ("merge", "both"):
        out, stats["refine_merged"] = merge_by_captions(out, text_labels.numpy(), image_feats[image_index].numpy(),
                                                        section.merge_share, section.merge_min_similarity)
    return torch.from_numpy(out).long(), stats


def variant_labels(mode: str, refine: str, found: Clusterings, image_feats: torch.Tensor, text_feats: torch.Tensor,
                   image_index: torch.Tensor, cpcl: CpclSection, section: LabelsSection) -> PairLabels:
    """Steps 3 / 3b: one variant's per-pair labels from the epoch's clusterings.

    cpcl: image labels copied to pairs, then OPLM (cpcl.oplm, cpcl.theta); image_centred: a caption takes
    its image's label, image outliers rescued through caption clusters (cpcl.theta); pair_fused: the pair
    clusters, for both modalities. `refine` (off | split | merge | both) then refines the image labels by
    the caption clusters; outside cpcl mode the caption labels equal the image labels.
    """
    stats: dict[str, float] = {}
    if mode == "cpcl":
        mined = mine_outliers(found.image[image_index], found.text, image_feats[image_index], text_feats,
                              cpcl.oplm, cpcl.theta)
        image, text = mined.image_labels, mined.text_labels
        stats.update(oplm_rescued_images=mined.rescued_images, oplm_rescued_texts=mined.rescued_texts)
    elif mode == "image_centred":
        per_image, stats["image_centred_rescued"] = image_centred_labels(
            found.image.numpy(), found.text.numpy(), image_index.numpy(), image_feats.numpy(), cpcl.theta)
        image = torch.from_numpy(per_image).long()[image_index]
    elif mode == "pair_fused":
        image = found.pair.clone()
    else:
        raise ValueError(f"unknown labels.mode {mode!r}; valid: {', '.join(VARIANTS)}")
    if refine != "off":
        image, refined = refine_labels(image, found.text, image_index, image_feats, section, refine)
        stats.update(refined)
    if mode != "cpcl":
        text = image.clone()
    stats.update(labels_image_clusters=_count(image)[0], labels_text_clusters=_count(text)[0],
                 pairs_unlabelled=int(((image < 0) & (text < 0)).sum()))
    return PairLabels(image, text, stats)


def cluster_pairs(
    image_feats: torch.Tensor, text_feats: torch.Tensor, image_index: torch.Tensor,
    cluster: ClusterConfig, cpcl: CpclSection, text_cluster: ClusterConfig | None = None,
    labels: LabelsSection | None = None, pair_cluster: ClusterConfig | None = None,
    fused: tuple[float, float, float] | None = None,
) -> PairLabels:
    """image_feats [N_img, D], text_feats [P, D] (one per caption = pair), image_index [P].

    Steps 2-3 (3b with `labels`, default CPCL's): the images are clustered with `cluster`, the captions with
    `text_cluster` (default `cluster`), the pairs with `pair_cluster` (default `cluster`) on features fused
    with the weights `fused` (default labels.fused_*); only what `labels` needs is clustered. With
    labels.panel, `panel` holds every variant's image labels.
    """
    labels = labels or LabelsSection()
    settings = ClusterSettings(cluster, text_cluster or cluster, pair_cluster or cluster, fused)
    found = cluster_all(image_feats, text_feats, image_index, settings, labels, needed_clusterings(labels))
    result = variant_labels(labels.mode, labels.refine, found, image_feats, text_feats, image_index, cpcl, labels)
    result.stats = {**found.stats, **result.stats}
    if labels.panel:
        panel_refine = labels.refine if labels.refine != "off" else "both"
        for mode in VARIANTS:
            for refine, suffix in (("off", ""), (panel_refine, "_refined")):
                result.panel[mode + suffix] = variant_labels(mode, refine, found, image_feats, text_feats, image_index,
                                                             cpcl, labels).image
    return result


def select_on_val(image_feats: torch.Tensor, text_feats: torch.Tensor, image_index: torch.Tensor,
                  image_ids: torch.Tensor, caption_ids: torch.Tensor, base: ClusterConfig, grid: SelectionGrid,
                  labels: LabelsSection, fused_grid: tuple[tuple[float, float, float], ...] = ()
                  ) -> tuple[ClusterSettings, dict[str, float]]:
    """The clustering settings chosen on the val split: val image features [N, D] with their person ids [N],
    caption features [M, D] with theirs [M], and the image of each caption [M]. The ids are the val split's
    (as checkpoint selection reads them), never the training split's. Each of `needed_clusterings(labels)` is
    chosen the same way: images against their person ids, captions against theirs, pairs (a caption with its
    image, fused as in training) against the caption's; the pairs are fused with labels.fused_* and with each
    (image, text, cross) weight of `fused_grid`, and the weights whose best setting scores highest are kept.
    Returns (settings, stats for the epoch log); what is not needed keeps `base`."""
    stats: dict[str, float] = {}
    chosen = {"image": base, "text": base, "pair": base}
    fused = fused_weights(labels)
    for name in needed_clusterings(labels):
        ids = (image_ids if name == "image" else caption_ids).numpy()
        tried = list(dict.fromkeys([fused, *fused_grid])) if name == "pair" else [fused]
        best = [(select_clustering(clustered_features(name, image_feats, text_feats, image_index, weights), ids,
                                   base, grid), weights) for weights in tried]
        selection, weights = max(best, key=lambda item: item[0].scores["f"])
        chosen[name] = selection.config
        if name == "pair":
            fused = weights
            stats.update(select_pair_image_weight=weights[0], select_pair_text_weight=weights[1],
                         select_pair_cross_weight=weights[2])
        stats.update({f"select_{name}_k1": selection.config.k1, f"select_{name}_k2": selection.config.k2,
                      f"select_{name}_eps": selection.config.eps,
                      f"select_{name}_min_samples": selection.config.min_samples,
                      f"select_{name}_val_precision": selection.scores["precision"],
                      f"select_{name}_val_recall": selection.scores["recall"],
                      f"select_{name}_val_f": selection.scores["f"]})
    return ClusterSettings(**chosen, fused=fused), stats


def val_f_weights(mode: str, stats: dict[str, float]) -> tuple[float, float]:
    """cpcl.weight_by_val_f: the (image, text) label weights of an epoch whose clustering `select_on_val` chose
    (its `stats`): the val pairwise F of the clustering each modality's labels come from: the images and the
    captions (mode cpcl), the images for both (image_centred), the pairs for both (pair_fused)."""
    source = {"cpcl": ("image", "text"), "image_centred": ("image", "image"), "pair_fused": ("pair", "pair")}[mode]
    return stats[f"select_{source[0]}_val_f"], stats[f"select_{source[1]}_val_f"]


def oracle_pair_labels(oracle_person_ids: torch.Tensor) -> PairLabels:
    """The oracle baseline: true identities (mapped to 0..K-1) as both modalities' labels."""
    labels = torch.unique(oracle_person_ids, return_inverse=True)[1]
    clusters = int(labels.max()) + 1
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
