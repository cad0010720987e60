"""Benchmark training throughput (image-caption pairs per second) of one optimizer step: both CLIP
towers forward, symmetric InfoNCE (cpcl.losses.itc_loss), backward, Adam step, in fp32 and in
bf16 autocast, for presets of cpcl.model.clip at their training input sizes.

    PYTHONPATH=src python benchmarks/bench_training.py
    PYTHONPATH=src python benchmarks/bench_training.py --presets small --steps 10 --warmup 3
    PYTHONPATH=src python benchmarks/bench_training.py --presets vit-b-16 --batches 16 --device cuda
    PYTHONPATH=src python benchmarks/bench_training.py --presets tiny --steps 1 --warmup 1  # smoke

The step is the one of cpcl.engine.loop: encoders under autocast, features normalised in fp32,
loss, zero_grad, backward, Adam. Inputs are random images and token rows (SOT at 0, random
tokens, EOT at --eot-pos, zeros after) made once per case and kept on the device: the data
loader, augmentation and tokenisation are NOT part of this measurement. Every case starts from a
fresh model with the same seed. Times are wall clock per step (synchronised on CUDA), median over
--steps after --warmup steps. Prints a markdown table; "bf16/fp32" is fp32 step time / bf16 step
time (above 1: bf16 is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from cpcl.losses import itc_loss
from cpcl.model.clip import CLIP, clip_preset
from cpcl.utils.errors import ConfigError
from cpcl.utils.runtime import autocast, bf16_supported, resolve_device, resolve_precision

# preset -> (training input (H, W), default batch sizes)
CASES: dict[str, tuple[tuple[int, int], tuple[int, ...]]] = {
    "tiny": ((32, 16), (8,)),
    "small": ((128, 48), (128, 64)),
    "small-p8": ((128, 48), (64,)),
    "vit-b-16": ((384, 128), (8,)),
}
SOT, EOT = 49406, 49407  # CLIP BPE start / end of text
LR = 1e-5  # Adam learning rate (cpcl default); irrelevant to speed


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


def train_step(model: CLIP, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               tokens: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> float:
    """One step as in cpcl.engine.loop.train_one_epoch (ITC loss only); returns the loss."""
    with autocast(device, dtype):
        image_raw, text_raw = model.encode_image(images), model.encode_text(tokens)
    image_feats = F.normalize(image_raw.float(), dim=1)  # [B, D]
    text_feats = F.normalize(text_raw.float(), dim=1)  # [B, D]
    scale = model.logit_scale.exp().clamp(max=model.config.max_logit_scale)
    loss = itc_loss(image_feats, text_feats, scale)["itc_loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_case(preset: str, batch: int, precision: str, args: argparse.Namespace,
              device: torch.device) -> dict:
    """Median step seconds and pairs/s of one (preset, batch, precision) case."""
    image_size, _ = CASES[preset]
    config = clip_preset(preset, image_size=image_size)
    torch.manual_seed(args.seed)
    model = CLIP(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    dtype = resolve_precision(precision, device)
    images, tokens = make_batch(batch, image_size, config.text.context_length,
                                min(args.eot_pos, config.text.context_length - 1), device, args.seed)
    for _ in range(args.warmup):
        train_step(model, optimizer, images, tokens, device, dtype)
    times, loss = [], float("nan")
    for _ in range(args.steps):
        sync(device)
        start = time.perf_counter()
        loss = train_step(model, optimizer, images, tokens, device, dtype)  # float() syncs too
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    params = sum(p.numel() for p in model.parameters())
    return {"seconds": seconds, "pairs_per_s": batch / seconds, "loss": loss, "params": params}


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
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.eot_pos < 1:
        parser.error("need --steps >= 1, --warmup >= 0 and --eot-pos >= 1")
    try:
        device = resolve_device(args.device)
    except ConfigError as err:
        parser.error(str(err))
    print(f"device {device}; threads: torch {torch.get_num_threads()}, cpus {os.cpu_count()}; "
          f"native bf16: {bf16_supported(device)}; {args.warmup} warm-up + {args.steps} timed "
          "steps (median); data loader excluded\n")
    print("\n".join(table(args, device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
