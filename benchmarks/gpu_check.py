"""The GPU check: one script, run the moment a GPU is lent, that measures what the researchers will
feel on it and writes one JSON and one markdown table.

    PYTHONPATH=src timeout 480 python benchmarks/gpu_check.py --out gpu_check    # a GPU, <= 8 min
    PYTHONPATH=src python benchmarks/gpu_check.py --tiny --device cpu --out /tmp/gpu_check  # CPU, tiny

Sections, in this order (each one's rows are written as soon as it ends, so a run stopped by its
timeout keeps what it measured; a section that fails is a row with its error, and the others run):
  step     ViT-B/16 at 384x128, batch 64: step time and peak memory in bf16 and in fp16 with
           GradScaler, each with activation checkpointing off and on (the step of
           cpcl.engine.loop: PairEncoder, ITC loss, optimizer_step). Images/s of the step alone.
  loader   the real data loader (engine.train.make_loader: JPEG decode + augmentation) on a
           SynthPedes split at 384x128 with 4, 8 and 16 workers: images/s of the loader alone and
           of loader + step (bf16), to show whether the loader keeps up.
  cluster  kNN + sparse Jaccard + DBSCAN (cpcl.clustering.cluster_features) of 68k x 512
           features on the GPU and on the CPU (the CPU path: knn_backend auto), labels compared.
  ddp      a DistributedDataParallel step with nccl, world size = the GPUs present (wrapped even
           at world size 1, so that nccl and DDP's hooks run), global batch 64 per GPU.
  epoch    one CPCL epoch (`cpcl train -c synthpedes`, device=cuda) on the generated split.
Peak memory is torch's peak allocated CUDA memory on a GPU, the process's peak RSS on the CPU.
--tiny shrinks every size (tiny preset at 32x16, batch 8, 1-2 workers, 2,000 points, a tiny
split) for the CPU test (tests/test_gpu_check.py); rows that need CUDA are marked skipped there.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench_clustering import make_features
from bench_training import make_batch, sync
from cpcl.cli import main as cpcl_main
from cpcl.clustering import ClusterConfig, JaccardOptions, cluster_features
from cpcl.configs import resolve_config_path
from cpcl.engine.config import OptimSection, TrainConfig
from cpcl.engine.loop import PairEncoder, build_optimizer, gather_batch, make_scaler, optimizer_step
from cpcl.engine.samplers import epoch_sampler
from cpcl.engine.train import load_run_data, make_loader, run_config
from cpcl.losses import itc_loss
from cpcl.model.clip import CLIP, clip_preset
from cpcl.utils.config import load_config
from cpcl.utils.distributed import World
from cpcl.utils.runtime import resolve_device


@dataclass(frozen=True)
class Sizes:
    """What the check runs at: the real sizes, or --tiny's."""

    preset: str  # CLIP preset of the step, loader and ddp sections
    image_size: tuple[int, int]  # (H, W) of those sections
    batch: int  # pairs per step (per GPU in ddp)
    steps: int  # timed steps per case (after `warmup`)
    warmup: int  # untimed steps per case
    workers: tuple[int, ...]  # data loader workers compared
    loader_batches: int  # batches timed per worker count, from the loader's start (its workers' start-up included)
    ids: tuple[int, int, int]  # SynthPedes identities: train, val, test
    cluster_points: int  # features clustered
    cluster_dim: int  # their width
    epoch_overrides: tuple[str, ...]  # config overrides of the CPCL epoch beyond data.root and device


FULL = Sizes("vit-b-16", (384, 128), 64, 10, 3, (4, 8, 16), 40, (400, 50, 50), 68000, 512,
             ("data.workers=8",))
TINY = Sizes("tiny", (32, 16), 8, 2, 1, (1, 2), 3, (12, 4, 4), 2000, 64,
             ("data.workers=0", "model.init=preset:tiny", "model.image_size=[32,16]", "optim.batch_size=8",
              "eval.batch_size=16"))
