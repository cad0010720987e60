"""The exact kNN engine for `knn_backend: auto`, chosen by measurement on this machine.

How fast torch's blocked matmul + top-k ("flat") and faiss's IndexFlatIP ("faiss_flat") are depends
on the CPU and its BLAS: one machine measured faiss 4x slower, another faster. So the first search
of a size times both engines on a random sample of the features (`knn_probe_points` of them, or all
when there are no more) and keeps the faster one. The choice is remembered per machine (CPU or GPU,
threads, torch and faiss builds, the device) and size timed (the sample's points rounded up to a
power of two, width: every larger input shares the one probe of a full sample) in `knn_probe.json`
in cpcl's cache folder ($CPCL_CACHE to move it). Both engines are exact, so the choice changes only
the time. A probe that searched the whole input hands the winner's lists back, not searched again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from cpcl.utils.files import atomic_write, cache_dir

log = logging.getLogger(__name__)

PROBE_FILE = "knn_probe.json"  # in cache_dir()
PROBE_ROUNDS = 2  # timed searches per engine, interleaved; the fastest counts (the machine may be busy)

Engine = Callable[[np.ndarray, int, Any, torch.device], tuple[np.ndarray, np.ndarray]]


@dataclass
class Choice:
    """The engine `fastest_engine` chose, with its neighbour lists when the probe searched the whole input."""

    engine: str  # the name of the faster engine
    found: tuple[np.ndarray, np.ndarray] | None = None  # its (rank, sims) [N, keep] of every point; None: not run


def machine_key(device: torch.device) -> str:
    """What the engines' speed depends on besides the size: the processor, the threads, the builds."""
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} ({device})"
    else:
        where = _cpu_model()
    return (f"{where} | {os.cpu_count()} cpus, {torch.get_num_threads()} torch threads, "
            f"{faiss.omp_get_max_threads()} faiss threads | torch {torch.__version__}, faiss {faiss.__version__}")


def size_key(points: int, dim: int) -> str:
    """Points rounded up to a power of two, and the width."""
    return f"{2 ** math.ceil(math.log2(max(points, 1)))} x {dim}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fastest_engine(feats: np.ndarray, keep: int, opts: Any, device: torch.device,
                   engines: Mapping[str, Engine]) -> Choice:
    """The faster of `engines` for feats [N, D] on `device`: remembered in the probe file if this
    machine and sampled size were probed before, else measured now on min(N, opts.knn_probe_points)
    random points and remembered. When the sample is every point, the choice carries the winner's
    lists of them (`engine(feats, keep, opts, device)`)."""
    path = cache_dir() / PROBE_FILE
    points = min(len(feats), opts.knn_probe_points)
    machine, size = machine_key(device), size_key(points, feats.shape[1])
    known = _read(path)
    if not isinstance(known.get(machine), dict):  # absent, or damaged by hand: this machine is probed anew
        known[machine] = {}
    entry = known[machine].get(size)
    if isinstance(entry, Mapping) and entry.get("engine") in engines:
        return Choice(str(entry["engine"]))
    seconds, found = probe(feats, keep, opts, device, engines)
    engine = min(seconds, key=seconds.__getitem__)
    log.info("kNN engine for %s points on this machine: %s (%s; remembered in %s)", size, engine,
             ", ".join(f"{name} {s:.3f} s" for name, s in seconds.items()), path)
    known[machine][size] = {"engine": engine, "seconds": seconds, "points": points}
    try:
        atomic_write(path, lambda f: f.write(json.dumps(known, indent=1, sort_keys=True).encode()))
    except OSError as err:
        log.warning("could not remember the kNN engine in %s (%s); it is measured again next time", path, err)
    return Choice(engine, found.get(engine))


def probe(feats: np.ndarray, keep: int, opts: Any, device: torch.device, engines: Mapping[str, Engine]
          ) -> tuple[dict[str, float], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Seconds of each engine's search of a random sample of feats (the fastest of PROBE_ROUNDS,
    interleaved so that every engine meets the same load), and when the sample is all of feats,
    each engine's (rank, sims) of them (else no entry)."""
    points = min(len(feats), opts.knn_probe_points)
    whole = points == len(feats)
    sample = feats if whole else feats[np.sort(np.random.default_rng(0).choice(len(feats), points, replace=False))]
    seconds = {name: math.inf for name in engines}
    found = {}
    for _ in range(PROBE_ROUNDS):
        for name, search in engines.items():
            start = time.perf_counter()
            lists = search(sample, min(keep, points), opts, device)
            seconds[name] = min(seconds[name], time.perf_counter() - start)
            if whole:
                found[name] = lists
    return seconds, found


def _read(path: Path) -> dict:
    """The probe file's {machine: {size: entry}}; empty when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
