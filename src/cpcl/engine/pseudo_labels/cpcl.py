"""CPCL's labels (docs/method.md steps 2-3): the images and the captions are clustered apart, each pair
takes its image's cluster, and OPLM mines the outliers through the other modality (cpcl.oplm, cpcl.theta)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cpcl.clustering.oplm import mine_outliers
from cpcl.engine.pseudo_labels.base import Clusterings, LabelStrategy, PairFeatures, StrategyLabels

if TYPE_CHECKING:
    from cpcl.engine.config import CpclSection


def cpcl_labels(found: Clusterings, feats: PairFeatures, cpcl: CpclSection) -> StrategyLabels:
    """Step 3: the image clusters [N_img] copied to the pairs, then OPLM with the caption clusters [P]."""
    mined = mine_outliers(found.image[feats.image_index], found.text, feats.pair_image_feats, feats.text_feats,
                          cpcl.oplm, cpcl.theta)
    stats = {"oplm_rescued_images": mined.rescued_images, "oplm_rescued_texts": mined.rescued_texts}
    return mined.image_labels, mined.text_labels, stats


STRATEGY = LabelStrategy(clusters=("image", "text"), labels=cpcl_labels)
