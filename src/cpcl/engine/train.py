"""The run: setup, then per epoch extract -> cluster -> mine outliers -> reset memories ->
train -> evaluate -> log -> checkpoint (docs/method.md, One epoch), then the final test.

Run dir: config.yaml (resolved), metrics.jsonl (one record per epoch), last.pt (model +
optimiser + progress, for --resume), best.pt (selected on val, or the last epoch where the
data has no val split) with its card best.md, results.json ({"test": {"best": {...}, "last": {...}}, ...}), train.log,
and with log.tensorboard TensorBoard events in tensorboard/ (cpcl.engine.logs).

Under torchrun every rank runs this file's loop on its slice of each global batch; what is
shared, sharded or rank 0's alone is said in cpcl.engine.distributed.
"""

from __future__ import annotations

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
from cpcl.data.integrity import check_leakage
from cpcl.data.readers import load_dataset
from cpcl.data.records import SplitData
from cpcl.data.transforms import train_transform
from cpcl.engine.config import TrainConfig
from cpcl.engine.distributed import check_world, config_header, extract_sharded, launch_settings, wrap_model
from cpcl.engine.logs import RunLog
from cpcl.engine.loop import PairEncoder, Stepper, build_optimizer, make_scaler, train_one_epoch
from cpcl.engine.objectives import CpclObjective, ItcObjective
from cpcl.engine.pseudo_labels.base import ClusterSettings, PairFeatures, PairLabels
from cpcl.engine.pseudo_labels.oracle import oracle_cluster_quality, oracle_pair_labels, oracle_pair_person_ids
from cpcl.engine.pseudo_labels.registry import cluster_pairs, label_strategy
from cpcl.engine.pseudo_labels.selection import ValSplit, select_on_val
from cpcl.engine.record import EpochRecord
from cpcl.engine.rundir import (RunProgress, append_record, drop_records_from, load_last, prepare_run_dir, save_last,
                                save_model, write_card, write_results)
from cpcl.engine.samplers import PositionedBatches, epoch_sampler
from cpcl.evaluation.evaluate import evaluate_split, person_ids
from cpcl.evaluation.features import extract_image_features, extract_text_features
from cpcl.evaluation.report import Example, retrieval_examples, spaced_queries
from cpcl.model.checkpoints import build_clip, read_checkpoint
from cpcl.model.clip import CLIP, clip_preset
from cpcl.model.inference import LoadedModel
from cpcl.model.tokenizer import default_tokenizer
from cpcl.utils.config import load_config, save_config, to_dict
from cpcl.utils.distributed import (World, broadcast_, broadcast_object, gather_objects, process_group, rank_device,
                                    rank_seed, tensor_digest)
from cpcl.utils.errors import ConfigError, DataError
from cpcl.utils.runtime import numerics, resolve_precision, seed_everything

log = logging.getLogger(__name__)

PRESET_PREFIX = "preset:"  # model.init value meaning "random weights of this preset"


@dataclass
class RunData:
    train: SplitData  # training split (images, captions, pairing)
    tokens: torch.Tensor  # [P, L] token ids of the training captions (pairs)
    image_index: torch.Tensor  # [P] image of each pair
    evals: dict[str, SplitData]  # the "val" / "test" splits present


def load_run_data(cfg: TrainConfig) -> RunData:
    """Training split (its captions tokenized) and evaluation splits, images checked to exist."""
    tokenizer, length = default_tokenizer(), cfg.model.context_length
    safety = {"allow_outside_root": cfg.data.allow_outside_root, "strict": cfg.data.strict}
    train_data = load_dataset(cfg.data.dataset, Path(cfg.data.root), **safety)
    check_images(train_data, decode=False, skip_bad=cfg.data.skip_bad_images)
    eval_data = train_data
    if cfg.eval.dataset is not None or cfg.eval.root is not None:
        eval_data = load_dataset(cfg.eval.dataset or cfg.data.dataset, Path(cfg.eval.root or cfg.data.root),
                                 **safety)
        check_images(eval_data, decode=False, skip_bad=cfg.data.skip_bad_images)
        check_leakage({"train": train_data.splits["train"], "val": eval_data.splits["val"],
                       "test": eval_data.splits["test"]}, eval_data.annotation_file, cfg.data.strict)
    train = train_data.splits["train"]
    if not train.captions:
        raise DataError(f"{train_data.annotation_file} has no training pairs")
    if cfg.method != "zero_shot" and cfg.optim.epochs > 0 and cfg.optim.batch_size > len(train.captions):
        raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} is larger than the {len(train.captions)} "
                          f"training pairs of {train_data.annotation_file}: no step would train; lower it")
    evals = {name: split for name in ("val", "test") if (split := eval_data.splits[name]).images}
    tokens = tokenizer.tokenize([c.text for c in train.captions], length)
    image_index = torch.tensor([c.image_id for c in train.captions], dtype=torch.long)
    return RunData(train, tokens, image_index, evals)


