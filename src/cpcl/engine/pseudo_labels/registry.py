"""The pseudo-label strategies by `labels.mode`, and the phase that runs the configured one (docs/method.md
steps 2-3b). A strategy is one module of this package (a `LabelStrategy`) and one line below."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cpcl.engine.pseudo_labels import cpcl, image_centred, pair_fused
from cpcl.engine.pseudo_labels.base import (ClusterSettings, LabelStrategy, PairFeatures, PairLabels, cluster_all,
                                            count)
from cpcl.utils.errors import ConfigError

if TYPE_CHECKING:
    from cpcl.engine.config import CpclSection

LABEL_STRATEGIES: dict[str, LabelStrategy] = {
    "cpcl": cpcl.STRATEGY,  # the paper's: image clusters copied to pairs, OPLM (steps 2-3)
    "image_centred": image_centred.STRATEGY,  # ICPG-style: one label per image, outliers rescued by captions
    "pair_fused": pair_fused.STRATEGY,  # pairs clustered on a fused similarity (labels.pair_fused)
}


def label_strategy(mode: str) -> LabelStrategy:
    """The strategy of labels.mode `mode`; ConfigError listing the valid ones for an unknown name."""
    if mode not in LABEL_STRATEGIES:
        raise ConfigError(f"config field 'labels.mode': unknown strategy {mode!r}; valid: "
                          f"{', '.join(LABEL_STRATEGIES)}")
    return LABEL_STRATEGIES[mode]


def cluster_pairs(feats: PairFeatures, settings: ClusterSettings, mode: str, cpcl_section: CpclSection) -> PairLabels:
    """Steps 2-3 of labels.mode `mode`: cluster what its strategy needs, each with its setting in `settings`, and
    make the per-pair labels [P]; the stats hold step 2's counts and times and the labels' own counts."""
    strategy = label_strategy(mode)
    found = cluster_all(feats, settings, strategy.clusters)
    image, text, stats = strategy.labels(found, feats, cpcl_section)
    stats.update(labels_image_clusters=count(image)[0], labels_text_clusters=count(text)[0],
                 pairs_unlabelled=int(((image < 0) & (text < 0)).sum()))
    return PairLabels(image, text, {**found.stats, **stats})
