"""The run directory's files written during training: last.pt (model, optimiser, fp16 loss
scaler, progress, for --resume) and metrics.jsonl (one record per epoch). Rank 0 alone writes
them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cpcl.model.checkpoints import read_checkpoint, save_clip
from cpcl.model.clip import CLIP
from cpcl.utils.errors import CheckpointError


def save_last(run_dir: Path, model: CLIP, optimizer: torch.optim.Optimizer, progress: dict,
              scaler: torch.amp.GradScaler) -> None:
    """last.pt; the scaler's state is {} when it is disabled (bf16 / fp32)."""
    save_clip(run_dir / "last.pt", model, model.config,
              extra={"run": {**progress, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}})


def load_last(run_dir: Path, model: CLIP, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler) -> dict:
    """Restore model, optimiser and (when saved and enabled) the loss scaler from last.pt;
    returns the saved progress record."""
    path = run_dir / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} does not exist (the run saved no epoch yet)")
    checkpoint = read_checkpoint(path)
    model.load_state_dict(checkpoint.state_dict, strict=True)
    progress = dict(checkpoint.extra["run"])
    optimizer.load_state_dict(progress.pop("optimizer"))
    scaler_state = progress.pop("scaler", {})  # absent in runs saved before loss scaling
    if scaler_state and scaler.is_enabled():
        scaler.load_state_dict(scaler_state)
    return progress


def append_record(run_dir: Path, record: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record) + "\n")


def drop_records_from(run_dir: Path, epoch: int) -> None:
    """Keep metrics.jsonl records of epochs before `epoch` (a resumed run rewrites the rest)."""
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] < epoch]
        path.write_text("".join(line + "\n" for line in kept))