def build_model(cfg: TrainConfig, device: torch.device) -> CLIP:
    """The starting model: a checkpoint at the configured sizes, or a preset's random weights,
    with activation checkpointing as configured. A start trained with other preprocessing than the
    run's (its augment section, which decides) is warned about."""
    init = cfg.model.init
    if init.startswith(PRESET_PREFIX):
        config = clip_preset(init[len(PRESET_PREFIX):], cfg.model.image_size, cfg.model.context_length)
        model = CLIP(config).to(device)
    else:
        start = read_checkpoint(init, cfg.model.architecture())
        model, _ = build_clip(start, cfg.model.image_size, cfg.model.context_length, device)
        preprocessing = cfg.augment.preprocessing(cfg.model.image_size)
        if start.preprocessing is not None and start.preprocessing_at(cfg.model.image_size) != preprocessing:
            log.warning("model.init %s was trained with preprocessing %s; this run uses %s (its augment section)",
                        init, start.preprocessing.to_dict(), preprocessing.to_dict())
    model.set_grad_checkpointing(cfg.model.grad_checkpointing)
    return model


def make_loader(cfg: TrainConfig, data: RunData, batches: torch.utils.data.Sampler, seed: int,
                world: World) -> DataLoader:
    """The epoch's augmented pairs in `batches` (this rank's); the augmentation of the epoch's j-th pair is
    seeded by (`seed`, j) alone, the same for any data.workers and world size."""
    transform = partial(train_transform, size=cfg.model.image_size, cfg=cfg.augment)
    dataset = PairDataset(data.train, data.tokens, transform, seed)
    return DataLoader(dataset, batch_sampler=PositionedBatches(batches, cfg.optim.batch_size, world),
                      num_workers=cfg.data.workers, persistent_workers=False)


@dataclass
class Run:
    """A run's runtime state on this rank."""

    cfg: TrainConfig
    run_dir: Path
    world: World  # this process's rank and the world size
    loaded: LoadedModel  # the bare model with its device, autocast dtype (None: fp32), the eval preprocessing (the
    # config's: extraction, evaluation, every checkpoint) and tokenizer
    data: RunData
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # fp16 loss scaling (disabled, a pass-through, for bf16 / fp32)
    encoder: torch.nn.Module  # what trains: PairEncoder(model), DDP-wrapped when distributed
    progress: RunProgress  # epochs and steps done, the best val checkpoint: saved in last.pt
    log: RunLog  # train.log and TensorBoard (rank 0)

    @property
    def model(self) -> CLIP:
        """The model being trained (checkpoints, extraction, evaluation)."""
        return self.loaded.model

    @property
    def device(self) -> torch.device:
        return self.loaded.device


