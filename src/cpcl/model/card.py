"""Model cards: what a checkpoint is, where it came from, how it was trained and how to use it, in Markdown with the
Hugging Face Hub's front matter (a YAML block the Hub reads: library, pipeline, tags, base model, licence).

`cpcl export` writes one into each export folder (`README.md`); a training run writes one beside its `best.pt`
(`best.md`). Sources are named so that the card means the same on another machine: a run's file as `RUN/best.pt`,
a download by its name (`openai:ViT-B-16`), a shipped start by its name, any other file by its name alone.
The training config and the metrics come from the run directory when the checkpoint sits in one (config.yaml,
results.json beside it), or from the shipped card.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cpcl.model.checkpoints import ClipCheckpoint
from cpcl.model.clip import ClipConfig
from cpcl.model.hf import SIZE_KEY
from cpcl.model.hub import name_of
from cpcl.utils.files import sha256_of

log = logging.getLogger(__name__)

METRIC_NAMES = ("R1", "R5", "R10", "mAP", "mINP")  # results.json metrics shown in the card
LIBRARIES = {"hf": "transformers", "onnx": "onnx", "cpcl": "cpcl"}  # kind of card -> the Hub's library_name
TITLES = {"hf": "a Hugging Face CLIPModel", "onnx": "ONNX", "cpcl": "a cpcl checkpoint"}
OPENAI_BASE_MODELS = {  # OpenAI's files -> the Hub's copies of the same weights
    "ViT-B-32": "openai/clip-vit-base-patch32", "ViT-B-16": "openai/clip-vit-base-patch16",
    "ViT-L-14": "openai/clip-vit-large-patch14", "ViT-L-14-336px": "openai/clip-vit-large-patch14-336"}


def source_name(source: ClipCheckpoint) -> str:
    """How a card names the checkpoint: a weights name, a shipped name, RUN/FILE inside a run, else the file name."""
    if named := name_of(source.path):
        return named
    if source.source == "shipped":
        return source.path.stem
    run_dir = _run_dir(source)
    return f"{run_dir.name}/{source.path.name}" if run_dir else source.path.name


def front_matter(source: ClipCheckpoint, kind: str) -> dict[str, Any]:
    """The Hub's metadata of a card of `kind` (hf | onnx | cpcl)."""
    meta: dict[str, Any] = {"library_name": LIBRARIES[kind], "pipeline_tag": "zero-shot-image-classification",
                            "tags": ["clip", "text-based-person-search", "cpcl"]}
    named = name_of(source.path) or ""
    if named.startswith("hf:"):
        meta["base_model"] = named[len("hf:"):]
    elif named.startswith("openai:"):
        meta.update(base_model=OPENAI_BASE_MODELS.get(named[len("openai:"):]), license="mit")  # OpenAI CLIP's
    elif source.source == "shipped":
        meta["license"] = "mit"  # the project's own start
    return {key: value for key, value in meta.items() if value is not None}


def model_card(source: ClipCheckpoint, config: ClipConfig, kind: str, usage: Sequence[str] = ()) -> str:
    """The card of `source` as `kind` (hf | onnx | cpcl); `usage`: lines on the files, after the standard ones."""
    image, text = config.image, config.text
    run_dir = _run_dir(source)
    preprocessing = source.preprocessing_at(image.image_size)
    digest = f", sha256 `{sha256_of(source.path)}`" if source.path.is_file() else ""
    lines = [
        "---", yaml.safe_dump(front_matter(source, kind), sort_keys=False).strip(), "---", "",
        f"# {source_name(source)}: a cpcl CLIP as {TITLES[kind]}",
        "",
        f"- **Source**: `{source_name(source)}` ({source.source} checkpoint){digest}.",
        f"- **Architecture**: {config.embed_dim}-d joint embedding; image tower ViT {image.width} wide, {image.layers} "
        f"layers, {image.heads} heads, {image.act}, {image.patch_size}-px patches at {image.image_size[0]}x"
        f"{image.image_size[1]} (H x W); text tower {text.width} wide, {text.layers} layers, {text.heads} heads, "
        f"{text.act}, context {text.context_length}.",
        f"- **Image input**: RGB, resized to {image.image_size[0]}x{image.image_size[1]} ({preprocessing.resize}), "
        f"scaled to [0, 1], normalised with mean {list(preprocessing.mean)} and std {list(preprocessing.std)}.",
        f"- **Text input**: OpenAI CLIP BPE (`cpcl tokenize`), {text.context_length} tokens: start-of-text, the text, "
        f"end-of-text (over-long text cut, its last token set to end-of-text), zero padding.",
        *_usage(source, config, kind), *usage, "", "## Training", "", *_training(source, run_dir), "", "## Metrics",
        "", *_metrics(run_dir), "",
    ]
    return "\n".join(lines)


def _run_dir(source: ClipCheckpoint) -> Path | None:
    return source.path.parent if (source.path.parent / "config.yaml").is_file() else None


def _usage(source: ClipCheckpoint, config: ClipConfig, kind: str) -> list[str]:
    if kind == "cpcl":
        name = source_name(source)
        return [f"- **Use**: `cpcl.load(\"{name}\")` in Python (`.encode_images`, `.encode_texts`), or `cpcl encode "
                f"--checkpoint {name}`; `cpcl export --checkpoint {name} --hf DIR --onnx DIR` shares it."]
    if kind == "onnx":
        return []
    square = config.image.grid[0] == config.image.grid[1]
    call = ("`get_image_features(pixel_values=...)`" if square else
            "`get_image_features(pixel_values=..., interpolate_pos_encoding=True)` (the model is not square: its "
            f"positional grid is stored square, and HF's bicubic resize to the {config.image.image_size[0]}x"
            f"{config.image.image_size[1]} input gives back the trained one; `{SIZE_KEY}` in config.json records "
            f"the size for cpcl)")
    return [f"- **Use**: `transformers.CLIPModel.from_pretrained(DIR)` and `CLIPProcessor.from_pretrained(DIR)` (the "
            f"tokenizer and image processor are in the folder: `processor(text=..., images=..., padding=\"max_length\","
            f" return_tensors=\"pt\")`), then {call} and `get_text_features(input_ids=...)`; L2-normalise both. cpcl "
            f"reads the folder too (`--checkpoint DIR`)."]


def _training(source: ClipCheckpoint, run_dir: Path | None) -> list[str]:
    shipped_card = source.path.with_suffix(".md")
    if source.source == "shipped" and shipped_card.is_file():
        return [f"Shipped start; its card (`{shipped_card.name}`) follows.", "",
                shipped_card.read_text(encoding="utf-8").strip()]
    if run_dir is None:
        return ["Not recorded: the checkpoint is not in a cpcl run directory (no config.yaml beside it)."]
    return [f"The run's resolved config (`{run_dir.name}/config.yaml`):", "", "```yaml",
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
