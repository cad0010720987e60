"""Hugging Face `CLIPModel` checkpoints: read a saved directory and convert it to OpenAI's layout.

HF splits each attention's input projection into `q_proj`, `k_proj`, `v_proj` and stores the
projections as `nn.Linear` weights `[D, C]`; OpenAI concatenates q, k, v into `in_proj_*`
and stores the projections as matrices `[C, D]` applied on the right. Everything else is a
rename. What the weights cannot tell (heads, activation, LayerNorm eps, eos pooling) comes
from `config.json`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from cpcl.model.clip import ClipConfig, TextConfig, VisionConfig
from cpcl.model.weights_only import load_weights_only
from cpcl.utils.errors import CheckpointError

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # looked up in this order
HF_CONFIG = "config.json"  # the model's config in a HF directory
HF_PREFIXES = ("vision_model.", "text_model.")  # keys that mark the HF layout
LEGACY_EOS_ID = 2  # configs written before transformers PR #24773; HF then pools at argmax(ids)
DEFAULT_EOS_ID = 49407  # CLIPTextConfig's eos_token_id when config.json omits it

HF_ACTIVATIONS = {  # HF hidden_act -> key of cpcl.model.clip.ACTIVATIONS
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}

RENAMES = {  # HF key -> OpenAI key, same tensor
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "logit_scale": "logit_scale",
}
TRANSPOSED = {  # HF nn.Linear weight [D, C] -> OpenAI matrix [C, D]
    "visual_projection.weight": "visual.proj",
    "text_projection.weight": "text_projection",
}
LAYER_PREFIXES = {  # HF encoder layer prefix -> OpenAI resblock prefix
    "vision_model.encoder.layers.": "visual.transformer.resblocks.",
    "text_model.encoder.layers.": "transformer.resblocks.",
}
LAYER_RENAMES = {  # inside one layer
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}
QKV = ("q_proj", "k_proj", "v_proj")  # order of the rows of in_proj_weight


def is_hf_layout(state_dict: Mapping[str, Any]) -> bool:
    """True if the keys are those of a HF `CLIPModel` (`vision_model.*`, `text_model.*`)."""
    return any(key.startswith(HF_PREFIXES) for key in state_dict)


def read_hf_config(directory: Path) -> dict[str, Any]:
    """The parsed `config.json` of a `save_pretrained` directory."""
    config_path = directory / HF_CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{directory} has no config.json; expected a Hugging Face CLIP directory "
                              f"(config.json + {' or '.join(WEIGHT_FILES)})")
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {config_path}: {err}") from err
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"{config_path} must hold a JSON object")
    return hf_config


def read_hf_directory(directory: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read `config.json` and the weights of a `save_pretrained` directory (HF key names)."""
    hf_config = read_hf_config(directory)
    weights = next((directory / name for name in WEIGHT_FILES if (directory / name).is_file()), None)
    if weights is None:
        sharded = " (sharded checkpoints are not supported)" if any(directory.glob("*.index.json")) else ""
        raise CheckpointError(f"{directory} holds no {' or '.join(WEIGHT_FILES)}{sharded}")
    if weights.suffix != ".safetensors":
        state_dict = load_weights_only(weights)
    else:
        try:
            state_dict = load_file(weights, device="cpu")
        except Exception as err:  # safetensors raises several types on corrupt files
            raise CheckpointError(f"cannot read weights {weights}: {err}") from err
    logger.info("read Hugging Face CLIP weights %s", weights)
    return state_dict, hf_config


