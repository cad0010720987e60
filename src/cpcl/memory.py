"""PMM, the prototypical multi-modal memory (docs/method.md step 4): one bank of cluster prototypes
per modality, rebuilt from the epoch's features and pseudo labels, then updated with momentum
after every optimiser step. A buffer: no gradient ever flows into it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cluster_means(feats: torch.Tensor, labels: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """L2-normalised mean feature of each cluster: feats [N, D], labels [N] in {-1, 0..K-1} -> [K, D]."""
    keep = labels >= 0
    sums = torch.zeros(num_clusters, feats.shape[1], dtype=feats.dtype, device=feats.device)
    sums.index_add_(0, labels[keep], feats[keep])
    return F.normalize(sums, dim=1)


class PrototypeMemory(nn.Module):
    """A bank of K prototypes [K, D], L2-normalised rows."""

    def __init__(self, dim: int, momentum: float):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("prototypes", torch.zeros(0, dim))

    @property
    def num_clusters(self) -> int:
        return self.prototypes.shape[0]

    @torch.no_grad()
    def reset(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Rebuild from an epoch's features [N, D] and labels [N]; K = max label + 1."""
        num_clusters = int(labels.max()) + 1 if len(labels) else 0
        self.prototypes = cluster_means(feats.float(), labels, num_clusters).to(self.prototypes.device)

    @torch.no_grad()
    def update(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """For every sample of the batch in order: c <- mu * c + (1 - mu) * f, then c <- c / |c|.

        feats: [B, D]; labels: [B] (-1 skipped). Exactly the per-sample loop, vectorised: the
        r-th occurrence of every label is applied in round r, so repeated labels stay sequential.
        """
        keep = labels >= 0
        feats, labels = feats[keep].to(self.prototypes), labels[keep]
        if len(labels) == 0:
            return
        order = torch.argsort(labels, stable=True)
        sorted_labels = labels[order]
        first = torch.searchsorted(sorted_labels, sorted_labels)
        occurrence = torch.empty_like(labels)
        occurrence[order] = torch.arange(len(labels), device=labels.device) - first
        mu = self.momentum
        for round_index in range(int(occurrence.max()) + 1):
            pick = occurrence == round_index
            rows = labels[pick]
            mixed = mu * self.prototypes[rows] + (1.0 - mu) * feats[pick]
            self.prototypes[rows] = F.normalize(mixed, dim=1)
