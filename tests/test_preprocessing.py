"""Preprocessing travels with the checkpoint: every cpcl writer records it, every inference reader uses it,
an older file is read with the defaults and one warning line (cpcl.utils.preprocessing)."""

from __future__ import annotations

import json
import logging
from dataclasses import FrozenInstanceError, replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cpcl.cli import main
from cpcl.data.readers import load_dataset
from cpcl.data.transforms import FILTERS, eval_transform, load_rgb, to_tensor
from cpcl.evaluation.evaluate import evaluate_split
from cpcl.index.store import IndexStore
from cpcl.model import CLIP, ArchitectureHints, clip_preset, read_checkpoint, save_clip
from cpcl.model.checkpoints import payload_digest
from cpcl.model.inference import LoadedModel, embed_images, load_for_inference
from cpcl.model.shipped import pack, state_sha256
from cpcl.model.tokenizer import default_tokenizer
from cpcl.utils.errors import CheckpointError
from cpcl.utils.preprocessing import RESIZE_FILTERS, Preprocessing
from search_support import tiny_config, write_gallery
from train_support import write_config, write_tiny_cuhk

TRAINED = Preprocessing((32, 16), "bilinear", (0.2, 0.6, 0.4), (0.15, 0.3, 0.5))  # not the defaults anywhere
CPU = torch.device("cpu")


def tiny(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(clip_preset("tiny", (32, 16), 16)).eval()


def warning_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def test_every_filter_has_a_pil_filter_and_the_record_round_trips_through_json():
    assert set(FILTERS) == set(RESIZE_FILTERS)
    assert Preprocessing.from_dict(json.loads(json.dumps(TRAINED.to_dict())), "best.pt") == TRAINED


@pytest.mark.parametrize("field, value", [("std", [0.1, 0.0, 0.1]), ("resize", "cubic"), ("image_size", [32]),
                                          ("mean", "grey")])
def test_a_bad_record_is_one_line_naming_the_file_and_the_field(field, value):
    with pytest.raises(CheckpointError, match=f"runs/x/best.pt: invalid recorded preprocessing: .*{field}"):
        Preprocessing.from_dict({**TRAINED.to_dict(), field: value}, "runs/x/best.pt")


def test_a_record_for_another_input_size_than_the_model_is_refused_naming_the_file():
    assert Preprocessing.from_dict(TRAINED.to_dict(), "best.pt", (32, 16)) == TRAINED
    with pytest.raises(CheckpointError, match=r"runs/x/best.pt: its preprocessing is for \(32, 16\) images, "
                                              r"its model for \(64, 32\)"):
        Preprocessing.from_dict(TRAINED.to_dict(), "runs/x/best.pt", (64, 32))


def test_eval_transform_resizes_with_the_filter_and_normalises_with_mean_and_std():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 20, 3), dtype=np.uint8))
    want = (to_tensor(image.resize((16, 32), Image.Resampling.BILINEAR))
            - torch.tensor(TRAINED.mean).view(3, 1, 1)) / torch.tensor(TRAINED.std).view(3, 1, 1)
    torch.testing.assert_close(eval_transform(image, (32, 16), TRAINED), want, rtol=0, atol=1e-6)
    assert not torch.allclose(eval_transform(image, (32, 16), replace(TRAINED, resize="bicubic")), want, atol=1e-3)


def test_a_cpcl_checkpoint_records_it_and_its_digest_covers_it(tmp_path):
    model = tiny()
    path = save_clip(tmp_path / "best.pt", model, model.config, TRAINED)
    assert read_checkpoint(path).preprocessing == TRAINED
    assert load_for_inference(path, "cpu", "fp32").preprocessing == TRAINED
    assert load_for_inference(path, "cpu", "fp32", (64, 32)).preprocessing == replace(TRAINED, image_size=(64, 32))
    with pytest.raises(ValueError, match="preprocessing for"):
        save_clip(tmp_path / "other.pt", model, model.config, replace(TRAINED, image_size=(64, 32)))
    raw = torch.load(path, weights_only=True)
    raw["preprocessing"]["mean"][0] = 0.25  # one number changed, the digest left as it was
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="best.pt is damaged"):
        read_checkpoint(path)


def test_an_older_cpcl_checkpoint_loads_with_the_defaults_and_one_warning(tmp_path, caplog):
    model = tiny()
    path = save_clip(tmp_path / "old.pt", model, model.config, TRAINED)
    raw = torch.load(path, weights_only=True)  # as version 2 wrote it: no preprocessing, its digest without
    del raw["preprocessing"]
    raw["version"], raw["digest"] = 2, payload_digest(raw["config"], raw["state_dict"], raw["extra"])
    torch.save(raw, path)
    with caplog.at_level(logging.WARNING):
        loaded = load_for_inference(path, "cpu", "fp32")
    assert loaded.preprocessing == Preprocessing((32, 16))
    [line] = warning_lines(caplog)
    assert "old.pt" in line and "without its preprocessing" in line and "\n" not in line
    caplog.clear()
    square = CLIP(clip_preset("tiny", (32, 32), 16))  # OpenAI's layout (square): CLIP's defaults are its own
    torch.save(square.state_dict(), tmp_path / "openai.pt")
    stated = ArchitectureHints(act="quick_gelu", head_width=64)  # no architecture warning either
    with caplog.at_level(logging.WARNING):
        assert load_for_inference(tmp_path / "openai.pt", "cpu", "fp32", hints=stated).preprocessing == \
            Preprocessing((32, 32))
    assert warning_lines(caplog) == []


