"""Read CLIP weights (OpenAI TorchScript or state dict, Hugging Face directory, cpcl), save cpcl ones.

Every source is converted to OpenAI's key layout (`cpcl.model.clip`), the architecture is
inferred from the keys and shapes (OpenAI and HF files) or read from the file (cpcl), the
visual positional embedding is resized to the requested image size and the text one cut to
the requested context length, and the weights are loaded strictly. A cpcl checkpoint also records
the preprocessing its model was trained with (`cpcl.utils.preprocessing`); other files are read
with OpenAI CLIP's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from cpcl.model.clip import CLIP, ClipConfig, TextConfig, VisionConfig
from cpcl.model.hf import (hf_to_openai, hf_tower_settings, is_hf_layout, read_hf_config, read_hf_directory,
                            restore_trained_size)
from cpcl.model.shipped import is_shipped, resolve_checkpoint, unpack
from cpcl.model.torchscript import read_torchscript_weights
from cpcl.model.weights_only import load_weights_only
from cpcl.utils.errors import CheckpointError, ConfigError
from cpcl.utils.files import atomic_write
from cpcl.utils.preprocessing import Preprocessing

logger = logging.getLogger(__name__)

CPCL_FORMAT = "cpcl-clip"  # value of the "format" field of cpcl checkpoints
CPCL_VERSION = 3  # newest cpcl checkpoint version read, the one written (2: with "digest", 3: "preprocessing")
OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")  # ints in OpenAI archives
OPENAI_HEAD_DIM = 64  # OpenAI CLIP: heads = width // 64 (heads are not stored in the weights)
MAX_NAMED_KEYS = 5  # mismatched keys named in an error message
DOWNLOAD_HINT = ("get OpenAI ViT-B/16 weights on a machine with internet access, either the ViT-B-16.pt "
                 "file of the openai/CLIP release (github.com/openai/CLIP) or the Hugging Face repo "
                 "openai/clip-vit-base-patch16 (a directory with config.json and model.safetensors), "
                 "and put it at that path")


@dataclass
class ClipCheckpoint:
    """Weights in OpenAI layout with the architecture they were trained at."""

    state_dict: dict[str, Tensor]  # OpenAI key names, tensors on CPU in the file's dtype
    config: ClipConfig  # architecture at the checkpoint's own image size and context length
    source: str  # "openai-jit" | "openai" | "hf" | "cpcl" | "shipped"
    path: Path  # where it was read from
    extra: dict[str, Any] = field(default_factory=dict)  # the `extra` dict of cpcl checkpoints
    preprocessing: Preprocessing | None = None  # the eval transform it records, at its own image size; None: the
    # file records none (OpenAI, HF, cpcl before version 3, shipped version 1)

    def preprocessing_at(self, image_size: tuple[int, int]) -> Preprocessing:
        """How to preprocess images for this model built at `image_size` (H, W): as recorded, else OpenAI CLIP's
        (one warning line when a cpcl file, which records it since version 3, does not)."""
        if self.preprocessing is not None:
            return replace(self.preprocessing, image_size=tuple(image_size))
        default = Preprocessing(tuple(image_size))
        if self.source in ("cpcl", "shipped"):
            logger.warning("%s: saved by an older cpcl without its preprocessing; using the defaults (resize %s, "
                           "mean %s, std %s), which may not be what it was trained with", self.path, default.resize,
                           list(default.mean), list(default.std))
        return default


def read_checkpoint(path: str | Path) -> ClipCheckpoint:
    """Read any supported checkpoint without building a model.

    Files: a TorchScript archive (OpenAI's `ViT-B-16.pt`, its weights read as data by
    `cpcl.model.torchscript`, none of its code run), a
    `torch.save` state dict (possibly under "state_dict", possibly with "module." prefixes,
    OpenAI or HF key names), a `.safetensors` file, or a cpcl checkpoint (`save_clip`).
    Directories: a Hugging Face `save_pretrained` CLIP (config.json + weights).
    Names: a start shipped with cpcl (`cpcl.model.shipped`, e.g. "synthpedes-small").
    """
    path = resolve_checkpoint(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}; {DOWNLOAD_HINT}")
    if is_shipped(path):
        state_dict, config, preprocessing = unpack(path)
        return ClipCheckpoint(state_dict, config, "shipped", path, preprocessing=preprocessing)
    if path.is_dir():
        hf_state, hf_config = read_hf_directory(path)
        return _from_hf(hf_state, hf_config, path)
    raw, source = _read_file(path)
    if isinstance(raw, Mapping) and raw.get("format") == CPCL_FORMAT:
        return _from_cpcl(raw, path)
    state_dict = _unwrap(raw, path)
    if is_hf_layout(state_dict):
        if not (path.parent / "config.json").is_file():
            raise CheckpointError(f"{path} has Hugging Face key names but no config.json beside it; "
                                  f"put the model's config.json in {path.parent}")
        return _from_hf(state_dict, read_hf_config(path.parent), path.parent)
    _pop_openai_meta(state_dict, path)
    return ClipCheckpoint(state_dict, infer_openai_config(state_dict, path), source, path)


def build_clip(checkpoint: ClipCheckpoint, image_size: tuple[int, int] | None = None,
               context_length: int | None = None,
               device: str | torch.device = "cpu") -> tuple[CLIP, ClipConfig]:
    """A `CLIP` at `image_size` (H, W) / `context_length` holding the checkpoint's weights."""
    src = checkpoint.config
    if context_length is not None and context_length > src.text.context_length:
        raise CheckpointError(f"context_length {context_length} exceeds the {src.text.context_length} "
                              f"positions of {checkpoint.path}")
    try:
        config = src.with_sizes(image_size, context_length)
    except ConfigError as err:
        raise CheckpointError(f"cannot load {checkpoint.path} at the requested size: {err}") from err
    state_dict = adapt_state_dict(checkpoint.state_dict, src, config)
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
        model = CLIP(config)
    load_strict(model, state_dict, checkpoint.path, assign=True)
    logger.info("loaded %s CLIP from %s at image %dx%d, context %d", checkpoint.source, checkpoint.path,
                *config.image.image_size, config.text.context_length)
    return model.to(device), config