SECTIONS = ("step", "loader", "cluster", "ddp", "epoch")
EOT_POS = 30  # EOT position of the step's random captions (CUHK-PEDES captions run ~20-30 tokens)


class Report:
    """Rows of the check, written to OUT/gpu_check.json and OUT/gpu_check.md after each one."""

    def __init__(self, out: Path, header: dict):
        self.out, self.header, self.rows = out, header, []
        out.mkdir(parents=True, exist_ok=True)

    def add(self, section: str, case: str, status: str = "ok", **values: object) -> None:
        self.rows.append({"section": section, "case": case, "status": status, **values})
        (self.out / "gpu_check.json").write_text(json.dumps({**self.header, "rows": self.rows}, indent=1))
        (self.out / "gpu_check.md").write_text("\n".join(self.table()) + "\n")
        print(f"{section} | {case} | {status} | {values}", file=sys.stderr, flush=True)

    def table(self) -> list[str]:
        head = ", ".join(f"{k} {v}" for k, v in self.header.items())
        lines = [head, "", "| section | case | status | s | images/s | peak MB | notes |", "|---|---|---|---|---|---|---|"]
        for row in self.rows:
            notes = ", ".join(f"{k} {_fmt(v)}" for k, v in row.items()
                              if k not in ("section", "case", "status", "seconds", "images_per_s", "peak_mb"))
            lines.append(f"| {row['section']} | {row['case']} | {row['status']} | {_fmt(row.get('seconds'))} | "
                         f"{_fmt(row.get('images_per_s'))} | {_fmt(row.get('peak_mb'))} | {notes} |")
        return lines


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float:
    """torch's peak allocated CUDA memory since reset_peak, or the process's peak RSS (never reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Trainer:
    """The training step of cpcl.engine.loop on one model: forward both towers (PairEncoder, DDP
    when `ddp`), gather the global batch, ITC loss, backward and Adam through the loss scaler."""

    def __init__(self, sizes: Sizes, device: torch.device, precision: str, checkpointing: bool,
                 world: World = World(), ddp: bool = False):
        torch.manual_seed(0)
        self.model = CLIP(clip_preset(sizes.preset, image_size=sizes.image_size)).to(device).train()
        self.model.set_grad_checkpointing(checkpointing)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
        self.device, self.world = device, world
        encoder = PairEncoder(self.model, device, self.dtype)
        if ddp:
            encoder = torch.nn.parallel.DistributedDataParallel(
                encoder, device_ids=[device.index] if device.type == "cuda" else None)
        self.encoder = encoder
        self.optimizer = build_optimizer(self.model, OptimSection())
        self.scaler = make_scaler(self.dtype, device)

    def step(self, images: torch.Tensor, tokens: torch.Tensor) -> None:
        image_feats, text_feats, scale = self.encoder(images.to(self.device), tokens.to(self.device), True)
        index = torch.arange(len(images), device=self.device) + self.world.rank * len(images)
        image_feats, text_feats, _, _ = gather_batch(image_feats, text_feats, index, index, self.world)
        loss = itc_loss(image_feats, text_feats, scale)["itc_loss"]
        optimizer_step(loss, self.optimizer, self.scaler, self.model.parameters(), grad_clip=0.0)

    def timed(self, batches: Callable[[], tuple[torch.Tensor, torch.Tensor]], sizes: Sizes) -> list[float]:
        """Seconds of each of sizes.steps steps after sizes.warmup, each fed by `batches()`."""
        times = []
        for i in range(sizes.warmup + sizes.steps):
            images, tokens = batches()
            sync(self.device)
            start = time.perf_counter()
            self.step(images, tokens)
            sync(self.device)
            if i >= sizes.warmup:
                times.append(time.perf_counter() - start)
        return times


def random_batch(sizes: Sizes, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    context = clip_preset(sizes.preset).text.context_length
    return make_batch(sizes.batch, sizes.image_size, context, EOT_POS, device, seed=0)


def check_steps(report: Report, sizes: Sizes, device: torch.device) -> None:
    batch = random_batch(sizes, device)
    for precision in ("bf16", "fp16"):
        for checkpointing in (False, True):
            case = f"{sizes.preset} {sizes.image_size[0]}x{sizes.image_size[1]} batch {sizes.batch} {precision}" \
                   f"{' + GradScaler' if precision == 'fp16' else ''}, checkpointing {'on' if checkpointing else 'off'}"
            reset_peak(device)
            trainer = Trainer(sizes, device, precision, checkpointing)
            seconds = float(np.median(trainer.timed(lambda: batch, sizes)))
            report.add("step", case, seconds=seconds, images_per_s=sizes.batch / seconds, peak_mb=peak_mb(device),
                       grad_scale=trainer.scaler.get_scale() if trainer.scaler.is_enabled() else None)
            del trainer
            if device.type == "cuda":
                torch.cuda.empty_cache()


def synth_split(root: Path, sizes: Sizes) -> Path:
    """A SynthPedes split at the check's image size (`cpcl synth ROOT`, once per run); returns ROOT."""
    if not (root / "CUHK-PEDES").exists():
        train, val, test = sizes.ids
        height, width = max(sizes.image_size[0], 128), max(sizes.image_size[1], 48)
        code = cpcl_main(["-q", "synth", str(root), "--ids-train", str(train), "--ids-val", str(val),
                          "--ids-test", str(test), "--size", str(height), str(width),
                          "--workers", str(min(16, os.cpu_count() or 1))])
        if code:
            raise RuntimeError(f"cpcl synth exited with {code}")
    return root


