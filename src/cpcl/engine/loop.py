"""One training epoch, and the learning-rate schedule (docs/method.md step 6)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from cpcl.engine.config import OptimSection
from cpcl.engine.record import EpochTraining
from cpcl.model.clip import CLIP
from cpcl.model.inference import embed_images, embed_texts
from cpcl.utils.distributed import World, all_gather_cat, gather_with_grad
from cpcl.utils.errors import TrainingError
from cpcl.utils.progress import Progress


class Objective(Protocol):
    uses_logit_scale: bool  # whether losses() reads the logit scale (an ITC term)

    def losses(self, image_feats: torch.Tensor, text_feats: torch.Tensor, index: torch.Tensor,
               image_index: torch.Tensor, logit_scale: torch.Tensor | None) -> dict[str, torch.Tensor]: ...

    def after_step(self, image_feats: torch.Tensor, text_feats: torch.Tensor, index: torch.Tensor) -> None: ...

    def memory_banks(self) -> list[torch.Tensor]: ...


def lr_factor(progress: float, cfg: OptimSection) -> float:
    """Multiplier of the base lr at `progress` epochs into training: linear warm-up from
    warmup_start_factor over warmup_epochs, then cosine decay to min_lr_factor at the end."""
    if progress < cfg.warmup_epochs:
        return cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * progress / cfg.warmup_epochs
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    done = min((progress - cfg.warmup_epochs) / span, 1.0)
    return cfg.min_lr_factor + (1.0 - cfg.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * done))


def build_optimizer(model: CLIP, cfg: OptimSection) -> torch.optim.Adam:
    """Adam over every parameter (full fine-tuning), weight decay as configured."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


class PairEncoder(nn.Module):
    """Both towers as one forward, so DistributedDataParallel sees every step (it hooks forward)."""

    def __init__(self, model: CLIP, device: torch.device, dtype: torch.dtype | None):
        super().__init__()
        self.model, self.device, self.dtype = model, device, dtype

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                with_scale: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """images [b, 3, H, W], tokens [b, L] -> L2-normalised image and text features [b, D], and
        the clamped logit scale when the objective uses it (else None: it gets no gradient)."""
        image_feats = embed_images(self.model, images, self.device, self.dtype)
        text_feats = embed_texts(self.model, tokens, self.device, self.dtype)
        if not with_scale:
            return image_feats, text_feats, None
        return image_feats, text_feats, self.model.logit_scale.exp().clamp(max=self.model.config.max_logit_scale)


def make_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """Dynamic loss scaling for fp16 autocast, whose small gradients underflow without it; for
    bf16 and fp32 a disabled scaler, which passes every call straight through."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   params: Iterable[torch.Tensor], grad_clip: float) -> bool:
    """Backward, clip (0: off) and step. With an enabled scaler the loss is scaled, gradients are
    unscaled before clipping, and a step whose gradients hold inf/NaN is skipped and the scale
    lowered. Returns whether the optimiser stepped."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if not scaler.is_enabled():
        optimizer.step()
        return True
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() >= scale  # update() lowers the scale exactly when it skipped


def gather_batch(image_feats: torch.Tensor, text_feats: torch.Tensor, index: torch.Tensor,
                 image_index: torch.Tensor, world: World) -> tuple[torch.Tensor, ...]:
    """The global batch from every rank's slice, in rank order (features keep their gradient to
    this rank's rows); the slice itself for a single process."""
    if world.size == 1:
        return image_feats, text_feats, index, image_index
    dim = image_feats.shape[1]
    feats = gather_with_grad(torch.cat([image_feats, text_feats], 1), world)  # [B, 2D]
    indices = all_gather_cat(torch.stack([index, image_index], 1), world)  # [B, 2]
    return feats[:, :dim], feats[:, dim:], indices[:, 0], indices[:, 1]


def check_finite(loss: torch.Tensor, terms: dict[str, torch.Tensor], epoch: int, step: int) -> None:
    """TrainingError naming the epoch, the step and every loss term when the summed loss is NaN or infinite:
    training on would only spread it through the weights and the memories."""
    value = float(loss.detach())
    if not math.isfinite(value):
        listed = ", ".join(f"{name} {float(term.detach()):.4g}" for name, term in terms.items())
        raise TrainingError(f"epoch {epoch + 1} step {step + 1}: the loss is {value} ({listed}); training "
                            f"stopped (last.pt holds the previous epoch): lower optim.lr, set optim.grad_clip, "
                            f"or check the config (cpcl.tau, the loss weights)")


@dataclass(frozen=True)
class Stepper:
    """What steps the weights on this rank."""

    encoder: nn.Module  # a PairEncoder, DDP-wrapped in a distributed run
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # fp16 loss scaling (disabled, a pass-through, for bf16 / fp32)
    device: torch.device  # where the batches go
    world: World  # this process's rank and the world size


def train_one_epoch(stepper: Stepper, loader: DataLoader, objective: Objective, epoch: int, cfg: OptimSection,
                    on_step: Callable[[int, dict[str, float]], None] | None = None) -> EpochTraining:
    """Run one epoch of `stepper.encoder`; returns mean
    loss terms, "loss" (their sum) and the last lr, with the scale and the skipped steps when the
    scaler is enabled (fp16). Every rank computes the loss of the global batch, so the terms are
    the same on every rank. The progress bar shows the running mean loss; `on_step(step, values)`
    gets each step's terms, "loss" and "lr" (step counted from 0 in this epoch)."""
    encoder, optimizer, scaler, device, world = (stepper.encoder, stepper.optimizer, stepper.scaler, stepper.device,
                                                 stepper.world)
    encoder.train()
    sums: dict[str, float] = defaultdict(float)
    steps = len(loader)
    skipped = 0
    lr = cfg.lr
    with Progress(steps, f"epoch {epoch + 1}/{cfg.epochs}", "step") as bar:
        for step, batch in enumerate(loader):
            lr = cfg.lr * lr_factor(epoch + step / steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, tokens = batch["image"].to(device), batch["tokens"].to(device)
            index, image_index = batch["index"].to(device), batch["image_index"].to(device)
            image_feats, text_feats, scale = encoder(images, tokens, objective.uses_logit_scale)
            image_feats, text_feats, index, image_index = gather_batch(
                image_feats, text_feats, index, image_index, world)
            terms = objective.losses(image_feats, text_feats, index, image_index, scale)
            loss = torch.stack(list(terms.values())).sum()
            check_finite(loss, terms, epoch, step)
            skipped += not optimizer_step(loss, optimizer, scaler, encoder.parameters(), cfg.grad_clip)
            objective.after_step(image_feats.detach(), text_feats.detach(), index)
            values = {name: float(value.detach()) for name, value in terms.items()}
            values["loss"] = float(loss.detach())
            for name, value in values.items():
                sums[name] += value
            bar.postfix = f"loss {sums['loss'] / (step + 1):.4f}"
            bar.update()
            if on_step is not None:
                on_step(step, {**values, "lr": lr})
    means = {name: total / max(steps, 1) for name, total in sums.items()}
    if scaler.is_enabled():
        return EpochTraining(means, lr, scaler.get_scale(), skipped)
    return EpochTraining(means, lr)