def load_clip(path: str | Path, image_size: tuple[int, int] | None = None,
              context_length: int | None = None,
              device: str | torch.device = "cpu") -> tuple[CLIP, ClipConfig]:
    """Read any supported checkpoint (see `read_checkpoint`) and build the model (see `build_clip`)."""
    return build_clip(read_checkpoint(path), image_size, context_length, device)


def save_clip(path: str | Path, model: nn.Module, config: ClipConfig, preprocessing: Preprocessing,
              extra: Mapping[str, Any] | None = None) -> Path:
    """Write a cpcl checkpoint atomically (temporary file in the same folder, then rename).

    The file holds plain types only, so `torch.load(weights_only=True)` reads it:
    {"format", "version", "config": asdict(config), "preprocessing": preprocessing.to_dict(), "state_dict",
    "extra", "digest"}; "digest" is `payload_digest` of the rest, checked when the file is read.
    `preprocessing` is what the model was trained with, at its input size (`config.image.image_size`).
    """
    if tuple(preprocessing.image_size) != tuple(config.image.image_size):
        raise ValueError(f"preprocessing for {preprocessing.image_size} images saved with a model at "
                         f"{config.image.image_size}")
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    payload = {
        "format": CPCL_FORMAT,
        "version": CPCL_VERSION,
        "config": asdict(config),
        "preprocessing": preprocessing.to_dict(),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "extra": extra,
    }
    payload["digest"] = payload_digest(payload["config"], payload["state_dict"], extra, payload["preprocessing"])
    path = Path(path)
    atomic_write(path, partial(torch.save, payload))
    return path