def check_loader(report: Report, sizes: Sizes, device: torch.device, root: Path) -> None:
    overrides = [f"data.root={root}", f"model.image_size=[{sizes.image_size[0]},{sizes.image_size[1]}]",
                 f"optim.batch_size={sizes.batch}", f"model.init=preset:{sizes.preset}"]
    data = load_run_data(load_config(TrainConfig, resolve_config_path("synthpedes"), overrides))
    trainer = Trainer(sizes, device, "bf16", False)
    for workers in sizes.workers:
        cfg = load_config(TrainConfig, resolve_config_path("synthpedes"), [*overrides, f"data.workers={workers}"])
        for with_step in (False, True):
            start, images = time.perf_counter(), 0
            loader = iter(make_loader(cfg, data, epoch_sampler(len(data.tokens), sizes.batch, None, 1, 0, World()),
                                      0, World()))
            for _ in range(sizes.loader_batches):
                try:
                    batch = next(loader)
                except StopIteration:
                    break
                if with_step:
                    trainer.step(batch["image"], batch["tokens"])
                images += len(batch["image"])
            sync(device)
            seconds = time.perf_counter() - start
            report.add("loader", f"{workers} workers, {'loader + bf16 step' if with_step else 'loader alone'}",
                       seconds=seconds, images_per_s=images / seconds, batches=sizes.loader_batches)


def check_cluster(report: Report, sizes: Sizes, device: torch.device) -> None:
    feats, _ = make_features(sizes.cluster_points, dim=sizes.cluster_dim)
    labels = {}
    for where in ("cpu", "cuda"):
        case = f"{sizes.cluster_points:,} x {sizes.cluster_dim} on {where}"
        if where == "cuda" and device.type != "cuda":
            report.add("cluster", case, "skipped: needs CUDA")
            continue
        search = JaccardOptions(knn_device=where, knn_backend="auto" if where == "cpu" else "flat")
        result = cluster_features(feats, ClusterConfig(search=search))
        labels[where] = result.labels
        same = "-" if where == "cpu" else str(bool(np.array_equal(labels["cpu"], result.labels)))
        report.add("cluster", case, seconds=result.seconds["total"], knn_s=result.seconds["knn"],
                   jaccard_s=result.seconds["jaccard"], dbscan_s=result.seconds["dbscan"],
                   clusters=result.n_clusters, labels_equal_cpu=same)


