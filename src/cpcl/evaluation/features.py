"""Feature extraction in dataset order, eval transforms, no grad (docs/method.md step 1 and Evaluation).

Every function takes the `LoadedModel` whole: its preprocessing is the one applied, its device and dtype the
ones the features are made on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from cpcl.data.datasets import ImageDataset
from cpcl.data.transforms import eval_transform
from cpcl.model.inference import LoadedModel
from cpcl.utils.progress import Progress


@torch.no_grad()
def extract_image_features(loaded: LoadedModel, paths: Sequence[Path], batch_size: int, workers: int = 0,
                           progress: Progress | str = "image features") -> torch.Tensor:
    """[N, D] float32 on the CPU, L2-normalised, row i = paths[i]; images resized to the model's input size and
    normalised as `loaded.preprocessing` says. `workers` processes read the images.

    progress: a caller's bar (several calls under one), or the label of a bar of this call's own.
    """
    loaded.model.eval()
    transform_one = partial(eval_transform, size=loaded.image_size, cfg=loaded.preprocessing)
    loader = DataLoader(ImageDataset(paths, transform_one), batch_size=batch_size, shuffle=False,
                        num_workers=workers)
    out = torch.empty(len(paths), loaded.dim)
    own = isinstance(progress, str)
    with Progress(len(paths), progress, "img") if own else contextlib.nullcontext(progress) as bar:
        for index, images in loader:
            out[index] = loaded.embed_images(images).cpu()
            bar.update(len(index))
    return out


@torch.no_grad()
def pil_image_features(loaded: LoadedModel, images: Sequence[Image.Image], batch_size: int) -> torch.Tensor:
    """PIL images (any mode, converted to RGB) -> [N, D] float32 on the CPU, L2-normalised, in order; the same
    transform as `extract_image_features` applies to files."""
    loaded.model.eval()
    out = torch.empty(len(images), loaded.dim)
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        pixels = torch.stack([eval_transform(image.convert("RGB"), loaded.image_size, loaded.preprocessing)
                              for image in chunk])
        out[start:start + len(chunk)] = loaded.embed_images(pixels).cpu()
    return out


@torch.no_grad()
def extract_text_features(loaded: LoadedModel, tokens: torch.Tensor, batch_size: int,
                          desc: str = "text features") -> torch.Tensor:
    """tokens [N, L] (L <= `loaded.context_length`) -> [N, D] float32 on the CPU, L2-normalised, in order."""
    loaded.model.eval()
    out = torch.empty(len(tokens), loaded.dim)
    with Progress(len(tokens), desc, "txt") as bar:
        for start in range(0, len(tokens), batch_size):
            chunk = tokens[start:start + batch_size]
            out[start:start + len(chunk)] = loaded.embed_texts(chunk).cpu()
            bar.update(len(chunk))
    return out
