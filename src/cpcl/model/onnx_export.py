"""ONNX export of both towers, each a graph from input to L2-normalised embedding.

`image_encoder.onnx`: `pixel_values` float32 [N, 3, H, W] (normalised pixels) -> `embeddings` [N, D].
`text_encoder.onnx`: `input_ids` int64 [N, L] (CLIP BPE at the model's full context L) -> `embeddings`
[N, D], pooled at the EOT position by a gather. N is dynamic; H, W and L are the model's. The text
tower runs untrimmed (`CLIP.encode_text(trim=False)`): the eager trim reads a length from the data,
which a graph cannot hold. Exported with torch's dynamo exporter (the onnx and onnxscript packages).
"""

from __future__ import annotations

import logging
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


class ImageTower(nn.Module):
    """pixel_values [N, 3, H, W] -> [N, D], L2-normalised."""

    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return F.normalize(self.model.encode_image(pixel_values), dim=-1)


class TextTower(nn.Module):
    """input_ids [N, L] -> [N, D], L2-normalised, every position run (no trim)."""

    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        return F.normalize(self.model.encode_text(input_ids, trim=False), dim=-1)


def export_onnx(model: CLIP, directory: Path) -> list[Path]:
    """Write both towers of `model` (cast to float32 and put in eval mode, in place) to `directory`; returns the
    files written."""
    config = model.config
    model = model.float().eval()
    towers = {"image": (ImageTower(model).eval(), torch.zeros(EXAMPLE_BATCH, 3, *config.image.image_size)),
              "text": (TextTower(model).eval(),
                       torch.zeros(EXAMPLE_BATCH, config.text.context_length, dtype=torch.long))}
    directory.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch")
    written = []
    for name, (tower, example) in towers.items():
        path = directory / ONNX_FILES[name]
        weights = sum(p.numel() * p.element_size() for p in tower.parameters())
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # its notes on optional torchvision ops
        try:
            with torch.no_grad():
                torch.onnx.export(tower, (example,), str(path), dynamo=True, verbose=False,
                                  input_names=[INPUT_NAMES[name]], output_names=[OUTPUT_NAME],
                                  dynamic_shapes={INPUT_NAMES[name]: {0: batch}},
                                  external_data=weights > INLINE_LIMIT)
        except ImportError as err:
            raise CpclError(f"ONNX export needs the onnx and onnxscript packages ({err}); install them with "
                            f"pip install 'cpcl[export]'") from None
        written.append(path)
        if (data := path.with_name(path.name + ".data")).is_file():
            written.append(data)
    return written
