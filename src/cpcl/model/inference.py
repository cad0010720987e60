"""The one way to use a checkpoint for inference: load it on a device with its precision and the
preprocessing it records, and make features (encode, then L2-normalise in float32).

Evaluation, search, the demo report, export and the training step all go through these helpers, so
a feature means the same thing everywhere: `encode_*` under autocast in the chosen dtype, cast to
float32, L2-normalised along the feature dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from cpcl.model.architecture import ArchitectureHints
from cpcl.model.checkpoints import build_clip, read_checkpoint
from cpcl.model.clip import CLIP
from cpcl.utils.preprocessing import Preprocessing
from cpcl.utils.runtime import autocast, resolve_device, resolve_precision


@dataclass
class LoadedModel:
    """A model ready for inference."""

    model: CLIP  # in eval mode, on `device`
    device: torch.device  # where it runs
    dtype: torch.dtype | None  # autocast dtype; None = fp32
    preprocessing: Preprocessing  # the checkpoint's, at the model's input size: what every image goes through


def load_for_inference(checkpoint: str | Path, device: str = "auto", precision: str = "auto",
                       image_size: tuple[int, int] | None = None,
                       hints: ArchitectureHints = ArchitectureHints()) -> LoadedModel:
    """Any checkpoint `load_clip` reads (names too), on `device` (auto | cpu | cuda[:N]) with the
    autocast dtype `precision` (auto | fp32 | bf16 | fp16) resolves to there, and the preprocessing the
    checkpoint records (OpenAI CLIP's where it records none); `image_size` (H, W) None: the checkpoint's own;
    `hints`: the architecture of weights that do not record it."""
    torch_device = resolve_device(device)
    source = read_checkpoint(checkpoint, hints)
    model, config = build_clip(source, image_size, device=torch_device)
    return LoadedModel(model.eval(), torch_device, resolve_precision(precision, torch_device),
                       source.preprocessing_at(config.image.image_size))


def embed_images(model: CLIP, images: Tensor, device: torch.device, dtype: torch.dtype | None) -> Tensor:
    """images [B, 3, H, W] (normalised pixels) -> [B, D] float32 on `device`, L2-normalised."""
    with autocast(device, dtype):
        feats = model.encode_image(images.to(device))
    return F.normalize(feats.float(), dim=1)


def embed_texts(model: CLIP, tokens: Tensor, device: torch.device, dtype: torch.dtype | None) -> Tensor:
    """tokens [B, L] int -> [B, D] float32 on `device`, L2-normalised."""
    with autocast(device, dtype):
        feats = model.encode_text(tokens.to(device))
    return F.normalize(feats.float(), dim=1)
