"""torch Datasets over a split: images alone, captions alone, and image-caption pairs.

None of them returns a person id: what training sees is images, captions and their pairing
(weak supervision). Evaluation reads ids from the `SplitData` records directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from cpcl.data.records import SplitData
from cpcl.data.transforms import load_rgb
from cpcl.utils.runtime import derived_seed

ImageTransform = Callable[[Image.Image], torch.Tensor]
RandomTransform = Callable[..., torch.Tensor]  # transform(image, generator=g): draws from g alone


class ImageDataset(Dataset):
    """Images in a fixed order: item i -> (i, pixels [3, H, W])."""

    def __init__(self, paths: Sequence[Path], transform: ImageTransform):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, self.transform(load_rgb(self.paths[index]))


class PairDataset(Dataset):
    """Image-caption pairs of a split, one per caption, in caption order, for one epoch seeded `seed`.

    Item (position, i), pair i drawn as the epoch's `position`-th pair -> {"index": i, "image_index":
    image of caption i, "image": [3, H, W], "tokens": [L]}; the image is transformed with a generator
    seeded by (seed, position) alone, so an augmentation does not depend on which DataLoader worker
    or rank loads the pair, nor on how many there are.
    """

    def __init__(self, split: SplitData, tokens: torch.Tensor, transform: RandomTransform, seed: int):
        if len(tokens) != len(split.captions):
            raise ValueError(f"{len(tokens)} token rows for {len(split.captions)} captions")
        self.paths = [image.path for image in split.images]
        self.image_index = torch.tensor([c.image_id for c in split.captions], dtype=torch.long)
        self.tokens = tokens
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor | int]:
        position, index = key
        image_index = int(self.image_index[index])
        generator = torch.Generator().manual_seed(derived_seed(self.seed, position))
        return {
            "index": index,
            "image_index": image_index,
            "image": self.transform(load_rgb(self.paths[image_index]), generator=generator),
            "tokens": self.tokens[index],
        }
