"""The run: setup, then per epoch extract -> cluster -> mine outliers -> reset memories ->
train -> evaluate -> log -> checkpoint (METHOD.md, One epoch), then the final test.

Run dir: config.yaml (resolved), metrics.jsonl (one record per epoch), last.pt (model +
optimiser + progress, for --resume), best.pt (selected on val, or the last epoch where the
data has no val split), results.json ({"test": {"best": {...}, "last": {...}}, ...}).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cpcl.configs import resolve_config_path
from cpcl.data.check import check_images
from cpcl.data.datasets import PairDataset
from cpcl.data.readers import load_dataset
from cpcl.data.records import SplitData
from cpcl.data.tokenizer import default_tokenizer
from cpcl.data.transforms import train_transform
from cpcl.engine.config import TrainConfig
from cpcl.engine.loop import build_optimizer, train_one_epoch
from cpcl.engine.objectives import CpclObjective, ItcObjective
from cpcl.engine.pseudo_labels import cluster_pairs, oracle_cluster_quality, oracle_pair_labels
from cpcl.engine.samplers import PKBatchSampler, RandomBatchSampler
from cpcl.evaluation.evaluate import evaluate_split
from cpcl.evaluation.features import extract_image_features, extract_text_features
from cpcl.model.checkpoints import load_clip, read_checkpoint, save_clip
from cpcl.model.clip import CLIP, clip_preset
from cpcl.utils.config import load_config, save_config
from cpcl.utils.errors import CheckpointError, DataError
from cpcl.utils.runtime import resolve_device, resolve_precision, seed_everything

log = logging.getLogger(__name__)

PRESET_PREFIX = "preset:"  # model.init value meaning "random weights of this preset"


@dataclass
class RunData:
    train: SplitData  # training split (images, captions, pairing)
    tokens: torch.Tensor  # [P, L] token ids of the training captions (pairs)
    image_index: torch.Tensor  # [P] image of each pair
    evals: dict[str, tuple[SplitData, torch.Tensor]]  # "val" / "test" split and its caption tokens


def load_run_data(cfg: TrainConfig) -> RunData:
    """Training split and evaluation splits, images checked to exist, captions tokenized."""
    tokenizer, length = default_tokenizer(), cfg.model.context_length
    train_data = load_dataset(cfg.data.dataset, Path(cfg.data.root))
    check_images(train_data, decode=False, skip_bad=cfg.data.skip_bad_images)
    eval_data = train_data
    if cfg.eval.dataset is not None or cfg.eval.root is not None:
        eval_data = load_dataset(cfg.eval.dataset or cfg.data.dataset, Path(cfg.eval.root or cfg.data.root))
        check_images(eval_data, decode=False, skip_bad=cfg.data.skip_bad_images)
    train = train_data.splits["train"]
    if not train.captions:
        raise DataError(f"{train_data.annotation_file} has no training pairs")
    evals = {name: (split, tokenizer.tokenize([c.text for c in split.captions], length))
             for name in ("val", "test") if (split := eval_data.splits[name]).images}
    tokens = tokenizer.tokenize([c.text for c in train.captions], length)
    image_index = torch.tensor([c.image_id for c in train.captions], dtype=torch.long)
    return RunData(train, tokens, image_index, evals)


def oracle_pair_person_ids(split: SplitData) -> torch.Tensor | None:
    """True person id of each pair, for the oracle baseline and `oracle_` diagnostics only."""
    ids = [split.images[c.image_id].person_id for c in split.captions]
    return None if any(i is None for i in ids) else torch.tensor(ids, dtype=torch.long)


def build_model(cfg: TrainConfig, device: torch.device) -> CLIP:
    """The starting model: a checkpoint at the configured sizes, or a preset's random weights."""
    init = cfg.model.init
    if init.startswith(PRESET_PREFIX):
        config = clip_preset(init[len(PRESET_PREFIX):], cfg.model.image_size, cfg.model.context_length)
        return CLIP(config).to(device)
    model, _ = load_clip(init, cfg.model.image_size, cfg.model.context_length, device)
    return model


