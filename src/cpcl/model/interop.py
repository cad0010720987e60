"""The tokenizer and the image preprocessing as other tools read them, written beside an export.

A Hugging Face export gets transformers' own files (`CLIPTokenizer` and `CLIPImageProcessor` built from the shipped
BPE and the checkpoint's preprocessing, saved by `CLIPProcessor.save_pretrained`: tokenizer.json,
tokenizer_config.json, processor_config.json, and preprocessor_config.json for transformers 4), so `from_pretrained`
on the folder tokenizes and preprocesses as cpcl does. An ONNX export gets `tokenizer.json` (the Hugging Face
tokenizers format, read by its Python, Rust and JavaScript libraries; padding and truncation to the model's context
built in, ids as `cpcl tokenize` gives them) and `preprocessing.json` (what to do to an image and a text, in words
any language can follow).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from cpcl.model.inference import LoadedModel
from cpcl.model.tokenizer import EOT_TEXT
from cpcl.utils.optional import require

TOKENIZER_FILE = "tokenizer.json"  # the tokenizers-format file, in both exports
PREPROCESSING_FILE = "preprocessing.json"  # the ONNX export's description of its inputs
PIL_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}  # PIL's resample codes, as transformers saves
PAD_ID = 0  # cpcl pads token rows with zeros (any id at or below EOT's gives the same features)


def hf_tokenizer(loaded: LoadedModel) -> Any:
    """transformers' `CLIPTokenizer` with the model's vocabulary and merges, its context length at most."""
    transformers = require("transformers", "transformers", "writing the tokenizer files of an export", "export")
    vocab, merges = loaded.tokenizer.tables()
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=loaded.context_length)


def write_hf_preprocessing(directory: Path, loaded: LoadedModel) -> list[Path]:
    """The tokenizer and image-processor files of a Hugging Face CLIP folder for `loaded` (its tokenizer at its
    context length, its preprocessing); returns the files written."""
    transformers = require("transformers", "transformers", "writing the processor files of an export", "export")
    preprocessing = loaded.preprocessing
    height, width = preprocessing.image_size
    size = {"height": height, "width": width}
    logging.getLogger("transformers").setLevel(logging.ERROR)  # its note that torchvision is not installed
    images = transformers.CLIPImageProcessor(size=size, crop_size=size, do_center_crop=False,
                                             resample=PIL_FILTERS[preprocessing.resize],
                                             image_mean=list(preprocessing.mean), image_std=list(preprocessing.std))
    processor = transformers.CLIPProcessor(image_processor=images, tokenizer=hf_tokenizer(loaded))
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as staging:  # to know exactly which files transformers wrote
        processor.save_pretrained(staging)
        images.save_pretrained(staging)  # preprocessor_config.json, which transformers 4 reads
        return [path.replace(directory / path.name) for path in sorted(Path(staging).iterdir())]


def write_onnx_preprocessing(directory: Path, loaded: LoadedModel, inputs: dict[str, str], output: str) -> list[Path]:
    """tokenizer.json (padded and truncated to the model's context length) and preprocessing.json (its
    preprocessing) for the ONNX towers of `loaded`, whose graph inputs are `inputs` ({"image": name, "text": name})
    and output `output`."""
    cpcl_tokenizer, context_length, preprocessing = loaded.tokenizer, loaded.context_length, loaded.preprocessing
    tokenizer = hf_tokenizer(loaded).backend_tokenizer
    tokenizer.enable_truncation(max_length=context_length)
    tokenizer.enable_padding(length=context_length, pad_id=PAD_ID, pad_token=cpcl_tokenizer.decode([PAD_ID]).strip())
    tokenizer.save(str(directory / TOKENIZER_FILE))
    description = {
        "image": {"input": inputs["image"], "dtype": "float32", "layout": "NCHW", "channels": "RGB",
                  "size": list(preprocessing.image_size), "resize": preprocessing.resize,
                  "steps": "resize the RGB image to size (H, W) with the resize filter (no crop), scale to [0, 1] "
                           "(divide by 255), subtract mean and divide by std per channel",
                  "scale": 1 / 255, "mean": list(preprocessing.mean), "std": list(preprocessing.std)},
        "text": {"input": inputs["text"], "dtype": "int64", "tokenizer": TOKENIZER_FILE,
                 "context_length": context_length, "start_id": cpcl_tokenizer.sot_token_id,
                 "end_id": cpcl_tokenizer.eot_token_id,
                 "end_token": EOT_TEXT, "pad_id": PAD_ID,
                 "steps": "tokenizer.json gives the ids (start, text, end, padding; a longer text cut with the end "
                          "id last); feed them as they are"},
        "output": {"name": output, "dtype": "float32", "dim": loaded.dim, "l2_normalised": True,
                   "similarity": "dot product of a text's and an image's embeddings (their cosine)"},
    }
    (directory / PREPROCESSING_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return [directory / TOKENIZER_FILE, directory / PREPROCESSING_FILE]
