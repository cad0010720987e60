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
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from cpcl.model.architecture import (OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, ArchitectureHints, adapt_state_dict,
                                     infer_openai_config, open_clip_architecture)
from cpcl.model.clip import CLIP, ClipConfig
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
MAX_NAMED_KEYS = 5  # mismatched keys named in an error message
DOWNLOAD_HINT = ("give a checkpoint file or folder, a shipped start (synthpedes-small) or weights by name, "
                 "downloaded and checked on first use: openai:ViT-B-16 (OpenAI's ViT-B-16.pt) or "
                 "hf:openai/clip-vit-base-patch16")


@dataclass
class ClipCheckpoint:
    """Weights in OpenAI layout with the architecture they were trained at."""

    state_dict: dict[str, Tensor]  # OpenAI key names, tensors on CPU in the file's dtype
    config: ClipConfig  # architecture at the checkpoint's own image size and context length
    source: str  # "openai-jit" | "openai" | "open_clip" | "hf" | "cpcl" | "shipped"
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


def read_checkpoint(path: str | Path, hints: ArchitectureHints = ArchitectureHints()) -> ClipCheckpoint:
    """Read any supported checkpoint without building a model.

    Files: a TorchScript archive (OpenAI's `ViT-B-16.pt`, its weights read as data by
    `cpcl.model.torchscript`, none of its code run), a
    `torch.save` state dict (possibly under "state_dict", possibly with "module." prefixes,
    OpenAI or HF key names), a `.safetensors` file, or a cpcl checkpoint (`save_clip`).
    Directories: a Hugging Face `save_pretrained` CLIP (config.json + weights), or an open_clip one
    (open_clip_config.json + open_clip_model.safetensors or open_clip_pytorch_model.bin).
    Names: a start shipped with cpcl (`cpcl.model.shipped`, e.g. "synthpedes-small"), or weights to download
    (`cpcl.model.hub`: openai:NAME, hf:ORG/NAME).
    The architecture comes from the file where it records it, else from `open_clip_config.json` beside it, else
    from `hints` and OpenAI's convention (`cpcl.model.architecture`); `hints` that contradict a recorded one are
    refused.
    """
    path = resolve_checkpoint(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}; {DOWNLOAD_HINT}")
    checkpoint = _read_any(path, hints)
    hints.check(checkpoint.config, checkpoint.path)
    return checkpoint


def _read_any(path: Path, hints: ArchitectureHints) -> ClipCheckpoint:
    if is_shipped(path):
        state_dict, config, preprocessing = unpack(path)
        return ClipCheckpoint(state_dict, config, "shipped", path, preprocessing=preprocessing)
    if path.is_dir() and (path / OPEN_CLIP_CONFIG).is_file():
        weights = next((path / name for name in OPEN_CLIP_WEIGHTS if (path / name).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path} has an {OPEN_CLIP_CONFIG} but no {' or '.join(OPEN_CLIP_WEIGHTS)}")
        return _from_open_clip(_unwrap(_read_file(weights)[0], weights), weights)
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
    if (path.parent / OPEN_CLIP_CONFIG).is_file():
        return _from_open_clip(state_dict, path)
    config = infer_openai_config(state_dict, path, hints, convention=source == "openai-jit")
    return ClipCheckpoint(state_dict, config, source, path)


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
              context_length: int | None = None, device: str | torch.device = "cpu",
              hints: ArchitectureHints = ArchitectureHints()) -> tuple[CLIP, ClipConfig]:
    """Read any supported checkpoint (see `read_checkpoint`) and build the model (see `build_clip`)."""
    return build_clip(read_checkpoint(path, hints), image_size, context_length, device)


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


def _from_open_clip(state_dict: dict[str, Tensor], weights: Path) -> ClipCheckpoint:
    """Weights in OpenAI's layout with open_clip's config beside them."""
    config, preprocessing = open_clip_architecture(state_dict, weights.parent / OPEN_CLIP_CONFIG)
    return ClipCheckpoint(state_dict, config, "open_clip", weights, preprocessing=preprocessing)


def _from_hf(hf_state: Mapping[str, Tensor], hf_config: Mapping[str, Any], where: Path) -> ClipCheckpoint:
    state_dict = hf_to_openai(hf_state)
    settings = hf_tower_settings(hf_config, where)
    inferred = infer_openai_config(state_dict, where, ArchitectureHints(), convention=True)  # config.json decides
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
