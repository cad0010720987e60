"""`cpcl export`: a checkpoint as ONNX towers (`--onnx DIR`) and/or a Hugging Face `CLIPModel` folder (`--hf DIR`),
each with what other tools need to use it: the tokenizer and image preprocessing (`cpcl.data.interop`) and a model
card (`README.md`, `cpcl.model.card`). Every file written is readable by others (mode 0644).

The checkpoint is any one `cpcl.model.checkpoints` reads, names included; the model is exported at its own image
size and context length, in float32 (ONNX: or float16 inside, `fp16`), ONNX at operator set `opset`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cpcl.data.interop import write_hf_preprocessing, write_onnx_preprocessing
from cpcl.model.card import model_card
from cpcl.model.checkpoints import build_clip, read_checkpoint
from cpcl.model.clip import ClipConfig
from cpcl.model.hf import write_hf_directory
from cpcl.model.onnx_export import DEFAULT_OPSET, INPUT_NAMES, ONNX_FILES, OUTPUT_NAME, export_onnx
from cpcl.utils.errors import ConfigError

log = logging.getLogger(__name__)

CARD = "README.md"  # the model card in each export folder
FILE_MODE = 0o644  # exported files: readable by everyone, whatever wrote them (safetensors writes 0600)


def export_checkpoint(checkpoint: str | Path, onnx_dir: Path | None = None, hf_dir: Path | None = None,
                      opset: int | None = None, fp16: bool = False) -> list[Path]:
    """Write the requested exports of `checkpoint` with their cards; returns every file written. opset None:
    `DEFAULT_OPSET`."""
    if onnx_dir is None and hf_dir is None:
        raise ConfigError("nothing to export: give --onnx DIR and/or --hf DIR")
    source = read_checkpoint(checkpoint)
    model, config = build_clip(source)
    preprocessing = source.preprocessing_at(config.image.image_size)
    context, opset = config.text.context_length, opset or DEFAULT_OPSET
    written: list[Path] = []
    if hf_dir is not None:
        written += write_hf_directory(model.state_dict(), config, Path(hf_dir))
        written += write_hf_preprocessing(Path(hf_dir), context, preprocessing)
        written.append(write_card(Path(hf_dir), model_card(source, config, "hf")))
    if onnx_dir is not None:
        written += export_onnx(model, Path(onnx_dir), opset, fp16)
        written += write_onnx_preprocessing(Path(onnx_dir), context, config.embed_dim, preprocessing, INPUT_NAMES,
                                            OUTPUT_NAME)
        written.append(write_card(Path(onnx_dir), model_card(source, config, "onnx", _onnx_usage(config, opset, fp16))))
    for path in written:
        path.chmod(FILE_MODE)
    return written


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
