"""`cpcl encode`, `cpcl pretrain` and `cpcl evaluate` on checkpoints of each format."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from cpcl.cli import main
from cpcl.data.transforms import ImageTransformConfig, eval_transform, load_rgb
from cpcl.model import CLIP, ClipConfig, TextConfig, VisionConfig, save_clip
from cpcl.model.tokenizer import default_tokenizer
from cpcl.synth import SynthConfig, write_pretrain_corpus
from cpcl.utils.preprocessing import Preprocessing
from train_support import METRIC_KEYS, write_config, write_tiny_cuhk

TEXTS = ["a woman in a red coat with a black backpack", "a man in blue jeans"]
TRAINED_WITH = Preprocessing((32, 32), "bilinear", (0.3, 0.4, 0.5), (0.2, 0.25, 0.3))  # what the cpcl file records


def full_vocab_config() -> ClipConfig:
    """A small square CLIP (as OpenAI files are) with the real vocabulary, so tokenizer ids fit."""
    return ClipConfig(
        embed_dim=32,
        image=VisionConfig(width=64, layers=1, heads=1, patch_size=8, image_size=(32, 32)),
        text=TextConfig(width=64, layers=1, heads=1, context_length=24))


@pytest.fixture(scope="module")
def model_and_files(tmp_path_factory) -> tuple[CLIP, dict[str, Path], list[Path]]:
    root = tmp_path_factory.mktemp("encode")
    torch.manual_seed(0)
    model = CLIP(full_vocab_config()).eval()
    files = {"openai": root / "openai_state_dict.pt", "cpcl": root / "cpcl.pt"}
    torch.save(model.state_dict(), files["openai"])
    save_clip(files["cpcl"], model, model.config, TRAINED_WITH)
    rng = np.random.default_rng(0)
    images = []
    for i, size in enumerate([(20, 50), (48, 96)]):  # (W, H): not the model's size, resized on load
        path = root / f"crop{i}.png"
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        images.append(path)
    return model, files, images


def expected_embeddings(model: CLIP, images: list[Path],
                        transform: ImageTransformConfig | Preprocessing = ImageTransformConfig()
                        ) -> tuple[np.ndarray, np.ndarray]:
    pixels = torch.stack([eval_transform(load_rgb(p), model.config.image.image_size, transform) for p in images])
    tokens = default_tokenizer().tokenize(TEXTS, model.config.text.context_length)
    with torch.no_grad():
        return (F.normalize(model.encode_image(pixels), dim=1).numpy(),
                F.normalize(model.encode_text(tokens), dim=1).numpy())


@pytest.mark.parametrize("kind", ["openai", "cpcl"])
def test_encode_writes_normalised_embeddings_in_input_order(model_and_files, tmp_path, kind):
    model, files, images = model_and_files
    out = tmp_path / "emb.npz"
    args = ["encode", "--checkpoint", str(files[kind]), "--images", *map(str, images), "--texts", *TEXTS,
            "--out", str(out), "--device", "cpu", "--precision", "fp32", "--workers", "0"]
    assert main(args) == 0
    saved = np.load(out)
    want_image, want_text = expected_embeddings(model, images, TRAINED_WITH if kind == "cpcl" else ImageTransformConfig())
    np.testing.assert_allclose(saved["image"], want_image, atol=1e-5)  # the cpcl file's own preprocessing
    np.testing.assert_allclose(saved["text"], want_text, atol=1e-5)
    assert np.allclose(np.linalg.norm(saved["image"], axis=1), 1, atol=1e-5)


def test_encode_at_another_image_size_and_texts_only(model_and_files, tmp_path):
    _, files, images = model_and_files
    out = tmp_path / "emb.npz"
    assert main(["encode", "--checkpoint", str(files["openai"]), "--image-size", "64", "24",
                 "--images", str(images[0]), "--out", str(out), "--device", "cpu", "--workers", "0"]) == 0
    saved = np.load(out)
    assert saved["image"].shape == (1, 32) and saved["text"].shape == (0, 32)
    assert np.isfinite(saved["image"]).all()
    assert main(["encode", "--checkpoint", str(files["cpcl"]), "--texts", "a dog", "--out", str(out)]) == 0
    assert np.load(out)["text"].shape == (1, 32)


def test_encode_bad_input_is_one_line(model_and_files, tmp_path, capsys):
    _, files, images = model_and_files
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    out = tmp_path / "emb.npz"
    cases = [
        (["--images", str(images[0]), str(broken)], "1 of 2 images cannot be read"),
        ([], "nothing to encode"),
    ]
    for extra, message in cases:
        assert main(["encode", "--checkpoint", str(files["cpcl"]), "--out", str(out), *extra]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if " INFO " not in line]
        assert len(err) == 1 and message in err[0], err
    assert main(["encode", "--checkpoint", str(tmp_path / "ViT-B-16.pt"), "--texts", "x", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and "openai/clip-vit-base-patch16" in err
    assert not out.exists()


def test_pretrain_then_train_evaluate_and_encode_from_its_checkpoint(tmp_path, capsys):
    """`cpcl pretrain` (ITC on a JSONL corpus, selected on a CUHK-layout val split) writes a
    checkpoint that `train`, `evaluate` and `encode` all accept."""
    bench = write_tiny_cuhk(tmp_path / "bench", {"train": 6, "val": 3, "test": 3})
    write_pretrain_corpus(tmp_path / "web", replace(SynthConfig(ids_train=0, ids_val=0, ids_test=0),
                                                    pretrain_pairs=12, height=32, width=16, workers=1))
    config = write_config(tmp_path / "pretrain.yaml", tmp_path / "web" / "SynthPedes-pretrain",
                          method="itc", optim={"epochs": 1, "batch_size": 4},
                          data={"dataset": "jsonl", "workers": 0},
                          eval={"dataset": "cuhk-pedes", "root": str(bench), "batch_size": 8})
    run = tmp_path / "pretrain"
    assert main(["pretrain", "-c", str(config), "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["method"] == "itc" and results["selected_on"] == "val"
    assert set(results["test"]["best"]) == METRIC_KEYS
    capsys.readouterr()

    checkpoint = str(run / "best.pt")
    assert main(["evaluate", "--checkpoint", checkpoint, "--dataset", "cuhk-pedes", "--root", str(bench),
                 "--json", "--workers", "0", "--device", "cpu"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == METRIC_KEYS
    assert main(["encode", "--checkpoint", checkpoint, "--texts", "a person", "--out",
                 str(tmp_path / "e.npz")]) == 0
    finetune = write_config(tmp_path / "ft.yaml", bench, method="itc", optim={"epochs": 1},
                            model={"init": checkpoint})
    assert main(["train", "-c", str(finetune), "--out", str(tmp_path / "ft")]) == 0
    assert yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())["model"]["init"] == checkpoint


def test_pretrain_refuses_a_non_itc_method(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", tmp_path, method="cpcl")
    assert main(["pretrain", "-c", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "pretrain trains with method=itc" in capsys.readouterr().err
