"""`cpcl index build` and `cpcl index add`: embed a gallery of person crops, or footage through a person detector."""

from __future__ import annotations

import argparse
from pathlib import Path

from cpcl.cli.evaluate import extraction_arguments, model_arguments
from cpcl.utils.errors import DataError

MAX_LISTED = 5  # unreadable files named in the summary


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from cpcl.index.config import BACKENDS, MILVUS_INDEXES, IndexConfig

    index = subparsers.add_parser("index", help="index a gallery of images for cpcl search / serve")
    actions = index.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="embed every image under a folder, or the persons detected in "
                                             "footage, into a new index (or continue one)")
    model_arguments(build)
    gallery = build.add_mutually_exclusive_group(required=True)
    gallery.add_argument("--images", type=Path, help="gallery root of person crops, searched recursively")
    footage_sources(gallery)
    build.add_argument("--out", required=True, type=Path, help="index directory to create (or to continue)")
    build.add_argument("--metadata", type=Path,
                       help="sidecar .csv / .jsonl: path (relative to --images), camera, time, other fields")
    build.add_argument("--shard-size", type=int, default=IndexConfig.shard_size,
                       help="images per shard: the unit of resuming an interrupted build")
    build.add_argument("--ivf-threshold", type=int, default=IndexConfig.ivf_threshold,
                       help="galleries of at least this many images use IVF, smaller ones exact search")
    build.add_argument("--nlist", type=int, default=IndexConfig.nlist, help="IVF lists")
    build.add_argument("--nprobe", type=int, default=IndexConfig.nprobe, help="IVF lists visited per query")
    build.add_argument("--backend", choices=BACKENDS, default=IndexConfig.backend,
                       help="faiss: the vectors in the index folder; milvus: in a Milvus collection (--milvus-uri)")
    build.add_argument("--milvus-uri", metavar="URI",
                       help="milvus: a Milvus Lite file (gallery.db, made if missing) or a server (http://HOST:19530)")
    build.add_argument("--collection", metavar="NAME", help="milvus: the collection (default: cpcl_ and the --out "
                                                            "folder's name)")
    build.add_argument("--milvus-index", choices=MILVUS_INDEXES,
                       help="milvus: the collection's vector index (IVF_FLAT uses --nlist and --nprobe); default: FLAT "
                            "on a Milvus Lite file (Lite answers IVF_FLAT from its own coarser index: "
                            "docs/scaling.md), IVF_FLAT on a server")
    footage_arguments(build, root=True)
    build.set_defaults(func=run_build)

    add = actions.add_parser("add", help="embed the images of the gallery that are new to an index")
    add.add_argument("--index", required=True, type=Path, help="index directory")
    add.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                     help="files or folders inside the gallery (default: the whole gallery)")
    add.add_argument("--metadata", type=Path, help="sidecar .csv / .jsonl for the new images")
    add.add_argument("--checkpoint", type=Path, help="default: the one the index was built with (must match it)")
    extraction_arguments(add)
    footage_sources(add.add_mutually_exclusive_group())
    footage_arguments(add, root=False)
    add.set_defaults(func=run_add)


def footage_sources(group: argparse._MutuallyExclusiveGroup) -> None:
    """--frames DIR / --video FILE...: footage instead of crops."""
    group.add_argument("--frames", type=Path, nargs="+", metavar="DIR",
                       help="folders of frame images (one video each, frames in natural name order)")
    group.add_argument("--video", type=Path, nargs="+", metavar="FILE",
                       help="video files (decoded by OpenCV, or by PyAV where OpenCV cannot open one)")


def footage_arguments(parser: argparse.ArgumentParser, root: bool) -> None:
    """How footage is sampled and detected (with --frames / --video)."""
    from cpcl.index.config import MAX_DETECTIONS

    footage = parser.add_argument_group("footage (with --frames / --video)")
    footage.add_argument("--detector", metavar="SPEC",
                         help="detections:FILE (MOTChallenge det.txt or COCO results .json, frames from 1), hog "
                              "(OpenCV's HOG people detector) or onnx:MODEL.onnx (a YOLO-family model)")
    footage.add_argument("--det-threshold", type=float, metavar="T",
                         help="keep detections scoring at least this (default: all from a file, 0 for hog's SVM "
                              "margin, 0.25 for onnx)")
    footage.add_argument("--nms-iou", type=float, default=0.45, metavar="IOU",
                         help="onnx: drop a box overlapping a better one by more than this")
    footage.add_argument("--max-detections", type=int, default=MAX_DETECTIONS, metavar="N",
                         help="keep at most N detections a frame, the best scoring (frames with more are counted)")
    sampling = footage.add_mutually_exclusive_group()
    sampling.add_argument("--every", type=int, default=1, metavar="N", help="keep every N-th frame")
    sampling.add_argument("--fps", type=float, metavar="F", help="keep about F frames a second")
    footage.add_argument("--source-fps", type=float, metavar="R",
                         help="frame rate of the sources (needed for times of frame folders; overrides a video's)")
    footage.add_argument("--start", metavar="TIME",
                         help="wall-clock time of each source's first frame (ISO 8601 or seconds): records get "
                              "time = start + offset, and --from / --to filter on it")
    footage.add_argument("--camera", metavar="NAME", help="camera name of these sources (for --camera filters)")
    footage.add_argument("--crops", type=Path, metavar="DIR", help="also write every crop as a JPEG below DIR")
    if root:
        footage.add_argument("--root", type=Path, metavar="DIR",
                             help="folder the sources are named relative to, and the page serves frames from "
                                  "(default: the folder holding them)")


