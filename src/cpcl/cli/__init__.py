"""The `cpcl` command line: one console script, one subcommand per module in this package.

Each command module exposes `add_parser(subparsers)`, which registers its subcommand and sets
`func(args) -> int` as the handler. Heavy imports (torch, the model) happen inside handlers,
so `cpcl --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cpcl import __version__
from cpcl.cli import (bench, cluster, completion, data, demo, evaluate, export, index, report, search, serve, synth,
                      tokenize, train)
from cpcl.utils.errors import CpclError

COMMAND_MODULES = (data, tokenize, synth, train, report, evaluate, export, cluster, bench, demo, index, search, serve,
                   completion)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpcl", description="Weakly supervised text-based person search (CPCL)."
    )
    parser.add_argument("--version", action="version", version=f"cpcl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(subparsers)
    return parser


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    if not verbose:  # faiss logs each CPU-feature library it fails to find before the one it loads
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `cpcl` command; returns the process exit status (tests call this directly)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args))
    except CpclError as err:
        print(f"cpcl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cpcl {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
