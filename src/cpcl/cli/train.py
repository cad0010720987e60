"""`cpcl train` and `cpcl pretrain`: run the training engine from a config.

Under torchrun (`torchrun --nproc-per-node N -m cpcl train ...`) every process runs this
command; the launcher's RANK / WORLD_SIZE / LOCAL_RANK make it one rank of a distributed run.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    for name, help_text in (
        ("train", "train a model (zero_shot | itc | cpcl | oracle) and evaluate it"),
        ("pretrain", "pretrain a small CLIP from scratch with image-caption InfoNCE (method itc)"),
    ):
        parser = subparsers.add_parser(name, help=help_text)
        parser.add_argument("-c", "--config", help="YAML config file or shipped config name "
                            "(e.g. synthpedes, cuhk_pedes, pretrain_synthpedes)")
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                            help="dotted config overrides, e.g. optim.epochs=5 cpcl.oplm=off")
        parser.add_argument("--out", type=Path, help="run directory (config.yaml, metrics.jsonl, checkpoints)")
        parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                            help="continue an interrupted run from RUN_DIR/last.pt with its saved config")
        parser.add_argument("--dry-run", action="store_true",
                            help="print the resolved distributed settings (world size, rank, backend, device, "
                            "per-rank and global batch, lr) and the resolved config, and exit")
        parser.set_defaults(func=run_train, pretrain=name == "pretrain")


def run_train(args: argparse.Namespace) -> int:
    from cpcl.api import train
    from cpcl.engine.distributed import launch_settings
    from cpcl.utils.config import to_dict
    from cpcl.utils.distributed import detect_world, rank_device

    world = detect_world()
    if not world.is_main:  # under torchrun, rank 0 alone logs progress
        logging.getLogger().setLevel(logging.WARNING)
    cfg, run_dir, resume = resolve_run(args)
    if args.dry_run:
        settings = launch_settings(cfg, world, rank_device(cfg.device, world))
        print(json.dumps({"distributed": settings, "config": to_dict(cfg)}, indent=2))
        return 0
    results = train(resume=run_dir, world=world) if resume else train(cfg, run_dir, world=world)
    if world.is_main:
        print(json.dumps(results.get("test", {}), indent=2))
        print(f"run written to {run_dir}")
    return 0


def resolve_run(args: argparse.Namespace) -> tuple[Any, Path, bool]:
    """(config, run directory, resume?) from the command line: --resume reads the run's config."""
    from cpcl.configs import resolve_config_path
    from cpcl.engine.config import TrainConfig, load_run_config
    from cpcl.utils.config import load_config
    from cpcl.utils.errors import ConfigError

    if args.resume is not None:
        if args.config or args.overrides or args.out:
            raise ConfigError("--resume takes the run's saved config.yaml; drop -c, --out and overrides")
        run_dir, resume = args.resume, True
        cfg = load_run_config(run_dir / "config.yaml")
    else:
        if args.out is None:
            raise ConfigError("say where the run goes: --out RUN_DIR (or --resume RUN_DIR)")
        default = "pretrain_synthpedes" if args.pretrain else None
        path = resolve_config_path(args.config or default) if (args.config or default) else None
        cfg = load_config(TrainConfig, path, args.overrides)
        run_dir, resume = args.out, False
    if args.pretrain and cfg.method != "itc":
        raise ConfigError(f"pretrain trains with method=itc; this config says method={cfg.method}")
    return cfg, run_dir, resume