def test_a_shipped_start_records_it_and_a_version_1_file_loads_with_a_warning(tmp_path, caplog):
    model = tiny(seed=5)
    init = {"seed": 5, "preset": "tiny", "image_size": [32, 16], "context_length": 16}
    target = tmp_path / "start.safetensors"
    pack(model.state_dict(), model.config, TRAINED, init, target)
    assert load_for_inference(target, "cpu", "fp32").preprocessing == TRAINED
    tensors = load_file(str(target))
    with safe_open(str(target), framework="pt") as handle:
        metadata = handle.metadata()
    other = json.dumps({**TRAINED.to_dict(), "std": [1.0, 1.0, 1.0]})
    save_file(tensors, str(target), metadata={**metadata, "preprocessing": other})
    with pytest.raises(CheckpointError, match="is damaged"):
        read_checkpoint(target)
    half = {key: value.half() for key, value in model.state_dict().items()}
    old = {key: value for key, value in metadata.items() if key != "preprocessing"}
    save_file(tensors, str(target), metadata={**old, "version": "1", "state_sha256": state_sha256(half)})
    with caplog.at_level(logging.WARNING):
        assert load_for_inference(target, "cpu", "fp32").preprocessing == Preprocessing((32, 16))
    [line] = warning_lines(caplog)
    assert "start.safetensors" in line and "without its preprocessing" in line


def test_an_index_records_and_embeds_with_the_checkpoints_preprocessing(tmp_path):
    torch.manual_seed(0)
    model = CLIP(tiny_config()).eval()
    checkpoint = save_clip(tmp_path / "tiny.pt", model, model.config, TRAINED)
    paths = write_gallery(tmp_path / "imgs", count=4)
    assert main(["index", "build", "--checkpoint", str(checkpoint), "--images", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "idx"), "--device", "cpu", "--precision", "fp32", "--workers", "0"]) == 0
    store = IndexStore.open(tmp_path / "idx")
    assert store.manifest.preprocessing == TRAINED.to_dict()
    embeddings, _ = store.read()
    pixels = torch.stack([eval_transform(load_rgb(tmp_path / "imgs" / p), (32, 16), TRAINED) for p in paths])
    with torch.no_grad():
        np.testing.assert_allclose(embeddings, embed_images(model, pixels, CPU, None).numpy(), atol=1e-5)


def test_evaluate_on_best_pt_reproduces_the_val_metrics_training_logged(tmp_path, capsys):
    root = write_tiny_cuhk(tmp_path / "data", {"train": 8, "val": 4, "test": 2})
    augment = {"mean": list(TRAINED.mean), "std": list(TRAINED.std), "resize": TRAINED.resize}
    config = write_config(tmp_path / "cfg.yaml", root, method="itc", augment=augment)
    run = tmp_path / "run"
    assert main(["train", "-c", str(config), "--out", str(run)]) == 0
    best_epoch = json.loads((run / "results.json").read_text())["best_epoch"]
    record = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][best_epoch]
    logged = {key.removeprefix("val_"): value for key, value in record.items() if key.startswith("val_")}
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), "--dataset", "cuhk-pedes", "--root", str(root),
                 "--split", "val", "--json", "--device", "cpu", "--precision", "fp32", "--workers", "0",
                 "--batch-size", "16"]) == 0
    assert json.loads(capsys.readouterr().out) == logged  # bit for bit: the same weights and transform
    loaded = load_for_inference(run / "best.pt", "cpu", "fp32")
    split = load_dataset("cuhk-pedes", root).splits["val"]
    defaults = evaluate_split(replace(loaded, preprocessing=Preprocessing((32, 16))), split, 16, 0, name="val")
    assert defaults != logged  # what `cpcl evaluate` gave before checkpoints carried their preprocessing
    plain = write_config(tmp_path / "plain.yaml", root, method="zero_shot", model={"init": str(run / "best.pt")})
    assert main(["train", "-c", str(plain), "--out", str(tmp_path / "again")]) == 0
    assert "was trained with preprocessing" in capsys.readouterr().err  # the run's config decides, and says so



def test_a_loaded_model_keeps_its_own_preprocessing_and_context_length():
    model = tiny()  # (32, 16) images, 16 tokens
    with pytest.raises(ValueError, match=r"preprocessing for \(64, 32\) images given to a model at \(32, 16\)"):
        LoadedModel(model, CPU, None, Preprocessing((64, 32)))
    loaded = LoadedModel(model, CPU, None, TRAINED)
    tokens = loaded.tokenize(["a man in a red coat " * 10, "a bag"])
    assert tokens.shape == (2, 16) and torch.equal(tokens, default_tokenizer().tokenize(["a man in a red coat " * 10,
                                                                                        "a bag"], 16))
    with pytest.raises(FrozenInstanceError):
        loaded.preprocessing = Preprocessing((32, 16))  # type: ignore[misc]
    pixels = torch.rand(2, 3, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed_images(pixels), embed_images(model, pixels, CPU, None), atol=0, rtol=0)
