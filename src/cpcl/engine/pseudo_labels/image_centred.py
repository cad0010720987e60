"""ICPG-style image-centred labels (docs/method.md, step 3b): one label per image, an image outlier rescued
through the caption clusters of its captions (`clustering/pairing.py: image_centred_labels`, cpcl.theta);
every caption takes its image's label."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from cpcl.clustering.pairing import image_centred_labels
from cpcl.engine.pseudo_labels.base import Clusterings, LabelStrategy, PairFeatures, StrategyLabels

if TYPE_CHECKING:
    from cpcl.engine.config import CpclSection


def image_centred(found: Clusterings, feats: PairFeatures, cpcl: CpclSection) -> StrategyLabels:
    """Step 3b: per-image labels [N_img] after the rescue, copied to both modalities of each pair."""
    per_image, rescued = image_centred_labels(found.image.numpy(), found.text.numpy(), feats.image_index.numpy(),
                                              feats.image_feats.numpy(), cpcl.theta)
    labels = torch.from_numpy(per_image).long()[feats.image_index]
    return labels, labels.clone(), {"image_centred_rescued": rescued}


STRATEGY = LabelStrategy(clusters=("image", "text"), labels=image_centred)
