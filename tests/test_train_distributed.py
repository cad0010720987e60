"""torchrun on CPU (gloo): a 2-process `cpcl train` against the 1-process run of the same config.

Augmentation is off so that the two runs differ only in float summation order: every rank
draws the same global batches as the single process, so the first epoch's pseudo labels are
identical and the losses and metrics agree closely.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from cpcl.cli import main
from train_support import interrupt_second_epoch, write_config, write_tiny_cuhk

NO_AUGMENT = {"flip_prob": 0.0, "pad": 0, "erase_prob": 0.0}
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """As each torchrun worker runs (OMP_NUM_THREADS=1), so the features match bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone --nproc-per-node 2 -m cpcl -q ARGS` (a free port)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "cpcl", "-q", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return done


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """(config file, the 1-process reference run)."""
    work = tmp_path_factory.mktemp("ddp")
    root = write_tiny_cuhk(work / "data", {"train": 10, "val": 3, "test": 3})
    config = write_config(work / "cfg.yaml", root, augment=NO_AUGMENT)
    with one_thread():
        assert main(["-q", "train", "-c", str(config), "--out", str(work / "one")]) == 0
    return config, work / "one"


def assert_comparable(results: dict, reference: dict) -> None:
    for which in ("best", "last"):
        for metric, value in reference["test"][which].items():
            assert results["test"][which][metric] == pytest.approx(value, abs=1.0), (which, metric)


def test_two_processes_train_like_one(setup, tmp_path):
    config, one = setup
    done = torchrun(["train", "-c", str(config), "--out", str(tmp_path / "two")], tmp_path)
    assert done.stdout.count("run written to") == 1  # rank 0 alone reports
    two = tmp_path / "two"
    single, double = records(one), records(two)
    assert [r["epoch"] for r in double] == [0, 1] and {r["world_size"] for r in double} == {2}
    for key in ("labels_digest", "image_clusters", "text_clusters", "image_outliers", "text_outliers",
                "oplm_rescued_images", "oplm_rescued_texts"):
        assert double[0][key] == single[0][key], key  # the same pseudo labels in the first epoch
    for record in double:
        digests = record["memory_digests"]
        assert len(digests) == 2 and digests[0] == digests[1]  # the memories equal on both ranks
    for a, b in zip(single, double):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    assert_comparable(json.loads((two / "results.json").read_text()), json.loads((one / "results.json").read_text()))
    assert "2 rank(s) x 4 pairs" in (two / "config.yaml").read_text()
    assert yaml.safe_load((two / "config.yaml").read_text())["optim"]["batch_size"] == 8


def test_a_run_cut_short_resumes_on_two_processes(setup, tmp_path, monkeypatch):
    config, one = setup
    interrupt_second_epoch(monkeypatch)
    with one_thread():
        assert main(["-q", "train", "-c", str(config), "--out", str(tmp_path / "cut")]) == 130
    torchrun(["train", "--resume", str(tmp_path / "cut")], tmp_path)
    resumed = records(tmp_path / "cut")
    assert [(r["epoch"], r["world_size"]) for r in resumed] == [(0, 1), (1, 2)]
    assert resumed[1]["loss"] == pytest.approx(records(one)[1]["loss"], rel=1e-4)
    assert_comparable(json.loads((tmp_path / "cut" / "results.json").read_text()),
                      json.loads((one / "results.json").read_text()))
