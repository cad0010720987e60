"""The quality benchmark: on one generated SynthPedes and one pretrained start, train every
baseline and every CPCL ablation of docs/method.md for several seeds, and tabulate test metrics with
the paired CPCL - ITC difference per seed and its interval.

Layout of OUT: data/ (SynthPedes, and the pretraining corpus when the preset pretrains from
scratch), pretrain/ (that start), runs/METHOD_sSEED/ (one `cpcl train` run each; a finished run
is not redone, so an interrupted benchmark continues where it stopped), results.json, table.md.
With jobs > 1, that many runs train at once in worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cpcl.data.readers import load_json
from cpcl.engine.rundir import METRICS, read_epoch_records
from cpcl.engine.train import run_config
from cpcl.experiments.common import finetune_overrides, generate_data, has_data, pretrain_start
from cpcl.experiments.plans import SCRATCH
from cpcl.experiments.quality_table import quality_table
from cpcl.synth.config import DEFAULT_SHAPE, SynthConfig
from cpcl.utils.errors import ConfigError

# pair_fused labels whose (image, text, cross) weights val chooses, tried beside labels.pair_fused.weights
# (1, 1, 0.5): from image-only to text-only, as the val split says each modality finds people
FUSED_ON_VAL = ("labels.mode=pair_fused", "labels.pair_fused.weights_on_val="
                "[[1,1,0],[1,0.5,0.25],[1,0.25,0.25],[1,0,0],[0.5,1,0.25],[0.25,1,0.25],[0,1,0]]")
# the cluster terms (PCM, ICPM) at a quarter of their weight beside the ITC term
QUARTER_CLUSTER_TERMS = ("cpcl.pcm_weight=0.25", "cpcl.icpm_weight=0.25")
# method name -> config overrides on top of the `synthpedes` config (docs/method.md's baselines and ablations)
METHODS: dict[str, tuple[str, ...]] = {
    "zero_shot": ("method=zero_shot",),
    "itc": ("method=itc",),
    "cpcl": ("method=cpcl",),
    "cluster_fixed": ("cluster_select.on=fixed",),
    "pcm_single": ("cpcl.pcm=single",),
    "pcm_cross": ("cpcl.pcm=cross",),
    "memory_update_off": ("cpcl.memory_update=off",),
    "oplm_off": ("cpcl.oplm=off",),
    "oplm_one_stage": ("cpcl.oplm=one_stage",),
    "icpm_text": ("cpcl.icpm_positives=text",),
    "icpm_either": ("cpcl.icpm_positives=either",),
    "icpm_both": ("cpcl.icpm_positives=both",),
    "icpm_off": ("cpcl.icpm_weight=0",),
    "cluster_terms_quarter": QUARTER_CLUSTER_TERMS,
    "labels_image_centred": ("labels.mode=image_centred",),
    "labels_pair_fused": ("labels.mode=pair_fused",),
    "labels_fused_on_val": FUSED_ON_VAL,
    "rerank": ("eval.rerank=true",),
    # cpcl_plus.yaml's recipe: labels_fused_on_val and cluster_terms_quarter together
    "cpcl_plus": (*FUSED_ON_VAL, *QUARTER_CLUSTER_TERMS),
    "oracle": ("method=oracle",),
    # the oracle with the cluster terms at a quarter weight: the room cluster_terms_quarter's losses leave
    "oracle_quarter": ("method=oracle", *QUARTER_CLUSTER_TERMS),
    # the oracle's batches drawn as P people x K pairs (cpcl.sampler=pk): ICPM then sees a person's other pairs
    # as positives in every batch, the identity-level matching IRRA's SDM does
    "oracle_pk": ("method=oracle", "cpcl.sampler=pk"),
}
# the methods the targets compare (run for every seed); the others are ablations of CPCL
BASELINES = ("zero_shot", "itc", "cpcl", "oracle")
STAMP = "bench.json"  # a benchmark folder's {"preset": NAME, "ids": ..., "synth": ...}; a run folder's test metrics


@dataclass(frozen=True)
class BenchPreset:
    """Sizes of one benchmark preset."""

    ids: tuple[int, int, int]  # SynthPedes identities per split (train, val, test)
    epochs: int  # fine-tuning epochs of every method
    start: str = "synthpedes-small"  # checkpoint every method starts from; "scratch": pretrain one first
    pretrain_pairs: int = 0  # pairs of the pretraining corpus (start "scratch" only)
    pretrain_epochs: int = 0  # pretraining epochs (start "scratch" only)
    preset: str = "small"  # CLIP preset pretrained from scratch (start "scratch" only)
    extra: tuple[str, ...] = field(default=())  # further overrides of every run
    style: str = "standard"  # the SynthPedes style of the benchmark splits (SynthConfig.styled)
    shape: str = DEFAULT_SHAPE  # the real dataset whose images per person and captions per image SynthPedes follows
    synth: tuple[tuple[str, Any], ...] = ()  # further SynthConfig fields of the benchmark splits (name, value)

    def generate(self, root: Path, ids: tuple[int, int, int], pretrain_pairs: int = 0,
                 synth: dict[str, Any] | None = None) -> None:
        """This preset's SynthPedes (seed 0: its style, shape and SynthConfig fields, then `synth`'s) with `ids`
        people per split under `root`, and the pretraining corpus when `pretrain_pairs` > 0 (`generate_data`)."""
        generate_data(root, ids, seed=0, pretrain_pairs=pretrain_pairs, style=self.style, shape=self.shape,
                      **{**dict(self.synth), **(synth or {})})


BENCH_PRESETS: dict[str, BenchPreset] = {
    # CI-sized: a few minutes for the whole method list on 2 cores; numbers are not meaningful
    "fast": BenchPreset(ids=(24, 8, 10), epochs=1, start=SCRATCH, pretrain_pairs=256, pretrain_epochs=1,
                        preset="tiny", extra=("optim.batch_size=32",)),
    # from the shipped start with synthpedes.yaml's recipe, on the default SynthPedes
    # (CUHK-PEDES shape); baselines x 3 seeds and ablations x 1 in about 90 minutes on 2 cores
    "standard": BenchPreset(ids=(500, 100, 100), epochs=6),
    # the same sizes, drawn and worded differently from the start's pretraining corpus (other cameras,
    # other annotators): the start has a domain gap to close, as on real data
    "shifted": BenchPreset(ids=(500, 100, 100), epochs=6, style="shifted"),
    # the shifted preset with a val split three times larger (same train and test people): does a
    # larger val rank methods as test does?
    "shifted_val300": BenchPreset(ids=(500, 300, 100), epochs=6, style="shifted"),
    # the shifted preset in ICFG-PEDES' shape (2 + Poisson(9.2) images a person, 1 caption an image):
    # 300 train identities give about as many pairs as shifted's 500
    "shifted_icfg": BenchPreset(ids=(300, 100, 100), epochs=6, style="shifted", shape="icfg-pedes"),
    # the shifted preset in RSTPReid's shape (5 images a person, 2 captions an image): 300 train
    # identities give about as many pairs as shifted's 500
    "shifted_rstp": BenchPreset(ids=(300, 100, 100), epochs=6, style="shifted", shape="rstpreid"),
    # the shifted preset with captions that name half as much of a person (caption_coverage 0.3, default 0.6):
    # do identities, which join captions naming different parts of one person, then count for more?
    "shifted_partial": BenchPreset(ids=(500, 100, 100), epochs=6, style="shifted", synth=(("caption_coverage", 0.3),)),
    # the shifted preset where each image leaves each removable item (hat, bag, accessory) off with
    # probability 0.5, its captions describing the image as drawn: a person's images differ in what
    # their captions name, so a caption's own image and the person's others are no longer alike
    "shifted_outfits": BenchPreset(ids=(500, 100, 100), epochs=6, style="shifted",
                                   synth=(("outfit_change_prob", 0.5),)),
    # the shifted preset trained twice as long (12 epochs): do identities count for more late in training?
    "shifted_long": BenchPreset(ids=(500, 100, 100), epochs=12, style="shifted"),
    # the observed style (captions written from each image: colours as seen, what the scene hides, shared
    # salience, annotators with habits; detector boxes, view details, fixed cameras, readable figures), with
    # val and test splits large enough to tell methods apart (500 val people choose the checkpoints)
    "observed": BenchPreset(ids=(500, 500, 1000), epochs=6, style="observed"),
    # the observed style in ICFG-PEDES' shape (11 images a person, 1 caption an image) and RSTPReid's (5 and 2)
    "observed_icfg": BenchPreset(ids=(300, 300, 1000), epochs=6, style="observed", shape="icfg-pedes"),
    "observed_rstp": BenchPreset(ids=(300, 300, 1000), epochs=6, style="observed", shape="rstpreid"),
}


def bench_preset(name: str, ids: tuple[int, int, int] | None = None, synth: dict[str, Any] | None = None,
                 train: tuple[str, ...] = ()) -> BenchPreset:
    """The preset `name`, with other split sizes `ids`, further SynthConfig fields `synth` and further overrides
    of every run `train` (after the preset's own) when given."""
    if name not in BENCH_PRESETS:
        raise ConfigError(f"unknown benchmark preset {name!r}; valid: {', '.join(BENCH_PRESETS)}")
    preset = BENCH_PRESETS[name]
    if ids is not None:
        preset = replace(preset, ids=tuple(ids))
    if train:
        preset = replace(preset, extra=(*preset.extra, *train))
    if synth:
        unknown = sorted(set(synth) - {f.name for f in fields(SynthConfig)})
        if unknown:
            raise ConfigError(f"unknown SynthPedes field(s) {', '.join(unknown)}; valid: "
                              f"{', '.join(f.name for f in fields(SynthConfig))}")
        values = {key: tuple(value) if isinstance(value, list) else value for key, value in synth.items()}
        preset = replace(preset, synth=tuple({**dict(preset.synth), **values}.items()))
        SynthConfig.styled(preset.style, preset.shape, **dict(preset.synth))  # refuses a bad value in one line
    return preset


def stamped_preset(out: Path) -> tuple[str, BenchPreset]:
    """The preset name and the preset (its sizes and SynthConfig fields as run) of the benchmark in `out`."""
    recorded = _read_stamp(out)
    if recorded is None:
        raise ConfigError(f"{out} is not a benchmark folder (no {STAMP}): run `cpcl bench quality --out {out}` "
                          "first")
    ids = tuple(recorded["ids"]) if "ids" in recorded else None
    return recorded["preset"], bench_preset(recorded["preset"], ids, recorded.get("synth"),
                                            tuple(recorded.get("train", ())))


def _read_stamp(out: Path) -> dict[str, Any] | None:
    """out/bench.json as `_stamp` writes it, None when there is none; one line when it is damaged or is not what
    `cpcl bench quality` writes."""
    stamp = out / STAMP
    if not stamp.is_file():
        return None
    raw = load_json(stamp)
    ids = raw.get("ids", [1, 1, 1]) if isinstance(raw, dict) else None  # stamps before --ids name the preset only
    sizes = isinstance(ids, list) and len(ids) == 3 and all(type(n) is int for n in ids)
    if not (sizes and isinstance(raw.get("preset"), str) and isinstance(raw.get("synth", {}), dict)):
        raise ConfigError(f"{stamp} is not a benchmark's stamp ({{\"preset\": NAME, \"ids\": [TRAIN, VAL, TEST], "
                          f"\"synth\": {{FIELD: VALUE}}}}); delete it, then run cpcl bench quality --out {out} again")
    return raw


def _added_overrides(preset_name: str, preset: BenchPreset) -> list[str]:
    """The overrides of every run that `preset` adds to the preset `preset_name`'s own (`--train`)."""
    return list(preset.extra[len(BENCH_PRESETS[preset_name].extra):])


def _stamp(out: Path, preset_name: str, preset: BenchPreset) -> None:
    """Write out/bench.json, refusing a folder that holds a benchmark of another preset, sizes or data."""
    record = {"preset": preset_name, "ids": list(preset.ids), "synth": dict(preset.synth),
              "train": _added_overrides(preset_name, preset)}
    held = _read_stamp(out)
    if held is not None and held["preset"] != preset_name:
        raise ConfigError(f"{out} holds a benchmark of preset {held['preset']!r}; continue it with that preset or "
                          "choose another --out")
    if held is not None and (kept := stamped_preset(out)[1]) != preset:
        raise ConfigError(f"{out} holds a benchmark of preset {preset_name!r} (ids {list(kept.ids)}, synth "
                          f"{dict(kept.synth)}, train {_added_overrides(preset_name, kept)}); continue it with those "
                          "or choose another --out")
    (out / STAMP).write_text(json.dumps(record) + "\n")


def prepare(preset: BenchPreset, out: Path) -> str | Path:
    """Generate the data (once) and, for a start from scratch, pretrain it (once); returns the
    start every method fine-tunes: a shipped name or the pretrained checkpoint."""
    data, scratch = out / "data", preset.start == SCRATCH
    if not has_data(data, pretraining=scratch):
        preset.generate(data, preset.ids, pretrain_pairs=preset.pretrain_pairs if scratch else 0)
    if not scratch:
        return preset.start
    return pretrain_start(data, out / "pretrain", preset.preset, preset.pretrain_epochs, seed=0, extra=preset.extra)


def run_quality(preset_name: str, seeds: int, out: Path, methods: list[str], ablation_seeds: int = 1,
                on_run: Callable[[str, int, dict], None] | None = None, jobs: int = 1,
                ids: tuple[int, int, int] | None = None, synth: dict[str, Any] | None = None,
                train: tuple[str, ...] = ()) -> dict:
    """Each baseline for `seeds` seeds, each ablation for `ablation_seeds` (at most `seeds`);
    writes out/results.json and out/table.md, returns the results dict. `jobs` > 1 trains that
    many runs at once, in worker processes sharing the CPU threads (see `_run_parallel`). `ids`, `synth`
    and `train` replace the preset's split sizes, add SynthConfig fields and add overrides of every run
    (`bench_preset`). Takes 10 parameters because they are `cpcl bench quality`'s options."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    preset = bench_preset(preset_name, ids, synth, train)
    out.mkdir(parents=True, exist_ok=True)
    _stamp(out, preset_name, preset)
    start = prepare(preset, out)
    runs = [BenchRun(method, seed, out / "runs" / f"{method}_s{seed}",
                     (*METHODS[method], *finetune_overrides(out / "data", start, preset.epochs, seed), *preset.extra))
            for method in methods for seed in range(seeds if method in BASELINES else min(ablation_seeds, seeds))]
    pending = [run for run in runs if not run.finished]
    for run in (_run_parallel(pending, jobs) if jobs > 1 else map(_train_one, pending)):
        if on_run is not None:
            on_run(run.method, run.seed, run.record())
    results: dict = {"preset": preset_name, "methods": {}}
    for run in runs:
        results["methods"].setdefault(run.method, {})[str(run.seed)] = run.record()
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(quality_table(results))
    return results


@dataclass(frozen=True)
class BenchRun:
    """One `cpcl train` run of the benchmark: its method, seed, folder and overrides of `synthpedes`."""

    method: str
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]

    @property
    def finished(self) -> bool:
        """Whether the run wrote its bench.json (`_train_one`): it is then kept, not redone."""
        return (self.run_dir / STAMP).is_file()

    def record(self) -> dict:
        """Its row of results.json: bench.json's test metrics and seconds, the last epoch's test R1 and mAP
        ("last_R1", "last_mAP"), its val R1 and the purity of its last pseudo labels (`_val_and_purity`)."""
        last = load_json(self.run_dir / "results.json")["test"]["last"]
        return {**load_json(self.run_dir / STAMP), "last_R1": last["R1"], "last_mAP": last["mAP"],
                **_val_and_purity(self.run_dir)}


def _train_one(run: BenchRun) -> BenchRun:
    """Train `run` and write its bench.json (the test metrics of its val-selected checkpoint and the
    wall-clock seconds); a run's bench.json is what marks it finished."""
    seconds = run_config("synthpedes", run.run_dir, list(run.overrides))
    test = json.loads((run.run_dir / "results.json").read_text())["test"]["best"]
    (run.run_dir / STAMP).write_text(json.dumps({**test, "seconds": seconds}))
    return run


def _worker_init(threads: int) -> None:
    """A benchmark worker: `threads` intra-op threads; each run's records go to its train.log, and
    only warnings reach the console (logging's last-resort handler: the worker has no other)."""
    import logging

    import torch

    torch.set_num_threads(threads)
    logging.getLogger("cpcl").setLevel(logging.INFO)


def _run_parallel(runs: list[BenchRun], jobs: int) -> Iterator[BenchRun]:
    """Train `runs`, `jobs` at a time, each in a spawned worker process with cores / jobs threads;
    yields each run as it finishes. OpenMP's threads wait passively there (OMP_WAIT_POLICY): with
    spinning waits, processes sharing the cores slow each other down several times over."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    saved = {key: os.environ.get(key) for key in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    os.environ.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads))  # inherited by the workers
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init, initargs=(threads,)) as pool:
            futures = [pool.submit(_train_one, run) for run in runs]
            for future in as_completed(futures):
                yield future.result()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _val_and_purity(run_dir: Path) -> dict[str, float]:
    """"val_R1": R1 of the val-selected checkpoint on val (a run that selected on val); "image_purity": the
    `oracle_image_purity` of the last epoch's pseudo labels (a run that made them, metrics.jsonl)."""
    val = json.loads((run_dir / "results.json").read_text()).get("val")
    out = {"val_R1": val["best"]["R1"]} if val else {}
    records = read_epoch_records(run_dir / METRICS) if (run_dir / METRICS).is_file() else []
    purity = [record.oracle["oracle_image_purity"] for record in records if "oracle_image_purity" in record.oracle]
    return {**out, "image_purity": purity[-1]} if purity else out
