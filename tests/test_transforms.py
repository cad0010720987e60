"""Image preprocessing: shapes, normalisation, and each augmentation when forced on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from cpcl.data.transforms import (ImageTransformConfig, eval_transform, grey_world, load_rgb, normalise,
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


def grey_world_reference(pixels: np.ndarray) -> np.ndarray:
    """Slow reference: [3, H, W] in [0, 1], each pixel of each channel scaled by (mean of the image / mean of
    its channel), one at a time."""
    channels, height, width = pixels.shape
    means = [sum(float(pixels[c, y, x]) for y in range(height) for x in range(width)) / (height * width)
             for c in range(channels)]
    grey = sum(means) / channels
    out = np.empty_like(pixels)
    for c in range(channels):
        for y in range(height):
            for x in range(width):
                out[c, y, x] = min(1.0, pixels[c, y, x] * grey / max(means[c], 1 / 255))
    return out


def test_grey_world_matches_the_reference_and_discounts_a_colour_cast():
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.uniform(0.05, 0.6, (3, 6, 5))).float()
    pixels[2, 0, 0] = 0.98  # clipped once scaled up
    assert grey_world(pixels.clone()).numpy() == pytest.approx(grey_world_reference(pixels.numpy()), abs=1e-6)
    cast = pixels * torch.tensor([1.4, 1.0, 0.6]).view(3, 1, 1)  # a camera's white balance, nothing clipped
    assert not torch.allclose(cast, pixels, atol=0.05)
    unclipped = pixels.clone()
    unclipped[2, 0, 0] = 0.3
    ratio = grey_world(unclipped * torch.tensor([1.4, 1.0, 0.6]).view(3, 1, 1)) / grey_world(unclipped)
    assert torch.allclose(ratio, ratio.mean().expand_as(ratio), atol=1e-5)  # the cast gone: one brightness left
    black = torch.zeros(3, 2, 2)
    black[0] = 0.5
    assert grey_world(black)[1:].eq(0).all()  # an empty channel stays empty, no division by 0


def test_eval_transform_colour_constancy_balances_before_normalising():
    cfg = ImageTransformConfig()
    image = gradient_image()
    plain, balanced = eval_transform(image, (40, 20), cfg), eval_transform(image, (40, 20), cfg, colour_constancy=True)
    assert torch.allclose(balanced, normalise(grey_world(to_tensor(image)), cfg), atol=1e-6)
    assert not torch.allclose(plain, balanced, atol=0.05)


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
