"""`cpcl export`: ONNX towers and a Hugging Face CLIPModel directory that reproduce the torch embeddings,
each with a model card; shipped names accepted; the untrimmed text path equals the trimmed one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cpcl.cli import main
from cpcl.model import CLIP, clip_preset, load_clip, save_clip
from cpcl.model import shipped
from cpcl.model.inference import embed_images, embed_texts
from cpcl.model.tokenizer import default_tokenizer
from cpcl.utils.preprocessing import Preprocessing

CONTEXT = 16
CAPTIONS = ["a man", "a woman in a long red coat with a black backpack and white shoes walking", "x"]
CPU = torch.device("cpu")


def tiny_model(image_size: tuple[int, int], seed: int = 1) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(clip_preset("tiny", image_size, CONTEXT)).eval()


def preprocessing(model: CLIP) -> Preprocessing:
    """OpenAI CLIP's, at the model's input size."""
    return Preprocessing(model.config.image.image_size)


def run_dir_with(model: CLIP, folder: Path) -> Path:
    """A run directory as `cpcl train` leaves it: best.pt, config.yaml, results.json."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("method: cpcl\naugment:\n  mean: [0.5, 0.5, 0.5]\n  std: [0.25, 0.25, 0.25]\n"
                                        "  resize: bilinear\n")
    metrics = {"R1": 12.5, "R5": 30.0, "R10": 41.0, "mAP": 15.0, "mINP": 5.0}
    (folder / "results.json").write_text(json.dumps({"selected_on": "val", "best_epoch": 3,
                                                     "test": {"best": metrics, "last": metrics}}))
    trained_with = Preprocessing(model.config.image.image_size, "bilinear", (0.5,) * 3, (0.25,) * 3)
    return save_clip(folder / "best.pt", model, model.config, trained_with)


def inputs(model: CLIP, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(batch)
    images = torch.randn(batch, 3, *model.config.image.image_size)
    tokens = default_tokenizer().tokenize((CAPTIONS * batch)[:batch], CONTEXT)
    return images, tokens


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[CLIP, Path, Path]:
    """(the model, its ONNX dir, its HF dir), exported once through the CLI from a run directory."""
    root = tmp_path_factory.mktemp("export")
    model = tiny_model((32, 16))
    checkpoint = run_dir_with(model, root / "run")
    assert main(["export", "--checkpoint", str(checkpoint), "--onnx", str(root / "onnx"),
                 "--hf", str(root / "hf")]) == 0
    return model, root / "onnx", root / "hf"


def test_untrimmed_text_path_gives_the_trimmed_features():
    model = tiny_model((32, 16))
    _, tokens = inputs(model, 3)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens, trim=False), model.encode_text(tokens), atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_towers_reproduce_the_torch_embeddings(exported, batch):
    ort = pytest.importorskip("onnxruntime")
    model, onnx_dir, _ = exported
    images, tokens = inputs(model, batch)
    image_session = ort.InferenceSession(str(onnx_dir / "image_encoder.onnx"))
    text_session = ort.InferenceSession(str(onnx_dir / "text_encoder.onnx"))
    with torch.no_grad():
        want_image, want_text = embed_images(model, images, CPU, None), embed_texts(model, tokens, CPU, None)
    got_image = image_session.run(["embeddings"], {"pixel_values": images.numpy()})[0]
    got_text = text_session.run(["embeddings"], {"input_ids": tokens.numpy()})[0]
    np.testing.assert_allclose(got_image, want_image.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_text, want_text.numpy(), atol=1e-4, rtol=0)


