"""Training refuses nonsense before it trains, stops when a loss turns NaN, and survives what a kill or a
full disk leaves in the run directory: each case one line on stderr, no traceback."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from cpcl.cli import main
from cpcl.engine import rundir
from cpcl.engine import train as train_module
from cpcl.engine.loop import check_finite
from cpcl.engine.objectives import ItcObjective
from cpcl.engine.record import EpochRecord
from cpcl.model import CLIP
from cpcl.model.checkpoints import read_checkpoint, save_clip
from cpcl.model.clip import clip_preset
from cpcl.utils.errors import RunDirError, TrainingError
from cpcl.utils.preprocessing import Preprocessing
from fault_support import disk_full_after, failing_open, one_error_line
from train_support import interrupt_second_epoch, write_config, write_tiny_cuhk


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_cuhk(tmp_path_factory.mktemp("data"), {"train": 6, "val": 2, "test": 2}, images_per_person=2)


def test_a_batch_larger_than_the_training_data_is_refused_with_the_counts(tiny_root, tmp_path, capsys):
    config = write_config(tmp_path / "cfg.yaml", tiny_root, optim={"batch_size": 25, "epochs": 1})  # 24 pairs
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys)
    assert "optim.batch_size 25 is larger than the 24 training pairs" in line and "reid_raw.json" in line
    assert not (tmp_path / "run" / "last.pt").exists()
    zero_shot = write_config(tmp_path / "zs.yaml", tiny_root, method="zero_shot", optim={"batch_size": 25})
    assert main(["train", "-c", str(zero_shot), "--out", str(tmp_path / "zs")]) == 0  # trains nothing: no check


def test_check_finite_names_epoch_step_and_terms():
    terms = {"pcm_loss": torch.tensor(1.5), "icpm_loss": torch.tensor(float("inf"))}
    with pytest.raises(TrainingError, match=r"epoch 3 step 7: the loss is inf \(pcm_loss 1.5, icpm_loss inf\)"):
        check_finite(sum(terms.values()), terms, epoch=2, step=6)
    check_finite(torch.tensor(2.0), {"itc_loss": torch.tensor(2.0)}, epoch=0, step=0)


def test_a_loss_that_turns_nan_stops_the_run(tiny_root, tmp_path, capsys, monkeypatch):
    real, calls = ItcObjective.losses, [0]

    def nan_at_the_second_step(self, *args):
        calls[0] += 1
        terms = real(self, *args)
        return {name: value * float("nan") for name, value in terms.items()} if calls[0] == 2 else terms

    monkeypatch.setattr(ItcObjective, "losses", nan_at_the_second_step)
    config = write_config(tmp_path / "cfg.yaml", tiny_root, method="itc", optim={"epochs": 1})
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys)
    assert line.startswith("cpcl train: error: epoch 1 step 2: the loss is nan (itc_loss nan)")
    assert calls[0] == 2 and not (tmp_path / "run" / "results.json").exists()


def tiny_model() -> CLIP:
    return CLIP(clip_preset("tiny", (32, 16), 16))


def test_metrics_with_a_torn_last_line_keep_every_whole_record(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0, "loss": 1.0}\n{"epoch": 1, "loss": 0.9}\n{"epoch": 2, "lo')
    rundir.drop_records_from(tmp_path, 2)
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [0, 1]
    assert "dropped its last line" in caplog.text
    path.write_text('{"epoch": 0, "loss": 1.0}\n{"epoch": 1, "lo\n{"epoch": 2, "loss": 0.8}\n')
    with pytest.raises(RunDirError, match=r"metrics.jsonl: line 2 is not a JSON record .* the file is damaged"):
        rundir.drop_records_from(tmp_path, 3)  # a damaged line in the middle is not what a kill leaves


def test_resume_drops_a_torn_metrics_line(tiny_root, tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path / "cfg.yaml", tiny_root, method="itc")
    real_epoch = interrupt_second_epoch(monkeypatch)
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 130
    with (tmp_path / "run" / "metrics.jsonl").open("a") as stream:
        stream.write('{"epoch": 1, "method": "itc", "loss": 0.12')  # a kill during the append
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    assert "dropped its last line" in capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]


@pytest.mark.parametrize("extra, says", [({}, "no 'run' entry"),
                                         ({"run": {"epoch": 1}}, "no optimizer in its 'run' entry")])
def test_a_last_pt_without_progress_is_one_line(tiny_root, tmp_path, capsys, extra, says):
    config = write_config(tmp_path / "cfg.yaml", tiny_root, method="itc", optim={"epochs": 1})
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 0
    model = tiny_model()
    model.load_state_dict(read_checkpoint(tmp_path / "run" / "last.pt").state_dict)
    save_clip(tmp_path / "run" / "last.pt", model, model.config, Preprocessing((32, 16)), extra=extra)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys)
    assert f"last.pt has {says}" in line and "not the last.pt of an interrupted cpcl train run" in line


@pytest.mark.parametrize("write, fail", [
    (lambda d: rundir.save_model(d, "last.pt", tiny_model(), Preprocessing((32, 16)), {"run": {"epoch": 1}}), "disk"),
    (lambda d: rundir.write_results(d, {"test": {}}), "disk"),
    (lambda d: rundir.append_record(d, EpochRecord(0, "cpcl")), "open"),
    (lambda d: rundir.drop_records_from(d, 1), "disk"),
    (lambda d: rundir.prepare_run_dir(d / "new", False, lambda path: path.write_text("x")), "mkdir"),
])
def test_a_full_disk_or_read_only_run_dir_is_one_line(tmp_path, monkeypatch, write, fail):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\n')
    if fail == "disk":
        disk_full_after(monkeypatch, allowed=0)
    elif fail == "open":
        monkeypatch.setattr(rundir, "open", failing_open(errno.ENOSPC), raising=False)
    else:
        monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: failing_open(errno.EROFS)())
    with pytest.raises(RunDirError, match=r"cannot write .*: (No space left on device|Read-only file system); "
                                          r"free space or make .* writable"):
        write(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left beside the files
    assert (tmp_path / "metrics.jsonl").read_text() == '{"epoch": 0}\n'


def test_a_full_disk_during_training_is_one_line_and_resume_continues(tiny_root, tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path / "cfg.yaml", tiny_root, method="itc")
    real_save = rundir.save_model

    def full_at_the_second_last_pt(run_dir, name, model, preprocessing, extra):
        if name == "last.pt" and extra["run"]["epoch"] == 2:
            disk_full_after(monkeypatch, allowed=4096)
        real_save(run_dir, name, model, preprocessing, extra)

    monkeypatch.setattr(rundir, "save_model", full_at_the_second_last_pt)
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys)
    assert "cannot write" in line and "last.pt: No space left on device" in line and "--resume" in line
    assert read_checkpoint(tmp_path / "run" / "last.pt").extra["run"]["epoch"] == 1  # the old one, whole
    assert not list((tmp_path / "run").glob(".*.tmp"))
    monkeypatch.undo()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_dir_is_one_line(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        config = write_config(tmp_path / "cfg.yaml", tiny_root, method="itc", optim={"epochs": 1})
        assert main(["train", "-c", str(config), "--out", str(run)]) == 2
        assert "Permission denied" in one_error_line(capsys)
    finally:
        run.chmod(0o755)
