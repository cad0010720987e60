"""Architecture read, not assumed: open_clip's config beside the weights, `model.act` / `model.head_width` for weights
that record nothing (one warning when cpcl had to guess), and the positional-embedding resize transformers uses."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cpcl.engine.config import TrainConfig
from cpcl.engine.train import build_model
from cpcl.model import CLIP, ArchitectureHints, ClipConfig, TextConfig, VisionConfig, load_clip, read_checkpoint
from cpcl.model import save_clip
from cpcl.utils.config import load_config
from cpcl.utils.errors import CheckpointError, ConfigError
from cpcl.utils.preprocessing import Preprocessing

VOCAB = 1000


def gelu_config() -> ClipConfig:
    """Not OpenAI's convention: exact GELU, 32-channel heads in both towers."""
    return ClipConfig(embed_dim=64,
                      image=VisionConfig(width=128, layers=2, heads=4, patch_size=8, image_size=(32, 32), act="gelu"),
                      text=TextConfig(width=128, layers=2, heads=4, vocab_size=VOCAB, context_length=16, act="gelu"))


def model_of(config: ClipConfig) -> CLIP:
    torch.manual_seed(0)
    return CLIP(config).eval()


def inputs(config: ClipConfig) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, VOCAB - 1, (3, 16), generator=gen)
    tokens[:, 9] = VOCAB - 1
    return torch.randn(3, 3, *config.image.image_size, generator=gen), tokens


def assert_same(a: CLIP, b: CLIP, config: ClipConfig) -> None:
    images, tokens = inputs(config)
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(images), b.encode_image(images), atol=1e-6, rtol=0)
        torch.testing.assert_close(a.encode_text(tokens), b.encode_text(tokens), atol=1e-6, rtol=0)


def open_clip_config(config: ClipConfig, **vision: object) -> dict:
    """open_clip_config.json as open_clip writes it to a Hub repository (quick_gelu absent: GELU)."""
    return {"model_cfg": {"embed_dim": config.embed_dim,
                          "vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 8, "head_width": 32,
                                         **vision},
                          "text_cfg": {"context_length": 16, "vocab_size": VOCAB, "width": 128, "heads": 4,
                                       "layers": 2}},
            "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"}}


def test_open_clip_config_beside_a_state_dict_gives_the_architecture(tmp_path: Path, caplog) -> None:
    config = gelu_config()
    model = model_of(config)
    torch.save(model.state_dict(), tmp_path / "epoch_32.pt")
    (tmp_path / "open_clip_config.json").write_text(json.dumps(open_clip_config(config)))
    with caplog.at_level(logging.WARNING, logger="cpcl"):
        checkpoint = read_checkpoint(tmp_path / "epoch_32.pt")
    assert checkpoint.config == config and checkpoint.source == "open_clip" and not caplog.records
    assert checkpoint.preprocessing == Preprocessing((32, 32), "bilinear", (0.5,) * 3, (0.25,) * 3)
    loaded, _ = load_clip(tmp_path / "epoch_32.pt")
    assert_same(model, loaded, config)


def test_an_open_clip_repository_folder_loads(tmp_path: Path) -> None:
    config = gelu_config()
    model = model_of(config)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "open_clip_model.safetensors"))
    (tmp_path / "open_clip_config.json").write_text(json.dumps(open_clip_config(config)))
    loaded, loaded_config = load_clip(tmp_path)
    assert loaded_config == config
    assert_same(model, loaded, config)


def test_an_open_clip_setting_cpcl_cannot_build_is_refused_by_name(tmp_path: Path) -> None:
    config = gelu_config()
    torch.save(model_of(config).state_dict(), tmp_path / "m.pt")
    (tmp_path / "open_clip_config.json").write_text(json.dumps(open_clip_config(config, ls_init_value=1e-5)))
    with pytest.raises(CheckpointError, match=r"vision_cfg\.ls_init_value = 1e-05 is not supported"):
        read_checkpoint(tmp_path / "m.pt")


def test_a_bare_state_dict_is_guessed_with_one_warning_and_hints_correct_it(tmp_path: Path, caplog) -> None:
    config = gelu_config()
    model = model_of(config)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with caplog.at_level(logging.WARNING, logger="cpcl"):
        guessed = read_checkpoint(tmp_path / "bare.pt").config
    assert guessed.image.act == "quick_gelu" and guessed.image.heads == 2  # OpenAI's convention, which is wrong here
    assert len(caplog.records) == 1
    assert "guessed" in caplog.text and "model.act" in caplog.text and "model.head_width" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cpcl"):
        loaded, loaded_config = load_clip(tmp_path / "bare.pt", hints=ArchitectureHints(act="gelu", head_width=32))
    assert loaded_config == config and not caplog.records
    assert_same(model, loaded, config)


def test_hints_that_contradict_a_recorded_architecture_are_refused(tmp_path: Path) -> None:
    config = gelu_config()
    path = save_clip(tmp_path / "best.pt", model_of(config), config, Preprocessing((32, 32)))
    with pytest.raises(CheckpointError, match="model.act is quick_gelu, but .*best.pt records image.act gelu"):
        read_checkpoint(path, ArchitectureHints(act="quick_gelu"))
    assert read_checkpoint(path, ArchitectureHints(act="gelu", head_width=32)).config == config


def test_the_train_config_states_the_architecture(tmp_path: Path) -> None:
    config = gelu_config()
    model = model_of(config)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    cfg = load_config(TrainConfig, None, [f"model.init={tmp_path / 'bare.pt'}", "model.image_size=[32,32]",
                                          "model.context_length=16", "model.act=gelu", "model.head_width=32"])
    built = build_model(cfg, torch.device("cpu")).eval()
    assert built.config == config
    assert_same(model, built, config)


def test_a_resized_grid_matches_transformers_interpolate_pos_encoding(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    common = {"intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2}
    hf_model = transformers.CLIPModel(transformers.CLIPConfig(
        projection_dim=64, text_config={**common, "hidden_size": 128, "vocab_size": VOCAB,
                                        "max_position_embeddings": 16,
                                        "eos_token_id": VOCAB - 1, "bos_token_id": 0, "pad_token_id": 1},
        vision_config={**common, "hidden_size": 64, "image_size": 32, "patch_size": 8})).eval()
    hf_model.save_pretrained(tmp_path / "hf")
    for size in ((48, 24), (24, 40)):  # one axis enlarged and one shrunk; the other way round
        model, _ = load_clip(tmp_path / "hf", image_size=size)
        images = torch.randn(2, 3, *size)
        with torch.no_grad():
            want = hf_model.get_image_features(pixel_values=images, interpolate_pos_encoding=True)
            want = want if isinstance(want, torch.Tensor) else want.pooler_output
            torch.testing.assert_close(model.encode_image(images), want, atol=1e-5, rtol=0)


def test_hint_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="model.act 'relu' unknown"):
        load_config(TrainConfig, None, ["model.act=relu"])
    with pytest.raises(ConfigError, match="model.head_width"):
        load_config(TrainConfig, None, ["model.head_width=0"])
