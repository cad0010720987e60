"""Benchmark training throughput (image-caption pairs per second) of one optimizer step: both CLIP
towers forward, symmetric InfoNCE (cpcl.losses.itc_loss), backward, Adam step, in fp32 and in
bf16 autocast, for presets of cpcl.model.clip at their training input sizes.

    PYTHONPATH=src python benchmarks/bench_training.py
    PYTHONPATH=src python benchmarks/bench_training.py --presets small --steps 10 --warmup 3
    PYTHONPATH=src python benchmarks/bench_training.py --presets vit-b-16 --batches 16 --device cuda
    PYTHONPATH=src python benchmarks/bench_training.py --presets tiny --steps 1 --warmup 1  # smoke
    PYTHONPATH=src python benchmarks/bench_training.py --grad-checkpointing --presets vit-b-16 \
        --batches 8 --steps 1 --warmup 1   # peak memory with and without activation checkpointing
    PYTHONPATH=src python benchmarks/bench_training.py --vs-open-clip --presets small vit-b-16 \
        --batches 64 --steps 6 --warmup 1   # cpcl's step against open_clip's model

The step is the one of cpcl.engine.loop: encoders under autocast, features normalised in fp32,
loss, zero_grad, backward, Adam. Inputs are random images and token rows (SOT at 0, random
tokens, EOT at --eot-pos, zeros after) made once per case and kept on the device: the data
loader, augmentation and tokenisation are NOT part of this measurement. Every case starts from a
fresh model with the same seed. Times are wall clock per step (synchronised on CUDA), median over
--steps after --warmup steps. Prints a markdown table; "bf16/fp32" is fp32 step time / bf16 step
time (above 1: bf16 is faster).

--grad-checkpointing compares activation checkpointing off and on instead (model
`set_grad_checkpointing`, as `model.grad_checkpointing` sets it in training), each case in a fresh
subprocess so that its memory is its own: the resident set before the first step (weights,
inputs; gradients and Adam's state come with the first step), the peak of the last timed step's
forward+backward (activations live here, next to weights, Adam state and the gradients) and of
its optimizer step (sampled every 5 ms on CPU; on CUDA, torch's peak allocated memory), and the
process's peak over all steps. The children run with glibc's MALLOC_MMAP_THRESHOLD_ fixed at
128 KiB, so that the resident set follows the live tensors instead of keeping freed heap.

--vs-open-clip runs the same step on open_clip's CLIP (open_clip.model.CLIP built with the preset's
widths, depths, heads, patch, input size and QuickGELU) beside cpcl's: the same batch, inputs,
precision, loss (cpcl.losses.itc_loss on both models' features) and optimizer. Both models live in
one subprocess per case and their steps alternate, so both meet the same machine load; "cpcl /
open_clip" is the ratio of the median step times, and of the fastest (on a shared machine, load only
adds time); "CPU s" is the processor time of the process's threads during a step (the work itself,
which other processes' load moves less than the wall clock). Memory: the largest rise of the
resident set (CUDA: allocated memory) during a step above its level before the step, sampled as
above. open_clip is a benchmark-only dependency (`pip install --no-deps open_clip_torch`): its
package __init__ imports torchvision, which does not import with this torch, so its model modules
are loaded without the package __init__ and with torchvision.ops.misc stubbed (only its ResNet code
uses it).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import resource
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import torch

from cpcl.losses import itc_loss
from cpcl.model.clip import CLIP, ClipConfig, clip_preset
from cpcl.model.inference import embed_images, embed_texts
from cpcl.utils.errors import ConfigError
from cpcl.utils.runtime import bf16_supported, resolve_device, resolve_precision

# preset -> (training input (H, W), default batch sizes)
CASES: dict[str, tuple[tuple[int, int], tuple[int, ...]]] = {
    "tiny": ((32, 16), (8,)),
    "small": ((128, 48), (128, 64)),
    "small-p8": ((128, 48), (64,)),
    "vit-b-16": ((384, 128), (8,)),
}
SOT, EOT = 49406, 49407  # CLIP BPE start / end of text
LR = 1e-5  # Adam learning rate (cpcl default); irrelevant to speed
MMAP_THRESHOLD = 1 << 17  # glibc: blocks from 128 KiB are mmapped, so freed tensors leave the RSS at once
MAX_LOGIT_SCALE = ClipConfig().max_logit_scale  # exp(logit_scale) is clamped to this, for both models
IMPLS = ("cpcl", "open_clip")  # whose model the step trains


def open_clip_model(config: ClipConfig) -> torch.nn.Module:
    """open_clip's CLIP with `config`'s architecture, from its modules (see the module docstring)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        raise SystemExit("open_clip is not installed: .venv/bin/pip install --no-deps open_clip_torch")
    if "open_clip" not in sys.modules:
        package = types.ModuleType("open_clip")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["open_clip"] = package
        for name in ("torchvision", "torchvision.ops", "torchvision.ops.misc"):
            stub = types.ModuleType(name)
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules.setdefault(name, stub)
        sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = None
    from open_clip.model import CLIP as OpenClip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    image, text = config.image, config.text
    vision_cfg = CLIPVisionCfg(layers=image.layers, width=image.width, head_width=image.width // image.heads,
                               mlp_ratio=image.mlp_ratio, patch_size=image.patch_size,
                               image_size=tuple(image.image_size))
    text_cfg = CLIPTextCfg(context_length=text.context_length, vocab_size=text.vocab_size, width=text.width,
                           heads=text.heads, layers=text.layers, mlp_ratio=text.mlp_ratio)
    return OpenClip(config.embed_dim, vision_cfg, text_cfg, quick_gelu=True)