def resize_pos_embed(pos: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """pos: [1 + g0 * g1, C] (CLS row first, grid row-major) -> [1 + n0 * n1, C].

    The CLS row is kept; the grid is resized bilinearly (align_corners=False), in at least
    float32 precision, and cast back to `pos.dtype`. The same grid returns `pos` itself, untouched.
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
    grid = F.interpolate(grid, size=new_grid, mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], width).to(pos.dtype)
    return torch.cat([pos[:1], grid], dim=0)


def adapt_state_dict(state_dict: Mapping[str, Tensor], src: ClipConfig,
                     dst: ClipConfig) -> dict[str, Tensor]:
    """Resize the visual positional embedding from src's grid to dst's; cut the text one to dst's length."""
    out = dict(state_dict)
    if "visual.positional_embedding" in out and src.image.grid != dst.image.grid:
        logger.info("resizing the visual positional embedding from grid %s to %s", src.image.grid,
                    dst.image.grid)
        out["visual.positional_embedding"] = resize_pos_embed(out["visual.positional_embedding"],
                                                              src.image.grid, dst.image.grid)
    if "positional_embedding" in out:
        out["positional_embedding"] = out["positional_embedding"][:dst.text.context_length]
    return out


def load_strict(model: nn.Module, state_dict: Mapping[str, Tensor], where: Path | str,
                assign: bool = False) -> None:
    """Load with every key and shape checked; a mismatch raises `CheckpointError` naming keys.

    Tensors are cast to the model's dtypes (fp16 OpenAI weights -> fp32). `assign=True` puts
    the (cast) tensors in place of the module's, as needed for a model built on the meta device.
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    problems = [f"{len(keys)} {kind} key(s): {_first_keys(keys)}"
                for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if problems:
        raise CheckpointError(f"{where} does not match the model: {'; '.join(problems)}")
    wrong = [f"{key} {tuple(state_dict[key].shape)} != {tuple(value.shape)}"
             for key, value in expected.items() if state_dict[key].shape != value.shape]
    if wrong:
        raise CheckpointError(f"{where}: {len(wrong)} shape mismatch(es) (file != model): "
                              f"{_first_keys(wrong)}")
    cast = {key: value.to(expected[key].dtype) for key, value in state_dict.items()}
    model.load_state_dict(cast, strict=True, assign=assign)


def infer_openai_config(state_dict: Mapping[str, Tensor], where: Path | str,
                        head_dim: int = OPENAI_HEAD_DIM) -> ClipConfig:
    """Architecture of an OpenAI-layout ViT CLIP from its keys and shapes.

    Heads are width // head_dim, as in OpenAI's models; the image grid is square (from the
    length of the visual positional embedding); the activation is QuickGELU.
    """
    if "visual.layer1.0.conv1.weight" in state_dict:
        raise CheckpointError(f"{where} is a ResNet CLIP; only ViT CLIP models are supported")
    needed = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight",
              "positional_embedding", "text_projection", "transformer.resblocks.0.mlp.c_fc.weight",
              "visual.transformer.resblocks.0.mlp.c_fc.weight")
    absent = [key for key in needed if key not in state_dict]
    if absent:
        raise CheckpointError(f"{where} is not a ViT CLIP checkpoint: {len(absent)} missing key(s): "
                              f"{_first_keys(absent)}")
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
                width=width, layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
                heads=max(1, width // head_dim), patch_size=patch, image_size=(side * patch, side * patch),
                mlp_ratio=state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width),
            text=TextConfig(
                width=text_width, layers=_count_blocks(state_dict, "transformer.resblocks."),
                heads=max(1, text_width // head_dim), vocab_size=state_dict["token_embedding.weight"].shape[0],
                context_length=state_dict["positional_embedding"].shape[0],
                mlp_ratio=state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width))
    except ConfigError as err:
        raise CheckpointError(f"{where}: inferred architecture is invalid: {err}") from err


def _count_blocks(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def _read_file(path: Path) -> tuple[Any, str]:
    """Deserialise a file without running any of its code: (object, source name)."""
    if path.suffix == ".safetensors":
        try:
            return load_file(path, device="cpu"), "openai"
        except Exception as err:  # safetensors raises several types on corrupt files
            raise CheckpointError(f"cannot read {path}: {err}") from err
    if _is_torchscript(path):
        return read_torchscript_weights(path), "openai-jit"
    return load_weights_only(path), "openai"


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a `code/` folder and `constants.pkl`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _unwrap(raw: Any, path: Path) -> dict[str, Tensor]:
    """The state dict inside `raw`: under "state_dict" if present, "module." prefixes removed."""
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a state dict")
    state = dict(raw)
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    bad = [key for key, value in state.items() if not isinstance(value, Tensor) and key not in OPENAI_META_KEYS]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} entry(ies) are not tensors: {_first_keys(bad)}")
    return state


def _pop_openai_meta(state_dict: dict[str, Any], path: Path) -> None:
    """Drop OpenAI's `input_resolution`/`context_length`/`vocab_size` entries (shapes tell the same)."""
    for key in OPENAI_META_KEYS:
        if key in state_dict:
            logger.debug("%s: %s = %s (ignored; taken from the weights' shapes)", path, key,
                         int(state_dict.pop(key)))


