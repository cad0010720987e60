"""Batch samplers over training pairs (docs/method.md step 6: `sampler: random | pk`).

Both are deterministic for a seed; the engine passes seed + epoch so each epoch differs and
a resumed run replays the same batches. In a distributed run every rank draws the same global
batches and takes its slice of each (DistributedBatchSampler).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from cpcl.utils.distributed import World


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


class DistributedBatchSampler(Sampler[list[int]]):
    """This rank's slice of every global batch of `batches`: items [r * b, (r + 1) * b) with
    b = batch / world size. Ranks' slices are disjoint and together cover each global batch, in
    rank order; the epoch's seed is the wrapped sampler's, so every epoch differs."""

    def __init__(self, batches: Sampler[list[int]], world: World):
        self.batches, self.world = batches, world

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        rank, size = self.world.rank, self.world.size
        for batch in self.batches:
            if len(batch) % size:
                raise ValueError(f"a batch of {len(batch)} pairs does not split over {size} ranks")
            per_rank = len(batch) // size
            yield batch[rank * per_rank:(rank + 1) * per_rank]


class PositionedBatches(Sampler[list[tuple[int, int]]]):
    """Each pair of `batches` (this rank's slices of global batches of `batch_size`) as (position, pair):
    its position in the epoch's global order, the key PairDataset seeds its augmentation by."""

    def __init__(self, batches: Sampler[list[int]], batch_size: int, world: World):
        self.batches, self.batch_size, self.world = batches, batch_size, world

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for number, batch in enumerate(self.batches):
            start = number * self.batch_size + self.world.rank * len(batch)
            yield [(start + offset, pair) for offset, pair in enumerate(batch)]


def epoch_sampler(num_pairs: int, batch_size: int, group_labels: torch.Tensor | None, pk_instances: int,
                  seed: int, world: World) -> Sampler[list[int]]:
    """This rank's batches for an epoch seeded `seed`: P x K over `group_labels` when given (the pk
    sampler), else random pairs; split over the ranks in a distributed run."""
    if group_labels is not None:
        batches: Sampler[list[int]] = PKBatchSampler(group_labels, batch_size, pk_instances, seed)
    else:
        batches = RandomBatchSampler(num_pairs, batch_size, seed)
    return batches if world.size == 1 else DistributedBatchSampler(batches, world)
