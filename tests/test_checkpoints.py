"""Checkpoint loading: OpenAI state dicts and TorchScript archives, Hugging Face directories,
cpcl files; positional-embedding resize and context truncation; strict key checks."""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cpcl.model import (CLIP, ClipConfig, TextConfig, VisionConfig, load_clip, read_checkpoint,
                        resize_pos_embed, save_clip)
from cpcl.model.torchscript import read_torchscript_weights
from cpcl.utils.errors import CheckpointError
from cpcl.utils.preprocessing import Preprocessing

VOCAB = 1000  # small vocabulary keeps the files small; EOT is its largest id
EOT = VOCAB - 1


def openai_like_config(image_size: int = 32, patch: int = 8, width: int = 128) -> ClipConfig:
    """A small square ViT CLIP whose heads follow OpenAI's width // 64 rule."""
    return ClipConfig(
        embed_dim=64,
        image=VisionConfig(width=width, layers=2, heads=width // 64, patch_size=patch,
                           image_size=(image_size, image_size)),
        text=TextConfig(width=128, layers=2, heads=2, vocab_size=VOCAB, context_length=16))


def default_preprocessing(config: ClipConfig) -> Preprocessing:
    """OpenAI CLIP's, at the model's input size."""
    return Preprocessing(config.image.image_size)