def ddp_worker(rank: int, world_size: int, sizes: Sizes, backend: str, port: int, out: Path) -> None:
    """One rank of the DDP check: its step times into out/ddp_RANK.json."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        world = World(rank, world_size, rank)
        trainer = Trainer(sizes, device, "bf16", False, world=world, ddp=True)
        batch = random_batch(sizes, device)
        times = trainer.timed(lambda: batch, sizes)
        (out / f"ddp_{rank}.json").write_text(json.dumps({"times": times, "peak_mb": peak_mb(device)}))
    finally:
        torch.distributed.destroy_process_group()


def check_ddp(report: Report, sizes: Sizes, device: torch.device) -> None:
    gloo = device.type != "cuda"
    world_size = 1 if gloo else torch.cuda.device_count()
    case = f"nccl, world size {world_size}, batch {sizes.batch} per GPU, bf16"
    if gloo:
        report.add("ddp", "nccl", "skipped: needs CUDA")
        case = "gloo on the CPU (the same step; nccl needs CUDA), world size 1, bf16"
    with tempfile.TemporaryDirectory() as tmp:
        port = 29500 + os.getpid() % 1000
        torch.multiprocessing.spawn(ddp_worker, args=(world_size, sizes, "gloo" if gloo else "nccl", port, Path(tmp)),
                                    nprocs=world_size, join=True)
        ranks = [json.loads((Path(tmp) / f"ddp_{r}.json").read_text()) for r in range(world_size)]
    seconds = float(np.median([max(r["times"][i] for r in ranks) for i in range(sizes.steps)]))
    report.add("ddp", case, seconds=seconds, images_per_s=world_size * sizes.batch / seconds,
               peak_mb=max(r["peak_mb"] for r in ranks))


def check_epoch(report: Report, sizes: Sizes, device: torch.device, root: Path, out: Path) -> None:
    overrides = [f"data.root={root}", f"device={device.type}", "optim.epochs=1", *sizes.epoch_overrides]
    seconds = run_config("synthpedes", out / "epoch_run", overrides)
    record = json.loads((out / "epoch_run" / "metrics.jsonl").read_text().splitlines()[-1])
    phases = {key: round(value, 2) for key, value in record.items() if key.startswith("time_")}
    report.add("epoch", f"cpcl -c synthpedes, 1 epoch, {sizes.ids[0]} train ids, device {device.type}",
               seconds=seconds, **phases, val_R1=round(record.get("val_R1", float("nan")), 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check"), help="folder for gpu_check.json / .md")
    parser.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--budget-s", type=float, default=400.0,
                        help="a section starting after this many seconds is skipped (the run's own limit)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    sizes = TINY if args.tiny else FULL
    header = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
              "gpus": torch.cuda.device_count(), "torch": torch.__version__, "sizes": "tiny" if args.tiny else "full",
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
    report = Report(args.out, header)
    start = time.perf_counter()
    data_root = args.out / "synthpedes"
    checks: dict[str, Callable[[], None]] = {
        "step": lambda: check_steps(report, sizes, device),
        "loader": lambda: check_loader(report, sizes, device, synth_split(data_root, sizes)),
        "cluster": lambda: check_cluster(report, sizes, device),
        "ddp": lambda: check_ddp(report, sizes, device),
        "epoch": lambda: check_epoch(report, sizes, device, synth_split(data_root, sizes), args.out),
    }
    for name in args.sections:
        if time.perf_counter() - start > args.budget_s:
            report.add(name, "-", f"skipped: the {args.budget_s:.0f} s budget was spent")
            continue
        try:
            checks[name]()
        except Exception as err:  # one failed section is a row; the rest still run
            report.add(name, "-", f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")
    print("\n".join(report.table()))
    print(f"\ntotal {time.perf_counter() - start:.0f} s; {args.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
