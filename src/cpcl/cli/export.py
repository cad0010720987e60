"""`cpcl export`: share a checkpoint as ONNX towers and/or a Hugging Face CLIPModel directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a checkpoint as ONNX (both towers) and/or a Hugging Face CLIPModel directory")
    parser.add_argument("--checkpoint", required=True,
                        help="a cpcl / OpenAI / Hugging Face checkpoint path, or a shipped name (synthpedes-small)")
    parser.add_argument("--onnx", type=Path, metavar="DIR",
                        help="write image_encoder.onnx and text_encoder.onnx (dynamic batch) with a model card")
    parser.add_argument("--hf", type=Path, metavar="DIR",
                        help="write a Hugging Face CLIPModel directory (config.json, model.safetensors) with a card")
    parser.add_argument("--force", action="store_true", help="overwrite the files of an earlier export in DIR")
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from cpcl.export import export_checkpoint

    for path in export_checkpoint(args.checkpoint, args.onnx, args.hf, args.force):
        print(f"wrote {path}")
    return 0
