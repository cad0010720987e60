"""Ranks, devices and collectives for runs launched by torchrun (one process per device).

A run is distributed when the launcher says so: torchrun sets RANK, WORLD_SIZE and LOCAL_RANK
in each process. WORLD_SIZE 1 (or no launcher) is the plain single-process run, untouched:
every helper here is then the identity, so one code path serves both. Backend nccl on CUDA
devices, gloo on CPUs; rank r on a GPU machine uses cuda:LOCAL_RANK.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cpcl.utils.errors import ConfigError
from cpcl.utils.runtime import derived_seed, resolve_device

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # set by torchrun in every process


@dataclass(frozen=True)
class World:
    """This process's place in the job; the default is a single-process run."""

    rank: int = 0  # global rank, 0..size-1
    size: int = 1  # number of processes (WORLD_SIZE)
    local_rank: int = 0  # rank on this node: the GPU index

    @property
    def is_main(self) -> bool:
        """Rank 0 clusters, evaluates, checkpoints and logs."""
        return self.rank == 0


def detect_world(env: Mapping[str, str] = os.environ) -> World:
    """The World torchrun describes in `env` (RANK, WORLD_SIZE, LOCAL_RANK); a single process
    when WORLD_SIZE is unset."""
    if "WORLD_SIZE" not in env:
        return World()
    try:
        rank, size, local = (int(env.get(name, "0")) for name in LAUNCH_VARIABLES)
    except ValueError:
        values = ", ".join(f"{name}={env.get(name)!r}" for name in LAUNCH_VARIABLES)
        raise ConfigError(f"launcher variables must be integers, got {values}") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"launcher variables are inconsistent: RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local}")
    return World(rank, size, local)


def rank_device(name: str, world: World) -> torch.device:
    """The config's device for this rank: 'auto' and 'cuda' mean cuda:LOCAL_RANK in a distributed
    run (auto falls back to the CPU without CUDA); 'cuda:N' would put every rank on one GPU."""
    if world.size == 1:
        return resolve_device(name)
    if name not in ("auto", "cuda", "cpu"):
        raise ConfigError(f"device '{name}' pins every rank to one device; under torchrun use device=auto "
                          "or device=cuda (rank r takes cuda:LOCAL_RANK) or device=cpu")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if world.local_rank >= count:
        raise ConfigError(f"LOCAL_RANK {world.local_rank} has no GPU: this node has {count}; "
                          f"start at most {count} processes per node (--nproc-per-node)")
    return torch.device("cuda", world.local_rank)


def backend_for(device: torch.device) -> str:
    """nccl for CUDA devices, gloo for CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join the job's process group (env:// rendezvous from torchrun) for the duration; nothing
    for a single process or when the caller already holds a group."""
    if world.size == 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), rank=world.rank, world_size=world.size)
    try:
        yield
        dist.barrier()  # no rank tears its group down while another is still in the last collective
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank `rank` for a phase seeded `seed`: rank 0 keeps `seed` (so it replays the
    single-process run), other ranks get independent streams."""
    return seed if rank == 0 else derived_seed(seed, rank)


def shard_range(total: int, batch_size: int, rank: int, size: int) -> tuple[int, int]:
    """Rows [start, stop) of `total` that rank `rank` of `size` extracts: contiguous, whole
    batches of `batch_size` (so every batch is the one a single process would run)."""
    batches = -(-total // batch_size)
    per_rank = -(-batches // size) * batch_size
    return min(rank * per_rank, total), min((rank + 1) * per_rank, total)


def merge_shards(blocks: Sequence[torch.Tensor], counts: Sequence[int]) -> torch.Tensor:
    """Concatenate each rank's padded block cut to its true row count, in rank order."""
    return torch.cat([block[:count] for block, count in zip(blocks, counts)])


def gather_shards(local: torch.Tensor, counts: Sequence[int], world: World, device: torch.device) -> torch.Tensor:
    """Every rank's rows (rank r holds counts[r] rows of local [counts[r], D]) on every rank,
    in rank order, on local's device; padded to one size for all_gather."""
    if world.size == 1:
        return local
    rows = max(counts)
    padded = torch.zeros(rows, *local.shape[1:], dtype=local.dtype, device=device)
    padded[:len(local)] = local.to(device)
    blocks = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(blocks, padded)
    return merge_shards(blocks, counts).to(local.device)


def _all_gather(local: torch.Tensor, size: int) -> torch.Tensor:
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts)


def all_gather_cat(local: torch.Tensor, world: World) -> torch.Tensor:
    """[b, ...] of each rank -> [size * b, ...], rank order, no gradient; same b on all ranks."""
    return local if world.size == 1 else _all_gather(local, world.size)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands this rank's slice of the gradient back, times the world
    size: every rank computes the same loss on the gathered batch, and DDP divides the summed
    gradients by the world size, so the result is the single-process gradient."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, rank: int, size: int) -> torch.Tensor:
        ctx.rank, ctx.size, ctx.rows = rank, size, local.shape[0]
        return _all_gather(local, size)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        start = ctx.rank * ctx.rows
        return grad[start:start + ctx.rows] * ctx.size, None, None


def gather_with_grad(local: torch.Tensor, world: World) -> torch.Tensor:
    """[b, D] of each rank -> [size * b, D] in rank order; the gradient flows to this rank's rows
    (see _GatherWithGrad). The loss built on it must be the same on every rank."""
    if world.size == 1:
        return local
    return _GatherWithGrad.apply(local, world.rank, world.size)


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's `obj` (any picklable value) on every rank."""
    if world.size == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def broadcast_(tensor: torch.Tensor, world: World) -> None:
    """Overwrite `tensor` with rank 0's, in place (on the tensor's device)."""
    if world.size > 1:
        dist.broadcast(tensor, src=0)


def gather_objects(obj: Any, world: World) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if world.size == 1:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A short SHA-1 of the tensors' bytes, shapes and dtypes: equal iff bit-for-bit equal."""
    sha = hashlib.sha1()
    for tensor in tensors:
        array = tensor.detach().cpu().contiguous().numpy()
        sha.update(f"{array.dtype}{array.shape}".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()[:16]
