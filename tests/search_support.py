"""Helpers for the search tests: a tiny CLIP checkpoint and a small gallery of person-crop-like files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cpcl.model import CLIP, ClipConfig, TextConfig, VisionConfig, save_clip
from cpcl.utils.preprocessing import Preprocessing

CAMERAS = ("c1", "c2", "c3")
FORMATS = (".png", ".jpg", ".bmp", ".webp")


def tiny_config() -> ClipConfig:
    """A tall, tiny CLIP with the real vocabulary (so the tokenizer's ids fit)."""
    return ClipConfig(embed_dim=32,
                      image=VisionConfig(width=64, layers=1, heads=1, patch_size=8, image_size=(32, 16)),
                      text=TextConfig(width=64, layers=1, heads=1, context_length=24))


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """A cpcl checkpoint of a randomly initialised tiny CLIP."""
    torch.manual_seed(seed)
    model = CLIP(tiny_config())
    return save_clip(path, model, model.config, Preprocessing(model.config.image.image_size))


def write_crop(path: Path, seed: int) -> Path:
    """A 40x16 noise image (distinct per seed, so each embeds apart from the others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_gallery(root: Path, count: int = 12) -> list[str]:
    """`count` crops in camera folders, in several formats, plus a broken image, a text file and a
    hidden file; and `root/meta.csv` (camera, hourly times from 2024-05-01T08:00). Returns the
    relative paths of the good images, sorted."""
    paths = []
    for i in range(count):
        rel = f"{CAMERAS[i % 3]}/{i:03d}{FORMATS[i % len(FORMATS)]}"
        write_crop(root / rel, i)
        paths.append(rel)
    (root / "c1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    write_crop(root / ".thumbs" / "hidden.png", 99)
    with (root / "meta.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "camera", "time", "note"])
        for i, rel in enumerate(paths):
            writer.writerow([rel, rel.split("/")[0], f"2024-05-01T{8 + i:02d}:00:00", f"n{i}"])
    return sorted(paths)


def build_gallery_index(base: Path) -> list[str]:
    """`write_gallery` under base/imgs, indexed with its metadata by a tiny checkpoint (base/tiny.pt) into
    base/idx on the CPU; returns the good relative paths."""
    from cpcl.cli import main

    paths = write_gallery(base / "imgs")
    checkpoint = write_checkpoint(base / "tiny.pt")
    assert main(["-q", "index", "build", "--checkpoint", str(checkpoint), "--images", str(base / "imgs"),
                 "--out", str(base / "idx"), "--metadata", str(base / "imgs" / "meta.csv"), "--workers", "0",
                 "--device", "cpu", "--precision", "fp32"]) == 0
    return paths


def build_crops(gallery: tuple[Path, Path, list[str]], out: Path, *extra: str) -> int:
    """`cpcl index build` of the `gallery` fixture's crops (with its sidecar) into `out` on the CPU."""
    from cpcl.cli import main

    root, checkpoint, _ = gallery
    return main(["index", "build", "--checkpoint", str(checkpoint), "--images", str(root), "--out", str(out),
                 "--metadata", str(root / "meta.csv"), "--device", "cpu", "--precision", "fp32", "--workers", "0",
                 "--batch-size", "5", *extra])
