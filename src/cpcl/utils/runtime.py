"""Device, precision and seeding, resolved from config strings (no device literals elsewhere)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from cpcl.utils.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' -> the first CUDA device if there is one, else the CPU; 'cpu', 'cuda', 'cuda:N' as given."""
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device '{name}' is not valid; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but no CUDA device is available; use device=cpu")
    return device


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (CUDA with bf16, or a CPU with AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for 'auto' | 'fp32' | 'bf16' | 'fp16'; None means plain fp32. 'auto' is
    bf16 where the device runs it natively, else fp16 on CUDA (trained with loss scaling), else fp32."""
    if name == "fp32":
        return None
    if name == "fp16":
        return torch.float16
    if name == "bf16" or (name == "auto" and bf16_supported(device)):
        return torch.bfloat16
    if name == "auto" and device.type == "cuda":
        return torch.float16
    return None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed precision by autocast (weights stay fp32); a no-op for dtype None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def numerics(device: torch.device, dtype: torch.dtype | None) -> dict[str, Any]:
    """What a run's floating-point results depend on beyond its config and seed: the torch build, the
    kernels it picks (the CPU's instruction sets, or the GPU), its intra-op threads and the autocast dtype.
    Runs that agree on all of these and on config and seed agree bit for bit (docs/training.md, What a run writes)."""
    out: dict[str, Any] = {"torch": torch.__version__, "device": str(device),
                           "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
                           "threads": torch.get_num_threads()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    else:
        extensions = [name for name, present in (("AVX512-BF16", torch.cpu._is_avx512_bf16_supported()),
                                                 ("AMX", torch.cpu._is_amx_tile_supported())) if present]
        out["cpu"] = " ".join([torch.backends.cpu.get_cpu_capability(), *extensions])
    return out


def derived_seed(seed: int, key: int) -> int:
    """An independent seed in [0, 2**63) for stream `key` (a rank, a pair's position) of a phase seeded `seed`."""
    return int(np.random.SeedSequence([seed, key]).generate_state(1, np.uint64)[0] >> 1)