def make_loader(cfg: TrainConfig, data: RunData, batch_sampler: torch.utils.data.Sampler) -> DataLoader:
    transform = partial(train_transform, size=cfg.model.image_size, cfg=cfg.augment)
    dataset = PairDataset(data.train, data.tokens, transform)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=cfg.data.workers,
                      persistent_workers=False)


def epoch_objective(cfg: TrainConfig, model: CLIP, data: RunData, epoch: int, device: torch.device,
                    dtype: torch.dtype | None, record: dict) -> tuple[ItcObjective | CpclObjective, torch.Tensor | None]:
    """Steps 1-4 for this epoch: the objective, and the labels a pk sampler groups by (or None)."""
    if cfg.method == "itc" or epoch < cfg.cpcl.itc_warmup_epochs:
        return ItcObjective(), None
    start = time.perf_counter()
    paths = [image.path for image in data.train.images]
    image_feats = extract_image_features(model, paths, cfg.augment, cfg.eval.batch_size, cfg.data.workers,
                                         device, dtype, desc="train images")
    text_feats = extract_text_features(model, data.tokens, cfg.eval.batch_size, device, dtype, desc="train captions")
    record["time_extract"] = time.perf_counter() - start
    start = time.perf_counter()
    oracle_ids = oracle_pair_person_ids(data.train)
    if cfg.method == "oracle":
        if oracle_ids is None:
            raise DataError("method=oracle needs person ids in the training data; this data has none")
        labels = oracle_pair_labels(oracle_ids)
    else:
        labels = cluster_pairs(image_feats, text_feats, data.image_index, cfg.cluster, cfg.cpcl)
        if oracle_ids is not None:
            record.update(oracle_cluster_quality(labels.image, oracle_ids, "image"))
            record.update(oracle_cluster_quality(labels.text, oracle_ids, "text"))
    record["time_cluster"] = time.perf_counter() - start
    record.update(labels.stats)
    objective = CpclObjective(labels, image_feats[data.image_index], text_feats, cfg.cpcl, device)
    return objective, labels.image


def evaluate(cfg: TrainConfig, model: CLIP, data: RunData, name: str, device: torch.device,
             dtype: torch.dtype | None) -> dict[str, float]:
    split, tokens = data.evals[name]
    return evaluate_split(model, split, tokens, cfg.augment, cfg.eval.batch_size, cfg.data.workers,
                          device, dtype, name=name)


def save_last(run_dir: Path, model: CLIP, optimizer: torch.optim.Optimizer, progress: dict) -> None:
    save_clip(run_dir / "last.pt", model, model.config,
              extra={"run": {**progress, "optimizer": optimizer.state_dict()}})


