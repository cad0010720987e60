"""Pair clustering on a fused distance (docs/method.md, step 3b), kept as a plug-in: a pair (a caption with
its image) is clustered on one similarity that weighs image-image, text-text and cross-modal similarity
(`clustering/pairing.py: pair_features`); both modalities of a pair take its cluster. It owns the config
section `labels.pair_fused`.

Kept beside CPCL rather than retired: on the shifted benchmark re-tested on 1,000 people, its weights chosen
on val (bench row labels_fused_on_val) were +0.60 [+0.14, +1.05] val R1 over CPCL over 3 seeds, though only
+0.13 [-1.68, +1.93] on test (docs/experiments.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cpcl.engine.pseudo_labels.base import Clusterings, LabelStrategy, PairFeatures, StrategyLabels, Weights
from cpcl.utils.errors import ConfigError

if TYPE_CHECKING:
    from cpcl.engine.config import CpclSection


def check_weights(weights: Weights, key: str) -> None:
    """ConfigError naming `key` unless (image, text, cross) are >= 0, cross <= image and text, image + text > 0
    (the fused similarity is then a kernel: `pair_features`)."""
    image, text, cross = weights
    if min(image, text, cross) < 0 or cross > min(image, text) or image + text <= 0:
        raise ConfigError(f"config field '{key}': each (image, text, cross) needs weights >= 0, cross <= image and "
                          f"text, image + text > 0; got ({image}, {text}, {cross})")


@dataclass(frozen=True)
class PairFusedSection:
    """labels.pair_fused: the fusion weights of the pairs' similarity."""

    weights: Weights = (1.0, 1.0, 0.5)  # (image, text, cross) weights of the fused similarity; cross at most the other two
    weights_on_val: tuple[Weights, ...] = ()  # with cluster_select.on=val: further (image, text, cross) tried, each
    # with the grid; the pair clustering that matches val best trains

    def __post_init__(self) -> None:
        check_weights(self.weights, "labels.pair_fused.weights")
        for weights in self.weights_on_val:
            check_weights(weights, "labels.pair_fused.weights_on_val")

    def tried_on_val(self) -> list[Weights]:
        """`weights`, then each of `weights_on_val` not already tried."""
        return list(dict.fromkeys([self.weights, *self.weights_on_val]))


def pair_fused(found: Clusterings, feats: PairFeatures, cpcl: CpclSection) -> StrategyLabels:
    """Step 3b: the pair clusters [P], for both modalities."""
    return found.pair.clone(), found.pair.clone(), {}


STRATEGY = LabelStrategy(clusters=("pair",), labels=pair_fused)
