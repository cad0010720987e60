"""`cpcl export`: a checkpoint as ONNX towers (`--onnx DIR`) and/or a Hugging Face `CLIPModel` directory
(`--hf DIR`), each with a model card (`README.md`) saying what went in and how to use what came out.

The checkpoint is any one `cpcl.model.checkpoints` reads, shipped names included; the model is exported at
its own image size and context length, in float32. The card carries the training config and the metrics
when the checkpoint sits in its run directory (config.yaml, results.json beside it), or the shipped card.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cpcl.utils.files import sha256_of
from cpcl.model.checkpoints import ClipCheckpoint, build_clip, read_checkpoint
from cpcl.model.clip import ClipConfig
from cpcl.model.hf import SIZE_KEY, write_hf_directory
from cpcl.model.onnx_export import INPUT_NAMES, ONNX_FILES, OUTPUT_NAME, export_onnx
from cpcl.utils.errors import ConfigError

log = logging.getLogger(__name__)

CARD = "README.md"  # the model card in each export directory
METRIC_NAMES = ("R1", "R5", "R10", "mAP", "mINP")  # results.json metrics shown in the card


def export_checkpoint(checkpoint: str | Path, onnx_dir: Path | None = None, hf_dir: Path | None = None) -> list[Path]:
    """Write the requested exports of `checkpoint` with their cards; returns every file written."""
    if onnx_dir is None and hf_dir is None:
        raise ConfigError("nothing to export: give --onnx DIR and/or --hf DIR")
    source = read_checkpoint(checkpoint)
    model, config = build_clip(source)
    written: list[Path] = []
    if hf_dir is not None:
        written += write_hf_directory(model.state_dict(), config, Path(hf_dir))
        written.append(write_card(Path(hf_dir), model_card(source, config, "hf")))
    if onnx_dir is not None:
        written += export_onnx(model, Path(onnx_dir))
        written.append(write_card(Path(onnx_dir), model_card(source, config, "onnx")))
    return written


def write_card(directory: Path, text: str) -> Path:
    (directory / CARD).write_text(text, encoding="utf-8")
    return directory / CARD


def model_card(source: ClipCheckpoint, config: ClipConfig, kind: str) -> str:
    """The card of an export (`kind`: onnx | hf) of `source`."""
    image, text = config.image, config.text
    run_dir = source.path.parent if (source.path.parent / "config.yaml").is_file() else None
    preprocessing = source.preprocessing_at(image.image_size)
    digest = f", sha256 `{sha256_of(source.path)}`" if source.path.is_file() else ""
    lines = [
        f"# {source.path.name}: a cpcl CLIP exported as {'ONNX' if kind == 'onnx' else 'a Hugging Face CLIPModel'}",
        "",
        f"- **Source**: `{source.path}` ({source.source} checkpoint){digest}.",
        f"- **Architecture**: {config.embed_dim}-d joint embedding; image tower ViT {image.width} wide, {image.layers} "
        f"layers, {image.heads} heads, {image.patch_size}-px patches at {image.image_size[0]}x{image.image_size[1]} "
        f"(H x W); text tower {text.width} wide, {text.layers} layers, {text.heads} heads, context "
        f"{text.context_length}.",
        f"- **Image input**: RGB, resized to {image.image_size[0]}x{image.image_size[1]} ({preprocessing.resize}), "
        f"scaled to [0, 1], normalised with mean {list(preprocessing.mean)} and std {list(preprocessing.std)}.",
        f"- **Text input**: OpenAI CLIP BPE (`cpcl tokenize`), {text.context_length} tokens: start-of-text, the text, "
        f"end-of-text (over-long text cut, its last token set to end-of-text), zero padding.",
        *_usage(config, kind), "", "## Training", "", *_training(source, run_dir), "", "## Metrics", "",
        *_metrics(run_dir), "",
    ]
    return "\n".join(lines)


def _usage(config: ClipConfig, kind: str) -> list[str]:
    if kind == "onnx":
        return [f"- **Files**: `{ONNX_FILES['image']}` (`{INPUT_NAMES['image']}` float32 [N, 3, H, W]) and "
                f"`{ONNX_FILES['text']}` (`{INPUT_NAMES['text']}` int64 [N, {config.text.context_length}]), each "
                f"giving `{OUTPUT_NAME}` float32 [N, {config.embed_dim}], L2-normalised: the cosine similarity of a "
                f"text and an image is the dot product. N is free."]
    square = config.image.grid[0] == config.image.grid[1]
    call = ("`get_image_features(pixel_values=...)`" if square else
            "`get_image_features(pixel_values=..., interpolate_pos_encoding=True)` (the model is not square: its "
            f"positional grid is stored square, and HF's bicubic resize to the {config.image.image_size[0]}x"
            f"{config.image.image_size[1]} input gives back the trained one; `{SIZE_KEY}` in config.json records "
            f"the size for cpcl)")
    return [f"- **Use**: `transformers.CLIPModel.from_pretrained(DIR)`, then {call} and "
            f"`get_text_features(input_ids=...)`; L2-normalise both. cpcl reads the directory too "
            f"(`--checkpoint DIR`)."]


def _training(source: ClipCheckpoint, run_dir: Path | None) -> list[str]:
    shipped_card = source.path.with_suffix(".md")
    if source.source == "shipped" and shipped_card.is_file():
        return [f"Shipped start; its card (`{shipped_card.name}`) follows.", "",
                shipped_card.read_text(encoding="utf-8").strip()]
    if run_dir is None:
        return ["Not recorded: the checkpoint is not in a cpcl run directory (no config.yaml beside it)."]
    return [f"The run's resolved config (`{run_dir / 'config.yaml'}`):", "", "```yaml",
            (run_dir / "config.yaml").read_text(encoding="utf-8").strip(), "```"]


def _metrics(run_dir: Path | None) -> list[str]:
    results = _json(run_dir / "results.json") if run_dir else None
    if not isinstance(results, dict) or not isinstance(results.get("test"), dict):
        return ["Not recorded (no results.json with test metrics beside the checkpoint)."]
    rows = [("test, best checkpoint", results["test"].get("best")),
            ("test, last checkpoint", results["test"].get("last")),
            ("val, best checkpoint", (results.get("val") or {}).get("best"))]
    table = [f"Text-to-image retrieval, % (selected on {results.get('selected_on', '?')}; best_epoch "
             f"{results.get('best_epoch')}, counted from 0):", "", "| split | " + " | ".join(METRIC_NAMES) + " |",
             "|---|" + "---|" * len(METRIC_NAMES)]
    table += [f"| {name} | " + " | ".join(f"{values.get(m, float('nan')):.2f}" for m in METRIC_NAMES) + " |"
              for name, values in rows if isinstance(values, dict)]
    return table


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s cannot be read for the model card: %s", path, err)
        return None
