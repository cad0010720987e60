"""Helpers for the training tests: a tiny CUHK-PEDES tree, a run config over it, and a run killed mid-epoch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cpcl.engine import train as train_module

METRIC_KEYS = {"R1", "R5", "R10", "mAP", "mINP"}


def write_tiny_cuhk(root: Path, persons: dict[str, int], images_per_person: int = 3, seed: int = 0) -> Path:
    """A CUHK-PEDES tree whose persons differ in colour, captions naming the colour."""
    rng = np.random.default_rng(seed)
    colours = ["red", "green", "blue", "yellow", "black", "white", "purple", "orange", "pink", "grey",
               "brown", "navy", "teal", "olive", "maroon", "cyan", "gold", "beige", "lime", "violet"]
    records, pid = [], 0
    for split, count in persons.items():
        for _ in range(count):
            pid += 1
            base = rng.integers(0, 256, 3)
            for j in range(images_per_person):
                pixels = np.clip(base + rng.normal(0, 25, (32, 16, 3)), 0, 255).astype(np.uint8)
                rel = f"{split}/{pid:03d}_{j}.jpg"
                (root / "CUHK-PEDES" / "imgs" / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(root / "CUHK-PEDES" / "imgs" / rel)
                colour = colours[pid % len(colours)]
                records.append({"split": split, "file_path": rel, "id": pid, "processed_tokens": [],
                                "captions": [f"a person in {colour} clothes", f"someone wearing {colour}"]})
    (root / "CUHK-PEDES" / "reid_raw.json").write_text(json.dumps(records))
    return root


def write_config(path: Path, root: Path, **sections) -> Path:
    config = {
        "method": "cpcl", "device": "cpu", "precision": "fp32", "seed": 3,
        "model": {"init": "preset:tiny", "image_size": [32, 16], "context_length": 16},
        "data": {"dataset": "cuhk-pedes", "root": str(root), "workers": 0},
        "eval": {"batch_size": 16},
        "optim": {"epochs": 2, "batch_size": 8, "lr": 1e-4, "warmup_epochs": 1},
        "cluster": {"k1": 4, "k2": 2, "eps": 0.7, "min_samples": 2},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(config))
    return path


def interrupt_second_epoch(monkeypatch: pytest.MonkeyPatch) -> Callable:
    """Make the engine's second epoch raise KeyboardInterrupt, as if the process died mid-epoch;
    returns the real train_one_epoch."""
    real_epoch = train_module.train_one_epoch
    calls = {"n": 0}

    def killed_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", killed_in_second_epoch)
    return real_epoch