def build_model(impl: str, config: ClipConfig) -> torch.nn.Module:
    """cpcl's CLIP or open_clip's for the same architecture."""
    return CLIP(config) if impl == "cpcl" else open_clip_model(config)


def make_batch(batch: int, image_size: tuple[int, int], context: int, eot_pos: int,
               device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """images [B, 3, H, W] float32 ~ N(0, 1); tokens [B, context] long: SOT, random ids, EOT, zeros."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *image_size, generator=gen)
    tokens = torch.zeros(batch, context, dtype=torch.long)
    tokens[:, 0] = SOT
    tokens[:, 1:eot_pos] = torch.randint(1, SOT, (batch, eot_pos - 1), generator=gen)
    tokens[:, eot_pos] = EOT
    return images.to(device), tokens.to(device)


class PeakMeter:
    """Peak memory of a phase, MiB: on CPU a thread sampling the resident set every `interval`
    seconds (a peak shorter than that can be missed); on CUDA torch's peak allocated memory."""

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        self.device, self.interval = device, interval
        self._peak, self._running = 0.0, True
        if device.type == "cpu":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while self._running:
            self._peak = max(self._peak, rss_mb()[0])
            time.sleep(self.interval)

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._peak = rss_mb()[0] if self.device.type == "cpu" else 0.0

    def peak(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return max(self._peak, rss_mb()[0])

    def close(self) -> None:
        self._running = False


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               tokens: torch.Tensor, device: torch.device, dtype: torch.dtype | None,
               meter: PeakMeter | None = None, peaks: dict | None = None) -> float:
    """One step as in cpcl.engine.loop.train_one_epoch (ITC loss only) of cpcl's or open_clip's CLIP;
    returns the loss. With a meter, peaks["forward_backward"] and peaks["optimizer"] get each
    phase's peak memory."""
    if meter:
        meter.reset()
    image_feats = embed_images(model, images, device, dtype)  # [B, D]
    text_feats = embed_texts(model, tokens, device, dtype)  # [B, D]
    scale = model.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    loss = itc_loss(image_feats, text_feats, scale)["itc_loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if meter and peaks is not None:
        sync(device)
        peaks["forward_backward"] = meter.peak()
        meter.reset()
    optimizer.step()
    if meter and peaks is not None:
        sync(device)
        peaks["optimizer"] = meter.peak()
    return float(loss.detach())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set of this process in MiB (Linux: /proc and ru_maxrss in KiB)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20, peak


def time_case(preset: str, batch: int, precision: str, args: argparse.Namespace,
              device: torch.device, grad_checkpointing: bool = False, measure_phases: bool = False) -> dict:
    """Median step seconds and pairs/s of one (preset, batch, precision) case, with the memory
    before the first step and at the peak, and (measure_phases) the peak of each phase of the
    last timed step (see the module docstring)."""
    image_size, _ = CASES[preset]
    config = clip_preset(preset, image_size=image_size)
    torch.manual_seed(args.seed)
    model = CLIP(config).to(device).train()
    model.set_grad_checkpointing(grad_checkpointing)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    dtype = resolve_precision(precision, device)
    images, tokens = make_batch(batch, image_size, config.text.context_length,
                                min(args.eot_pos, config.text.context_length - 1), device, args.seed)
    before_mb = rss_mb()[0] if device.type == "cpu" else torch.cuda.memory_allocated(device) / 2**20
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    meter = PeakMeter(device) if measure_phases else None
    peaks: dict = {}
    for _ in range(args.warmup):
        train_step(model, optimizer, images, tokens, device, dtype)
    times, loss = [], float("nan")
    for _ in range(args.steps):
        sync(device)
        start = time.perf_counter()
        loss = train_step(model, optimizer, images, tokens, device, dtype, meter, peaks)  # float() syncs too
        sync(device)
        times.append(time.perf_counter() - start)
    if meter:
        meter.close()
    seconds = float(np.median(times))
    params = sum(p.numel() for p in model.parameters())
    peak_mb = rss_mb()[1] if device.type == "cpu" else torch.cuda.max_memory_allocated(device) / 2**20
    return {"seconds": seconds, "pairs_per_s": batch / seconds, "loss": loss, "params": params,
            "before_mb": before_mb, "peak_mb": peak_mb, **{f"{k}_peak_mb": v for k, v in peaks.items()}}


def pair_case(preset: str, batch: int, precision: str, args: argparse.Namespace, device: torch.device) -> dict:
    """cpcl's and open_clip's model of one case in this process, their steps alternating (so both
    meet the same load): per impl, the timed steps' seconds and the largest rise of memory during
    a step above the memory before it (activations and gradients; the weights and Adam's state,
    equal in size, are resident before)."""
    image_size, _ = CASES[preset]
    config = clip_preset(preset, image_size=image_size)
    dtype = resolve_precision(precision, device)
    images, tokens = make_batch(batch, image_size, config.text.context_length,
                                min(args.eot_pos, config.text.context_length - 1), device, args.seed)
    runs, out = {}, {}
    for impl in IMPLS:
        torch.manual_seed(args.seed)
        model = build_model(impl, config).to(device).train()
        runs[impl] = (model, torch.optim.Adam(model.parameters(), lr=LR))
        out[impl] = {"times": [], "cpu_times": [], "step_rise_mb": 0.0,
                     "params": sum(p.numel() for p in model.parameters())}
    meter = PeakMeter(device)
    for step in range(args.warmup + args.steps):
        for impl, (model, optimizer) in runs.items():
            sync(device)
            before = rss_mb()[0] if device.type == "cpu" else torch.cuda.memory_allocated(device) / 2**20
            meter.reset()
            start, cpu_start = time.perf_counter(), time.process_time()
            train_step(model, optimizer, images, tokens, device, dtype)
            sync(device)
            if step >= args.warmup:
                out[impl]["times"].append(time.perf_counter() - start)
                out[impl]["cpu_times"].append(time.process_time() - cpu_start)
                out[impl]["step_rise_mb"] = max(out[impl]["step_rise_mb"], meter.peak() - before)
    meter.close()
    return out


def memory_case(preset: str, batch: int, precision: str, grad_checkpointing: bool,
                args: argparse.Namespace, pair: bool = False) -> dict:
    """`time_case` (or with `pair`, `pair_case`) in a fresh subprocess of this script; returns its record."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(
        {"preset": preset, "batch": batch, "precision": precision, "grad_checkpointing": grad_checkpointing,
         "pair": pair}),
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
        "--eot-pos", str(args.eot_pos), "--seed", str(args.seed)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_table(args: argparse.Namespace) -> list[str]:
    kind = "RSS" if args.device == "cpu" else "allocated"
    lines = [f"| preset | input | batch | precision | grad checkpointing | median step s | before step MB | "
             f"forward+backward peak {kind} MB | optimizer step peak {kind} MB | process peak {kind} MB | "
             "forward+backward peak saved |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for preset in args.presets:
        image_size, default_batches = CASES[preset]
        for batch in args.batches or default_batches:
            for precision in args.precisions:
                off = None
                for on in (False, True):
                    rec = memory_case(preset, batch, precision, on, args)
                    fb = rec["forward_backward_peak_mb"]
                    saved = "-" if off is None else f"{off - fb:,.0f} MB ({1 - fb / off:.0%})"
                    off = off or fb
                    lines.append(f"| {preset} | {image_size[0]}x{image_size[1]} | {batch} | {precision} | "
                                 f"{'on' if on else 'off'} | {rec['seconds']:.2f} | {rec['before_mb']:,.0f} | "
                                 f"{fb:,.0f} | {rec['optimizer_peak_mb']:,.0f} | {rec['peak_mb']:,.0f} | {saved} |")
                    print(f"done: {preset} batch {batch} {precision} checkpointing {on}: "
                          f"forward+backward peak {fb:,.0f} MB", file=sys.stderr, flush=True)
    return lines


def open_clip_table(args: argparse.Namespace) -> list[str]:
    """cpcl's step against open_clip's model: each case one subprocess, the two models' steps alternating."""
    kind = "RSS" if args.device == "cpu" else "allocated"
    lines = [f"| preset | input | batch | precision | cpcl step s (median / fastest) | open_clip step s | "
             f"cpcl / open_clip (median / fastest) | CPU s cpcl / open_clip (median) | cpcl step peak {kind} rise MB | "
             f"open_clip step peak {kind} rise MB | params cpcl / open_clip |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for preset in args.presets:
        image_size, default_batches = CASES[preset]
        for batch in args.batches or default_batches:
            for precision in args.precisions:
                rec = memory_case(preset, batch, precision, False, args, pair=True)
                med = {impl: float(np.median(rec[impl]["times"])) for impl in IMPLS}
                low = {impl: min(rec[impl]["times"]) for impl in IMPLS}
                cpu = {impl: float(np.median(rec[impl]["cpu_times"])) for impl in IMPLS}
                lines.append(
                    f"| {preset} | {image_size[0]}x{image_size[1]} | {batch} | {precision} | "
                    f"{med['cpcl']:.3f} / {low['cpcl']:.3f} | {med['open_clip']:.3f} / {low['open_clip']:.3f} | "
                    f"{med['cpcl'] / med['open_clip']:.2f}x / {low['cpcl'] / low['open_clip']:.2f}x | "
                    f"{cpu['cpcl']:.3f} / {cpu['open_clip']:.3f} ({cpu['cpcl'] / cpu['open_clip']:.2f}x) | "
                    f"{rec['cpcl']['step_rise_mb']:,.0f} | {rec['open_clip']['step_rise_mb']:,.0f} | "
                    f"{rec['cpcl']['params'] / 1e6:.1f}M / {rec['open_clip']['params'] / 1e6:.1f}M |")
                print(f"done: {preset} batch {batch} {precision}", file=sys.stderr, flush=True)
    return lines


def table(args: argparse.Namespace, device: torch.device) -> list[str]:
    lines = ["| preset | input | params | batch | precision | median step s | pairs/s | "
             "bf16/fp32 | last loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for preset in args.presets:
        image_size, default_batches = CASES[preset]
        for batch in args.batches or default_batches:
            fp32_seconds = None
            for precision in args.precisions:
                rec = time_case(preset, batch, precision, args, device)
                ratio = "-"
                if precision == "fp32":
                    fp32_seconds = rec["seconds"]
                elif fp32_seconds is not None:
                    ratio = f"{fp32_seconds / rec['seconds']:.2f}x"
                lines.append(f"| {preset} | {image_size[0]}x{image_size[1]} | {rec['params'] / 1e6:.1f}M "
                             f"| {batch} | {precision} | {rec['seconds']:.3f} | "
                             f"{rec['pairs_per_s']:.1f} | {ratio} | {rec['loss']:.3f} |")
                print(f"done: {preset} batch {batch} {precision}: {rec['seconds']:.3f} s/step",
                      file=sys.stderr, flush=True)  # progress: vit-b-16 cases take minutes on CPU
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "vit-b-16"], choices=list(CASES))
    parser.add_argument("--batches", type=int, nargs="+",
                        help="batch sizes for every preset (default: small 128 64, vit-b-16 8)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per case")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--eot-pos", type=int, default=30, help="EOT position in every token row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grad-checkpointing", action="store_true",
                        help="compare peak memory with activation checkpointing off and on (a subprocess each)")
    parser.add_argument("--vs-open-clip", action="store_true",
                        help="cpcl's step against open_clip's model of the same architecture (subprocesses)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.eot_pos < 1:
        parser.error("need --steps >= 1, --warmup >= 0 and --eot-pos >= 1")
    try:
        device = resolve_device(args.device)
    except ConfigError as err:
        parser.error(str(err))
    if args.child:
        case = json.loads(args.child)
        if case["pair"]:
            rec = pair_case(case["preset"], case["batch"], case["precision"], args, device)
        else:
            rec = time_case(case["preset"], case["batch"], case["precision"], args, device,
                            case["grad_checkpointing"], measure_phases=True)
        print(json.dumps(rec))
        return 0
    print(f"device {device}; threads: torch {torch.get_num_threads()}, cpus {os.cpu_count()}; "
          f"native bf16: {bf16_supported(device)}; {args.warmup} warm-up + {args.steps} timed "
          f"steps (median); data loader excluded; load average {os.getloadavg()[0]:.1f}\n")
    if args.vs_open_clip:
        lines = open_clip_table(args)
    else:
        lines = memory_table(args) if args.grad_checkpointing else table(args, device)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
