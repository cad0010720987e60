"""The quality benchmark: on one generated SynthPedes and one pretrained start, train every
baseline and every CPCL ablation of METHOD.md for several seeds, and tabulate test metrics.

Layout of OUT: data/ (SynthPedes + pretraining corpus), pretrain/ (the shared start),
runs/METHOD_sSEED/ (one `cpcl train` run each; a finished run is not redone, so an interrupted
benchmark continues where it stopped), results.json and table.md.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cpcl.engine.train import run_config
from cpcl.evaluation.report import METRICS
from cpcl.synth.config import SynthConfig
from cpcl.synth.writer import PRETRAIN_DIR, write_pretrain_corpus, write_synthpedes
from cpcl.utils.errors import ConfigError

# method name -> config overrides on top of the `synthpedes` config (METHOD.md's baselines and ablations)
METHODS: dict[str, tuple[str, ...]] = {
    "zero_shot": ("method=zero_shot",),
    "itc": ("method=itc",),
    "cpcl": ("method=cpcl",),
    "pcm_single": ("cpcl.pcm=single",),
    "pcm_cross": ("cpcl.pcm=cross",),
    "memory_update_off": ("cpcl.memory_update=off",),
    "oplm_off": ("cpcl.oplm=off",),
    "oplm_one_stage": ("cpcl.oplm=one_stage",),
    "icpm_text": ("cpcl.icpm_positives=text",),
    "icpm_either": ("cpcl.icpm_positives=either",),
    "icpm_both": ("cpcl.icpm_positives=both",),
    "icpm_off": ("cpcl.icpm_weight=0",),
    "oracle": ("method=oracle",),
}
# the methods the targets compare (run for every seed); the others are ablations of CPCL
BASELINES = ("zero_shot", "itc", "cpcl", "oracle")


@dataclass(frozen=True)
class BenchPreset:
    """Sizes of one benchmark preset."""

    ids: tuple[int, int, int]  # SynthPedes identities per split (train, val, test)
    pretrain_pairs: int  # pairs of the pretraining corpus
    pretrain_epochs: int  # pretraining epochs
    epochs: int  # fine-tuning epochs of every method
    preset: str = "small"  # CLIP preset pretrained from scratch
    extra: tuple[str, ...] = field(default=())  # further overrides of every run


BENCH_PRESETS: dict[str, BenchPreset] = {
    # CI-sized: a few minutes for the whole method list on 2 cores; numbers are not meaningful
    "fast": BenchPreset(ids=(24, 8, 10), pretrain_pairs=256, pretrain_epochs=1, epochs=1, preset="tiny",
                        extra=("optim.batch_size=32",)),
    # under an hour on 2 cores (baselines x 2 seeds, ablations x 1): the demo's data and pretraining
    # and synthpedes.yaml's recipe, 3 fine-tuning epochs
    "standard": BenchPreset(ids=(300, 50, 100), pretrain_pairs=12000, pretrain_epochs=2, epochs=3),
}


def bench_preset(name: str) -> BenchPreset:
    if name not in BENCH_PRESETS:
        raise ConfigError(f"unknown benchmark preset {name!r}; valid: {', '.join(BENCH_PRESETS)}")
    return BENCH_PRESETS[name]


def generate_data(root: Path, ids: tuple[int, int, int], pretrain_pairs: int, seed: int) -> None:
    """SynthPedes (root/CUHK-PEDES) and its web-style pretraining corpus (root/SynthPedes-pretrain)."""
    train, val, test = ids
    cfg = SynthConfig(seed=seed, ids_train=train, ids_val=val, ids_test=test, pretrain_pairs=pretrain_pairs)
    write_synthpedes(root, cfg, overwrite=True)
    write_pretrain_corpus(root, cfg, overwrite=True)


def pretrain_overrides(data: Path, preset: str, epochs: int, seed: int) -> list[str]:
    """Overrides of the `pretrain_synthpedes` config for the data generated under `data`."""
    return [f"seed={seed}", f"model.init=preset:{preset}", f"optim.epochs={epochs}",
            f"data.root={data / PRETRAIN_DIR}", f"eval.root={data}"]


def finetune_overrides(data: Path, start: Path, epochs: int, seed: int) -> list[str]:
    """Overrides of the `synthpedes` config: fine-tune checkpoint `start` on the data under `data`."""
    return [f"seed={seed}", f"optim.epochs={epochs}", f"model.init={start}", f"data.root={data}"]


def prepare(preset: BenchPreset, out: Path) -> Path:
    """Generate the data and pretrain the shared start (each once); returns its checkpoint."""
    data, pretrain = out / "data", out / "pretrain"
    if not (data / "CUHK-PEDES" / "reid_raw.json").is_file() or not (data / PRETRAIN_DIR).is_dir():
        generate_data(data, preset.ids, preset.pretrain_pairs, seed=0)
    if not (pretrain / "results.json").is_file():
        run_config("pretrain_synthpedes", pretrain,
                   [*pretrain_overrides(data, preset.preset, preset.pretrain_epochs, seed=0), *preset.extra])
    return pretrain / "best.pt"


def run_quality(preset_name: str, seeds: int, out: Path, methods: list[str], ablation_seeds: int = 1,
                on_run: Callable[[str, int, dict], None] | None = None) -> dict:
    """Each baseline for `seeds` seeds, each ablation for `ablation_seeds` (at most `seeds`);
    writes out/results.json and out/table.md, returns the results dict."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    preset = bench_preset(preset_name)
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "bench.json"
    if stamp.is_file() and json.loads(stamp.read_text())["preset"] != preset_name:
        raise ConfigError(f"{out} holds a benchmark of preset {json.loads(stamp.read_text())['preset']!r}; "
                          f"continue it with that preset or choose another --out")
    stamp.write_text(json.dumps({"preset": preset_name}) + "\n")
    start = prepare(preset, out)
    results: dict = {"preset": preset_name, "methods": {}}
    for method in methods:
        for seed in range(seeds if method in BASELINES else min(ablation_seeds, seeds)):
            run_dir = out / "runs" / f"{method}_s{seed}"
            done = run_dir / "bench.json"
            if not done.is_file():
                seconds = run_config("synthpedes", run_dir, [
                    *METHODS[method], *finetune_overrides(out / "data", start, preset.epochs, seed), *preset.extra])
                test = json.loads((run_dir / "results.json").read_text())["test"]["best"]
                done.write_text(json.dumps({**test, "seconds": seconds}))
            record = {**json.loads(done.read_text()), **_val_r1(run_dir)}
            results["methods"].setdefault(method, {})[str(seed)] = record
            if on_run is not None:
                on_run(method, seed, record)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(quality_table(results))
    return results