def make_model(config: ClipConfig, seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(config).eval()


def sample_inputs(config: ClipConfig, batch: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and token rows with the EOT (max id) at varying positions."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *config.image.image_size, generator=gen)
    length = config.text.context_length
    tokens = torch.randint(1, EOT, (batch, length), generator=gen)
    for row in range(batch):
        pos = [length - 1, 2, length // 2, 5][row % 4]
        tokens[row, pos] = EOT
        tokens[row, pos + 1:] = 0
    return images, tokens


def assert_same_embeddings(a: CLIP, b: CLIP, config: ClipConfig, atol: float = 1e-6) -> None:
    images, tokens = sample_inputs(config)
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(images), b.encode_image(images), atol=atol, rtol=0)
        torch.testing.assert_close(a.encode_text(tokens), b.encode_text(tokens), atol=atol, rtol=0)


class OpenAIArchive(nn.Module):
    """Holds a CLIP's parameters under OpenAI's names plus OpenAI's integer metadata buffers."""

    def __init__(self, model: CLIP, config: ClipConfig) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.register_buffer("input_resolution", torch.tensor(config.image.image_size[0]))
        self.register_buffer("context_length", torch.tensor(config.text.context_length))
        self.register_buffer("vocab_size", torch.tensor(config.text.vocab_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images) * self.logit_scale.exp()


# ---------------------------------------------------------------- OpenAI layout


def test_openai_state_dict_variants_load_exactly(tmp_path: Path) -> None:
    config = openai_like_config()
    model = make_model(config)
    state = model.state_dict()
    variants = {
        "plain.pt": state,
        "meta.pt": {**state, "input_resolution": 32, "context_length": 16, "vocab_size": VOCAB},
        "wrapped.pt": {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
    }
    for name, payload in variants.items():
        torch.save(payload, tmp_path / name)
        loaded, loaded_config = load_clip(tmp_path / name)
        assert loaded_config == config, name
        assert_same_embeddings(model, loaded, config)


def test_openai_torchscript_archive(tmp_path: Path) -> None:
    config = openai_like_config()
    model = make_model(config)
    archive_module = OpenAIArchive(model, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit deprecation, tracer warnings on shape checks
        traced = torch.jit.trace(archive_module, sample_inputs(config)[0][:1])
        torch.jit.save(traced, str(tmp_path / "ViT-test.pt"))
        reference = torch.jit.load(str(tmp_path / "ViT-test.pt")).state_dict()
    assert set(reference) == set(model.state_dict()) | {"input_resolution", "context_length", "vocab_size"}
    weights = read_torchscript_weights(tmp_path / "ViT-test.pt")  # read as data, no torch.jit
    assert list(weights) == list(reference)
    for key, value in reference.items():
        assert weights[key].dtype == value.dtype and torch.equal(weights[key], value), key
    checkpoint = read_checkpoint(tmp_path / "ViT-test.pt")
    assert checkpoint.source == "openai-jit"
    loaded, _ = load_clip(tmp_path / "ViT-test.pt")
    assert_same_embeddings(model, loaded, config)


class Payload(nn.Module):
    """A module whose TorchScript __setstate__ creates a file: what a crafted archive runs on load."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))
        self.marker = marker

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return self.weight, self.marker, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        self.marker = state[1]
        self.training = state[2]
        self.weight = state[0] + 0 * torch.from_file(self.marker, True, 2)  # shared=True creates the file

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class Carrier(nn.Module):
    """OpenAI-looking weights with the payload hidden in a child module."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(4, 2)
        self.payload = Payload(marker)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.payload(x)


def test_crafted_torchscript_archive_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Carrier(str(marker))), str(tmp_path / "ViT-B-16.pt"))
        marker.unlink(missing_ok=True)
        torch.jit.load(str(tmp_path / "ViT-B-16.pt"))  # what torch.jit.load does with it
    assert marker.exists(), "the crafted archive no longer runs its payload under torch.jit.load"
    marker.unlink()
    for load in (read_checkpoint, load_clip):
        with pytest.raises(CheckpointError, match="custom state"):
            load(tmp_path / "ViT-B-16.pt")
        assert not marker.exists()


@pytest.mark.parametrize("damage", ["tensor_byte", "truncate"])
def test_damaged_cpcl_checkpoint_is_refused_with_its_name(tmp_path: Path, damage: str) -> None:
    config = openai_like_config()
    target = save_clip(tmp_path / "best.pt", make_model(config), config, default_preprocessing(config),
                       extra={"epoch": 1})
    raw = bytearray(target.read_bytes())
    if damage == "tensor_byte":  # one flipped bit inside the largest tensor's bytes
        weight = make_model(config).token_embedding.weight.detach().numpy().tobytes()
        at = raw.find(weight[:64]) + 1000
        assert at > 1000
        raw[at] ^= 0x10
    else:
        raw = raw[: len(raw) // 2]
    target.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="best.pt" + (" is damaged" if damage == "tensor_byte" else "")):
        read_checkpoint(target)


def test_version_1_cpcl_checkpoint_loads_with_a_warning(tmp_path: Path, caplog) -> None:
    config = openai_like_config()
    model = make_model(config)
    save_clip(tmp_path / "old.pt", model, config, default_preprocessing(config))
    raw = torch.load(tmp_path / "old.pt", weights_only=True)
    raw["version"] = 1
    del raw["digest"]
    torch.save(raw, tmp_path / "old.pt")
    loaded, _ = load_clip(tmp_path / "old.pt")
    assert_same_embeddings(model, loaded, config)
    assert "without a digest" in caplog.text


def test_fp16_openai_weights_are_loaded_as_float32(tmp_path: Path) -> None:
    config = openai_like_config()
    model = make_model(config)
    torch.save({k: v.half() for k, v in model.state_dict().items()}, tmp_path / "half.pt")
    loaded, _ = load_clip(tmp_path / "half.pt")
    assert loaded.visual.proj.dtype == torch.float32
    rounded = make_model(config)
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    assert_same_embeddings(rounded, loaded, config)


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = make_model(openai_like_config()).state_dict()
    missing = dict(state)
    del missing["visual.ln_post.bias"]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\): visual\.ln_post\.bias"):
        load_clip(tmp_path / "missing.pt")
    torch.save({**state, "visual.extra_head.weight": torch.zeros(2)}, tmp_path / "unexpected.pt")
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\): visual\.extra_head\.weight"):
        load_clip(tmp_path / "unexpected.pt")


def test_missing_path_says_where_to_get_weights(tmp_path: Path) -> None:
    target = tmp_path / "weights" / "ViT-B-16.pt"
    with pytest.raises(CheckpointError) as info:
        load_clip(target)
    message = str(info.value)
    assert "\n" not in message and str(target) in message
    assert "ViT-B-16.pt" in message and "openai/clip-vit-base-patch16" in message


# ---------------------------------------------------------------- positional embeddings, context


def test_original_size_is_bit_exact_without_interpolation(tmp_path: Path, monkeypatch) -> None:
    config = openai_like_config()
    model = make_model(config)
    torch.save(model.state_dict(), tmp_path / "clip.pt")

    def no_interpolation(*args, **kwargs):
        raise AssertionError("interpolate called at the original size")

    monkeypatch.setattr(F, "interpolate", no_interpolation)
    loaded, _ = load_clip(tmp_path / "clip.pt", image_size=(32, 32))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def bicubic_reference(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Hand-written bicubic resize as transformers' `interpolate_pos_encoding` calls it (align_corners=False, Keys'
    kernel with a = -0.75, edge samples repeated, no anti-aliasing): grid [h, w, C] -> [out_h, out_w, C]."""
    def kernel(t: float) -> float:
        t, a = abs(t), -0.75
        return ((a + 2) * t - (a + 3)) * t * t + 1 if t <= 1 else ((a * t - 5 * a) * t + 8 * a) * t - 4 * a if t < 2 \
            else 0.0

    def taps(out_i: int, size_in: int, size_out: int) -> list[tuple[int, float]]:
        src = (out_i + 0.5) * size_in / size_out - 0.5
        low = int(np.floor(src))
        return [(min(max(low + k, 0), size_in - 1), kernel(src - (low + k))) for k in (-1, 0, 1, 2)]

    out = np.zeros((out_h, out_w, grid.shape[2]))
    for i in range(out_h):
        for j in range(out_w):
            out[i, j] = sum(wy * wx * grid[y, x] for y, wy in taps(i, grid.shape[0], out_h)
                            for x, wx in taps(j, grid.shape[1], out_w))
    return out


@pytest.mark.parametrize("old_grid,new_grid", [((3, 3), (5, 2)), ((4, 4), (6, 3)), ((14, 14), (24, 8))])
def test_resize_matches_hand_bicubic(old_grid: tuple[int, int], new_grid: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(1 + old_grid[0] * old_grid[1], 3, generator=gen, dtype=torch.float64)
    resized = resize_pos_embed(pos, old_grid, new_grid)
    assert resized.shape == (1 + new_grid[0] * new_grid[1], 3)
    assert torch.equal(resized[0], pos[0])
    expected = bicubic_reference(pos[1:].numpy().reshape(*old_grid, 3), *new_grid)
    np.testing.assert_allclose(resized[1:].numpy().reshape(*new_grid, 3), expected, atol=1e-12)
    assert resize_pos_embed(pos, old_grid, old_grid) is pos


def test_224_model_loads_at_384x128(tmp_path: Path) -> None:
    config = openai_like_config(image_size=224, patch=16, width=64)
    model = make_model(config)
    torch.save(model.state_dict(), tmp_path / "clip224.pt")
    loaded, loaded_config = load_clip(tmp_path / "clip224.pt", image_size=(384, 128))
    again, _ = load_clip(tmp_path / "clip224.pt", image_size=(384, 128))
    assert loaded_config.image.grid == (24, 8)
    pos, orig = loaded.visual.positional_embedding, model.visual.positional_embedding
    assert pos.shape == (1 + 24 * 8, 64)
    assert torch.equal(pos[0], orig[0])
    torch.testing.assert_close(pos, resize_pos_embed(orig.detach(), (14, 14), (24, 8)), atol=0, rtol=0)
    images = torch.randn(2, 3, 384, 128)
    with torch.no_grad():
        first = loaded.encode_image(images)
        assert torch.isfinite(first).all() and first.shape == (2, 64)
        assert torch.equal(first, loaded.encode_image(images))
        assert torch.equal(first, again.encode_image(images))


def test_context_length_truncates_or_refuses(tmp_path: Path) -> None:
    config = openai_like_config()
    model = make_model(config)
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    short, short_config = load_clip(tmp_path / "clip.pt", context_length=8)
    assert short_config.text.context_length == 8
    assert torch.equal(short.positional_embedding, model.positional_embedding[:8])
    _, tokens = sample_inputs(config)
    tokens = tokens[:, :8].clone()
    tokens[:, 7] = EOT
    with torch.no_grad():
        torch.testing.assert_close(short.encode_text(tokens), model.encode_text(tokens), atol=1e-6, rtol=0)
    with pytest.raises(CheckpointError, match="context_length 32 exceeds the 16"):
        load_clip(tmp_path / "clip.pt", context_length=32)


# ---------------------------------------------------------------- cpcl format


def test_cpcl_round_trip_atomic_and_weights_only(tmp_path: Path) -> None:
    config = replace(openai_like_config(), image=replace(openai_like_config().image, image_size=(32, 16)))
    model = make_model(config)
    target = tmp_path / "ckpt" / "model.pt"
    save_clip(target, model, config, default_preprocessing(config),
              extra={"epoch": 3, "metrics": {"r1": 0.5}, "ids": [1, 2]})
    assert [p.name for p in target.parent.iterdir()] == ["model.pt"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    raw = torch.load(target, weights_only=True)
    assert raw["format"] == "cpcl-clip" and raw["version"] == 3 and len(raw["digest"]) == 64
    assert raw["config"]["image"]["image_size"] == (32, 16)
    checkpoint = read_checkpoint(target)
    assert checkpoint.source == "cpcl" and checkpoint.extra["metrics"] == {"r1": 0.5}
    loaded, loaded_config = load_clip(target)
    assert loaded_config == config
    assert_same_embeddings(model, loaded, config)
    bigger, bigger_config = load_clip(target, image_size=(64, 24))  # non-square source grid
    assert bigger_config.image.grid == (8, 3)
    assert bigger.visual.positional_embedding.shape == (1 + 24, 128)


def test_failed_save_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    config = openai_like_config()
    model = make_model(config)
    target = tmp_path / "model.pt"
    save_clip(target, model, config, default_preprocessing(config), extra={"epoch": 1})
    before = target.read_bytes()
    with pytest.raises(TypeError, match="plain types"):
        save_clip(target, model, config, default_preprocessing(config), extra={"path": tmp_path})

    def broken_save(obj, stream):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_clip(target, model, config, default_preprocessing(config), extra={"epoch": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert target.read_bytes() == before


# ---------------------------------------------------------------- Hugging Face layout


@pytest.mark.parametrize("act,eos", [("quick_gelu", EOT), ("quick_gelu", 2), ("gelu", EOT)])
def test_hugging_face_directory_matches_transformers(tmp_path: Path, act: str, eos: int) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    common = {"hidden_act": act, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2}
    hf_config = transformers.CLIPConfig(
        projection_dim=64,
        text_config={**common, "hidden_size": 128, "vocab_size": VOCAB, "max_position_embeddings": 16,
                     "eos_token_id": eos, "bos_token_id": 0, "pad_token_id": 1},
        vision_config={**common, "hidden_size": 64, "num_attention_heads": 4, "image_size": 32,
                       "patch_size": 8},
    )
    hf_model = transformers.CLIPModel(hf_config).eval()
    hf_model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    model, config = load_clip(tmp_path / "hf")
    assert config.image.heads == 4 and config.text.heads == 2 and config.image.act == act
    assert config.text.eot_token_id == (None if eos == 2 else eos)
    images, tokens = sample_inputs(config, batch=5)
    tokens[4] = torch.arange(3, 3 + tokens.shape[1])  # no EOT: HF pools at argmax for eos 2, else at 0
    with torch.no_grad():
        hf_image = _features(hf_model.get_image_features(pixel_values=images))
        hf_text = _features(hf_model.get_text_features(input_ids=tokens))
        torch.testing.assert_close(model.encode_image(images), hf_image, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.encode_text(tokens), hf_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.logit_scale, hf_model.logit_scale.detach())
    from_file, _ = load_clip(tmp_path / "hf" / "model.safetensors")  # the weights file, config.json beside it
    assert_same_embeddings(model, from_file, config, atol=0)
    (tmp_path / "hf" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        load_clip(tmp_path / "hf" / "model.safetensors")


def _features(output) -> torch.Tensor:
    """transformers < 5 returns a tensor; newer versions a ModelOutput with the projected pooler_output."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output
