"""`cpcl demo`: the main job, SynthPedes end to end from the shipped start (cpcl.experiments.demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cpcl.experiments.plans import DemoPlan
from cpcl.synth.config import STYLES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    default = DemoPlan()
    parser = subparsers.add_parser(
        "demo", help="SynthPedes end to end: generate, train ITC, CPCL and the oracle from the shipped start, report",
        description="The main job: writes OUT/report.html (CPCL - ITC and CPCL / oracle first, then test metrics, "
                    "training curves and retrieval examples).")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    parser.add_argument("--seed", type=int, default=default.seed, help="data and training seed")
    parser.add_argument("--ids", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=list(default.ids),
                        help="identities per split of the benchmark")
    parser.add_argument("--style", choices=STYLES, default=default.style,
                        help="how the benchmark is drawn and worded (cpcl synth --style): shifted (default; other "
                             "cameras and annotators than the start's pretraining corpus), observed (the same, "
                             "captions written from each image) or standard")
    parser.add_argument("--epochs", metavar="N", type=int, default=default.epochs,
                        help="fine-tuning epochs of ITC, CPCL and the oracle")
    parser.add_argument("--start", default=default.start, metavar="CHECKPOINT",
                        help=f"the start every method fine-tunes: a shipped name (default {default.start}), a "
                             "checkpoint path, or 'scratch' to pretrain a CLIP from random weights first")
    parser.add_argument("--pretrain-pairs", metavar="N", type=int, default=default.pretrain_pairs,
                        help="with --start scratch: image-caption pairs of the pretraining corpus")
    parser.add_argument("--pretrain-epochs", metavar="N", type=int, default=default.pretrain_epochs,
                        help="with --start scratch: pretraining epochs")
    parser.add_argument("--preset", default=default.preset,
                        help="with --start scratch: the CLIP preset pretrained from random weights")
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from cpcl.experiments.demo import run_demo

    plan = DemoPlan(seed=args.seed, ids=tuple(args.ids), style=args.style, epochs=args.epochs, start=args.start,
                    pretrain_pairs=args.pretrain_pairs, pretrain_epochs=args.pretrain_epochs, preset=args.preset)
    run_demo(plan, args.out)
    return 0