def train_features(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1: image features [N_img, D] and caption features [P, D], in dataset order on every
    rank, each rank extracting its shard."""
    cfg, data, batch = run.cfg, run.data, run.cfg.eval.batch_size
    paths = [image.path for image in data.train.images]
    image_feats = extract_sharded(
        lambda start, stop: extract_image_features(run.loaded, paths[start:stop], batch, cfg.data.workers,
                                                   progress="train images"),
        len(paths), batch, run.world, run.device)
    text_feats = extract_sharded(
        lambda start, stop: extract_text_features(run.loaded, data.tokens[start:stop], batch, desc="train captions"),
        len(data.tokens), batch, run.world, run.device)
    return image_feats, text_feats


def val_split(run: Run) -> ValSplit:
    """The val split's features (step 1 on val) with its person ids, for cluster_select.on=val (rank 0)."""
    cfg, data = run.cfg, run.data
    if "val" not in data.evals:
        raise DataError("cluster_select.on=val needs a val split with person ids; this data has none "
                        "(use cluster_select.on=fixed)")
    split = data.evals["val"]
    caption_ids, image_ids = person_ids(split, "val")  # the val split's ids, as best.pt's selection; never train's
    image_index = torch.tensor([caption.image_id for caption in split.captions], dtype=torch.long)
    batch, workers = cfg.eval.batch_size, cfg.data.workers
    image_feats = extract_image_features(run.loaded, [image.path for image in split.images], batch, workers,
                                         progress="val images")
    tokens = run.loaded.tokenize([caption.text for caption in split.captions])
    text_feats = extract_text_features(run.loaded, tokens, batch, desc="val captions")
    return ValSplit(PairFeatures(image_feats, text_feats, image_index), image_ids, caption_ids)


def cluster_settings(run: Run) -> tuple[ClusterSettings, dict[str, float]]:
    """The clustering settings of this epoch: cluster.* as configured for images, captions and pairs, or with
    cluster_select.on=val the grid settings that cluster the val split's features best (rank 0), with the
    `select_` statistics of the choice."""
    cfg = run.cfg
    fixed = ClusterSettings.fixed(cfg.cluster.config(), cfg.labels.pair_fused.weights)
    if cfg.cluster_select.on == "fixed":
        return fixed, {}
    return select_on_val(val_split(run), label_strategy(cfg.labels.mode).clusters, fixed, cfg.cluster_select.grid,
                         cfg.labels.pair_fused.tried_on_val())


@dataclass
class EpochLabels:
    """The label phase's result on rank 0: the labels, and what the record keeps of how they were made."""

    labels: PairLabels  # what trains (sent to every rank)
    selection: dict[str, float]  # select_*: the clustering chosen on val (empty with cluster_select.on=fixed)
    oracle: dict[str, float]  # oracle_*: the labels against true ids, where the data has them (diagnostics)


def pseudo_labels(run: Run, feats: PairFeatures) -> EpochLabels:
    """Steps 2-3b (or the oracle's true ids), with the `oracle_` diagnostics of the labels where ids exist."""
    cfg, data = run.cfg, run.data
    oracle_ids = oracle_pair_person_ids(data.train)
    if cfg.method == "oracle":
        if oracle_ids is None:
            raise DataError("method=oracle needs person ids in the training data; this data has none")
        return EpochLabels(oracle_pair_labels(oracle_ids), {}, {})
    settings, selection = cluster_settings(run)
    labels = cluster_pairs(feats, settings, cfg.labels.mode, cfg.cpcl)
    oracle = {} if oracle_ids is None else {**oracle_cluster_quality(labels.image, oracle_ids, "image"),
                                            **oracle_cluster_quality(labels.text, oracle_ids, "text")}
    return EpochLabels(labels, selection, oracle)


def epoch_objective(run: Run, record: EpochRecord) -> tuple[ItcObjective | CpclObjective, torch.Tensor | None]:
    """Steps 1-4 for this epoch: the objective, and the labels a pk sampler groups by (or None); the phases'
    times, label statistics, val selection and diagnostics into `record`. Labels come from rank 0; the
    memories start from rank 0's."""
    cfg, world = run.cfg, run.world
    if cfg.method == "itc":
        return ItcObjective(), None
    start = time.perf_counter()
    image_feats, text_feats = train_features(run)
    record.times["time_extract"] = time.perf_counter() - start
    start = time.perf_counter()
    feats = PairFeatures(image_feats, text_feats, run.data.image_index)
    made = pseudo_labels(run, feats) if world.is_main else None
    labels = broadcast_object(made.labels if made is not None else None, world)
    record.times["time_cluster"] = time.perf_counter() - start
    if made is not None:
        record.selection, record.oracle = made.selection, made.oracle
    record.labels = dict(labels.stats)
    record.labels_digest = tensor_digest(labels.image, labels.text)
    objective = CpclObjective(labels, feats.pair_image_feats, text_feats, cfg.cpcl, run.device)
    for bank in objective.memory_banks():
        broadcast_(bank, world)
    return objective, labels.image


def evaluate(run: Run, name: str) -> dict[str, float]:
    """The run's model on its `name` split ("val" / "test"), with the preprocessing its checkpoints record
    (re-ranked with eval.rerank)."""
    split = run.data.evals[name]
    section = run.cfg.eval
    rerank = section.rerank_options.config(run.cfg.cluster.config().search) if section.rerank else None
    return evaluate_split(run.loaded, split, section.batch_size, run.cfg.data.workers, name=name, rerank=rerank)


def final_results(run: Run) -> dict:
    """Test metrics of the last and the best checkpoint; written to results.json."""
    cfg, model, data, run_dir, progress = run.cfg, run.model, run.data, run.run_dir, run.progress
    results: dict = {"method": cfg.method, "epochs": progress.epoch,
                     "selected_on": "val" if "val" in data.evals else "last", "best_epoch": progress.best_epoch,
                     "numerics": numerics(run.device, run.loaded.dtype)}
    if "test" in data.evals:
        last = evaluate(run, "test")
        best = last
        if progress.best_epoch not in (None, progress.epoch - 1) and (run_dir / "best.pt").is_file():
            model.load_state_dict(read_checkpoint(run_dir / "best.pt").state_dict, strict=True)
            best = evaluate(run, "test")
        results["test"] = {"best": best, "last": last}
    if progress.best_val is not None:
        results["val"] = {"best": progress.best_val}
    write_results(run_dir, results)
    return results


def start_run(cfg: TrainConfig, run_dir: Path, resume: bool, world: World, device: torch.device,
              run_log: RunLog) -> Run:
    """Config and metrics files (rank 0), data, model, optimiser, progress (from last.pt when
    resuming, on every rank), the encoder that trains, and TensorBoard from the progress's step."""
    dtype = resolve_precision(cfg.precision, device)
    preprocessing = cfg.augment.preprocessing(cfg.model.image_size)
    settings = launch_settings(cfg, world, device)
    seed_everything(cfg.seed)
    if world.is_main:
        prepare_run_dir(run_dir, resume, lambda path: save_config(cfg, path, header=config_header(settings)))
    log.info("run %s: method %s on %s, precision %s", run_dir, cfg.method, device, dtype or "fp32")
    log.info("numerics (what else its results depend on): %s", numerics(device, dtype))
    if world.size > 1:
        log.info("distributed: %s", ", ".join(f"{k} {v}" for k, v in settings.items() if k != "lr_scaling"))
    data = load_run_data(cfg)
    model = build_model(cfg, device)
    optimizer = build_optimizer(model, cfg.optim)
    scaler = make_scaler(dtype, device)
    progress = RunProgress()
    if resume:
        progress = load_last(run_dir, model, optimizer, scaler)
        log.info("resuming %s at epoch %d", run_dir, progress.epoch + 1)
    if world.is_main:
        drop_records_from(run_dir, progress.epoch)
    run_log.begin(progress.step)
    find_unused = cfg.method != "itc" and cfg.cpcl.itc_weight == 0  # the logit scale then idles in CPCL epochs
    encoder = wrap_model(PairEncoder(model, device, dtype), world, device, find_unused)
    return Run(cfg, run_dir, world, LoadedModel(model, device, dtype, preprocessing), data, optimizer, scaler, encoder,
               progress, run_log)


def train_epoch(run: Run, epoch: int) -> EpochRecord:
    """Steps 1-5 of one epoch on every rank; returns the epoch's record (rank 0's is logged)."""
    cfg, world = run.cfg, run.world
    seed_everything(rank_seed(cfg.seed + epoch, world.rank))
    record = EpochRecord(epoch, cfg.method, world.size)
    objective, group_labels = epoch_objective(run, record)
    sampler = epoch_sampler(len(run.data.tokens), cfg.optim.batch_size,
                            group_labels if cfg.cpcl.sampler == "pk" else None, cfg.cpcl.pk_instances,
                            cfg.seed + epoch, world)
    loader = make_loader(cfg, run.data, sampler, cfg.seed + epoch, world)
    start, first_step = time.perf_counter(), run.progress.step

    def on_step(step: int, values: dict[str, float]) -> None:
        run.log.step(first_step + step, values)

    stepper = Stepper(run.encoder, run.optimizer, run.scaler, run.device, world)
    record.trained(train_one_epoch(stepper, loader, objective, epoch, cfg.optim, on_step=on_step))
    record.times["time_train"] = time.perf_counter() - start
    run.progress.step += len(loader)
    if banks := objective.memory_banks():
        record.memory_digests = gather_objects(tensor_digest(*banks), world)
    return record


def evaluate_epoch(run: Run, epoch: int, last_epoch: bool, record: EpochRecord) -> None:
    """Val metrics into the record and best.pt when val R1 improves (rank 0)."""
    cfg, data, progress = run.cfg, run.data, run.progress
    if "val" in data.evals and ((epoch + 1) % cfg.eval.every == 0 or last_epoch):
        start = time.perf_counter()
        val = evaluate(run, "val")
        record.val = {f"val_{k}": v for k, v in val.items()}
        record.times["time_eval"] = time.perf_counter() - start
        if val["R1"] > progress.best_r1:
            progress.best_r1, progress.best_epoch, progress.best_val = val["R1"], epoch, val
            save_model(run.run_dir, "best.pt", run.model, run.loaded.preprocessing, {"epoch": epoch, "val": val})
    elif "val" not in data.evals:
        progress.best_epoch = epoch


def finish_run(run: Run, epochs: int) -> dict:
    """The final checkpoints and results.json (rank 0); every rank returns rank 0's results."""
    results = None
    if run.world.is_main:
        model, progress = run.model, run.progress
        if epochs == 0:
            save_model(run.run_dir, "last.pt", model, run.loaded.preprocessing, {"run": progress.to_dict()})
        if "val" not in run.data.evals or progress.best_epoch is None:
            save_model(run.run_dir, "best.pt", model, run.loaded.preprocessing, {"epoch": progress.best_epoch})
        results = final_results(run)
        run.log.final(progress.step, results, to_dict(run.cfg), final_examples(run))
        write_card(run.run_dir)
    return broadcast_object(results, run.world)


def final_examples(run: Run) -> list[Example]:
    """log.examples test queries with the top log.examples_k of the model as it is (the best checkpoint, after
    `final_results`), for TensorBoard; none without it or a test split."""
    cfg = run.cfg
    if not (cfg.log.tensorboard and cfg.log.examples and "test" in run.data.evals):
        return []
    split = run.data.evals["test"]
    return retrieval_examples(run.loaded, split, spaced_queries(len(split.captions), cfg.log.examples),
                              cfg.log.examples_k, cfg.eval.batch_size, cfg.data.workers)


def run_training(cfg: TrainConfig, run_dir: Path, resume: bool = False, world: World | None = None) -> dict:
    """Train (or, for method zero_shot, only evaluate) into `run_dir`; returns results.json's dict.

    world: this process's rank in a torchrun launch (None: a single process). Every rank runs
    this; rank 0 alone evaluates, logs records and writes the run directory.
    """
    world = world or World()
    device = rank_device(cfg.device, world)
    check_world(cfg, world)
    run_log = RunLog(Path(run_dir), cfg.log.tensorboard, world.is_main, resume)
    with process_group(world, device), run_log:
        run = start_run(cfg, Path(run_dir), resume, world, device, run_log)
        epochs = 0 if cfg.method == "zero_shot" else cfg.optim.epochs
        for epoch in range(run.progress.epoch, epochs):
            record = train_epoch(run, epoch)
            run.progress.epoch = epoch + 1
            if world.is_main:
                evaluate_epoch(run, epoch, epoch + 1 == epochs, record)
                append_record(run.run_dir, record)
                run_log.epoch(run.progress.step, record)
                save_last(run.run_dir, run.model, run.loaded.preprocessing, run.optimizer, run.progress, run.scaler)
            shown = {**record.losses, **record.val}
            log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in shown.items()
                                                          if k.endswith(("loss", "R1"))))
        return finish_run(run, epochs)


def run_config(config: str, run_dir: Path, overrides: list[str]) -> float:
    """`cpcl train -c config overrides --out run_dir` (config: a file or a shipped name); returns
    the run's wall-clock seconds."""
    start = time.perf_counter()
    run_training(load_config(TrainConfig, resolve_config_path(config), overrides), run_dir)
    return time.perf_counter() - start
