"""`cpcl search`: find gallery images, or persons in indexed footage, by a sentence or by an example image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cpcl.cli.evaluate import device_arguments, rerank_arguments


def search_arguments(parser: argparse.ArgumentParser, rerank_switch: str) -> None:
    """--index and --checkpoint (shared with `cpcl serve`), `rerank_arguments` (--rerank's help: `rerank_switch`),
    then `device_arguments`."""
    parser.add_argument("--index", required=True, type=Path, help="index directory (cpcl index build)")
    parser.add_argument("--checkpoint", type=Path,
                        help="default: the one the index was built with (another path must hold the same file)")
    rerank_arguments(parser, rerank_switch)
    device_arguments(parser)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser("search", help="search an index by a sentence or an example image")
    search.add_argument("text", nargs="?", metavar="TEXT", help='a description, e.g. "a man in a blue jacket"')
    search.add_argument("--image", type=Path, help="an example image to search by, instead of TEXT")
    search.add_argument("-k", type=int, default=10, help="results to show (at most)")
    search.add_argument("--min-score", type=float, help="leave out results scoring below this (cosine, -1..1)")
    search.add_argument("--camera", action="append", default=[], metavar="NAME",
                        help="only these cameras (repeat for several)")
    search.add_argument("--from", dest="time_from", metavar="TIME",
                        help="only images taken at or after (ISO 8601 or seconds)")
    search.add_argument("--to", dest="time_to", metavar="TIME", help="only images taken at or before")
    search.add_argument("--source", action="append", default=[], metavar="NAME",
                        help="footage: only detections from this video or frame folder (repeat for several)")
    search.add_argument("--no-group", dest="group", action="store_false",
                        help="footage: one result per detection, not one per person track")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search_arguments(search, "order the results by k-reciprocal re-ranking over the whole gallery")
    search.set_defaults(func=run_search)


def clock(seconds: float | None) -> str:
    """Seconds into a video as M:SS.S (H:MM:SS.S from an hour), or "?" when unknown."""
    if seconds is None:
        return "?"
    minutes, rest = divmod(float(seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{rest:04.1f}" if hours else f"{minutes}:{rest:04.1f}"


def where(footage: dict) -> tuple[str, str]:
    """(time or span, frames) of a detection hit, as text."""
    span = footage.get("span")
    if span and span["first_frame"] != span["last_frame"]:
        return (f"{clock(span['start'])}-{clock(span['end'])}",
                f"{footage['frame']} ({span['first_frame']}-{span['last_frame']}, {span['detections']} det.)")
    return clock(footage.get("offset")), str(footage["frame"])


def file_of(hit) -> str:
    """The file a hit is in, relative to the root: the image, the frame file or the video."""
    if hit.footage is None:
        return hit.path
    return hit.footage.get("file", hit.footage["source"])


def _table(hits: list, root: Path) -> str:
    """Rank, score, path (footage: source, time, frame, box) and metadata as aligned text."""
    if not hits:
        return "no match"
    if any(hit.footage for hit in hits):
        return _footage_table(hits, root)
    width = max(len(hit.path) for hit in hits)
    lines = [f"gallery: {root}", f"{'rank':>4}  {'score':>7}  {'path':<{width}}  metadata"]
    for hit in hits:
        meta = "  ".join(f"{key}={value}" for key, value in hit.metadata.items())
        lines.append(f"{hit.rank:>4}  {hit.score:7.4f}  {hit.path:<{width}}  {meta}".rstrip())
    return "\n".join(lines)


def _footage_table(hits: list, root: Path) -> str:
    """Rank, score, source (or path), time or span, frame, box (x, y, w, h) and metadata as aligned text."""
    rows = []
    for hit in hits:
        footage = hit.footage or {}
        when, frames = where(footage) if footage else ("", "")
        box = ",".join(str(v) for v in footage.get("box", []))
        meta = "  ".join(f"{key}={value}" for key, value in hit.metadata.items())
        rows.append((f"{hit.rank:>4}", f"{hit.score:7.4f}", footage.get("source", hit.path), when, frames, box, meta))
    head = ("rank", "  score", "source", "time", "frame", "box x,y,w,h", "metadata")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(6)]
    lines = [f"root: {root}"] + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[6]
                                 for row in [head, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def run_search(args: argparse.Namespace) -> int:
    from cpcl.api import open_index
    from cpcl.cli.evaluate import rerank_config
    from cpcl.data.check import image_problem
    from cpcl.data.transforms import load_rgb
    from cpcl.index.search import Filters
    from cpcl.utils.errors import CpclError, DataError
    from cpcl.utils.text import blank

    if (args.text is None) == (args.image is None):
        raise CpclError('give either a TEXT to search for or --image PATH (query by example), not both')
    if args.text is not None and blank(args.text):
        raise CpclError("the search text is empty (white space or control characters only)")
    if args.k < 1:
        raise CpclError(f"-k must be at least 1, got {args.k}")
    if args.image is not None and (problem := image_problem(args.image)):
        raise DataError(f"--image {args.image}: {problem}")
    Filters.parse(args.camera, args.time_from, args.time_to, args.source)  # checked before the index loads
    with open_index(args.index, args.checkpoint, args.device, args.precision, rerank=rerank_config(args)) as index:
        hits = index.search(args.text if args.image is None else load_rgb(args.image), args.k,
                            min_score=args.min_score, cameras=args.camera, time_from=args.time_from,
                            time_to=args.time_to, sources=args.source, group=args.group, rerank=args.rerank)
    if args.json:
        results = [{**hit.to_dict(), "file": str(index.root / file_of(hit))} for hit in hits]
        query = {"text": args.text} if args.text is not None else {"image": str(args.image)}
        print(json.dumps({"query": query, "index": str(args.index), "gallery_root": str(index.root),
                          "results": results}, ensure_ascii=False))
    else:
        print(_table(hits, index.root))
    return 0
