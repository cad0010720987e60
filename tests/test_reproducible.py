"""A seed reproduces on one machine, bit for bit: SynthPedes' bytes, and a CPCL run's every metric, label digest
and memory digest, each made in a separate process with its own hash seed (as two runs from the shell are)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SIZES = ["--ids-train", "10", "--ids-val", "3", "--ids-test", "3", "--size", "48", "20", "--seed", "5"]
TRAIN = ["-c", "synthpedes", "model.init=preset:tiny", "model.image_size=[32,16]", "model.context_length=32",
         "data.workers=2", "device=cpu", "precision=fp32", "optim.epochs=2", "optim.batch_size=8", "eval.batch_size=64",
         "cluster_select.on=fixed", "cluster.k1=4", "cluster.k2=2", "cluster.eps=0.6", "cluster.min_samples=2", "seed=7"]
WALL_CLOCK = ("time_",)  # record keys that measure time, not the computation


def cpcl(commands: list[list[str]], hash_seed: int) -> None:
    """`cpcl COMMAND` for each command, in one fresh process with PYTHONHASHSEED=hash_seed (the order of sets
    and dicts of strings); they must all succeed."""
    script = f"import sys; from cpcl.cli import main; sys.exit(max(main(args) for args in {commands!r}))"
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def computed(run: Path) -> list[dict]:
    """metrics.jsonl without its wall-clock fields."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in record.items()
             if not key.startswith(WALL_CLOCK) and not key.endswith("_seconds")} for record in records]


def test_same_seed_same_data_and_same_metrics_in_two_processes(tmp_path):
    for run, hash_seed in (("a", 1), ("b", 2)):
        data = tmp_path / run / "data"
        cpcl([["synth", str(data), *SIZES, "--workers", "2"],
              ["train", *TRAIN, f"data.root={data}", "--out", str(tmp_path / run / "run")]], hash_seed)
    assert tree(tmp_path / "a" / "data") == tree(tmp_path / "b" / "data")
    first, second = computed(tmp_path / "a" / "run"), computed(tmp_path / "b" / "run")
    assert [record["epoch"] for record in first] == [0, 1]
    assert all(record["image_clusters"] > 0 and record["labels_digest"] for record in first)  # CPCL clustered
    assert first == second
    numerics = [json.loads((tmp_path / run / "run" / "results.json").read_text())["numerics"] for run in "ab"]
    assert numerics[0] == numerics[1] and numerics[0]["precision"] == "fp32" and numerics[0]["threads"] >= 1
