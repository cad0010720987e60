"""The one object a model travels as, and the one way to make features with it.

`LoadedModel` holds a CLIP with what using it takes: the device it runs on, the autocast dtype, the image
preprocessing it was trained with and the tokenizer at its context length. Evaluation, the index, the API, the
demo report and the training engine pass it whole, so a model cannot meet another model's preprocessing or
context length. `load_for_inference` builds it from a checkpoint; the engine builds it around the model it
trains (`LoadedModel(model, device, dtype, preprocessing)`).

A feature means the same thing everywhere: `encode_*` under autocast in the chosen dtype, cast to float32,
L2-normalised along the feature dimension (`embed_images` / `embed_texts`, which the training step calls on its
own batches too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from cpcl.model.architecture import ArchitectureHints
from cpcl.model.checkpoints import build_clip, read_checkpoint
from cpcl.model.clip import CLIP
from cpcl.model.tokenizer import ClipTokenizer, default_tokenizer
from cpcl.utils.preprocessing import Preprocessing
from cpcl.utils.runtime import autocast, resolve_device, resolve_precision


@dataclass(frozen=True)
class LoadedModel:
    """A CLIP ready to make features: model, device, dtype, preprocessing and tokenizer, which belong together.

    Its preprocessing is at the model's input size (checked here) and its texts are tokenized at the model's
    context length. Frozen: to evaluate under other preprocessing, `dataclasses.replace` makes a new one.
    """

    model: CLIP  # on `device`; evaluation puts it in eval mode
    device: torch.device  # where it runs
    dtype: torch.dtype | None  # autocast dtype; None = fp32
    preprocessing: Preprocessing  # what every image goes through, at the model's input size
    tokenizer: ClipTokenizer = field(default_factory=default_tokenizer)  # CLIP BPE; cut at `context_length`

    def __post_init__(self) -> None:
        size = self.model.config.image.image_size
        if tuple(self.preprocessing.image_size) != tuple(size):
            raise ValueError(f"preprocessing for {self.preprocessing.image_size} images given to a model at {size}")

    @property
    def dim(self) -> int:
        """D, the length of a feature."""
        return self.model.config.embed_dim

    @property
    def context_length(self) -> int:
        """L, the token rows the text tower reads."""
        return self.model.config.text.context_length

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the image tower's input."""
        return self.model.config.image.image_size

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """texts -> [N, L] int64 token ids at the model's context length (longer texts cut, EOT last)."""
        return self.tokenizer.tokenize(list(texts), self.context_length)

    def embed_images(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] (preprocessed pixels) -> [B, D] float32 on `device`, L2-normalised."""
        return embed_images(self.model, images, self.device, self.dtype)

    def embed_texts(self, tokens: Tensor) -> Tensor:
        """tokens [B, L] int -> [B, D] float32 on `device`, L2-normalised."""
        return embed_texts(self.model, tokens, self.device, self.dtype)


def load_for_inference(checkpoint: str | Path, device: str = "auto", precision: str = "auto",
                       image_size: tuple[int, int] | None = None,
                       hints: ArchitectureHints = ArchitectureHints()) -> LoadedModel:
    """Any checkpoint `load_clip` reads (names too), in eval mode on `device` (auto | cpu | cuda[:N]) with the
    autocast dtype `precision` (auto | fp32 | bf16 | fp16) resolves to there, and the preprocessing the
    checkpoint records (OpenAI CLIP's where it records none); `image_size` (H, W) None: the checkpoint's own;
    `hints`: the architecture of weights that do not record it."""
    torch_device = resolve_device(device)
    source = read_checkpoint(checkpoint, hints)
    model, config = build_clip(source, image_size, device=torch_device)
    return LoadedModel(model.eval(), torch_device, resolve_precision(precision, torch_device),
                       source.preprocessing_at(config.image.image_size))


def embed_images(model: CLIP, images: Tensor, device: torch.device, dtype: torch.dtype | None) -> Tensor:
    """images [B, 3, H, W] (normalised pixels) -> [B, D] float32 on `device`, L2-normalised. The training step
    calls it on the model it trains (`cpcl.engine.loop.PairEncoder`); everything else through `LoadedModel`."""
    with autocast(device, dtype):
        feats = model.encode_image(images.to(device))
    return F.normalize(feats.float(), dim=1)


def embed_texts(model: CLIP, tokens: Tensor, device: torch.device, dtype: torch.dtype | None) -> Tensor:
    """tokens [B, L] int -> [B, D] float32 on `device`, L2-normalised (as `embed_images`, for texts)."""
    with autocast(device, dtype):
        feats = model.encode_text(tokens.to(device))
    return F.normalize(feats.float(), dim=1)