def _features(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.mark.parametrize("image_size", [(32, 16), (32, 32)])
def test_hugging_face_directory_reproduces_the_torch_embeddings(exported, tmp_path, image_size):
    transformers = pytest.importorskip("transformers")
    model, _, hf_dir = exported
    if image_size != model.config.image.image_size:  # a square model, exported here
        model = tiny_model(image_size)
        checkpoint = save_clip(tmp_path / "m.pt", model, model.config, preprocessing(model))
        assert main(["export", "--checkpoint", str(checkpoint), "--hf", str(tmp_path / "hf")]) == 0
        hf_dir = tmp_path / "hf"
    hf_model = transformers.CLIPModel.from_pretrained(hf_dir).eval()
    images, tokens = inputs(model, 3)
    square = image_size[0] == image_size[1]
    with torch.no_grad():
        hf_image = _features(hf_model.get_image_features(pixel_values=images, interpolate_pos_encoding=not square))
        hf_text = _features(hf_model.get_text_features(input_ids=tokens))
        want_image, want_text = embed_images(model, images, CPU, None), embed_texts(model, tokens, CPU, None)
    torch.testing.assert_close(torch.nn.functional.normalize(hf_image, dim=1), want_image, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.nn.functional.normalize(hf_text, dim=1), want_text, atol=1e-4, rtol=0)
    back, config = load_clip(hf_dir)  # cpcl reads its own export back, at the trained size
    assert config.image.image_size == image_size
    with torch.no_grad():
        torch.testing.assert_close(embed_images(back, images, CPU, None), want_image, atol=1e-5, rtol=0)


def test_each_export_has_a_card_with_the_training_config_and_metrics(exported):
    _, onnx_dir, hf_dir = exported
    for folder, says in ((onnx_dir, "image_encoder.onnx"), (hf_dir, "interpolate_pos_encoding=True")):
        card = (folder / "README.md").read_text()
        assert says in card and "method: cpcl" in card and "| test, best checkpoint | 12.50 | 30.00 |" in card
        assert "mean [0.5, 0.5, 0.5]" in card and "32x16 (bilinear)" in card  # the checkpoint's


def test_a_checkpoint_outside_a_run_dir_says_its_training_is_not_recorded(tmp_path):
    model = tiny_model((32, 16))
    checkpoint = save_clip(tmp_path / "loose.pt", model, model.config, preprocessing(model))
    assert main(["export", "--checkpoint", str(checkpoint), "--hf", str(tmp_path / "hf")]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "## Training\n\nNot recorded" in card and "## Metrics\n\nNot recorded" in card


def test_a_shipped_name_is_exported_with_its_shipped_card(tmp_path, monkeypatch):
    init = {"seed": 5, "preset": "tiny", "image_size": [32, 16], "context_length": CONTEXT}
    torch.manual_seed(init["seed"])
    model = CLIP(clip_preset("tiny", (32, 16), CONTEXT))
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "weights")
    shipped.pack(model.state_dict(), model.config, preprocessing(model), init, shipped.shipped_file("synthpedes-small"))
    shipped.shipped_file("synthpedes-small").with_suffix(".md").write_text("# synthpedes-small: the card\n")
    monkeypatch.chdir(tmp_path)  # no file named synthpedes-small here: the name is looked up
    assert main(["export", "--checkpoint", "synthpedes-small", "--hf", str(tmp_path / "hf")]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "(shipped checkpoint)" in card and "# synthpedes-small: the card" in card
    back, _ = load_clip(tmp_path / "hf")
    assert torch.equal(back.token_embedding.weight, model.token_embedding.weight.half().float())


def test_export_without_a_target_is_one_line(tmp_path, capsys):
    model = tiny_model((32, 16))
    checkpoint = save_clip(tmp_path / "m.pt", model, model.config, preprocessing(model))
    assert main(["export", "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cpcl export: error: nothing to export: give --onnx DIR and/or --hf DIR"


# ---------------------------------------------------------------- what other tools need: tokenizer, preprocessing


def gallery(folder: Path) -> list[Path]:
    """Three photos of different sizes and colours (resized by each tool's own code)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (width, height) in enumerate(((40, 90), (23, 51), (64, 64))):
        path = folder / f"p{i}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def cpcl_encode(checkpoint: Path, images: list[Path], out: Path) -> dict[str, np.ndarray]:
    assert main(["encode", "--checkpoint", str(checkpoint), "--images", *map(str, images), "--texts", *CAPTIONS,
                 "--out", str(out), "--workers", "0", "--precision", "fp32"]) == 0
    return dict(np.load(out))


def test_the_hf_export_loads_with_transformers_tokenizer_and_processor_as_cpcl_encodes(exported, tmp_path):
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    _, _, hf_dir = exported
    images = gallery(tmp_path / "images")
    want = cpcl_encode(hf_dir.parent / "run" / "best.pt", images, tmp_path / "emb.npz")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(hf_dir)
    ids = tokenizer(CAPTIONS, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    expected = default_tokenizer().tokenize(CAPTIONS, CONTEXT)
    assert torch.equal(torch.where(expected == 0, ids, expected), ids)  # the same ids; HF pads with end-of-text
    processor = transformers.CLIPProcessor.from_pretrained(hf_dir)
    model = transformers.CLIPModel.from_pretrained(hf_dir).eval()
    batch = processor(text=CAPTIONS, images=[Image.open(path) for path in images], padding="max_length",
                      truncation=True, return_tensors="pt")
    with torch.no_grad():
        text = _features(model.get_text_features(input_ids=batch["input_ids"]))
        image = _features(model.get_image_features(pixel_values=batch["pixel_values"], interpolate_pos_encoding=True))
    np.testing.assert_allclose(torch.nn.functional.normalize(text, dim=1).numpy(), want["text"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(torch.nn.functional.normalize(image, dim=1).numpy(), want["image"], atol=1e-5, rtol=0)


def prepare(path: Path, spec: dict) -> np.ndarray:
    """An image as preprocessing.json says, written here without cpcl: [3, H, W] float32."""
    from PIL import Image

    filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS, "nearest": Image.NEAREST}
    height, width = spec["size"]
    pixels = np.asarray(Image.open(path).convert("RGB").resize((width, height), filters[spec["resize"]]), np.float32)
    pixels = (pixels * spec["scale"] - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
    return pixels.transpose(2, 0, 1)


def test_the_onnx_export_carries_a_tokenizer_and_preprocessing_that_reproduce_cpcl_encode(exported, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    tokenizers = pytest.importorskip("tokenizers")
    _, onnx_dir, _ = exported
    images = gallery(tmp_path / "images")
    want = cpcl_encode(onnx_dir.parent / "run" / "best.pt", images, tmp_path / "emb.npz")
    spec = json.loads((onnx_dir / "preprocessing.json").read_text())
    tokenizer = tokenizers.Tokenizer.from_file(str(onnx_dir / spec["text"]["tokenizer"]))
    ids = np.array([row.ids for row in tokenizer.encode_batch(CAPTIONS)], dtype=np.int64)
    np.testing.assert_array_equal(ids, default_tokenizer().tokenize(CAPTIONS, CONTEXT).numpy())  # cpcl tokenize's ids
    text = ort.InferenceSession(str(onnx_dir / "text_encoder.onnx")).run(None, {spec["text"]["input"]: ids})[0]
    pixels = np.stack([prepare(path, spec["image"]) for path in images])
    image = ort.InferenceSession(str(onnx_dir / "image_encoder.onnx")).run(None, {spec["image"]["input"]: pixels})[0]
    np.testing.assert_allclose(text, want["text"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(image, want["image"], atol=1e-5, rtol=0)


def test_onnx_at_an_older_opset_and_in_fp16(exported, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model, onnx_dir, _ = exported
    checkpoint = onnx_dir.parent / "run" / "best.pt"
    images, tokens = inputs(model, 3)
    with torch.no_grad():
        want_image, want_text = embed_images(model, images, CPU, None), embed_texts(model, tokens, CPU, None)
    for flags, atol, weights in ((["--opset", "17"], 1e-5, onnx.TensorProto.FLOAT),
                                 (["--fp16"], 5e-3, onnx.TensorProto.FLOAT16)):
        out = tmp_path / flags[0].strip("-")
        assert main(["export", "--checkpoint", str(checkpoint), "--onnx", str(out), *flags]) == 0
        graph = onnx.load(str(out / "text_encoder.onnx"))
        assert graph.opset_import[0].version == (17 if "--opset" in flags else 18)
        assert {init.data_type for init in graph.graph.initializer if init.dims and len(init.dims) == 2} == {weights}
        image = ort.InferenceSession(str(out / "image_encoder.onnx")).run(None, {"pixel_values": images.numpy()})[0]
        text = ort.InferenceSession(str(out / "text_encoder.onnx")).run(None, {"input_ids": tokens.numpy()})[0]
        np.testing.assert_allclose(image, want_image.numpy(), atol=atol, rtol=0)
        np.testing.assert_allclose(text, want_text.numpy(), atol=atol, rtol=0)
        assert ("float16 weights" in (out / "README.md").read_text()) == ("--fp16" in flags)
    assert main(["export", "--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "x"), "--fp16",
                 "--opset", "17"]) == 2
    assert "--fp16 needs --opset 18 or newer" in capsys.readouterr().err


def test_exported_files_are_readable_by_others(tmp_path):
    model = tiny_model((32, 16))
    checkpoint = save_clip(tmp_path / "m.pt", model, model.config, preprocessing(model))
    old = os.umask(0o077)  # a private umask: what is written must still be 0644
    try:
        assert main(["export", "--checkpoint", str(checkpoint), "--hf", str(tmp_path / "hf")]) == 0
    finally:
        os.umask(old)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in (tmp_path / "hf").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= set(modes)
    assert set(modes.values()) == {"0o644"}, modes


def test_cards_have_hub_front_matter_and_name_their_source_relatively(exported):
    yaml = pytest.importorskip("yaml")
    _, onnx_dir, hf_dir = exported
    for folder, library in ((hf_dir, "transformers"), (onnx_dir, "onnx")):
        card = (folder / "README.md").read_text()
        assert card.startswith("---\n")
        meta = yaml.safe_load(card.split("---\n")[1])
        assert meta["library_name"] == library and "clip" in meta["tags"]
        assert "- **Source**: `run/best.pt` (cpcl checkpoint)" in card and "`run/config.yaml`" in card
        assert str(folder.parent) not in card  # no path of this machine
