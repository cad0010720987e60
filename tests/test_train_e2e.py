"""End to end: `cpcl train` on a tiny generated CUHK-PEDES tree with the tiny CLIP preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cpcl.engine import train as train_module
from cpcl.model.checkpoints import read_checkpoint

from train_support import METRIC_KEYS, interrupt_second_epoch, write_config, write_tiny_cuhk


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_cuhk(tmp_path_factory.mktemp("data"), {"train": 10, "val": 3, "test": 3})


def test_cpcl_train_writes_the_run_dir(tiny_root, tmp_path):
    from cpcl.cli import main

    config = write_config(tmp_path / "cfg.yaml", tiny_root)
    run = tmp_path / "run"
    assert main(["train", "-c", str(config), "--out", str(run), "cpcl.oplm=one_stage"]) == 0
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "results.json"):
        assert (run / name).is_file(), name
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["cpcl"]["oplm"] == "one_stage" and saved["optim"]["epochs"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for record in records:
        assert {"loss", "lr", "time_train", "time_extract", "time_cluster", "image_clusters", "text_outliers",
                "oplm_rescued_images", "val_R1", "oracle_image_nmi"} <= set(record)
        assert np.isfinite(record["loss"])
    results = json.loads((run / "results.json").read_text())
    assert set(results["test"]) == {"best", "last"} and set(results["test"]["last"]) == METRIC_KEYS
    assert results["selected_on"] == "val"


@pytest.mark.parametrize("method", ["itc", "oracle", "zero_shot"])
def test_baselines_run(tiny_root, tmp_path, method):
    from cpcl.cli import main

    config = write_config(tmp_path / "cfg.yaml", tiny_root, method=method, optim={"epochs": 1})
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["test"]["best"]) == METRIC_KEYS
    if method == "zero_shot":
        assert results["test"]["best"] == results["test"]["last"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resume_after_a_kill_matches_an_uninterrupted_run(tiny_root, tmp_path, monkeypatch, precision):
    from cpcl.cli import main

    config = write_config(tmp_path / "cfg.yaml", tiny_root, cpcl={"sampler": "pk", "pk_instances": 2},
                          precision=precision)
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "full")]) == 0
    expected = json.loads((tmp_path / "full" / "results.json").read_text())

    real_epoch = interrupt_second_epoch(monkeypatch)
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "cut")]) == 130
    assert not (tmp_path / "cut" / "results.json").exists()
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    resumed = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert resumed == expected
    records = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in records] == [0, 1]
    full = [json.loads(r) for r in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    resumed_records = [json.loads(r) for r in records]
    scaler = read_checkpoint(tmp_path / "cut" / "last.pt").extra["run"]["scaler"]
    if precision == "fp16":  # the loss scale is saved in last.pt and continued by --resume
        assert full[0]["skipped_steps"] > 0  # overflows lowered the scale: a fresh scaler would differ
        assert scaler["scale"] == full[-1]["grad_scale"] == resumed_records[-1]["grad_scale"]
        assert [r["skipped_steps"] for r in resumed_records] == [r["skipped_steps"] for r in full]
    else:
        assert scaler == {} and "grad_scale" not in full[-1]
