"""`cpcl report`: the demo's HTML report for one training run."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="an HTML report of a training run: test metrics, training curves, "
                                                  "label quality, retrieval examples")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the --out folder of a finished cpcl train")
    parser.add_argument("--out", type=Path, help="the HTML file to write (default: RUN_DIR/report.html)")
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from cpcl.experiments.demo_report import write_run_report

    print(f"wrote {write_run_report(args.run_dir, args.out)}")
    return 0
