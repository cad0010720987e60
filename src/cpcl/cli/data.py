"""`cpcl data check`: read a dataset's annotations, verify its images, print per-split counts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cpcl.data.check import check_images
from cpcl.data.readers import DATASETS, load_dataset


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect and verify datasets")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check", help="count ids / images / captions per split and verify every image opens"
    )
    check.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="annotation format")
    check.add_argument("--root", required=True, type=Path,
                       help="folder holding the dataset folder (e.g. DIR/CUHK-PEDES/reid_raw.json)")
    check.add_argument("--json", action="store_true", help="print the counts as JSON")
    check.add_argument("--skip-bad-images", action="store_true",
                       help="drop missing or unreadable images (and their captions) instead of failing")
    check.add_argument("--no-decode", action="store_true",
                       help="only check that image files exist (faster); default decodes each image")
    dataset_safety_arguments(check)
    check.set_defaults(func=run_check)


def dataset_safety_arguments(parser: argparse.ArgumentParser) -> None:
    """--strict and --allow-outside-root (cpcl data check, cpcl evaluate)."""
    parser.add_argument("--strict", action="store_true",
                        help="refuse an image in two splits or under two person ids (default: a warning)")
    parser.add_argument("--allow-outside-root", action="store_true",
                        help="read images that resolve outside the dataset's image folder (`..`, absolute paths, "
                             "symlinks out), with a warning (default: refused)")


def format_counts(counts: dict[str, dict[str, int | None]]) -> str:
    """A small aligned table: split, ids, images, captions."""
    rows = [("split", "ids", "images", "captions")]
    for split, c in counts.items():
        rows.append((split, "-" if c["ids"] is None else str(c["ids"]), str(c["images"]), str(c["captions"])))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    )


def run_check(args: argparse.Namespace) -> int:
    data = load_dataset(args.dataset, args.root, allow_outside_root=args.allow_outside_root, strict=args.strict)
    skipped = check_images(data, decode=not args.no_decode, skip_bad=args.skip_bad_images)
    counts = data.counts()
    if args.json:
        print(json.dumps(counts))
        return 0
    print(f"{args.dataset}: {data.annotation_file}")
    print(format_counts(counts))
    verb = "exist" if args.no_decode else "exist and open"
    print(f"all {sum(c['images'] for c in counts.values())} images {verb}"
          + (f" (skipped {skipped} bad images and their captions)" if skipped else ""))
    return 0
