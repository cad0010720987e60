"""`cpcl index build` and `cpcl index add`: embed a gallery of person crops for search."""

from __future__ import annotations

import argparse
from pathlib import Path

from cpcl.cli.evaluate import extraction_arguments, model_arguments

MAX_LISTED = 5  # unreadable files named in the summary


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from cpcl.index.config import IndexConfig

    index = subparsers.add_parser("index", help="index a gallery of images for cpcl search / serve")
    actions = index.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="embed every image under a folder into a new index (or continue one)")
    model_arguments(build)
    build.add_argument("--images", required=True, type=Path, help="gallery root, searched recursively")
    build.add_argument("--out", required=True, type=Path, help="index directory to create (or to continue)")
    build.add_argument("--metadata", type=Path,
                       help="sidecar .csv / .jsonl: path (relative to --images), camera, time, other fields")
    build.add_argument("--shard-size", type=int, default=IndexConfig.shard_size,
                       help="images per shard: the unit of resuming an interrupted build")
    build.add_argument("--ivf-threshold", type=int, default=IndexConfig.ivf_threshold,
                       help="galleries of at least this many images use IVF, smaller ones exact search")
    build.add_argument("--nlist", type=int, default=IndexConfig.nlist, help="IVF lists")
    build.add_argument("--nprobe", type=int, default=IndexConfig.nprobe, help="IVF lists visited per query")
    build.set_defaults(func=run_build)

    add = actions.add_parser("add", help="embed the images of the gallery that are new to an index")
    add.add_argument("--index", required=True, type=Path, help="index directory")
    add.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                     help="files or folders inside the gallery (default: the whole gallery)")
    add.add_argument("--metadata", type=Path, help="sidecar .csv / .jsonl for the new images")
    add.add_argument("--checkpoint", type=Path, help="default: the one the index was built with (must match it)")
    extraction_arguments(add)
    add.set_defaults(func=run_add)


def _summary(report, index: Path) -> None:
    """Print what a build or add did, naming the first unreadable files."""
    print(f"{index}: {report.added} images embedded, {report.already} already indexed, "
          f"{report.total} in the index ({report.backend} search)"
          + (f"; metadata of {report.relabelled} indexed images updated" if report.relabelled else ""))
    if report.unreadable:
        listed = "; ".join(f"{path} ({problem})" for path, problem in list(report.unreadable.items())[:MAX_LISTED])
        print(f"{len(report.unreadable)} files could not be read and were left out (all in "
              f"{index / 'unreadable.jsonl'}): {listed}")


def run_build(args: argparse.Namespace) -> int:
    from cpcl.index.build import build_index
    from cpcl.index.config import IndexConfig
    from cpcl.index.encoder import Encoder

    config = IndexConfig(shard_size=args.shard_size, ivf_threshold=args.ivf_threshold, nlist=args.nlist,
                         nprobe=args.nprobe)
    encoder = Encoder.load(args.checkpoint, tuple(args.image_size) if args.image_size else None, args.device,
                           args.precision)
    report = build_index(encoder, args.images, args.out, args.metadata, config, args.batch_size, args.workers)
    _summary(report, args.out)
    return 0


def run_add(args: argparse.Namespace) -> int:
    from cpcl.index.build import add_to_index
    from cpcl.index.encoder import Encoder
    from cpcl.index.store import IndexStore

    manifest = IndexStore.open(args.index).manifest
    encoder = Encoder.for_index(manifest, args.index, args.checkpoint, args.device, args.precision)
    report = add_to_index(encoder, args.index, args.paths, args.metadata, args.batch_size, args.workers)
    _summary(report, args.index)
    return 0
