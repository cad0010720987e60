"""Batch samplers over training pairs (METHOD.md step 6: `sampler: random | pk`).

Both are deterministic for a seed; the engine passes seed + epoch so each epoch differs and
a resumed run replays the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class RandomBatchSampler(Sampler[list[int]]):
    """Shuffled pairs in batches of `batch_size`; the last incomplete batch is dropped."""

    def __init__(self, num_pairs: int, batch_size: int, seed: int):
        self.num_pairs, self.batch_size, self.seed = num_pairs, batch_size, seed

    def __len__(self) -> int:
        return self.num_pairs // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.num_pairs, generator=torch.Generator().manual_seed(self.seed))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start:start + self.batch_size].tolist()


class PKBatchSampler(Sampler[list[int]]):
    """P pseudo-identities x K pairs per batch, each labelled identity once per epoch.

    labels: [N] pseudo label per pair (-1 pairs are never sampled). An identity with fewer than
    K pairs is sampled with replacement. Batches hold batch_size / K distinct identities.
    """

    def __init__(self, labels: torch.Tensor, batch_size: int, instances: int, seed: int):
        if batch_size % instances:
            raise ValueError(f"batch_size {batch_size} must divide by instances {instances}")
        self.instances, self.seed = instances, seed
        self.identities_per_batch = batch_size // instances
        keep = torch.nonzero(labels >= 0).squeeze(1)
        order = torch.argsort(labels[keep], stable=True)
        sorted_pairs, sorted_labels = keep[order], labels[keep][order]
        counts = torch.unique_consecutive(sorted_labels, return_counts=True)[1]
        self.groups = list(torch.split(sorted_pairs, counts.tolist()))

    def __len__(self) -> int:
        return len(self.groups) // self.identities_per_batch

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(self.groups), generator=gen)
        k = self.instances
        for b in range(len(self)):
            batch: list[int] = []
            for g in order[b * self.identities_per_batch:(b + 1) * self.identities_per_batch].tolist():
                pairs = self.groups[g]
                if len(pairs) >= k:
                    pick = pairs[torch.randperm(len(pairs), generator=gen)[:k]]
                else:
                    pick = pairs[torch.randint(len(pairs), (k,), generator=gen)]
                batch.extend(pick.tolist())
            yield batch
