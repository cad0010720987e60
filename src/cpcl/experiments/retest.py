"""Re-testing a finished quality benchmark on larger held-out splits, without training again.

A benchmark's 100 test people make R1 gaps of two points split noise (docs/experiments.md). SynthPedes
draws a split's first N people independently of how many are asked for and of the other splits'
sizes, so the benchmark's data generated again with more val and test people keeps its train split,
byte for byte, and its val and test people as the first of each split. Every finished run's
val-selected checkpoint (best.pt, as the benchmark reported it) and its last epoch's (last.pt) are
evaluated on both larger splits.

Layout of BENCH/retest_VxT/: data/ (the larger SynthPedes), runs/METHOD_sSEED.json (one per run; a
re-test already written is kept, so an interrupted re-test continues), results.json, table.md
(`quality_table`: test metrics on the T test people, "val R1" on the V val people, "last_*" those of
last.pt, training seconds and pseudo-label purity from the benchmark's own runs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cpcl.data.readers import load_dataset, load_json
from cpcl.evaluation.evaluate import evaluate_split
from cpcl.experiments.bench import METHODS, BenchRun, stamped_preset
from cpcl.experiments.common import has_data
from cpcl.experiments.quality_table import quality_table
from cpcl.model.inference import load_for_inference
from cpcl.utils.errors import ConfigError

DATASET = "cuhk-pedes"  # the format every benchmark preset generates


def finished_runs(bench_dir: Path) -> list[BenchRun]:
    """The benchmark's finished runs (`BenchRun.finished`), in METHODS order, then by seed; their overrides
    are not needed to re-test them and are left empty."""
    runs = []
    for run_dir in sorted((bench_dir / "runs").glob("*_s*")):
        method, _, seed = run_dir.name.rpartition("_s")
        if method in METHODS and seed.isdigit():
            run = BenchRun(method, int(seed), run_dir, ())
            if run.finished:
                runs.append(run)
    order = list(METHODS)
    return sorted(runs, key=lambda run: (order.index(run.method), run.seed))


def retest_dir(bench_dir: Path, ids_val: int, ids_test: int) -> Path:
    """Where `retest` writes: bench_dir/retest_VxT."""
    return bench_dir / f"retest_{ids_val}x{ids_test}"


def _evaluate(checkpoint: Path, data, batch_size: int, workers: int, device: str, precision: str
              ) -> tuple[dict, dict]:
    """Val and test metrics of `checkpoint` on the re-test data."""
    loaded = load_for_inference(checkpoint, device, precision)
    val, test = (evaluate_split(loaded, data.splits[split], batch_size, workers, name=split) for split in ("val", "test"))
    return val, test


def retest(bench_dir: Path, ids_val: int, ids_test: int, batch_size: int = 256, workers: int = 2,
           device: str = "auto", precision: str = "auto",
           on_run: Callable[[str, int, dict], None] | None = None) -> dict:
    """Evaluate every finished run of the benchmark in `bench_dir` on `ids_val` val and `ids_test` test
    people (see the module docstring); writes bench_dir/retest_VxT/ and returns its results dict. Takes 8
    parameters because it is `cpcl bench retest`'s options as the command gives them, and the progress callback."""
    preset_name, preset = stamped_preset(bench_dir)
    if ids_val < 1 or ids_test < 1:
        raise ConfigError(f"--ids-val and --ids-test must be >= 1, got {ids_val} and {ids_test}")
    runs = finished_runs(bench_dir)
    if not runs:
        raise ConfigError(f"{bench_dir / 'runs'} holds no finished run to re-test")
    out = retest_dir(bench_dir, ids_val, ids_test)
    if not has_data(out / "data", pretraining=False):
        preset.generate(out / "data", (preset.ids[0], ids_val, ids_test))
    data = load_dataset(DATASET, out / "data")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    results: dict = {"preset": preset_name, "retest": f"{ids_val} val and {ids_test} test people", "methods": {}}
    for run in runs:
        done = out / "runs" / f"{run.run_dir.name}.json"
        if done.is_file():
            record = load_json(done)
        else:
            val, test = _evaluate(run.run_dir / "best.pt", data, batch_size, workers, device, precision)
            last_val, last = _evaluate(run.run_dir / "last.pt", data, batch_size, workers, device, precision)
            kept = {key: value for key, value in run.record().items() if key in ("seconds", "image_purity")}
            record = {**test, "val_R1": val["R1"], "last_R1": last["R1"], "last_mAP": last["mAP"],
                      "last_val_R1": last_val["R1"], **kept}
            done.write_text(json.dumps(record) + "\n")
            if on_run is not None:
                on_run(run.method, run.seed, record)
        results["methods"].setdefault(run.method, {})[str(run.seed)] = record
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(quality_table(results))
    return results
