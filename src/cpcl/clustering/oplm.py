"""OPLM, outlier pseudo-label mining (docs/method.md step 3): the image-caption pairing rescues
outliers of one modality through the clusters of the other.

Labels are per pair (an image's label is copied to each of its captions' pairs). For an image
outlier whose caption sits in text cluster k, the candidates are the clustered images whose
captions are in text cluster k; the most cosine-similar candidate lends its image label if the
similarity is at least theta. Text outliers are symmetric, within their image's cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

OplmMode = Literal["off", "one_stage", "two_stage"]


@dataclass
class OplmResult:
    image_labels: torch.Tensor  # [P] per-pair image labels after mining
    text_labels: torch.Tensor  # [P] per-pair text labels after mining
    rescued_images: int  # pairs whose image label went from -1 to a cluster
    rescued_texts: int  # pairs whose text label went from -1 to a cluster


def mine_modality(
    labels: torch.Tensor, other_labels: torch.Tensor, feats: torch.Tensor, theta: float
) -> torch.Tensor:
    """One direction of OPLM: new labels for the outliers of one modality.

    labels: [P] this modality's labels (-1 = outlier); other_labels: [P] the other modality's;
    feats: [P, D] this modality's L2-normalised features per pair. Returns a new [P] tensor.
    """
    new = labels.clone()
    outlier = (labels < 0) & (other_labels >= 0)
    clustered = labels >= 0
    for group in torch.unique(other_labels[outlier]).tolist():
        queries = torch.nonzero(outlier & (other_labels == group)).squeeze(1)
        candidates = torch.nonzero(clustered & (other_labels == group)).squeeze(1)
        if len(candidates) == 0:
            continue
        best_sim, best = (feats[queries] @ feats[candidates].T).max(dim=1)
        accept = best_sim >= theta
        new[queries[accept]] = labels[candidates[best[accept]]]
    return new


def mine_outliers(
    image_labels: torch.Tensor,
    text_labels: torch.Tensor,
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    mode: OplmMode,
    theta: float,
) -> OplmResult:
    """OPLM over all pairs. image_feats/text_feats: [P, D] per pair (an image's feature repeated
    for each of its captions). one_stage mines both modalities from the clustering's labels;
    two_stage mines images first, then texts using the updated image labels; off changes nothing.
    """
    if mode == "off":
        new_images, new_texts = image_labels.clone(), text_labels.clone()
    elif mode == "one_stage":
        new_images = mine_modality(image_labels, text_labels, image_feats, theta)
        new_texts = mine_modality(text_labels, image_labels, text_feats, theta)
    elif mode == "two_stage":
        new_images = mine_modality(image_labels, text_labels, image_feats, theta)
        new_texts = mine_modality(text_labels, new_images, text_feats, theta)
    else:
        raise ValueError(f"unknown oplm mode '{mode}'; valid: off, one_stage, two_stage")
    return OplmResult(
        image_labels=new_images,
        text_labels=new_texts,
        rescued_images=int(((image_labels < 0) & (new_images >= 0)).sum()),
        rescued_texts=int(((text_labels < 0) & (new_texts >= 0)).sum()),
    )
