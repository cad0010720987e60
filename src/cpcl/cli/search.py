"""`cpcl search`: find gallery images by a sentence or by an example image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cpcl.cli.evaluate import device_arguments


def search_arguments(parser: argparse.ArgumentParser) -> None:
    """--index and --checkpoint (shared with `cpcl serve`), then `device_arguments`."""
    parser.add_argument("--index", required=True, type=Path, help="index directory (cpcl index build)")
    parser.add_argument("--checkpoint", type=Path,
                        help="default: the one the index was built with (another path must hold the same file)")
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
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search_arguments(search)
    search.set_defaults(func=run_search)


def _table(hits: list, root: Path) -> str:
    """Rank, score, path and metadata as aligned text."""
    if not hits:
        return "no match"
    width = max(len(hit.path) for hit in hits)
    lines = [f"gallery: {root}", f"{'rank':>4}  {'score':>7}  {'path':<{width}}  metadata"]
    for hit in hits:
        meta = "  ".join(f"{key}={value}" for key, value in hit.metadata.items())
        lines.append(f"{hit.rank:>4}  {hit.score:7.4f}  {hit.path:<{width}}  {meta}".rstrip())
    return "\n".join(lines)


def run_search(args: argparse.Namespace) -> int:
    from cpcl.data.check import image_problem
    from cpcl.data.transforms import load_rgb
    from cpcl.index.search import Filters, Searcher
    from cpcl.utils.errors import CpclError, DataError

    if (args.text is None) == (args.image is None):
        raise CpclError('give either a TEXT to search for or --image PATH (query by example), not both')
    if args.text is not None and not args.text.strip():
        raise CpclError("the search text is empty")
    if args.k < 1:
        raise CpclError(f"-k must be at least 1, got {args.k}")
    if args.image is not None and (problem := image_problem(args.image)):
        raise DataError(f"--image {args.image}: {problem}")
    filters = Filters.parse(args.camera, args.time_from, args.time_to)
    searcher = Searcher.open(args.index, args.checkpoint, args.device, args.precision)
    if args.image is not None:
        hits = searcher.search_image(load_rgb(args.image), args.k, args.min_score, filters)
    else:
        hits = searcher.search_text(args.text, args.k, args.min_score, filters)
    if args.json:
        results = [{**hit.to_dict(), "file": str(searcher.root / hit.path)} for hit in hits]
        query = {"text": args.text} if args.text is not None else {"image": str(args.image)}
        print(json.dumps({"query": query, "index": str(args.index), "gallery_root": str(searcher.root),
                          "results": results}, ensure_ascii=False))
    else:
        print(_table(hits, searcher.root))
    return 0
