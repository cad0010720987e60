"""`cpcl evaluate` and `cpcl encode`: use a checkpoint (OpenAI, Hugging Face or cpcl) directly."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def model_arguments(parser: argparse.ArgumentParser) -> None:
    """--checkpoint and --image-size, then `extraction_arguments`."""
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="OpenAI .pt (TorchScript or state dict), Hugging Face CLIP directory, or cpcl .pt")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="model input size (default: the checkpoint's own)")
    extraction_arguments(parser)


def extraction_arguments(parser: argparse.ArgumentParser) -> None:
    """--batch-size and --workers, then `device_arguments`."""
    parser.add_argument("--batch-size", type=int, default=256, help="feature extraction batch")
    parser.add_argument("--workers", type=int, default=2, help="image loading processes")
    device_arguments(parser)


def device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device and --precision."""
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="autocast dtype")


def rerank_arguments(parser: argparse.ArgumentParser, switch: str = "rank the gallery by k-reciprocal re-ranking"
                     ) -> None:
    """--rerank (with `switch` as its help) and the re-ranking's --rerank-k1, --rerank-k2, --rerank-lambda."""
    parser.add_argument("--rerank", action="store_true", help=switch + " (docs/method.md, Evaluation)")
    # defaults (None) are RerankConfig's, Zhong et al.'s k1=20, k2=6, lambda=0.3; the clustering module is
    # imported only when the command runs, to keep `cpcl --help` fast
    parser.add_argument("--rerank-k1", type=int, metavar="K1", help="gallery neighbours of a query and of a gallery item")
    parser.add_argument("--rerank-k2", type=int, metavar="K2", help="query expansion: the query and its k2 - 1 nearest items")
    parser.add_argument("--rerank-lambda", type=float, metavar="L", help="weight of the original distance, 0..1")


def rerank_config(args: argparse.Namespace):
    """The RerankConfig of `rerank_arguments` (checked: one line for a bad value)."""
    from cpcl.clustering.rerank import RerankConfig

    given = {"k1": args.rerank_k1, "k2": args.rerank_k2, "lambda_value": args.rerank_lambda}
    return RerankConfig(**{name: value for name, value in given.items() if value is not None})


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from cpcl.cli.data import dataset_safety_arguments
    from cpcl.data.readers import DATASETS

    evaluate = subparsers.add_parser("evaluate", help="text-to-image retrieval metrics of a checkpoint on a split")
    model_arguments(evaluate)
    evaluate.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="annotation format")
    evaluate.add_argument("--root", required=True, type=Path, help="folder holding the dataset folder")
    evaluate.add_argument("--split", default="test", choices=["val", "test", "train"], help="split to evaluate")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    rerank_arguments(evaluate)
    dataset_safety_arguments(evaluate)
    evaluate.set_defaults(func=run_evaluate)

    encode = subparsers.add_parser("encode", help="L2-normalised embeddings of images and/or texts to an .npz")
    model_arguments(encode)
    encode.add_argument("--images", nargs="*", default=[], type=Path, metavar="FILE", help="image files")
    encode.add_argument("--texts", nargs="*", default=[], metavar="TEXT", help="texts")
    encode.add_argument("--out", required=True, type=Path, help="output .npz with arrays `image` and `text`")
    encode.set_defaults(func=run_encode)


def _load(args: argparse.Namespace):
    """The checkpoint, ready for inference with the preprocessing it records."""
    from cpcl.model.inference import load_for_inference

    return load_for_inference(args.checkpoint, args.device, args.precision,
                              tuple(args.image_size) if args.image_size else None)


def run_evaluate(args: argparse.Namespace) -> int:
    from cpcl.data.check import check_images
    from cpcl.data.readers import load_dataset
    from cpcl.evaluation.evaluate import evaluate_split

    rerank = rerank_config(args)  # checked before anything loads
    data = load_dataset(args.dataset, args.root, allow_outside_root=args.allow_outside_root, strict=args.strict)
    check_images(data, decode=False)
    metrics = evaluate_split(_load(args), data.splits[args.split], args.batch_size, args.workers, name=args.split,
                             rerank=rerank if args.rerank else None)
    if args.json:
        print(json.dumps(metrics))
    else:
        print("  ".join(f"{name} {value:.2f}" for name, value in metrics.items()))
    return 0


def run_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from cpcl.api import load
    from cpcl.utils.errors import CpclError

    if not args.images and not args.texts:
        raise CpclError("nothing to encode: give --images FILE... and/or --texts TEXT...")
    model = load(args.checkpoint, args.device, args.precision, tuple(args.image_size) if args.image_size else None)
    image = model.encode_images(args.images, args.batch_size, args.workers)
    text = model.encode_texts(args.texts, args.batch_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, image=image, text=text)
    print(f"wrote {args.out}: image {tuple(image.shape)}, text {tuple(text.shape)}")
    return 0