def footage_options(args: argparse.Namespace):
    """The FootageOptions of --frames / --video, or None (then no footage option may be given)."""
    from cpcl.index.detectors import normalise_spec
    from cpcl.index.gallery import parse_time
    from cpcl.index.ingest import FootageOptions
    from cpcl.utils.errors import ConfigError

    kind, paths = ("frames", args.frames) if args.frames else ("video", args.video) if args.video else (None, None)
    if kind is None:
        given = [flag for flag, value in (("--detector", args.detector), ("--start", args.start),
                                          ("--camera", args.camera), ("--crops", args.crops),
                                          ("--root", getattr(args, "root", None))) if value is not None]
        if given:
            raise ConfigError(f"{given[0]} is for footage: give --frames DIR or --video FILE with it")
        return None
    if args.detector is None:
        raise ConfigError("--frames / --video need --detector: detections:FILE, hog or onnx:MODEL.onnx")
    if getattr(args, "metadata", None) is not None:
        raise ConfigError("--metadata is for --images; footage records get --camera and --start instead")
    start = parse_time(args.start, "--start") if args.start is not None else None
    return FootageOptions(kind, tuple(paths), normalise_spec(args.detector), args.det_threshold,
                          args.max_detections, args.nms_iou, args.every, args.fps, args.source_fps, start, args.camera,
                          args.crops)


def _summary(report, index: Path) -> None:
    """Print what a build or add did, naming the first unreadable files; DataError naming the footage sources that
    could not be read (the others are indexed)."""
    if report.frames is not None:
        print(f"{index}: {report.added} persons embedded from {report.frames} frames"
              + (f", {report.already} sources already indexed to the end" if report.already else "")
              + f"; {report.total} in the index ({report.backend} search)")
        if report.skipped:
            print(f"{report.skipped} frames skipped: the detector cannot look at them (listed below with the "
                  f"unreadable files)")
        if report.capped:
            print(f"{report.capped} frames had more than --max-detections detections: their best were kept")
        if report.past_end:
            print(f"{report.past_end} boxes of the detections file are for frames after its source's last one: "
                  f"left out")
    else:
        print(f"{index}: {report.added} images embedded, {report.already} already indexed, "
              f"{report.total} in the index ({report.backend} search)"
              + (f"; metadata of {report.relabelled} indexed images updated" if report.relabelled else ""))
    if report.unreadable:
        listed = "; ".join(f"{path} ({problem})" for path, problem in list(report.unreadable.items())[:MAX_LISTED])
        print(f"{len(report.unreadable)} files could not be read and were left out (all in "
              f"{index / 'unreadable.jsonl'}): {listed}")
    if report.failed:
        listed = "; ".join(list(report.failed.values())[:MAX_LISTED])
        raise DataError(f"{len(report.failed)} source{'s' * (len(report.failed) > 1)} could not be read to the end "
                        f"(what they gave and the other sources are indexed): {listed}")


def _check_read(report, index: Path) -> int:
    """0, or DataError when the index holds nothing because none of its files could be read."""
    from cpcl.utils.errors import DataError

    if report.unreadable and not report.total:
        raise DataError(f"none of the {len(report.unreadable)} files could be read, so nothing was indexed "
                        f"({index / 'unreadable.jsonl'} says why for each)")
    return 0


def index_config(args: argparse.Namespace):
    """The IndexConfig of `cpcl index build`'s options (a Milvus Lite file as an absolute path)."""
    from cpcl.index.config import IndexConfig
    from cpcl.index.milvus import collection_name, default_index, lite_uri

    milvus, uri = args.backend == "milvus", args.milvus_uri or ""
    return IndexConfig(backend=args.backend, milvus_uri=lite_uri(uri) if uri else "",
                       milvus_collection=args.collection or (collection_name(args.out) if milvus else ""),
                       milvus_index=args.milvus_index or default_index(uri), shard_size=args.shard_size,
                       ivf_threshold=args.ivf_threshold, nlist=args.nlist, nprobe=args.nprobe)


def run_build(args: argparse.Namespace) -> int:
    from cpcl.index.build import build_index
    from cpcl.index.encoder import Encoder

    config = index_config(args)
    footage = footage_options(args)
    encoder = Encoder.load(args.checkpoint, tuple(args.image_size) if args.image_size else None, args.device,
                           args.precision)
    if footage is not None:
        from cpcl.index.ingest import build_footage_index

        report = build_footage_index(encoder, footage, args.out, args.root, config, args.batch_size)
    else:
        report = build_index(encoder, args.images, args.out, args.metadata, config, args.batch_size, args.workers)
    _summary(report, args.out)
    return _check_read(report, args.out)


def run_add(args: argparse.Namespace) -> int:
    from cpcl.index.build import add_to_index
    from cpcl.index.encoder import Encoder
    from cpcl.index.store import IndexStore
    from cpcl.utils.errors import CpclError

    footage = footage_options(args)
    if footage is not None and args.paths:
        raise CpclError("give image PATHs or --frames / --video, not both")
    manifest = IndexStore.open(args.index).manifest
    encoder = Encoder.for_index(manifest, args.index, args.checkpoint, args.device, args.precision)
    if footage is not None:
        from cpcl.index.ingest import add_footage

        report = add_footage(encoder, args.index, footage, args.batch_size)
    else:
        report = add_to_index(encoder, args.index, args.paths, args.metadata, args.batch_size, args.workers)
    _summary(report, args.index)
    return _check_read(report, args.index)
