"""What a training step optimises: plain ITC (the weak baseline, CLIP
pretraining) or CPCL's hybrid-level matching over pseudo labels (docs/method.md steps 4-5).

An objective maps a batch's L2-normalised features to weighted `*_loss` terms, and is told
after each optimiser step so the prototype memories can follow (under no_grad).
"""

from __future__ import annotations

import torch

from cpcl.engine.config import CpclSection
from cpcl.engine.pseudo_labels.base import PairLabels
from cpcl.losses import icpm_loss, itc_loss, pcm_losses, positive_mask
from cpcl.memory import PrototypeMemory


class ItcObjective:
    """Instance-level symmetric InfoNCE with the model's learned logit scale."""

    uses_logit_scale = True  # the scale is learned through this loss

    def losses(self, image_feats: torch.Tensor, text_feats: torch.Tensor, index: torch.Tensor,
               image_index: torch.Tensor, logit_scale: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return itc_loss(image_feats, text_feats, logit_scale, image_index)

    def after_step(self, image_feats: torch.Tensor, text_feats: torch.Tensor, index: torch.Tensor) -> None:
        """Nothing to update."""

    def memory_banks(self) -> list[torch.Tensor]:
        """No memories."""
        return []


class CpclObjective:
    """L = pcm_weight * L_PCM + icpm_weight * L_ICPM (+ itc_weight * L_ITC), with memories."""

    def __init__(self, labels: PairLabels, image_feats: torch.Tensor, text_feats: torch.Tensor,
                 cfg: CpclSection, device: torch.device):
        """labels: per-pair pseudo labels; image_feats / text_feats: [P, D] per pair (step 1)."""
        self.cfg = cfg
        self.uses_logit_scale = cfg.itc_weight > 0  # only the optional ITC term reads the scale
        self.image_labels = labels.image.to(device)
        self.text_labels = labels.text.to(device)
        dim = image_feats.shape[1]
        self.image_memory = PrototypeMemory(dim, cfg.momentum).to(device)
        self.text_memory = PrototypeMemory(dim, cfg.momentum).to(device)
        self.image_memory.reset(image_feats.to(device), self.image_labels)
        self.text_memory.reset(text_feats.to(device), self.text_labels)

    def losses(self, image_feats: torch.Tensor, text_feats: torch.Tensor, index: torch.Tensor,
               image_index: torch.Tensor, logit_scale: torch.Tensor | None) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        yv, yt = self.image_labels[index], self.text_labels[index]
        terms = {name: cfg.pcm_weight * value
                 for name, value in pcm_losses(image_feats, text_feats, yv, yt, self.image_memory.prototypes,
                                               self.text_memory.prototypes, cfg.tau, cfg.pcm).items()}
        if cfg.icpm_weight > 0:
            mask = positive_mask(yv, yt, cfg.icpm_positives)
            terms["icpm_loss"] = cfg.icpm_weight * icpm_loss(image_feats, text_feats, mask, cfg.icpm_scale,
                                                             cfg.icpm_eps)["icpm_loss"]
        if cfg.itc_weight > 0:
            terms["itc_loss"] = cfg.itc_weight * itc_loss(image_feats, text_feats, logit_scale, image_index)["itc_loss"]
        return terms

    @torch.no_grad()
    def after_step(self, image_feats: torch.Tensor, text_feats: torch.Tensor, index: torch.Tensor) -> None:
        """PMM momentum update with the batch's features, in batch order (docs/method.md step 4)."""
        if self.cfg.memory_update == "on":
            self.image_memory.update(image_feats, self.image_labels[index])
            self.text_memory.update(text_feats, self.text_labels[index])

    def memory_banks(self) -> list[torch.Tensor]:
        """The image and text prototype banks [K_v, D], [K_t, D] (buffers, updated in place)."""
        return [self.image_memory.prototypes, self.text_memory.prototypes]
