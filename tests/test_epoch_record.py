"""The typed epoch record (engine/record.py): metrics.jsonl keeps its flat keys, every reader parses them
through `EpochRecord.from_json`, and TensorBoard's tags come from its groups."""

from __future__ import annotations

import json

import pytest

from cpcl.engine import rundir
from cpcl.engine.record import EpochRecord, EpochTraining
from cpcl.utils.errors import RunDirError

# a record of a CPCL epoch with the clustering chosen on val, as metrics.jsonl held it before the record was typed
WRITTEN = {"epoch": 2, "method": "cpcl", "world_size": 1, "time_extract": 1.5, "select_image_k1": 4,
           "select_image_val_f": 0.5, "oracle_image_purity": 0.75, "oracle_text_nmi": 0.5, "time_cluster": 0.25,
           "image_clusters": 3, "image_outliers": 1, "cluster_image_seconds": 0.125, "oplm_rescued_images": 2,
           "labels_image_clusters": 3, "pairs_unlabelled": 0, "labels_digest": "ab12", "pcm_image_loss": 1.25,
           "icpm_loss": 0.5, "loss": 1.75, "lr": 1e-4, "time_train": 3.0, "memory_digests": ["cd34"],
           "val_R1": 40.0, "val_mAP": 30.0, "time_eval": 0.5}


def test_the_json_line_keeps_every_key_and_value():
    record = EpochRecord.from_json(WRITTEN)
    assert record.to_json() == WRITTEN
    assert record.val_r1 == 40.0 and record.loss == 1.75 and record.selection["select_image_k1"] == 4
    assert record.labels["cluster_image_seconds"] == 0.125 and record.oracle == {"oracle_image_purity": 0.75,
                                                                                   "oracle_text_nmi": 0.5}


def test_the_phases_fill_it_as_they_run():
    record = EpochRecord(0, "cpcl")
    record.times["time_extract"] = 1.0
    record.trained(EpochTraining({"icpm_loss": 0.5, "loss": 0.5}, 1e-5, grad_scale=1024.0, skipped_steps=1))
    assert record.to_json() == {"epoch": 0, "method": "cpcl", "world_size": 1, "time_extract": 1.0, "icpm_loss": 0.5,
                                "loss": 0.5, "lr": 1e-5, "grad_scale": 1024.0, "skipped_steps": 1}


def test_records_of_retired_switches_still_read():
    old = {**WRITTEN, "oracle_panel_cpcl_purity": 0.5, "cluster_image_weight": 0.25, "refine_split": 1}
    record = EpochRecord.from_json(old)
    assert record.to_json() == old and record.oracle["oracle_panel_cpcl_purity"] == 0.5


@pytest.mark.parametrize("key, value", [("val_R1", "high"), ("epoch", 1.5), ("lr", True), ("image_clusters", None)])
def test_a_wrong_value_names_its_key(key, value):
    with pytest.raises(RunDirError, match=f"run/metrics.jsonl: '{key}' is a"):
        EpochRecord.from_json({**WRITTEN, key: value}, "run/metrics.jsonl")


@pytest.mark.parametrize("key,tag", [
    ("val_R1", "val/R1"), ("oracle_text_nmi", "oracle/text_nmi"), ("icpm_loss", "train/icpm_loss"),
    ("lr", "train/lr"), ("time_cluster", "time/cluster"), ("cluster_image_seconds", "time/cluster_image_seconds"),
    ("image_outliers", "clusters/image_outliers"), ("select_image_k1", "cluster_select/image_k1")])
def test_tensorboard_tags_come_from_the_groups(key, tag):
    groups = EpochRecord.from_json(WRITTEN).groups()
    group, _, name = tag.partition("/")
    assert groups[group][name] == WRITTEN[key]
    assert sum(len(values) for values in groups.values()) == len(WRITTEN) - 5  # not: epoch, method, world size, digests


def test_the_run_dir_writes_and_reads_records(tmp_path):
    record = EpochRecord.from_json(WRITTEN)
    rundir.append_record(tmp_path, record)
    assert json.loads((tmp_path / rundir.METRICS).read_text()) == WRITTEN
    assert rundir.read_epoch_records(tmp_path / rundir.METRICS) == [record]


def test_tensorboard_gets_every_measurement_once(tmp_path):
    from cpcl.engine.logs import RunLog

    written = []

    class Writer:
        def add_scalar(self, tag: str, value: float, step: int) -> None:
            written.append((tag, value, step))

        def flush(self) -> None:
            pass

    run_log = RunLog(tmp_path, tensorboard=False)
    run_log._writer = Writer()  # what begin() opens with log.tensorboard=true
    run_log.epoch(7, EpochRecord.from_json(WRITTEN))
    assert ("val/R1", 40.0, 7) in written and ("train/loss", 1.75, 7) in written
    assert len({tag for tag, _, _ in written}) == len(written) == len(WRITTEN) - 5
