"""`cpcl demo`: the main job on the embedded default, SynthPedes end to end.

For now it generates the SynthPedes benchmark and its pretraining corpus, reads them back
through the real loaders, verifies every image and prints the statistics.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cpcl.cli.data import format_counts
from cpcl.synth.config import SynthConfig

DEFAULTS = SynthConfig()


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="generate SynthPedes and report on it (the main job)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed of the generated data")
    parser.add_argument("--ids", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                        default=[DEFAULTS.ids_train, DEFAULTS.ids_val, DEFAULTS.ids_test],
                        help="identities per split of the benchmark")
    parser.add_argument("--pretrain-pairs", metavar="N", type=int, default=DEFAULTS.pretrain_pairs,
                        help="image-caption pairs of the pretraining corpus")
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from cpcl.data.check import check_images
    from cpcl.data.readers import load_dataset
    from cpcl.synth.writer import PRETRAIN_DIR, write_pretrain_corpus, write_synthpedes

    ids_train, ids_val, ids_test = args.ids
    cfg = SynthConfig(seed=args.seed, ids_train=ids_train, ids_val=ids_val, ids_test=ids_test,
                      pretrain_pairs=args.pretrain_pairs)
    start = time.perf_counter()
    print(f"[1/3] generating SynthPedes under {args.out} ...", flush=True)
    write_synthpedes(args.out, cfg, overwrite=True)
    print(f"[2/3] generating the pretraining corpus ({cfg.pretrain_pairs} pairs) ...", flush=True)
    write_pretrain_corpus(args.out, cfg, overwrite=True)
    print("[3/3] reading both back through the loaders and opening every image ...", flush=True)
    for dataset, root in (("cuhk-pedes", args.out), ("jsonl", args.out / PRETRAIN_DIR)):
        data = load_dataset(dataset, root)
        check_images(data)
        print(f"\n{data.annotation_file}")
        print(format_counts(data.counts()))
    print(f"\ndone in {time.perf_counter() - start:.1f} s")
    return 0
