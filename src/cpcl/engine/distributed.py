"""The engine's distributed pieces (torchrun, one process per device; docs/method.md's epoch unchanged).

How a distributed run stays the single-process algorithm:
- `optim.batch_size` is the global batch. Every rank draws the same global batches (the
  samplers are seeded with seed + epoch) and trains on its slice of each; the features of all
  slices are gathered before the losses, so losses, gradients and memory updates are those of
  the single-process step on the same batch.
- Step 1 is sharded: each rank extracts whole batches of a contiguous shard, gathered in
  dataset order. Steps 2-3 run once on rank 0 and its labels are broadcast. The memories are
  broadcast from rank 0 after each reset and then updated with the gathered batch on every
  rank, so they stay identical (each epoch's record carries every rank's memory digest).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cpcl.engine.config import TrainConfig
from cpcl.utils.distributed import World, backend_for, gather_shards, shard_range
from cpcl.utils.errors import ConfigError


def extract_sharded(extract: Callable[[int, int], torch.Tensor], total: int, batch_size: int, world: World,
                    device: torch.device) -> torch.Tensor:
    """Rows [0, total) of `extract(start, stop) -> [stop - start, D]`, every rank extracting its
    shard (shard_range) and receiving all of them: [total, D] in dataset order on every rank."""
    start, stop = shard_range(total, batch_size, world.rank, world.size)
    counts = [b - a for a, b in (shard_range(total, batch_size, r, world.size) for r in range(world.size))]
    return gather_shards(extract(start, stop), counts, world, device)


def wrap_model(encoder: nn.Module, world: World, device: torch.device, find_unused: bool) -> nn.Module:
    """DistributedDataParallel around the encoder (it broadcasts rank 0's weights now and averages
    gradients in backward); the encoder itself for a single process. find_unused: some step
    leaves a parameter without gradient (the logit scale outside ITC terms)."""
    if world.size == 1:
        return encoder
    return nn.parallel.DistributedDataParallel(
        encoder, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused)


def check_world(cfg: TrainConfig, world: World) -> None:
    """The global batch must split evenly over the ranks."""
    if cfg.optim.batch_size % world.size:
        raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} (the global batch) does not divide by "
                          f"the {world.size} processes of this launch; use a multiple of {world.size}")


def launch_settings(cfg: TrainConfig, world: World, device: torch.device) -> dict:
    """What this process runs with: world size, rank, backend, device, batches and lr."""
    check_world(cfg, world)
    return {
        "world_size": world.size, "rank": world.rank, "local_rank": world.local_rank,
        "backend": backend_for(device) if world.size > 1 else None, "device": str(device),
        "global_batch": cfg.optim.batch_size, "batch_per_rank": cfg.optim.batch_size // world.size,
        "lr": cfg.optim.lr,
        "lr_scaling": "none: optim.batch_size is the global batch at any world size, so optim.lr applies as given",
    }


def config_header(settings: dict) -> str:
    """The comment written at the top of a run's config.yaml: batch and lr as launched."""
    return (f"optim.batch_size is the global batch (all ranks together); this run: {settings['world_size']} "
            f"rank(s) x {settings['batch_per_rank']} pairs, backend {settings['backend'] or 'none'}.\n"
            f"optim.lr applies as given at any world size (no automatic scaling).")
