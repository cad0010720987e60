"""`cpcl tokenize TEXT... [--json] [--context-length N]`: print CLIP BPE ids (SOT ... EOT) per text."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `tokenize` subcommand."""
    parser = subparsers.add_parser(
        "tokenize", help="show CLIP BPE token ids of texts",
        description="Print the CLIP BPE ids of each TEXT, from SOT to EOT, without padding: "
                    "one line of space-separated ids per text, or a JSON list with --json.")
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="text(s) to tokenize")
    parser.add_argument("--json", action="store_true",
                        help='print a JSON list of {"text": ..., "ids": [...]}')
    parser.add_argument("--context-length", type=int, default=None,
                        help="truncate to this many ids, EOT last (default: CLIP's 77)")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    """Tokenize `args.texts` and print their ids to stdout; returns the exit status."""
    from cpcl.model.tokenizer import DEFAULT_CONTEXT_LENGTH, default_tokenizer

    context_length = DEFAULT_CONTEXT_LENGTH if args.context_length is None else args.context_length
    rows = default_tokenizer().token_ids(args.texts, context_length)
    if args.json:
        records = [{"text": text, "ids": ids} for text, ids in zip(args.texts, rows)]
        print(json.dumps(records, ensure_ascii=False))
    else:
        for ids in rows:
            print(" ".join(map(str, ids)))
    return 0
