"""CUHK-PEDES's original `caption_all.json` (no split field): the standard split derived from person ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpcl.cli import main
from cpcl.data.readers import load_dataset
from cpcl.utils.errors import DataError
from conftest import write_image

# person id -> images; ids at both edges of each standard range (train 1-11003, val 11004-12003, test 12004-13003)
PERSONS = {1: 2, 11003: 1, 11004: 1, 12003: 2, 12004: 1, 13003: 1}


def write_caption_all(root: Path, persons: dict[int, int] = PERSONS) -> Path:
    """A caption_all.json in the release's shape: id, file_path, captions, processed_tokens; no split."""
    records = []
    for pid, images in persons.items():
        for j in range(images):
            rel = f"cam_a/{pid:05d}_{j}.jpg"
            write_image(root / "CUHK-PEDES" / "imgs" / rel)
            captions = [f"person {pid} view {j}", f"another caption of {pid}"]
            records.append({"id": pid, "file_path": rel, "captions": captions,
                            "processed_tokens": [c.split() for c in captions]})
    path = root / "CUHK-PEDES" / "caption_all.json"
    path.write_text(json.dumps(records))
    return path


def test_caption_all_is_split_by_person_id(tmp_path):
    path = write_caption_all(tmp_path)
    data = load_dataset("cuhk-pedes", tmp_path)
    assert data.annotation_file == path
    ids = {name: sorted({image.person_id for image in split.images}) for name, split in data.splits.items()}
    assert ids == {"train": [1, 11003], "val": [11004, 12003], "test": [12004, 13003]}
    assert data.counts()["val"] == {"ids": 2, "images": 3, "captions": 6}


def test_reid_raw_wins_over_caption_all(tmp_path):
    write_caption_all(tmp_path)
    records = [{"split": "test", "id": 1, "file_path": "cam_a/00001_0.jpg", "captions": ["a caption"]}]
    (tmp_path / "CUHK-PEDES" / "reid_raw.json").write_text(json.dumps(records))
    data = load_dataset("cuhk-pedes", tmp_path)
    assert data.annotation_file.name == "reid_raw.json" and data.counts()["test"]["images"] == 1


def test_an_id_outside_the_standard_range_is_one_line_saying_what_to_do(tmp_path):
    write_caption_all(tmp_path, {5: 1, 13004: 1})
    with pytest.raises(DataError) as err:
        load_dataset("cuhk-pedes", tmp_path)
    message = str(err.value)
    assert "\n" not in message and "record 1" in message and "13004" in message
    assert "reid_raw.json" in message and "jsonl" in message


def test_data_check_reads_caption_all(tmp_path, capsys):
    write_caption_all(tmp_path)
    assert main(["data", "check", "--dataset", "cuhk-pedes", "--root", str(tmp_path), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert {name: c["ids"] for name, c in counts.items()} == {"train": 2, "val": 2, "test": 2}