def _from_hf(hf_state: Mapping[str, Tensor], hf_config: Mapping[str, Any], where: Path) -> ClipCheckpoint:
    state_dict = hf_to_openai(hf_state)
    settings = hf_tower_settings(hf_config, where)
    inferred = infer_openai_config(state_dict, where)
    if size := restore_trained_size(state_dict, hf_config, inferred.image, where):  # a cpcl export, non-square
        settings["image"]["image_size"] = size
    try:
        config = replace(inferred, image=replace(inferred.image, **settings["image"]),
                         text=replace(inferred.text, **settings["text"]))
    except ConfigError as err:
        raise CheckpointError(f"{where}/config.json does not fit its weights: {err}") from err
    return ClipCheckpoint(state_dict, config, "hf", where)


def _from_cpcl(raw: Mapping[str, Any], path: Path) -> ClipCheckpoint:
    version = raw.get("version")
    if not isinstance(version, int) or not 1 <= version <= CPCL_VERSION:
        raise CheckpointError(f"{path}: cpcl checkpoint version {version!r} unsupported; "
                              f"this cpcl reads versions 1..{CPCL_VERSION}")
    try:
        config = ClipConfig.from_dict(raw["config"])
    except (ConfigError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid model config: {err}") from err
    state_dict = _unwrap(raw.get("state_dict"), path)
    extra = dict(raw.get("extra") or {})
    recorded_preprocessing = raw.get("preprocessing") if version >= 3 else None
    if version >= 2:
        recorded = raw.get("digest")
        if not isinstance(recorded, str) or recorded != payload_digest(raw["config"], state_dict, extra,
                                                                       recorded_preprocessing):
            raise CheckpointError(f"{path} is damaged: its contents do not match the digest recorded when it was "
                                  f"saved (a flipped or truncated byte); restore the file or use another one")
    else:
        logger.warning("%s: a version-1 cpcl checkpoint, saved without a digest; damage cannot be detected", path)
    if version < 3:
        return ClipCheckpoint(state_dict, config, "cpcl", path, extra)
    preprocessing = Preprocessing.from_dict(recorded_preprocessing, str(path), config.image.image_size)
    return ClipCheckpoint(state_dict, config, "cpcl", path, extra, preprocessing)


def payload_digest(config: Mapping[str, Any], state_dict: Mapping[str, Tensor], extra: Mapping[str, Any],
                   preprocessing: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of a cpcl checkpoint's config, and of every tensor (name, dtype, shape, bytes) in
    its state dict and its `extra`, in key order, then of its preprocessing (version 3; None: version 2)."""
    sha = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())

    def visit(obj: Any, where: str) -> None:
        if isinstance(obj, Tensor):
            flat = obj.detach().cpu().contiguous().reshape(-1)
            sha.update(f"{where}|{flat.dtype}|{tuple(obj.shape)}|".encode())
            sha.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        elif isinstance(obj, Mapping):
            for key in sorted(obj, key=str):
                visit(obj[key], f"{where}/{key}")
        elif isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                visit(item, f"{where}/{i}")
        else:
            sha.update(f"{where}={obj!r};".encode())

    visit(dict(state_dict), "state_dict")
    visit(dict(extra), "extra")
    if preprocessing is not None:
        visit(preprocessing, "preprocessing")
    return sha.hexdigest()


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError unless `obj` is built from types `torch.load(weights_only=True)` accepts."""
    if obj is None or isinstance(obj, (bool, int, float, str, Tensor)):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _check_plain(item, f"{where}[{i}]")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} must be str or int")
            _check_plain(value, f"{where}[{key!r}]")
    else:
        raise TypeError(f"{where} is a {type(obj).__name__}; checkpoints hold plain types only")


def _first_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_NAMED_KEYS])
    return shown + (f", ... ({len(keys) - MAX_NAMED_KEYS} more)" if len(keys) > MAX_NAMED_KEYS else "")