def _val_r1(run_dir: Path) -> dict[str, float]:
    """{"val_R1": R1 of the val-selected checkpoint on val} for a run that selected on val, else {}."""
    val = json.loads((run_dir / "results.json").read_text()).get("val")
    return {"val_R1": val["best"]["R1"]} if val else {}


def _mean_spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def quality_table(results: dict) -> str:
    """Markdown: mean ± std over seeds per method, and the comparisons the paper's claims need."""
    lines = [f"Preset `{results['preset']}`, test split, val-selected checkpoints (mean ± std over seeds); "
             "val R1: the selected checkpoint's R1 on val.", "",
             "| method | seeds | " + " | ".join(METRICS) + " | val R1 | training s |",
             "|---|---|" + "---|" * (len(METRICS) + 2)]
    means: dict[str, float] = {}
    for method, per_seed in results["methods"].items():
        rows = list(per_seed.values())
        means[method] = statistics.fmean(r["R1"] for r in rows)
        cells = [_mean_spread([r[m] for r in rows]) for m in METRICS]
        val = [r["val_R1"] for r in rows if "val_R1" in r]
        cells.append(_mean_spread(val) if val else "-")
        lines.append(f"| {method} | {len(rows)} | " + " | ".join(cells)
                     + f" | {statistics.fmean(r['seconds'] for r in rows):.0f} |")
    lines.append("")
    if {"cpcl", "oracle"} <= set(means) and means["oracle"] > 0:
        lines.append(f"- CPCL R1 / oracle R1: {means['cpcl'] / means['oracle']:.3f} (paper, CUHK-PEDES: 0.954)")
    if {"cpcl", "itc"} <= set(means):
        lines.append(f"- CPCL R1 - ITC R1: {means['cpcl'] - means['itc']:+.2f} points")
    if {"oracle", "itc"} <= set(means):
        lines.append(f"- oracle R1 - ITC R1 (room the benchmark leaves): {means['oracle'] - means['itc']:+.2f} points")
    return "\n".join(lines) + "\n"
