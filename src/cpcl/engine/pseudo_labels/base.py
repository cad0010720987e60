"""What every pseudo-label strategy shares (docs/method.md steps 2-3): the epoch's features, the clustering
settings, step 2's clusterings, the labels a strategy returns, and the strategy record itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from cpcl.clustering import ClusterConfig, cluster_features
from cpcl.clustering.pairing import pair_features

if TYPE_CHECKING:
    from cpcl.engine.config import CpclSection

CLUSTERED = ("image", "text", "pair")  # what step 2 can cluster: the images, the captions, the pairs (fused)
Weights = tuple[float, float, float]  # the (image, text, cross) weights of a pair's fused similarity


@dataclass(frozen=True)
class PairFeatures:
    """Step 1's features of one split: image_feats [N_img, D], text_feats [P, D] (one per caption = pair),
    both L2-normalised, and image_index [P], the image of each pair."""

    image_feats: torch.Tensor
    text_feats: torch.Tensor
    image_index: torch.Tensor

    @property
    def pair_image_feats(self) -> torch.Tensor:
        """Each pair's image feature [P, D]."""
        return self.image_feats[self.image_index]


@dataclass(frozen=True)
class ClusterSettings:
    """The clustering setting of each thing one epoch clusters: cluster.* for all, or what val chose."""

    image: ClusterConfig  # the images
    text: ClusterConfig  # the captions
    pair: ClusterConfig  # the pairs' fused features
    pair_weights: Weights = (1.0, 1.0, 0.5)  # the pairs' (image, text, cross) fusion weights

    @classmethod
    def fixed(cls, cluster: ClusterConfig, pair_weights: Weights) -> ClusterSettings:
        """One setting for everything (cluster_select.on=fixed)."""
        return cls(cluster, cluster, cluster, pair_weights)

    def chosen(self, name: str, value: ClusterConfig | Weights) -> ClusterSettings:
        """These settings with `name`'s ("image", "text", "pair", "pair_weights") replaced by `value`."""
        return replace(self, **{name: value})


@dataclass
class Clusterings:
    """Step 2's DBSCAN labels of one epoch; None where the strategy needs none."""

    image: torch.Tensor | None  # [N_img]
    text: torch.Tensor | None  # [P]
    pair: torch.Tensor | None  # [P]
    stats: dict[str, float] = field(default_factory=dict)  # clusters, outliers and seconds of each


@dataclass
class PairLabels:
    """The labels an epoch trains with (step 3), one per pair and modality."""

    image: torch.Tensor  # [P] pseudo label of each pair's image, -1 = outlier
    text: torch.Tensor  # [P] pseudo label of each pair's caption, -1 = outlier
    stats: dict[str, float] = field(default_factory=dict)  # counts and timings for the epoch record


StrategyLabels = tuple[torch.Tensor, torch.Tensor, dict[str, float]]  # image [P], text [P], stats


@dataclass(frozen=True)
class LabelStrategy:
    """A pseudo-label strategy (a value of labels.mode): what it clusters in step 2, and how it turns those
    clusterings into per-pair labels (step 3), with the cpcl section's OPLM settings at hand."""

    clusters: tuple[str, ...]  # of CLUSTERED, what step 2 clusters for it
    labels: Callable[[Clusterings, PairFeatures, CpclSection], StrategyLabels]  # step 3: (image, text, stats)


def count(labels: torch.Tensor) -> tuple[int, int]:
    """(clusters, outliers) of a label vector."""
    return int(labels.max()) + 1 if len(labels) else 0, int((labels < 0).sum())


def clustered_features(name: str, feats: PairFeatures, weights: Weights) -> np.ndarray:
    """The features clustered as `name`: the images [N_img, D], the captions [P, D], or the pairs [P, B * D]
    (each caption with its image, fused by `pair_features` with the (image, text, cross) `weights`)."""
    if name == "pair":
        return pair_features(feats.pair_image_feats.numpy(), feats.text_feats.numpy(), *weights)
    return (feats.image_feats if name == "image" else feats.text_feats).numpy()


def cluster_all(feats: PairFeatures, settings: ClusterSettings, needed: tuple[str, ...]) -> Clusterings:
    """Step 2 for each of `needed`, each with its setting in `settings`."""
    found: dict[str, torch.Tensor] = {}
    stats: dict[str, float] = {}
    for name in needed:
        start = time.perf_counter()
        points = clustered_features(name, feats, settings.pair_weights)
        found[name] = torch.from_numpy(cluster_features(points, getattr(settings, name)).labels).long()
        clusters, outliers = count(found[name])
        stats.update({f"{name}_clusters": clusters, f"{name}_outliers": outliers,
                      f"cluster_{name}_seconds": time.perf_counter() - start})
    return Clusterings(found.get("image"), found.get("text"), found.get("pair"), stats)
