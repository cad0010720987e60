"""Typed run state and the run's logs: RunProgress in last.pt (today's files still resume), train.log with
the running loss, TensorBoard events per step and per epoch."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from cpcl.cli import main
from cpcl.engine import train as train_module
from cpcl.engine.rundir import RunProgress
from cpcl.model import CLIP
from cpcl.model.checkpoints import read_checkpoint, save_clip
from cpcl.utils.errors import RunDirError
from train_support import interrupt_second_epoch, write_config, write_tiny_cuhk


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return write_tiny_cuhk(tmp_path_factory.mktemp("data"), {"train": 6, "val": 2, "test": 2}, images_per_person=2)


def test_progress_reads_the_run_entry_of_todays_last_pt():
    entry = {"epoch": 3, "best_epoch": 1, "best_r1": 40.5, "best_val": {"R1": 40.5}, "optimizer": {}, "scaler": {}}
    progress = RunProgress.from_dict(entry, Path("last.pt"))
    assert progress == RunProgress(epoch=3, step=0, best_epoch=1, best_r1=40.5, best_val={"R1": 40.5})
    assert RunProgress.from_dict(progress.to_dict(), Path("last.pt")) == progress
    assert RunProgress.from_dict({"epoch": 0, "best_epoch": None, "best_r1": -1.0}, Path("p")) == RunProgress()


@pytest.mark.parametrize("entry,says", [({"epoch": 1, "lr_now": 0.1}, "unknown run field(s) lr_now"),
                                        ({"epoch": "2"}, "run field 'epoch' is a str, expected int"),
                                        ({"epoch": 1, "best_epoch": True}, "run field 'best_epoch' is a bool")])
def test_progress_with_an_unknown_field_or_a_wrong_type_is_one_line(entry, says):
    with pytest.raises(RunDirError, match=re.escape(says)):
        RunProgress.from_dict(entry, Path("last.pt"))


def test_a_last_pt_in_todays_format_resumes_to_the_uninterrupted_result(tiny_root, tmp_path, monkeypatch):
    config = write_config(tmp_path / "cfg.yaml", tiny_root)
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "full")]) == 0
    real_epoch = interrupt_second_epoch(monkeypatch)
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "cut")]) == 130
    last = read_checkpoint(tmp_path / "cut" / "last.pt")
    run = last.extra["run"]
    todays = {key: run[key] for key in ("epoch", "best_epoch", "best_r1", "best_val", "optimizer", "scaler")}
    assert set(run) - set(todays) == {"step"}  # the only field this change added
    model = CLIP(last.config)
    model.load_state_dict(last.state_dict)
    save_clip(tmp_path / "cut" / "last.pt", model, last.config, last.preprocessing, extra={"run": todays})
    monkeypatch.setattr(train_module, "train_one_epoch", real_epoch)
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    results = [json.loads((tmp_path / name / "results.json").read_text()) for name in ("full", "cut")]
    assert results[0] == results[1]
    assert read_checkpoint(tmp_path / "cut" / "last.pt").extra["run"]["epoch"] == 2


@pytest.fixture(scope="module")
def tensorboard_run(tiny_root, tmp_path_factory) -> Path:
    """A finished run with log.tensorboard (and 3 retrieval examples of the top 2)."""
    pytest.importorskip("tensorboard")
    folder = tmp_path_factory.mktemp("tb")
    config = write_config(folder / "cfg.yaml", tiny_root)
    assert main(["train", "-c", str(config), "--out", str(folder / "run"), "log.tensorboard=true", "log.examples=3",
                 "log.examples_k=2"]) == 0
    return folder


def events_of(run_dir: Path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    return events


def test_train_log_and_tensorboard(tensorboard_run):
    tmp_path = tensorboard_run
    log = (tmp_path / "run" / "train.log").read_text()
    assert "run " in log and "epoch 2:" in log  # the run's own records
    assert re.search(r"epoch 1/2: \d+/\d+ step \[.*\] loss \d+\.\d{4}", log)  # the running loss, logged progress
    steps = read_checkpoint(tmp_path / "run" / "last.pt").extra["run"]["step"]
    events = events_of(tmp_path / "run")
    tags = set(events.Tags()["scalars"])
    assert {"step/loss", "step/lr", "step/pcm_image_loss", "train/loss", "val/R1", "clusters/image_clusters",
            "clusters/text_outliers", "oracle/image_nmi", "time/train"} <= tags, sorted(tags)
    assert [event.step for event in events.Scalars("step/loss")] == list(range(steps))
    assert [event.step for event in events.Scalars("val/R1")] == [steps // 2, steps]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [round(event.value, 4) for event in events.Scalars("val/R1")] == [round(r["val_R1"], 4) for r in records]


def test_tensorboard_ends_with_test_metrics_hparams_and_retrieval_images(tensorboard_run):
    run_dir = tensorboard_run / "run"
    events = events_of(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    steps = read_checkpoint(run_dir / "last.pt").extra["run"]["step"]
    for which in ("best", "last"):
        assert [(e.step, round(e.value, 4)) for e in events.Scalars(f"test/{which}_R1")] == \
            [(steps, round(results["test"][which]["R1"], 4))]
    assert [round(e.value, 4) for e in events.Scalars("hparam/test_mAP")] == [round(results["test"]["best"]["mAP"], 4)]
    hparams = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    assert b"optim.epochs" in hparams and b"model.init" in hparams  # the config, flattened
    assert sorted(events.Tags()["images"]) == ["retrieval/0", "retrieval/1", "retrieval/2"]
    image = events.Images("retrieval/0")[0]
    assert image.height == 128 + 8 and image.width > 2 * 8  # two framed thumbnails side by side
    assert {"retrieval/0/text_summary", "retrieval/2/text_summary"} <= set(events.Tags()["tensors"])


def test_a_run_has_a_card_beside_best_pt_and_an_html_report(tensorboard_run, capsys):
    yaml = pytest.importorskip("yaml")
    run_dir = tensorboard_run / "run"
    card = (run_dir / "best.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["library_name"] == "cpcl"
    assert "- **Source**: `run/best.pt` (cpcl checkpoint)" in card and "| test, best checkpoint |" in card
    assert str(tensorboard_run) not in card
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    results = json.loads((run_dir / "results.json").read_text())
    assert f"<td>{results['test']['best']['R1']:.2f}</td>" in page  # the test metrics table
    assert "training loss" in page and "val R1" in page and "image labels vs true ids" in page  # curves, label quality
    assert page.count('<div class="example">') == 8 and "data:image/jpeg;base64," in page  # retrieval examples
    assert main(["-q", "report", str(tensorboard_run)]) == 2
    assert "has no config.yaml: give the folder of a finished cpcl train run" in capsys.readouterr().err


def test_tensorboard_without_its_package_is_one_line_before_loading_data(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    config = write_config(tmp_path / "cfg.yaml", tiny_root)
    assert main(["-q", "train", "-c", str(config), "--out", str(tmp_path / "run"), "log.tensorboard=true"]) == 2
    assert capsys.readouterr().err.strip() == ("cpcl train: error: log.tensorboard=true needs the tensorboard "
                                               "package: pip install 'cpcl[tensorboard]', or set log.tensorboard=false")


def test_a_run_that_stops_on_an_error_says_why_at_the_end_of_train_log(tiny_root, tmp_path):
    config = write_config(tmp_path / "cfg.yaml", tiny_root, optim={"batch_size": 1000})
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 2
    last = (tmp_path / "run" / "train.log").read_text().strip().splitlines()[-1]
    assert "ERROR cpcl.engine.logs: run stopped: optim.batch_size 1000 is larger than the 24 training pairs" in last