def hf_to_openai(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Convert HF `CLIPModel` keys to OpenAI's; unknown keys pass through unchanged.

    HF's non-persistent `position_ids` buffers are dropped. An attention with only some of
    q/k/v keeps them under their HF names, so strict loading reports them.
    """
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}  # (block prefix, weight|bias) -> {q_proj: ..}
    for key, value in state_dict.items():
        if key.endswith("position_ids"):
            continue
        if key in RENAMES:
            out[RENAMES[key]] = value
        elif key in TRANSPOSED:
            out[TRANSPOSED[key]] = value.t().contiguous()
        else:
            converted = _convert_layer_key(key)
            if converted is None:
                out[key] = value
            elif isinstance(converted, tuple):
                block, proj, kind = converted
                qkv.setdefault((block, kind), {})[proj] = value
            else:
                out[converted] = value
    for (block, kind), parts in qkv.items():
        if all(name in parts for name in QKV):
            out[f"{block}attn.in_proj_{kind}"] = torch.cat([parts[name] for name in QKV], dim=0)
        else:
            out.update({_hf_layer_key(block, f"self_attn.{name}.{kind}"): t for name, t in parts.items()})
    return out


def _convert_layer_key(key: str) -> str | tuple[str, str, str] | None:
    """OpenAI name of an encoder-layer key, (block prefix, q|k|v_proj, kind) for q/k/v, else None."""
    for hf_prefix, oa_prefix in LAYER_PREFIXES.items():
        if not key.startswith(hf_prefix):
            continue
        index, _, rest = key[len(hf_prefix):].partition(".")
        block = f"{oa_prefix}{index}."
        for proj in QKV:
            if rest.startswith(f"self_attn.{proj}."):
                return block, proj, rest.rsplit(".", 1)[-1]
        for hf_name, oa_name in LAYER_RENAMES.items():
            if rest.startswith(hf_name):
                return block + oa_name + rest[len(hf_name):]
    return None


def _hf_layer_key(block: str, rest: str) -> str:
    """Inverse of the block prefix mapping, for error reporting of incomplete q/k/v."""
    for hf_prefix, oa_prefix in LAYER_PREFIXES.items():
        if block.startswith(oa_prefix):
            return hf_prefix + block[len(oa_prefix):] + rest
    return block + rest


def hf_tower_settings(hf_config: Mapping[str, Any], where: Path) -> dict[str, dict[str, Any]]:
    """Per-tower fields the weights cannot tell: {"image": {...}, "text": {...}} for `ClipConfig`.

    Text pooling follows the installed transformers: eos_token_id 2 (legacy OpenAI configs)
    pools at argmax(ids), i.e. `eot_token_id=None`; any other id pools at its first occurrence.
    """
    model_type = hf_config.get("model_type", "clip")
    if model_type != "clip":
        raise CheckpointError(f"{where}/config.json has model_type {model_type!r}; only 'clip' is supported")
    settings: dict[str, dict[str, Any]] = {}
    for tower, section in (("image", "vision_config"), ("text", "text_config")):
        sub = hf_config.get(section)
        if not isinstance(sub, Mapping):
            raise CheckpointError(f"{where}/config.json lacks the {section} section")
        act = sub.get("hidden_act", "quick_gelu")
        if act not in HF_ACTIVATIONS:
            raise CheckpointError(f"{where}/config.json: {section}.hidden_act {act!r} unsupported; "
                                  f"valid: {', '.join(HF_ACTIVATIONS)}")
        if "num_attention_heads" not in sub:
            raise CheckpointError(f"{where}/config.json lacks {section}.num_attention_heads")
        settings[tower] = {"heads": int(sub["num_attention_heads"]), "act": HF_ACTIVATIONS[act],
                           "ln_eps": float(sub.get("layer_norm_eps", 1e-5))}
    eos = hf_config["text_config"].get("eos_token_id", DEFAULT_EOS_ID)
    if not isinstance(eos, int):
        raise CheckpointError(f"{where}/config.json: text_config.eos_token_id must be one integer, got {eos!r}")
    settings["text"]["eot_token_id"] = None if eos == LEGACY_EOS_ID else eos
    return settings


# ---------------------------------------------------------------- the other way: OpenAI layout -> HF

HF_ACT_NAMES = {  # key of cpcl.model.clip.ACTIVATIONS -> HF hidden_act written on export
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "gelu_tanh": "gelu_pytorch_tanh",
}
SIZE_KEY = "cpcl_image_size"  # config.json: the (H, W) a non-square model was trained at (read back exactly)


def openai_to_hf(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of `hf_to_openai`: OpenAI keys to HF `CLIPModel` keys, `in_proj_*` split into q/k/v and the
    projections transposed. The visual positional embedding passes unchanged (see `square_pos_embed`)."""
    renames = {openai: hf for hf, openai in RENAMES.items()}
    transposed = {openai: hf for hf, openai in TRANSPOSED.items()}
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key in renames:
            out[renames[key]] = value
        elif key in transposed:
            out[transposed[key]] = value.t().contiguous()
        elif (block := _hf_block(key)) is None:
            raise CheckpointError(f"{key}: no Hugging Face CLIPModel name for this key")
        elif key.endswith(("attn.in_proj_weight", "attn.in_proj_bias")):
            kind = key.rsplit("_", 1)[-1]  # weight | bias
            for name, part in zip(QKV, value.chunk(3, dim=0)):
                out[f"{block[0]}self_attn.{name}.{kind}"] = part.contiguous()
        else:
            hf_prefix, rest = block
            hf_rest = next((hf + rest[len(oa):] for hf, oa in LAYER_RENAMES.items() if rest.startswith(oa)), None)
            if hf_rest is None:
                raise CheckpointError(f"{key}: no Hugging Face CLIPModel name for this key")
            out[hf_prefix + hf_rest] = value
    return out


def _hf_block(key: str) -> tuple[str, str] | None:
    """(HF layer prefix with its index, rest of the OpenAI key) of a residual-block key, else None."""
    for hf_prefix, oa_prefix in LAYER_PREFIXES.items():
        if key.startswith(oa_prefix):
            index, _, rest = key[len(oa_prefix):].partition(".")
            return f"{hf_prefix}{index}.", rest
    return None


def bicubic_matrix(source: int, target: int) -> Tensor:
    """[target, source] float64: row i holds the weights `F.interpolate(mode="bicubic", align_corners=False)`
    gives the `source` samples of a line resized to `target` (HF's `interpolate_pos_encoding`)."""
    basis = torch.eye(source, dtype=torch.float64).reshape(source, 1, source, 1)  # one-hot lines
    return F.interpolate(basis, size=(target, 1), mode="bicubic", align_corners=False)[:, 0, :, 0].t()


def square_pos_embed(pos: Tensor, grid: tuple[int, int]) -> tuple[Tensor, int]:
    """pos [1 + gh * gw, C] -> ([1 + S * S, C], S) with S = max(gh, gw), such that HF's bicubic
    `interpolate_pos_encoding` from S x S back to gh x gw gives `pos` again (to float rounding): HF's
    CLIPModel stores square grids only. A square grid is returned as it is."""
    height, width = grid
    if height == width:
        return pos, height
    side = max(grid)
    rows, cols = bicubic_matrix(side, height), bicubic_matrix(side, width)  # [gh, S], [gw, S]
    target = pos[1:].double().reshape(height, width, -1)  # [gh, gw, C]
    square = torch.einsum("ih,hwc,jw->ijc", torch.linalg.pinv(rows), target, torch.linalg.pinv(cols))  # [S, S, C]
    restored = torch.einsum("hi,ijc,wj->hwc", rows, square, cols)
    if not torch.allclose(restored, target, atol=1e-6 * max(1.0, float(target.abs().max()))):
        raise CheckpointError(f"the {height}x{width} positional grid has no exact {side}x{side} square form")
    return torch.cat([pos[:1], square.reshape(side * side, -1).to(pos.dtype)]), side


def grid_from_square(pos: Tensor, side: int, grid: tuple[int, int]) -> Tensor:
    """Inverse of `square_pos_embed`: [1 + S * S, C] -> [1 + gh * gw, C], the bicubic resize HF applies."""
    if grid == (side, side):
        return pos
    rows, cols = bicubic_matrix(side, grid[0]), bicubic_matrix(side, grid[1])
    square = pos[1:].double().reshape(side, side, -1)
    resized = torch.einsum("hi,ijc,wj->hwc", rows, square, cols).reshape(grid[0] * grid[1], -1)
    return torch.cat([pos[:1], resized.to(pos.dtype)])


def hf_config_dict(config: ClipConfig) -> dict[str, Any]:
    """config.json of a HF `CLIPModel` with `config`'s architecture (the inverse of `hf_tower_settings` and
    the shape inference); a non-square image size is recorded under SIZE_KEY."""
    image, text = config.image, config.text
    side = max(image.grid)

    def tower(sub: VisionConfig | TextConfig) -> dict[str, Any]:
        return {"hidden_size": sub.width, "intermediate_size": int(round(sub.width * sub.mlp_ratio)),
                "num_hidden_layers": sub.layers, "num_attention_heads": sub.heads, "hidden_act": HF_ACT_NAMES[sub.act],
                "layer_norm_eps": sub.ln_eps, "projection_dim": config.embed_dim}

    out: dict[str, Any] = {
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": config.embed_dim,
        "logit_scale_init_value": math.log(1.0 / config.init_temperature),
        "vision_config": {**tower(image), "patch_size": image.patch_size, "image_size": side * image.patch_size,
                          "num_channels": 3},
        "text_config": {**tower(text), "vocab_size": text.vocab_size, "max_position_embeddings": text.context_length,
                        "eos_token_id": LEGACY_EOS_ID if text.eot_token_id is None else text.eot_token_id},
    }
    if image.grid[0] != image.grid[1]:
        out[SIZE_KEY] = list(image.image_size)
    return out


def write_hf_directory(state_dict: Mapping[str, Tensor], config: ClipConfig, directory: Path) -> list[Path]:
    """A HF `CLIPModel` directory (config.json + model.safetensors, float32) of OpenAI-layout weights."""
    state = dict(state_dict)
    pos, _ = square_pos_embed(state["visual.positional_embedding"].float(), config.image.grid)
    state["visual.positional_embedding"] = pos
    tensors = {key: value.detach().float().cpu().contiguous() for key, value in openai_to_hf(state).items()}
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / WEIGHT_FILES[0]), metadata={"format": "pt"})
    (directory / HF_CONFIG).write_text(json.dumps(hf_config_dict(config), indent=2) + "\n", encoding="utf-8")
    return [directory / HF_CONFIG, directory / WEIGHT_FILES[0]]


def restore_trained_size(state_dict: dict[str, Tensor], hf_config: Mapping[str, Any], image: VisionConfig,
                         where: Path) -> tuple[int, int] | None:
    """The (H, W) recorded under SIZE_KEY by `hf_config_dict` (None when absent), with the visual positional
    embedding of `state_dict` (OpenAI layout, square `image.grid`) resized back to that grid, in place."""
    size = hf_config.get(SIZE_KEY)
    if size is None:
        return None
    patch = image.patch_size
    if not (isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and v > 0 and v % patch == 0 for v in size)):
        raise CheckpointError(f"{where}/config.json: {SIZE_KEY} must be [H, W], positive multiples of the patch "
                              f"size {patch}; got {size!r}")
    grid = (size[0] // patch, size[1] // patch)
    state_dict["visual.positional_embedding"] = grid_from_square(state_dict["visual.positional_embedding"],
                                                                 image.grid[0], grid)
    return size[0], size[1]
