"""ONNX export of both towers, each a graph from input to L2-normalised embedding.

`image_encoder.onnx`: `pixel_values` float32 [N, 3, H, W] (normalised pixels) -> `embeddings` [N, D].
`text_encoder.onnx`: `input_ids` int64 [N, L] (CLIP BPE at the model's full context L) -> `embeddings`
[N, D], pooled at the EOT position by a gather. N is dynamic; H, W and L are the model's. The text
tower runs untrimmed (`CLIP.encode_text(trim=False)`): the eager trim reads a length from the data,
which a graph cannot hold. Exported with torch's dynamo exporter (the onnx and onnxscript packages) at operator
set 18 and newer, with its TorchScript exporter below; in float32, or with float16 weights and arithmetic inside.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cpcl.model.clip import CLIP
from cpcl.utils.errors import CpclError

ONNX_FILES = {"image": "image_encoder.onnx", "text": "text_encoder.onnx"}  # file of each tower
INPUT_NAMES = {"image": "pixel_values", "text": "input_ids"}  # graph input of each tower
OUTPUT_NAME = "embeddings"  # graph output of both towers: [N, D], L2-normalised
INLINE_LIMIT = 2**30  # bytes of weights kept inside the .onnx file; larger towers get a .data file beside it
EXAMPLE_BATCH = 2  # batch of the example inputs traced (the batch dimension is exported dynamic)


DEFAULT_OPSET = 18  # ONNX operator set written unless told (torch's dynamo exporter works from 18)
MIN_OPSET = 14  # the oldest the attention exports to (scaled_dot_product_attention); below 18, torch's TorchScript
# exporter writes the graph (the dynamo one cannot convert down; TensorRT 8.x reads up to 17)


class ImageTower(nn.Module):
    """pixel_values [N, 3, H, W] float32 -> [N, D] float32, L2-normalised; the model runs in its own dtype."""

    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.model = model
        self.dtype = model.visual.proj.dtype

    def forward(self, pixel_values: Tensor) -> Tensor:
        return F.normalize(self.model.encode_image(pixel_values.to(self.dtype)).float(), dim=-1)


class TextTower(nn.Module):
    """input_ids [N, L] -> [N, D] float32, L2-normalised, every position run (no trim)."""

    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        return F.normalize(self.model.encode_text(input_ids, trim=False).float(), dim=-1)


def export_onnx(model: CLIP, directory: Path, opset: int = DEFAULT_OPSET, fp16: bool = False) -> list[Path]:
    """Write both towers of `model` (cast to float32, or float16 with `fp16`, and put in eval mode, in place) to
    `directory` with ONNX operator set `opset`; returns the files written. Inputs and outputs stay float32 and
    int64 either way; with `fp16` the weights and the computation inside are float16."""
    if opset < MIN_OPSET:
        raise CpclError(f"--opset {opset} is too old for the attention; use {MIN_OPSET} or newer")
    if fp16 and opset < DEFAULT_OPSET:
        raise CpclError(f"--fp16 needs --opset {DEFAULT_OPSET} or newer (the exporter for older sets writes float16 "
                        f"LayerNormalization nodes onnxruntime refuses); for TensorRT, export float32 and build the "
                        f"engine with --fp16")
    config = model.config
    model = (model.half() if fp16 else model.float()).eval()
    towers = {"image": (ImageTower(model).eval(), torch.zeros(EXAMPLE_BATCH, 3, *config.image.image_size)),
              "text": (TextTower(model).eval(),
                       torch.zeros(EXAMPLE_BATCH, config.text.context_length, dtype=torch.long))}
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (tower, example) in towers.items():
        path = directory / ONNX_FILES[name]
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
                _export(tower, example, path, INPUT_NAMES[name], opset)
        except ImportError as err:
            raise CpclError(f"ONNX export needs the onnx and onnxscript packages ({err}); install them with "
                            f"pip install 'cpcl[export]'") from None
        written.append(path)
        if (data := path.with_name(path.name + ".data")).is_file():
            written.append(data)
    return written


def _export(tower: nn.Module, example: Tensor, path: Path, input_name: str, opset: int) -> None:
    """One tower to `path`, its batch dimension dynamic."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # its notes on optional torchvision ops
    if opset < DEFAULT_OPSET:
        torch.onnx.export(tower, (example,), str(path), dynamo=False, opset_version=opset, input_names=[input_name],
                          output_names=[OUTPUT_NAME],
                          dynamic_axes={input_name: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        return
    weights = sum(p.numel() * p.element_size() for p in tower.parameters())
    torch.onnx.export(tower, (example,), str(path), dynamo=True, verbose=False, opset_version=opset,
                      input_names=[input_name], output_names=[OUTPUT_NAME],
                      dynamic_shapes={input_name: {0: torch.export.Dim("batch")}}, external_data=weights > INLINE_LIMIT)
