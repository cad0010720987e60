"""`cpcl export`: share a checkpoint as ONNX towers and/or a Hugging Face CLIPModel directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a checkpoint as ONNX (both towers) and/or a Hugging Face CLIPModel directory")
    parser.add_argument("--checkpoint", required=True,
                        help="a cpcl / OpenAI / Hugging Face / open_clip checkpoint path, or a name: synthpedes-small "
                             "(shipped), openai:ViT-B-16, hf:ORG/NAME (downloaded)")
    parser.add_argument("--onnx", type=Path, metavar="DIR",
                        help="write image_encoder.onnx and text_encoder.onnx (dynamic batch) with a model card")
    parser.add_argument("--hf", type=Path, metavar="DIR",
                        help="write a Hugging Face CLIPModel directory (config.json, model.safetensors, the tokenizer "
                             "and image-processor files) with a card")
    parser.add_argument("--opset", type=int, metavar="N",
                        help="ONNX operator set (default 18; TensorRT 8.x reads up to 17, and below 18 torch's "
                             "TorchScript exporter writes the graph)")
    parser.add_argument("--fp16", action="store_true",
                        help="ONNX with float16 weights and arithmetic (inputs and outputs stay float32)")
    parser.add_argument("--force", action="store_true", help="overwrite the files of an earlier export in DIR")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from cpcl.export import export_checkpoint

    for path in export_checkpoint(args.checkpoint, args.onnx, args.hf, args.opset, args.fp16, args.force):
        print(f"wrote {path}")
    return 0
