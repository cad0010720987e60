"""Image preprocessing: shapes, normalisation, and each augmentation when forced on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from cpcl.data.transforms import (ImageTransformConfig, eval_transform, load_rgb, normalise,
                                  to_tensor, train_transform)


def gradient_image(height: int = 40, width: int = 20) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None].repeat(height, 0)
    return Image.fromarray(np.concatenate([x, 255 - x, np.full_like(x, 90)], axis=2))


def test_to_tensor_and_normalise():
    pixels = to_tensor(Image.new("RGB", (3, 2), (255, 0, 51)))
    assert pixels.shape == (3, 2, 3) and pixels[0].eq(1).all() and pixels[2].eq(0.2).all()
    cfg = ImageTransformConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    assert normalise(pixels, cfg)[:, 0, 0].tolist() == pytest.approx([1.0, -2.0, -0.6])


def test_eval_transform_resizes_and_is_deterministic(tmp_path):
    path = tmp_path / "a.png"
    gradient_image().save(path)
    cfg = ImageTransformConfig()
    a, b = eval_transform(load_rgb(path), (32, 16), cfg), eval_transform(load_rgb(path), (32, 16), cfg)
    assert a.shape == (3, 32, 16) and torch.equal(a, b)


def test_load_rgb_converts_grey_and_rgba(tmp_path):
    Image.new("L", (4, 4), 7).save(tmp_path / "g.png")
    Image.new("RGBA", (4, 4), (1, 2, 3, 4)).save(tmp_path / "r.png")
    assert load_rgb(tmp_path / "g.png").mode == "RGB" and load_rgb(tmp_path / "r.png").mode == "RGB"


def test_train_transform_flip_crop_erase():
    image = gradient_image()
    size = (40, 20)
    base = ImageTransformConfig(flip_prob=0.0, pad=0, erase_prob=0.0)
    plain = train_transform(image, size, base)
    assert torch.allclose(plain, eval_transform(image, size, base))
    flipped = train_transform(image, size, dataclasses.replace(base, flip_prob=1.0))
    assert torch.allclose(flipped, plain.flip(-1))
    torch.manual_seed(0)
    crops = [train_transform(image, size, dataclasses.replace(base, pad=4)) for _ in range(8)]
    assert all(c.shape == (3, 40, 20) for c in crops)
    assert any(not torch.allclose(c, plain) for c in crops)  # some crops are shifted
    erased = train_transform(image, size, dataclasses.replace(base, erase_prob=1.0))
    zero_pixels = (erased == 0).all(0)
    assert 0 < int(zero_pixels.sum()) < 40 * 20
