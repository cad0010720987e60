"""Pretrained starts shipped inside the package, taken by name wherever a checkpoint is.

`model.init: synthpedes-small` in a config, or `--checkpoint synthpedes-small` on the command
line, reads `cpcl/weights/synthpedes-small.safetensors` (a path that exists always wins over a
name; `openai:NAME` and `hf:ORG/NAME` are downloaded, `cpcl.model.hub`). Each file has a model
card beside it (`NAME.md`: data, command, seed, pairs, epochs, loss curve, val/test metrics, sha256).

The format is compact: every tensor in float16, except the token embedding, which stores only
the rows pretraining changed (`token_embedding.weight@rows` int64 [n] and `@values` fp16
[n, W]). The others still hold the random initialisation and are regenerated from the init
recipe in the metadata (torch seed, preset, image size, context length: `CLIP(config)` after
`torch.manual_seed(seed)`, as `cpcl pretrain` built it). The metadata also records the
preprocessing the start was trained with (version 2; a version-1 file is read with the defaults
and a warning). `state_sha256` in the metadata is the digest of the full float16 state dict and
of that preprocessing, checked on every load, so the regenerated table is bit-identical to the
packed one and the preprocessing is the packed one, or the file is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from cpcl.model.clip import CLIP, ClipConfig, clip_preset
from cpcl.model.hub import fetch, is_named
from cpcl.utils.errors import CheckpointError
from cpcl.utils.preprocessing import Preprocessing

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"  # src/cpcl/weights
SHIPPED_FORMAT = "cpcl-shipped"  # value of the metadata field "format"
SHIPPED_VERSION = "2"  # metadata "version" written (2: with "preprocessing"; 1 is read too)
SHIPPED_NAMES = ("synthpedes-small",)  # names a config or --checkpoint may give
SPARSE_KEY = "token_embedding.weight"  # the tensor stored as changed rows only
ROWS, VALUES = f"{SPARSE_KEY}@rows", f"{SPARSE_KEY}@values"


def shipped_file(name: str) -> Path:
    return SHIPPED_DIR / f"{name}.safetensors"


def resolve_checkpoint(value: str | Path) -> Path:
    """The file a checkpoint argument names: an existing path as given, else a shipped name's file, else the
    download of `openai:NAME` / `hf:ORG/NAME` (`cpcl.model.hub`, fetched and checked on first use)."""
    path = Path(value).expanduser()
    if path.exists():
        return path
    if str(value) in SHIPPED_NAMES:
        return shipped_file(str(value))
    return fetch(str(value)) if is_named(value) else path


def is_shipped(path: Path) -> bool:
    """Whether `path` is a file in the shipped format (by its safetensors metadata)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == SHIPPED_FORMAT
    except Exception:  # not a readable safetensors file: the generic reader reports it
        return False


def state_sha256(state_dict: dict[str, Tensor], preprocessing: str | None = None) -> str:
    """SHA-256 over the sorted keys, dtypes, shapes and bytes of a state dict, then the preprocessing's
    JSON as the metadata holds it (version 2; None: version 1)."""
    sha = hashlib.sha256()
    for key in sorted(state_dict):
        flat = state_dict[key].detach().cpu().contiguous().reshape(-1)
        sha.update(f"{key}|{flat.dtype}|{tuple(state_dict[key].shape)}|".encode())
        sha.update(flat.view(torch.uint8).numpy().tobytes())
    if preprocessing is not None:
        sha.update(f"preprocessing|{preprocessing}".encode())
    return sha.hexdigest()


def initial_token_embedding(init: dict) -> Tensor:
    """The token embedding `cpcl pretrain` started from: [vocab, W] float32."""
    config = clip_preset(init["preset"], tuple(init["image_size"]), init["context_length"])
    torch.manual_seed(init["seed"])
    return CLIP(config).token_embedding.weight.detach()


def pack(state_dict: dict[str, Tensor], config: ClipConfig, preprocessing: Preprocessing, init: dict,
         path: Path) -> dict[str, str]:
    """Write the shipped file for `state_dict` (trained with `preprocessing` from `init`: seed, preset,
    image_size, context_length); returns its metadata. Refuses when the unpacked file would differ."""
    if preprocessing.image_size != config.image.image_size:
        raise CheckpointError(f"preprocessing for {preprocessing.image_size} images does not fit a model at "
                              f"{config.image.image_size}")
    half = {key: value.detach().cpu().to(torch.float16) for key, value in state_dict.items()}
    start = initial_token_embedding(init)
    if start.shape != state_dict[SPARSE_KEY].shape:
        raise CheckpointError(f"the init recipe {init} does not give the model's token embedding shape")
    changed = (state_dict[SPARSE_KEY].detach().cpu() != start).any(dim=1).nonzero().flatten()
    tensors = {key: value for key, value in half.items() if key != SPARSE_KEY}
    tensors[ROWS], tensors[VALUES] = changed.to(torch.int64), half[SPARSE_KEY][changed].clone()
    recorded = json.dumps(preprocessing.to_dict())
    metadata = {"format": SHIPPED_FORMAT, "version": SHIPPED_VERSION, "config": json.dumps(asdict(config)),
                "preprocessing": recorded, "token_embedding_init": json.dumps(init),
                "state_sha256": state_sha256(half, recorded)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    unpacked, _, _ = unpack(path)  # proves the round trip before anyone ships it
    if state_sha256(unpacked, recorded) != metadata["state_sha256"]:
        path.unlink()
        raise CheckpointError(f"{path}: unpacking does not reproduce the packed weights; not written")
    return metadata


def unpack(path: Path) -> tuple[dict[str, Tensor], ClipConfig, Preprocessing | None]:
    """The full float16 state dict (OpenAI layout), the architecture and the preprocessing (None: a
    version-1 file, which records none) of a shipped file."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        config = ClipConfig.from_dict(json.loads(metadata["config"]))
        init = json.loads(metadata["token_embedding_init"])
        recorded = metadata["preprocessing"] if metadata.get("version", "1") != "1" else None
        preprocessing = None if recorded is None else json.loads(recorded)
    except Exception as err:  # safetensors, JSON and config errors of a damaged file
        raise CheckpointError(f"cannot read shipped weights {path}: {type(err).__name__}: {err}") from err
    rows, values = tensors.pop(ROWS), tensors.pop(VALUES)
    table = initial_token_embedding(init).to(torch.float16)
    if rows.numel() and (rows.min() < 0 or rows.max() >= table.shape[0] or values.shape != (len(rows), table.shape[1])):
        raise CheckpointError(f"{path}: the stored token-embedding rows do not fit a {tuple(table.shape)} table")
    table[rows] = values
    tensors[SPARSE_KEY] = table
    if state_sha256(tensors, recorded) != metadata.get("state_sha256"):
        raise CheckpointError(f"{path} is damaged: its weights or preprocessing do not match the digest recorded "
                              f"when it was packed")
    if preprocessing is None:
        return tensors, config, None
    return tensors, config, Preprocessing.from_dict(preprocessing, str(path), config.image.image_size)