def load_last(run_dir: Path, model: CLIP, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model and optimiser from last.pt; returns the saved progress record."""
    path = run_dir / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} does not exist (the run saved no epoch yet)")
    checkpoint = read_checkpoint(path)
    model.load_state_dict(checkpoint.state_dict, strict=True)
    progress = dict(checkpoint.extra["run"])
    optimizer.load_state_dict(progress.pop("optimizer"))
    return progress


def append_record(run_dir: Path, record: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record) + "\n")


def drop_records_from(run_dir: Path, epoch: int) -> None:
    """Keep metrics.jsonl records of epochs before `epoch` (a resumed run rewrites the rest)."""
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["epoch"] < epoch]
        path.write_text("".join(line + "\n" for line in kept))


def final_results(cfg: TrainConfig, model: CLIP, data: RunData, run_dir: Path, progress: dict,
                  device: torch.device, dtype: torch.dtype | None) -> dict:
    """Test metrics of the last and the best checkpoint; written to results.json."""
    results: dict = {"method": cfg.method, "epochs": progress["epoch"],
                     "selected_on": "val" if "val" in data.evals else "last",
                     "best_epoch": progress.get("best_epoch")}
    if "test" in data.evals:
        last = evaluate(cfg, model, data, "test", device, dtype)
        best = last
        if progress.get("best_epoch") not in (None, progress["epoch"] - 1) and (run_dir / "best.pt").is_file():
            model.load_state_dict(read_checkpoint(run_dir / "best.pt").state_dict, strict=True)
            best = evaluate(cfg, model, data, "test", device, dtype)
        results["test"] = {"best": best, "last": last}
    if "best_val" in progress:
        results["val"] = {"best": progress["best_val"]}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def run_training(cfg: TrainConfig, run_dir: Path, resume: bool = False) -> dict:
    """Train (or, for method zero_shot, only evaluate) into `run_dir`; returns results.json's dict."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    if not resume:
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    log.info("run %s: method %s on %s, precision %s", run_dir, cfg.method, device, dtype or "fp32")
    data = load_run_data(cfg)
    model = build_model(cfg, device)
    optimizer = build_optimizer(model, cfg.optim)
    progress: dict = {"epoch": 0, "best_epoch": None, "best_r1": -1.0}
    if resume:
        progress = load_last(run_dir, model, optimizer)
        log.info("resuming %s at epoch %d", run_dir, progress["epoch"] + 1)
    drop_records_from(run_dir, progress["epoch"])
    epochs = 0 if cfg.method == "zero_shot" else cfg.optim.epochs
    for epoch in range(progress["epoch"], epochs):
        seed_everything(cfg.seed + epoch)
        record: dict = {"epoch": epoch, "method": cfg.method}
        objective, group_labels = epoch_objective(cfg, model, data, epoch, device, dtype, record)
        if cfg.cpcl.sampler == "pk" and group_labels is not None:
            sampler = PKBatchSampler(group_labels, cfg.optim.batch_size, cfg.cpcl.pk_instances, cfg.seed + epoch)
        else:
            sampler = RandomBatchSampler(len(data.tokens), cfg.optim.batch_size, cfg.seed + epoch)
        start = time.perf_counter()
        record.update(train_one_epoch(model, make_loader(cfg, data, sampler), optimizer, objective,
                                      epoch, cfg.optim, device, dtype))
        record["time_train"] = time.perf_counter() - start
        progress["epoch"] = epoch + 1
        last_epoch = epoch + 1 == epochs
        if "val" in data.evals and ((epoch + 1) % cfg.eval.every == 0 or last_epoch):
            start = time.perf_counter()
            val = evaluate(cfg, model, data, "val", device, dtype)
            record.update({f"val_{k}": v for k, v in val.items()})
            record["time_eval"] = time.perf_counter() - start
            if val["R1"] > progress["best_r1"]:
                progress.update(best_r1=val["R1"], best_epoch=epoch, best_val=val)
                save_clip(run_dir / "best.pt", model, model.config, extra={"epoch": epoch, "val": val})
        elif "val" not in data.evals:
            progress["best_epoch"] = epoch
        append_record(run_dir, record)
        save_last(run_dir, model, optimizer, progress)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                                                      if isinstance(v, float) and k.endswith(("loss", "R1"))))
    if epochs == 0:
        save_clip(run_dir / "last.pt", model, model.config, extra={"run": {**progress}})
    if "val" not in data.evals or progress["best_epoch"] is None:
        save_clip(run_dir / "best.pt", model, model.config, extra={"epoch": progress["best_epoch"]})
    return final_results(cfg, model, data, run_dir, progress, device, dtype)


def run_config(config: str, run_dir: Path, overrides: list[str]) -> float:
    """`cpcl train -c config overrides --out run_dir` (config: a file or a shipped name); returns
    the run's wall-clock seconds."""
    start = time.perf_counter()
    run_training(load_config(TrainConfig, resolve_config_path(config), overrides), run_dir)
    return time.perf_counter() - start
