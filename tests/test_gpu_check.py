"""benchmarks/gpu_check.py at its tiny sizes on the CPU: every section runs and reports, and the
rows that need CUDA say so (the real check runs on a lent GPU: docs/contributing.md, The GPU check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_every_section_on_the_cpu(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu",
                           "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["rows"]
    assert report["sizes"] == "tiny" and report["device"].startswith("cpu")
    skipped = [(r["section"], r["status"]) for r in rows if r["status"] != "ok"]
    assert skipped == [("cluster", "skipped: needs CUDA"), ("ddp", "skipped: needs CUDA")]
    by_section = {section: [r for r in rows if r["section"] == section and r["status"] == "ok"]
                  for section in ("step", "loader", "cluster", "ddp", "epoch")}
    assert [len(found) for found in by_section.values()] == [4, 4, 1, 1, 1]
    for row in by_section["step"] + by_section["ddp"]:
        assert row["seconds"] > 0 and row["images_per_s"] > 0 and row["peak_mb"] > 0
    assert {r["case"] for r in by_section["step"]} == {
        f"tiny 32x16 batch 8 {p}, checkpointing {c}" for p in ("bf16", "fp16 + GradScaler") for c in ("off", "on")}
    assert all(r["images_per_s"] > 0 for r in by_section["loader"])
    assert by_section["cluster"][0]["clusters"] > 0
    assert by_section["epoch"][0]["time_train"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("\n| ") == len(rows) + 1  # the header row and one row each
