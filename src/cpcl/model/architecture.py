"""The architecture of weights in OpenAI's layout, read where it is written and guessed (with a warning) where not.

The keys and shapes give widths, depths, patch size, grid, vocabulary and context. What they cannot give (the
head count and the MLP activation) comes, in this order, from what the caller states (`ArchitectureHints`:
`model.act`, `model.head_width`), from an `open_clip_config.json` beside the weights (open_clip's model config:
`model_cfg` with `vision_cfg` / `text_cfg`, and its `preprocess_cfg`), from OpenAI's own convention for OpenAI's
TorchScript archives (64-channel heads, QuickGELU), or else from that same convention with one warning saying so.
Also here: the positional-embedding resize to another input size.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cpcl.model.clip import ACTIVATIONS, ClipConfig, TextConfig, VisionConfig
from cpcl.utils.errors import CheckpointError, ConfigError
from cpcl.utils.preprocessing import RESIZE_FILTERS, Preprocessing

log = logging.getLogger(__name__)

OPENAI_HEAD_WIDTH = 64  # OpenAI CLIP: heads = width // 64 (heads are not stored in the weights)
OPENAI_ACT = "quick_gelu"  # OpenAI CLIP's MLP activation
OPEN_CLIP_CONFIG = "open_clip_config.json"  # open_clip's config, beside its weights (a Hub repository's layout)
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # its weights, looked up in order
OPEN_CLIP_UNSUPPORTED = {  # open_clip settings that change the architecture away from OpenAI's: (section, key, plain)
    ("vision_cfg", "ls_init_value", None), ("vision_cfg", "attentional_pool", False),
    ("vision_cfg", "no_ln_pre", False), ("vision_cfg", "final_ln_after_pool", False),
    ("vision_cfg", "pool_type", "tok"), ("vision_cfg", "timm_model_name", None),
    ("text_cfg", "hf_model_name", None), ("text_cfg", "ls_init_value", None), ("text_cfg", "pool_type", "argmax"),
    ("text_cfg", "embed_cls", False), ("text_cfg", "no_causal_mask", False), ("text_cfg", "proj_bias", False),
}
NEEDED_KEYS = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight",
               "positional_embedding", "text_projection", "transformer.resblocks.0.mlp.c_fc.weight",
               "visual.transformer.resblocks.0.mlp.c_fc.weight")


@dataclass(frozen=True)
class ArchitectureHints:
    """What the caller says about weights that do not record it (None: read it, or OpenAI's convention)."""

    act: str | None = None  # MLP activation of both towers, a key of cpcl.model.clip.ACTIVATIONS
    head_width: int | None = None  # channels per attention head in both towers (heads = width // head_width)

    def __post_init__(self) -> None:
        if self.act is not None and self.act not in ACTIVATIONS:
            raise ConfigError(f"model.act {self.act!r} unknown; valid: {', '.join(ACTIVATIONS)}")
        if self.head_width is not None and self.head_width < 1:
            raise ConfigError(f"model.head_width must be >= 1, got {self.head_width}")

    def check(self, config: ClipConfig, where: Path | str) -> None:
        """CheckpointError when a stated value contradicts the architecture `where` records."""
        for tower_name in ("image", "text"):
            tower = getattr(config, tower_name)
            if self.act is not None and tower.act != self.act:
                raise CheckpointError(f"model.act is {self.act}, but {where} records {tower_name}.act {tower.act}; "
                                      f"drop model.act or use matching weights")
            if self.head_width is not None and tower.width // tower.heads != self.head_width:
                raise CheckpointError(f"model.head_width is {self.head_width}, but {where} records {tower.heads} "
                                      f"{tower_name} heads of {tower.width // tower.heads} channels; drop "
                                      f"model.head_width or use matching weights")


def infer_openai_config(state_dict: Mapping[str, Tensor], where: Path | str, hints: ArchitectureHints,
                        convention: bool = False) -> ClipConfig:
    """Architecture of OpenAI-layout ViT CLIP weights from their keys and shapes, with heads and activation
    from `hints`, else OpenAI's convention (silently when `convention`, i.e. OpenAI's own file; with one warning
    otherwise). The image grid is square (from the length of the visual positional embedding)."""
    if "visual.layer1.0.conv1.weight" in state_dict:
        raise CheckpointError(f"{where} is a ResNet CLIP; only ViT CLIP models are supported")
    absent = [key for key in NEEDED_KEYS if key not in state_dict]
    if absent:
        raise CheckpointError(f"{where} is not a ViT CLIP checkpoint: {len(absent)} missing key(s): "
                              f"{', '.join(absent[:5])}")
    guessed = [name for name, value in (("act", hints.act), ("head_width", hints.head_width)) if value is None]
    if guessed and not convention:
        log.warning("%s records no architecture: guessed OpenAI CLIP's (64-channel heads, QuickGELU) for %s; if it "
                    "was trained otherwise, put its open_clip_config.json beside it or set %s", where,
                    " and ".join(guessed), " and ".join(f"model.{name}" for name in guessed))
    head_width, act = hints.head_width or OPENAI_HEAD_WIDTH, hints.act or OPENAI_ACT
    conv = state_dict["visual.conv1.weight"]  # [C, 3, p, p]
    width, patch = conv.shape[0], conv.shape[-1]
    tokens = state_dict["visual.positional_embedding"].shape[0] - 1
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise CheckpointError(f"{where}: {tokens} patch positions are not a square grid; "
                              f"non-square models are read from cpcl checkpoints only")
    text_width = state_dict["token_embedding.weight"].shape[1]
    try:
        return ClipConfig(
            embed_dim=state_dict["text_projection"].shape[1],
            image=VisionConfig(
                width=width, layers=count_blocks(state_dict, "visual.transformer.resblocks."),
                heads=max(1, width // head_width), patch_size=patch, image_size=(side * patch, side * patch),
                mlp_ratio=state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width, act=act),
            text=TextConfig(
                width=text_width, layers=count_blocks(state_dict, "transformer.resblocks."),
                heads=max(1, text_width // head_width), vocab_size=state_dict["token_embedding.weight"].shape[0],
                context_length=state_dict["positional_embedding"].shape[0],
                mlp_ratio=state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width, act=act))
    except ConfigError as err:
        raise CheckpointError(f"{where}: inferred architecture is invalid: {err}") from err


def count_blocks(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def read_open_clip_config(path: Path) -> dict[str, Any]:
    """open_clip's config file: {"model_cfg": {...}, "preprocess_cfg": {...}} (a Hub repository's
    open_clip_config.json), or a bare model config (open_clip's model_configs/NAME.json)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg", data).get("vision_cfg"), dict):
        raise CheckpointError(f"{path} is not an open_clip config (no model_cfg.vision_cfg)")
    return data


def open_clip_architecture(state_dict: Mapping[str, Tensor], path: Path) -> tuple[ClipConfig, Preprocessing | None]:
    """The architecture open_clip's config at `path` gives the weights `state_dict` (their shapes checked by the
    strict load), and the preprocessing its preprocess_cfg records (None: none)."""
    data = read_open_clip_config(path)
    model_cfg = data.get("model_cfg", data)
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    for section, key, plain in sorted(OPEN_CLIP_UNSUPPORTED, key=str):
        value = model_cfg.get(section, {}).get(key, plain)
        if value != plain:
            raise CheckpointError(f"{path}: {section}.{key} = {value!r} is not supported (cpcl builds OpenAI's "
                                  f"ViT CLIP: {key} {plain!r})")
    act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
    inferred = infer_openai_config(state_dict, path, ArchitectureHints(act=act, head_width=OPENAI_HEAD_WIDTH),
                                   convention=True)
    text_heads = int(text.get("heads", 8))  # open_clip's TextCfg default
    try:
        config = replace(inferred, image=replace(inferred.image, heads=inferred.image.width
                                                 // int(vision.get("head_width", OPENAI_HEAD_WIDTH))),
                         text=replace(inferred.text, heads=text_heads))
    except ConfigError as err:
        raise CheckpointError(f"{path} does not fit its weights: {err}") from None
    return config, _open_clip_preprocessing(data.get("preprocess_cfg"), config, path)


def _open_clip_preprocessing(cfg: Any, config: ClipConfig, path: Path) -> Preprocessing | None:
    if not isinstance(cfg, Mapping):
        return None
    resize = cfg.get("interpolation", "bicubic")
    if resize not in RESIZE_FILTERS:
        raise CheckpointError(f"{path}: preprocess_cfg.interpolation {resize!r} unknown; valid: "
                              f"{', '.join(RESIZE_FILTERS)}")
    default = Preprocessing(config.image.image_size)
    return Preprocessing(config.image.image_size, resize, tuple(cfg.get("mean", default.mean)),
                         tuple(cfg.get("std", default.std)))


def resize_pos_embed(pos: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """pos: [1 + g0 * g1, C] (CLS row first, grid row-major) -> [1 + n0 * n1, C].

    The CLS row is kept; the grid is resized bicubically (align_corners=False, no anti-aliasing: transformers'
    `interpolate_pos_encoding`, and open_clip's `resize_pos_embed` on an axis it enlarges), in at least float32,
    and cast back to `pos.dtype`. The same grid returns `pos` itself, untouched.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return pos
    if pos.shape[0] != 1 + old_grid[0] * old_grid[1]:
        raise CheckpointError(f"visual positional embedding has {pos.shape[0]} rows; a {old_grid[0]}x"
                              f"{old_grid[1]} grid needs {1 + old_grid[0] * old_grid[1]}")
    width = pos.shape[1]
    work_dtype = torch.promote_types(pos.dtype, torch.float32)
    grid = pos[1:].to(work_dtype).reshape(1, *old_grid, width).permute(0, 3, 1, 2)  # [1, C, g0, g1]
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], width).to(pos.dtype)
    return torch.cat([pos[:1], grid], dim=0)


def adapt_state_dict(state_dict: Mapping[str, Tensor], src: ClipConfig,
                     dst: ClipConfig) -> dict[str, Tensor]:
    """Resize the visual positional embedding from src's grid to dst's; cut the text one to dst's length."""
    out = dict(state_dict)
    if "visual.positional_embedding" in out and src.image.grid != dst.image.grid:
        log.info("resizing the visual positional embedding from grid %s to %s", src.image.grid, dst.image.grid)
        out["visual.positional_embedding"] = resize_pos_embed(out["visual.positional_embedding"],
                                                              src.image.grid, dst.image.grid)
    if "positional_embedding" in out:
        out["positional_embedding"] = out["positional_embedding"][:dst.text.context_length]
    return out
