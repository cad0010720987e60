"""Training losses, pure tensor in / tensor out (docs/method.md step 5 and the ITC baseline).

Every function returns a dict of named `*_loss` terms; the engine weights and sums them and
logs each one. Features are L2-normalised; labels are pseudo labels in {-1, 0..K-1}, where
-1 (an outlier) takes no part in a prototype term.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

PcmMode = Literal["single", "cross", "both"]
PositiveRule = Literal["image", "text", "either", "both"]


def cluster_nce(feats: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """ClusterNCE: mean over labelled samples of -log softmax(f . M^T / tau)[y].

    feats: [B, D]; prototypes: [K, D] (a memory buffer, no gradient); labels: [B] in {-1, 0..K-1}.
    Zero (still attached to the graph) when no sample of the batch is labelled.
    """
    keep = labels >= 0
    if not bool(keep.any()):
        return feats.sum() * 0.0
    logits = feats[keep] @ prototypes.T / tau
    return F.cross_entropy(logits, labels[keep])


def pcm_losses(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    image_labels: torch.Tensor,
    text_labels: torch.Tensor,
    image_memory: torch.Tensor,
    text_memory: torch.Tensor,
    tau: float,
    mode: PcmMode = "both",
) -> dict[str, torch.Tensor]:
    """Prototypical contrastive matching (docs/method.md step 5, PCM).

    image_feats, text_feats: [B, D] of B pairs; image_labels, text_labels: [B] (the image label
    of each pair's image, the text label of its caption); image_memory [K_v, D], text_memory
    [K_t, D]. Single-modal terms pull each feature to its own modality's prototype; cross-modal
    terms pull an image to the text prototype of its caption's cluster and a text to the image
    prototype of its image's cluster.

    Takes 8 parameters because a loss here is pure tensors in, tensors out (docs/architecture.md): each
    modality's features, labels and memory, the temperature and which terms to compute.
    """
    terms: dict[str, torch.Tensor] = {}
    if mode in ("single", "both"):
        terms["pcm_image_loss"] = cluster_nce(image_feats, image_memory, image_labels, tau)
        terms["pcm_text_loss"] = cluster_nce(text_feats, text_memory, text_labels, tau)
    if mode in ("cross", "both"):
        terms["pcm_image_to_text_loss"] = cluster_nce(image_feats, text_memory, text_labels, tau)
        terms["pcm_text_to_image_loss"] = cluster_nce(text_feats, image_memory, image_labels, tau)
    return terms


def positive_mask(image_labels: torch.Tensor, text_labels: torch.Tensor, rule: PositiveRule) -> torch.Tensor:
    """[B, B] bool: pair j is a positive of pair i (i == j always; otherwise by pseudo labels).

    rule: "image" (same image cluster), "text" (same text cluster), "either", "both". Labels
    of -1 never agree with anything.
    """
    def agree(labels: torch.Tensor) -> torch.Tensor:
        return (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)

    if rule == "image":
        mask = agree(image_labels)
    elif rule == "text":
        mask = agree(text_labels)
    elif rule == "either":
        mask = agree(image_labels) | agree(text_labels)
    elif rule == "both":
        mask = agree(image_labels) & agree(text_labels)
    else:
        raise ValueError(f"unknown positive rule '{rule}'; valid: image, text, either, both")
    return mask | torch.eye(len(image_labels), dtype=torch.bool, device=image_labels.device)


def _projection_matching(logits: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """mean_i KL(p_i || q_i), p = softmax(logits), q = mask normalised per row (L1)."""
    q = mask.to(logits.dtype)
    q = q / q.sum(1, keepdim=True)
    p_log = F.log_softmax(logits, dim=1)
    return (p_log.exp() * (p_log - torch.log(q + eps))).sum(1).mean()


def icpm_loss(
    image_feats: torch.Tensor, text_feats: torch.Tensor, mask: torch.Tensor, scale: float, eps: float
) -> dict[str, torch.Tensor]:
    """Instance-level cross-modal projection matching (CMPM with pseudo-label positives).

    image_feats, text_feats: [B, D] L2-normalised; mask: [B, B] positives (see positive_mask);
    p_ij = softmax_j(scale * cos(v_i, t_j)). Image-to-text plus text-to-image.
    """
    logits = scale * image_feats @ text_feats.T
    loss = _projection_matching(logits, mask, eps) + _projection_matching(logits.T, mask.T, eps)
    return {"icpm_loss": loss}


def itc_loss(
    image_feats: torch.Tensor, text_feats: torch.Tensor, scale: torch.Tensor | float,
    image_index: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Instance-level symmetric InfoNCE (the weak baseline, and CLIP pretraining).

    image_feats, text_feats: [B, D] L2-normalised; scale: logit scale (CLIP's exp(logit_scale)).
    image_index: [B] image of each pair; pairs showing the same image (its other captions) are
    positives too, with the target spread evenly over them. Pairing only, never identities.
    """
    logits = scale * image_feats @ text_feats.T
    if image_index is None:
        targets = torch.eye(len(logits), device=logits.device)
    else:
        targets = (image_index[:, None] == image_index[None, :]).float()
    targets = targets / targets.sum(1, keepdim=True)
    loss_i2t = torch.sum(-targets * F.log_softmax(logits, dim=1), dim=1).mean()
    loss_t2i = torch.sum(-targets.T * F.log_softmax(logits.T, dim=1), dim=1).mean()
    return {"itc_loss": (loss_i2t + loss_t2i) / 2}
