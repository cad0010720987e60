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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from cpcl.utils.errors import CheckpointError

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # looked up in this order
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
    config_path = directory / "config.json"
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
    try:
        if weights.suffix == ".safetensors":
            state_dict = load_file(weights, device="cpu")
        else:
            state_dict = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise many types on corrupt files
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
