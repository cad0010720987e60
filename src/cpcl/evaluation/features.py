"""Feature extraction in dataset order, eval transforms, no grad (docs/method.md step 1 and Evaluation)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cpcl.data.datasets import ImageDataset
from cpcl.data.transforms import ImageTransformConfig, eval_transform
from cpcl.model.clip import CLIP
from cpcl.model.inference import embed_images, embed_texts
from cpcl.utils.preprocessing import Preprocessing
from cpcl.utils.progress import Progress


@torch.no_grad()
def extract_image_features(
    model: CLIP, paths: Sequence[Path], transform: ImageTransformConfig | Preprocessing, batch_size: int,
    workers: int, device: torch.device, dtype: torch.dtype | None, desc: str = "image features",
    progress: Progress | None = None, colour_constancy: bool = False,
) -> torch.Tensor:
    """[N, D] float32 on the CPU, L2-normalised, row i = paths[i]; images resized to the model's input size
    and normalised as `transform` says (a checkpoint's preprocessing, whose size must be the model's, or a
    run's `augment` section); with `colour_constancy`, each image's colour cast discounted first
    (`cpcl.data.transforms.grey_world`).

    Progress goes to `progress` when given (a caller's bar over several calls), else to a bar of its own.
    """
    model.eval()
    size = model.config.image.image_size
    if isinstance(transform, Preprocessing) and transform.image_size != size:
        raise ValueError(f"preprocessing for {transform.image_size} images given to a model at {size}")
    transform_one = partial(eval_transform, size=size, cfg=transform, colour_constancy=colour_constancy)
    dataset = ImageDataset(paths, transform_one)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    out = torch.empty(len(paths), model.config.embed_dim)
    with contextlib.nullcontext(progress) if progress is not None else Progress(len(paths), desc, "img") as bar:
        for index, images in loader:
            out[index] = embed_images(model, images, device, dtype).cpu()
            bar.update(len(index))
    return out


@torch.no_grad()
def extract_text_features(
    model: CLIP, tokens: torch.Tensor, batch_size: int, device: torch.device, dtype: torch.dtype | None,
    desc: str = "text features",
) -> torch.Tensor:
    """tokens [N, L] -> [N, D] float32 on the CPU, L2-normalised, in order."""
    model.eval()
    out = torch.empty(len(tokens), model.config.embed_dim)
    with Progress(len(tokens), desc, "txt") as bar:
        for start in range(0, len(tokens), batch_size):
            chunk = tokens[start:start + batch_size]
            out[start:start + len(chunk)] = embed_texts(model, chunk, device, dtype).cpu()
            bar.update(len(chunk))
    return out
