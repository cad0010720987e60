"""`cpcl bench quality`: every baseline and CPCL ablation on SynthPedes, over seeds, tabulated."""

from __future__ import annotations

import argparse
from pathlib import Path

from cpcl.cli.evaluate import extraction_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks (quality: baselines and ablations on SynthPedes)")
    kinds = parser.add_subparsers(dest="bench", metavar="KIND", required=True)
    quality = kinds.add_parser(
        "quality", help="zero-shot, ITC, CPCL, each ablation and the oracle from one pretrained start",
        description="Writes OUT/results.json (per method and seed) and OUT/table.md (mean and spread over "
                    "seeds, the paired CPCL-ITC per seed with its 95%% t-interval, CPCL/oracle, oracle-ITC). "
                    "An interrupted benchmark resumes: finished runs are kept.")
    quality.add_argument("--preset", default="fast",
                         help="fast (CI-sized, minutes; a tiny CLIP from scratch) | standard (the shipped start "
                              "on the default SynthPedes, about 90 minutes on 2 cores) | shifted (standard's sizes, "
                              "drawn and worded differently from the start's pretraining corpus) | shifted_val300 "
                              "(shifted with a 3x val split) | shifted_icfg (shifted in ICFG-PEDES' shape: "
                              "11 images a person, 1 caption an image) | shifted_rstp (shifted in RSTPReid's "
                              "shape: 5 images a person, 2 captions an image) | shifted_partial (shifted with "
                              "captions that name half as much of a person) | shifted_outfits (shifted, each "
                              "image leaving a person's hat, bag or accessory off at random) | shifted_long "
                              "(shifted, 12 epochs) | observed, observed_icfg, observed_rstp (captions written "
                              "from each image, in each real dataset's shape)")
    quality.add_argument("--seeds", type=int, default=3, metavar="N",
                         help="seeds 0..N-1 of each baseline (zero_shot, itc, cpcl, oracle)")
    quality.add_argument("--ablation-seeds", type=int, default=1, metavar="M",
                         help="seeds 0..M-1 of each CPCL ablation (at most N)")
    quality.add_argument("--methods", nargs="+", metavar="NAME",
                         help="a subset of the methods (default: all; an unknown name lists the valid ones)")
    quality.add_argument("--jobs", type=int, default=1, metavar="J",
                         help="train J runs at once, each in its own process with cores / J threads (docs/training.md, "
                              "The quality benchmark: what 2 on 2 cores gains)")
    quality.add_argument("--ids", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                         help="identities per split, in place of the preset's (a larger val and test split tell "
                              "methods apart; `bench retest` re-tests on larger ones without training)")
    quality.add_argument("--synth", nargs="+", default=[], metavar="FIELD=VALUE",
                         help="SynthConfig fields on top of the preset's style (cpcl synth's options, with "
                              "underscores: annotator_pool=0 colour_constancy=null figure_scale=[0.7,0.9])")
    quality.add_argument("--train", nargs="+", default=[], metavar="KEY=VALUE",
                         help="config overrides of every run, after the preset's (cpcl train's dotted keys: "
                              "model.image_size=[256,96] optim.epochs=8)")
    quality.add_argument("--out", required=True, type=Path, help="benchmark folder")
    quality.set_defaults(func=run_bench_quality)

    retest = kinds.add_parser(
        "retest", help="evaluate a finished quality benchmark's checkpoints on larger val and test splits",
        description="Generates the benchmark's SynthPedes again with more val and test people (the train split "
                    "and the benchmark's own val and test people unchanged), evaluates every finished run's "
                    "val-selected checkpoint on both, and writes BENCH/retest_VxT/results.json and table.md "
                    "(paired intervals as in `bench quality`). No training; a re-test resumes.")
    retest.add_argument("bench", type=Path, metavar="BENCH", help="a `cpcl bench quality` folder (--out)")
    retest.add_argument("--ids-val", type=int, default=1000, metavar="V",
                        help="val people (default 1000: the size of CUHK-PEDES' val and test splits)")
    retest.add_argument("--ids-test", type=int, default=1000, metavar="T", help="test people (default 1000)")
    extraction_arguments(retest)
    retest.set_defaults(func=run_bench_retest)


def parse_fields(items: list[str]) -> dict:
    """FIELD=VALUE items, each value read as YAML (numbers, true / false, null, [lists])."""
    import yaml

    from cpcl.utils.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--synth expects FIELD=VALUE, got {item!r}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--synth {key}: cannot read {value!r} (a number, true / false, null or a [list])") \
                from None
    return out


def run_bench_quality(args: argparse.Namespace) -> int:
    from cpcl.experiments.bench import METHODS, run_quality
    from cpcl.utils.errors import ConfigError

    if args.seeds < 1 or args.ablation_seeds < 1:
        raise ConfigError(f"--seeds and --ablation-seeds must be >= 1, got {args.seeds} and {args.ablation_seeds}")
    methods = args.methods or list(METHODS)

    def report(method: str, seed: int, record: dict) -> None:
        print(f"{method:>18} seed {seed}: R1 {record['R1']:5.2f}  mAP {record['mAP']:5.2f}  "
              f"({record['seconds']:.0f} s)", flush=True)

    run_quality(args.preset, args.seeds, args.out, methods, args.ablation_seeds, on_run=report, jobs=args.jobs,
                ids=tuple(args.ids) if args.ids else None, synth=parse_fields(args.synth), train=tuple(args.train))
    print()
    print((args.out / "table.md").read_text())
    return 0


def run_bench_retest(args: argparse.Namespace) -> int:
    from cpcl.experiments.retest import retest, retest_dir

    def report(method: str, seed: int, record: dict) -> None:
        print(f"{method:>22} seed {seed}: test R1 {record['R1']:5.2f}  mAP {record['mAP']:5.2f}  "
              f"val R1 {record['val_R1']:5.2f}", flush=True)

    retest(args.bench, args.ids_val, args.ids_test, args.batch_size, args.workers, args.device, args.precision,
           on_run=report)
    print()
    print((retest_dir(args.bench, args.ids_val, args.ids_test) / "table.md").read_text())
    return 0
