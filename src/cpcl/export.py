"""`cpcl export`: a checkpoint as ONNX towers (`--onnx DIR`) and/or a Hugging Face `CLIPModel` folder (`--hf DIR`),
each with what other tools need to use it: the tokenizer and image preprocessing (`cpcl.model.interop`) and a model
card (`README.md`, `cpcl.model.card`). Every file written is readable by others (mode 0644).

The checkpoint is any one `cpcl.model.checkpoints` reads, names included; the model is exported at its own image
size and context length, in float32 (ONNX: or float16 inside, `fp16`), ONNX at operator set `opset`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from cpcl.model.card import model_card
from cpcl.model.checkpoints import build_clip, read_checkpoint
from cpcl.model.clip import ClipConfig
from cpcl.model.hf import HF_CONFIG, WEIGHT_FILES, write_hf_directory
from cpcl.model.inference import LoadedModel
from cpcl.model.interop import PREPROCESSING_FILE, TOKENIZER_FILE, write_hf_preprocessing, write_onnx_preprocessing
from cpcl.model.onnx_export import DEFAULT_OPSET, INPUT_NAMES, ONNX_FILES, OUTPUT_NAME, export_onnx
from cpcl.utils.errors import ConfigError
from cpcl.utils.files import writing

log = logging.getLogger(__name__)

CARD = "README.md"  # the model card in each export folder
FILE_MODE = 0o644  # exported files: readable by everyone, whatever wrote them (safetensors writes 0600)
EXPORT_FILES = {  # the files of each export that mark an earlier one (HF writes transformers' others too)
    "hf": (HF_CONFIG, WEIGHT_FILES[0], TOKENIZER_FILE, CARD),
    "onnx": (*ONNX_FILES.values(), TOKENIZER_FILE, PREPROCESSING_FILE, CARD)}


def export_checkpoint(checkpoint: str | Path, onnx_dir: Path | None = None, hf_dir: Path | None = None,
                      opset: int | None = None, fp16: bool = False, force: bool = False) -> list[Path]:
    """Write the requested exports of `checkpoint` with their cards; returns every file written. opset None:
    `DEFAULT_OPSET`. A file of an export already in its folder is overwritten only with `force`."""
    targets = [(Path(d), kind) for d, kind in ((hf_dir, "hf"), (onnx_dir, "onnx")) if d is not None]
    if not targets:
        raise ConfigError("nothing to export: give --onnx DIR and/or --hf DIR")
    for directory, kind in targets:
        check_target(directory, f"--{kind}", EXPORT_FILES[kind], force)
    source = read_checkpoint(checkpoint)
    model, config = build_clip(source)
    loaded = LoadedModel(model.eval(), torch.device("cpu"), None, source.preprocessing_at(config.image.image_size))
    opset = opset or DEFAULT_OPSET
    written: list[Path] = []
    for directory, kind in targets:
        with writing(directory, f"free space or make {directory} writable, then export again with --force"):
            if kind == "hf":
                written += write_hf_directory(model.state_dict(), config, directory)
                written += write_hf_preprocessing(directory, loaded)
                written.append(write_card(directory, model_card(source, config, "hf")))
            else:
                written += export_onnx(model, directory, opset, fp16)
                written += write_onnx_preprocessing(directory, loaded, INPUT_NAMES, OUTPUT_NAME)
                written.append(write_card(directory, model_card(source, config, "onnx",
                                                                _onnx_usage(config, opset, fp16))))
    for path in written:
        path.chmod(FILE_MODE)
    return written


def check_target(directory: Path, flag: str, names: tuple[str, ...], force: bool) -> None:
    """ConfigError when `directory` is a file, or (unless `force`) already holds one of the files `names`."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{flag} {directory} is a file; give a folder to write the export into")
    present = [name for name in names if (directory / name).exists()]
    if present and not force:
        raise ConfigError(f"{flag} {directory} already holds {', '.join(present)}; give --force to overwrite, or "
                          f"another folder")


def write_card(directory: Path, text: str) -> Path:
    (directory / CARD).write_text(text, encoding="utf-8")
    return directory / CARD


def _onnx_usage(config: ClipConfig, opset: int, fp16: bool) -> list[str]:
    inside = "float16 weights and arithmetic inside" if fp16 else "float32 throughout"
    return [f"- **Files**: `{ONNX_FILES['image']}` (`{INPUT_NAMES['image']}` float32 [N, 3, H, W]) and "
            f"`{ONNX_FILES['text']}` (`{INPUT_NAMES['text']}` int64 [N, {config.text.context_length}]), each giving "
            f"`{OUTPUT_NAME}` float32 [N, {config.embed_dim}], L2-normalised: the cosine similarity of a text and an "
            f"image is the dot product. N is free. ONNX operator set {opset}, {inside}.",
            "- **Inputs outside Python**: `tokenizer.json` (Hugging Face tokenizers format, padding and truncation "
            "built in) gives the token ids; `preprocessing.json` says how to prepare an image (size, filter, mean, "
            "std, layout)."]
