"""The public Python API: `cpcl.load` / `cpcl.open_index` / `cpcl.train`, typed (py.typed), imported lazily so that
`import cpcl` and `cpcl --help` stay light; the command line calls the same functions."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cpcl
from cpcl import api
from cpcl.cli import main
from cpcl.data.transforms import eval_transform, load_rgb
from cpcl.index.search import Searcher
from cpcl.model.inference import embed_images, embed_texts, load_for_inference
from cpcl.model.tokenizer import default_tokenizer
from cpcl.utils.errors import ConfigError, DataError
from search_support import write_checkpoint, write_crop, write_gallery
from train_support import write_config, write_tiny_cuhk

CPU = torch.device("cpu")


def test_import_cpcl_and_the_parser_load_no_heavy_module():
    code = ("import sys, cpcl; from cpcl.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'cpcl.api') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert {"load", "open_index", "train", "Model", "Index"} <= set(dir(cpcl))


def test_the_package_is_typed():
    assert resources.files("cpcl").joinpath("py.typed").is_file()
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"py.typed"' in pyproject.split("[tool.setuptools.package-data]")[1]


def test_load_encodes_texts_and_images_as_the_inference_helpers(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "m.pt")
    paths = [write_crop(tmp_path / f"{i}.png", i) for i in range(3)]
    model = cpcl.load(checkpoint, device="cpu", precision="fp32")
    assert isinstance(model, cpcl.Model) and model.dim == 32 and model.preprocessing.image_size == (32, 16)
    reference = load_for_inference(checkpoint, "cpu", "fp32")
    texts = ["a man in a red coat", "a woman"]
    tokens = default_tokenizer().tokenize(texts, 24)
    with torch.no_grad():
        want_text = embed_texts(reference.model, tokens, CPU, None).numpy()
        pixels = torch.stack([eval_transform(load_rgb(p), (32, 16), reference.preprocessing) for p in paths])
        want_image = embed_images(reference.model, pixels, CPU, None).numpy()
    np.testing.assert_allclose(model.encode_texts(texts), want_text, atol=1e-6)
    mixed = [paths[0], Image.open(paths[1]), str(paths[2])]  # files and open images, in input order
    np.testing.assert_allclose(model.encode_images(mixed, batch_size=2), want_image, atol=1e-6)
    assert model.encode_texts([]).shape == (0, 32)
    with pytest.raises(DataError, match=r"1 of 1 images cannot be read: .*missing.png"):
        model.encode_images([tmp_path / "missing.png"])


def test_open_index_searches_by_text_and_by_image(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "m.pt")
    write_gallery(tmp_path / "gallery")
    assert main(["index", "build", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "gallery"),
                 "--metadata", str(tmp_path / "gallery" / "meta.csv"), "--out", str(tmp_path / "idx")]) == 0
    index = cpcl.open_index(tmp_path / "idx", device="cpu")
    searcher = Searcher.open(tmp_path / "idx", device="cpu")
    assert len(index) == 12 and index.root == searcher.root
    hits = index.search("a person in red", k=4)
    assert [h.path for h in hits] == [h.path for h in searcher.search_text("a person in red", 4)]
    by_image = index.search(tmp_path / "gallery" / "c1" / "000.png", k=1, cameras=["c1"])
    assert by_image[0].path == "c1/000.png"
    with pytest.raises(ConfigError, match="k must be at least 1"):
        index.search("x", k=0)
    with pytest.raises(DataError, match="missing.png: "):
        index.search(tmp_path / "missing.png")


def test_train_takes_a_config_and_overrides(tmp_path):
    root = write_tiny_cuhk(tmp_path / "data", {"train": 4, "val": 2, "test": 2}, images_per_person=2)
    config = write_config(tmp_path / "cfg.yaml", root)
    results = cpcl.train(config, tmp_path / "run", optim__epochs=1, **{"method": "itc"})
    assert results == json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["epochs"] == 1 and results["method"] == "itc"
    with pytest.raises(ConfigError, match="unknown config field 'optim.epoch'"):
        cpcl.train(config, tmp_path / "other", optim__epoch=1)


def test_the_cli_calls_the_same_functions(tmp_path, monkeypatch):
    calls = []
    real_load, real_open = api.load, api.open_index
    monkeypatch.setattr(api, "load", lambda *a, **k: calls.append("load") or real_load(*a, **k))
    monkeypatch.setattr(api, "open_index", lambda *a, **k: calls.append("open_index") or real_open(*a, **k))
    monkeypatch.setattr(api, "train", lambda *a, **k: calls.append("train") or {})
    checkpoint = write_checkpoint(tmp_path / "m.pt")
    assert main(["encode", "--checkpoint", str(checkpoint), "--texts", "x", "--out", str(tmp_path / "e.npz")]) == 0
    write_crop(tmp_path / "g" / "a.png", 1)
    assert main(["index", "build", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "g"),
                 "--out", str(tmp_path / "idx")]) == 0
    assert main(["search", "--index", str(tmp_path / "idx"), "a man"]) == 0
    assert main(["train", "-c", "synthpedes", "--out", str(tmp_path / "run")]) == 0
    assert calls == ["load", "open_index", "train"]
