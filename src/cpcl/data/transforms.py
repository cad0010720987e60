"""Image preprocessing with PIL + torch (no torchvision): CLIP's eval transform and the training
augmentation of docs/method.md step 6 (flip, pad + random crop, random erasing).

The training augmentation draws from the generator it is given: the engine seeds one per pair
by the epoch and the pair's position in it (`cpcl.data.datasets.PairDataset`), so a seed fixes
every augmentation whatever the number of DataLoader workers or ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cpcl.utils.config import Range, check_ranges
from cpcl.utils.errors import ConfigError
from cpcl.utils.preprocessing import CLIP_MEAN, CLIP_STD, Preprocessing, Resize

FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
           "lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST}  # Resize name -> PIL filter


@dataclass(frozen=True)
class ImageTransformConfig:
    """Resize filter, normalisation and training augmentation; the input size (H, W) comes from the model."""

    mean: tuple[float, float, float] = CLIP_MEAN  # normalisation mean per channel
    std: tuple[float, float, float] = CLIP_STD  # normalisation std per channel
    resize: Resize = "bicubic"  # filter resizing every image to the model's input size (recorded in checkpoints)
    flip_prob: float = 0.5  # training: horizontal flip probability
    pad: int = 10  # training: zero padding on each side before the random crop back to `size`
    erase_prob: float = 0.5  # training: random-erasing probability
    erase_area: tuple[float, float] = (0.02, 0.33)  # random erasing: fraction of the image area
    erase_ratio: tuple[float, float] = (0.3, 3.3)  # random erasing: aspect-ratio range

    def __post_init__(self) -> None:
        check_ranges(self, "augment", {
            "mean": Range(), "std": Range(0, low_open=True), "flip_prob": Range(0, 1), "pad": Range(0),
            "erase_prob": Range(0, 1), "erase_area": Range(0, 1, low_open=True),
            "erase_ratio": Range(0, low_open=True)})
        for name in ("erase_area", "erase_ratio"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigError(f"config field 'augment.{name}' must be (low, high) with low <= high, "
                                  f"got {getattr(self, name)!r}")

    def preprocessing(self, image_size: tuple[int, int]) -> Preprocessing:
        """The eval transform of a model trained with this section at `image_size` (H, W): what its
        checkpoints record."""
        return Preprocessing(tuple(image_size), self.resize, self.mean, self.std)


def load_rgb(path: Path) -> Image.Image:
    """Open an image file as RGB (decoded now, file closed)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image -> [3, H, W] float32 in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def normalise(pixels: torch.Tensor, cfg: ImageTransformConfig | Preprocessing) -> torch.Tensor:
    """[3, H, W] in [0, 1] -> normalised by the config's mean and std."""
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    return (pixels - mean) / std


def resized(image: Image.Image, size: tuple[int, int], cfg: ImageTransformConfig | Preprocessing) -> torch.Tensor:
    """`image` resized to size = (H, W) with the config's filter: [3, H, W] in [0, 1]."""
    height, width = size
    return to_tensor(image.resize((width, height), FILTERS[cfg.resize]))


def eval_transform(image: Image.Image, size: tuple[int, int], cfg: ImageTransformConfig | Preprocessing
                   ) -> torch.Tensor:
    """Resize to size = (H, W) and normalise, as `cfg` (a run's `augment` section or a checkpoint's
    preprocessing) says: [3, H, W]."""
    return normalise(resized(image, size, cfg), cfg)


def random_erase(pixels: torch.Tensor, cfg: ImageTransformConfig,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a random rectangle of `pixels` [3, H, W] (in place) with probability erase_prob, drawing from
    `generator` (None: torch's global one)."""
    if torch.rand((), generator=generator) >= cfg.erase_prob:
        return pixels
    _, height, width = pixels.shape
    log_lo, log_hi = math.log(cfg.erase_ratio[0]), math.log(cfg.erase_ratio[1])
    for _ in range(10):  # as torchvision: up to ten tries to fit a rectangle
        area = height * width * float(torch.empty(()).uniform_(*cfg.erase_area, generator=generator))
        ratio = math.exp(float(torch.empty(()).uniform_(log_lo, log_hi, generator=generator)))
        h, w = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if 0 < h < height and 0 < w < width:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            pixels[:, top:top + h, left:left + w] = 0.0
            return pixels
    return pixels


def train_transform(image: Image.Image, size: tuple[int, int], cfg: ImageTransformConfig,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Resize to size = (H, W), flip, pad + random crop, normalise, random erasing: [3, H, W]; every draw
    from `generator` (None: torch's global one)."""
    height, width = size
    pixels = resized(image, size, cfg)
    if torch.rand((), generator=generator) < cfg.flip_prob:
        pixels = pixels.flip(-1)
    if cfg.pad > 0:
        padded = torch.nn.functional.pad(pixels, (cfg.pad,) * 4)
        top = int(torch.randint(0, 2 * cfg.pad + 1, (), generator=generator))
        left = int(torch.randint(0, 2 * cfg.pad + 1, (), generator=generator))
        pixels = padded[:, top:top + height, left:left + width]
    return random_erase(normalise(pixels, cfg), cfg, generator)
