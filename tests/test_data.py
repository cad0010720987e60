"""Dataset readers, image checks and `cpcl data check` on generated files in each format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpcl.cli import main
from cpcl.data.check import check_images
from cpcl.data.readers import DATASETS, load_dataset
from cpcl.utils.errors import DataError
from conftest import public_records, write_image, write_public

EXPECTED = {"train": {"ids": 2, "images": 3, "captions": 6},
            "val": {"ids": 1, "images": 1, "captions": 2},
            "test": {"ids": 2, "images": 3, "captions": 5}}


@pytest.mark.parametrize("dataset,folder,filename,path_key", [
    ("cuhk-pedes", "CUHK-PEDES", "reid_raw.json", "file_path"),
    ("icfg-pedes", "ICFG-PEDES", "ICFG-PEDES.json", "file_path"),
    ("icfg-pedes", "ICFG-PEDES", "ICFG_PEDES.json", "file_path"),
    ("rstpreid", "RSTPReid", "data_captions.json", "img_path"),
])
def test_public_readers_produce_the_record_model(tmp_path, dataset, folder, filename, path_key):
    ann = write_public(tmp_path, folder, filename, path_key)
    data = load_dataset(dataset, tmp_path)
    assert data.annotation_file == ann
    assert data.counts() == EXPECTED
    test = data.splits["test"]
    assert [img.person_id for img in test.images] == [4, 4, 5]
    assert test.images[0].path == tmp_path / folder / "imgs" / public_records(path_key)[4][path_key]
    # captions are numbered in file order and point at their own image
    assert [(c.caption_id, c.image_id) for c in test.captions] == [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2)]
    assert test.captions[2].text == "person 4 image 5 caption 0"
    # the dataset folder itself is accepted as root too
    assert load_dataset(dataset, tmp_path / folder).counts() == EXPECTED


def test_split_values_other_than_train_and_test_are_val(tmp_path):
    records = public_records("file_path")
    records[3]["split"] = "validation"
    records[0]["split"] = "gallery"
    for r in records:
        write_image(tmp_path / "CUHK-PEDES" / "imgs" / r["file_path"])
    (tmp_path / "CUHK-PEDES").mkdir(exist_ok=True)
    (tmp_path / "CUHK-PEDES" / "reid_raw.json").write_text(json.dumps(records))
    counts = load_dataset("cuhk-pedes", tmp_path).counts()
    assert counts["val"]["images"] == 2 and counts["train"]["images"] == 2


def test_jsonl_reader(jsonl_root):
    data = load_dataset("jsonl", jsonl_root)
    assert data.counts() == EXPECTED
    assert data.splits["train"].images[0].path == jsonl_root / "imgs/0.png"
    # string person ids map to integers, one per distinct id
    train_ids = [img.person_id for img in data.splits["train"].images]
    assert train_ids[0] == train_ids[1] != train_ids[2]
    # root may name the file itself
    assert load_dataset("jsonl", jsonl_root / "annotations.jsonl").counts() == EXPECTED


def test_jsonl_without_ids_and_default_split(tmp_path):
    write_image(tmp_path / "a.jpg")
    (tmp_path / "annotations.jsonl").write_text(json.dumps({"image": "a.jpg", "captions": ["x", "y"]}) + "\n")
    counts = load_dataset("jsonl", tmp_path).counts()
    assert counts["train"] == {"ids": None, "images": 1, "captions": 2}


def test_jsonl_ids_on_some_lines_only_is_an_error(tmp_path):
    lines = [{"image": "a.jpg", "captions": ["x"], "person_id": 1}, {"image": "b.jpg", "captions": ["y"]}]
    (tmp_path / "annotations.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    with pytest.raises(DataError, match=r"line 2 has no 'person_id'"):
        load_dataset("jsonl", tmp_path)


def test_jsonl_malformed_line_names_the_line(tmp_path):
    (tmp_path / "annotations.jsonl").write_text('{"image": "a.jpg", "captions": ["x"]}\n{"image": \n')
    with pytest.raises(DataError, match=r"annotations.jsonl: line 2: malformed JSON at column \d+"):
        load_dataset("jsonl", tmp_path)


def test_missing_annotation_file_names_what_was_looked_for(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("icfg-pedes", tmp_path)
    message = str(err.value)
    assert "ICFG-PEDES/ICFG-PEDES.json" in message and "ICFG-PEDES/ICFG_PEDES.json" in message


def test_malformed_json_names_file_and_position(tmp_path):
    ann = tmp_path / "RSTPReid" / "data_captions.json"
    ann.parent.mkdir()
    ann.write_text('[{"id": 1,\n  "img_path": "a.jpg" "captions": []}]')
    with pytest.raises(DataError, match=r"data_captions.json: malformed JSON at line 2 column 23"):
        load_dataset("rstpreid", tmp_path)


def test_top_level_must_be_a_list(tmp_path):
    (tmp_path / "reid_raw.json").write_text('{"split": "train"}')
    with pytest.raises(DataError, match="expected a JSON list of records, got a dict"):
        load_dataset("cuhk-pedes", tmp_path)


@pytest.mark.parametrize("field", ["split", "captions", "file_path", "id"])
def test_record_missing_a_field_names_record_and_field(tmp_path, field):
    records = public_records("file_path")
    del records[5][field]
    (tmp_path / "reid_raw.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match=rf"reid_raw.json: record 5 is missing field '{field}'"):
        load_dataset("cuhk-pedes", tmp_path)


@pytest.mark.parametrize("value,expected", [
    ("a caption", "field 'captions' must be list, got str"),
    ([], "field 'captions' is an empty list"),
    (["ok", ""], r"field 'captions'\[1\] must be a non-empty string"),
])
def test_bad_captions_are_reported(tmp_path, value, expected):
    records = public_records("img_path")
    records[2]["captions"] = value
    (tmp_path / "data_captions.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match=rf"record 2 {expected}"):
        load_dataset("rstpreid", tmp_path)


def test_wrong_id_type_is_reported(tmp_path):
    records = public_records("file_path")
    records[1]["id"] = "seven"
    (tmp_path / "reid_raw.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match="record 1 field 'id' must be int, got str"):
        load_dataset("cuhk-pedes", tmp_path)


def test_unknown_dataset_lists_the_valid_ones(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cuhk'; valid: " + ", ".join(DATASETS)):
        load_dataset("cuhk", tmp_path)


def _break_two_images(root: Path) -> list[Path]:
    data = load_dataset("cuhk-pedes", root)
    missing = data.splits["train"].images[1].path
    corrupt = data.splits["test"].images[0].path
    missing.unlink()
    corrupt.write_bytes(b"not an image")
    return [missing, corrupt]


def test_bad_images_are_an_error_with_count_and_paths(cuhk_root):
    missing, corrupt = _break_two_images(cuhk_root)
    data = load_dataset("cuhk-pedes", cuhk_root)
    with pytest.raises(DataError) as err:
        check_images(data)
    message = str(err.value)
    assert message.startswith("2 of 7 images")
    assert f"{missing} (missing)" in message and f"{corrupt} (unreadable" in message
    assert "--skip-bad-images" in message


def test_no_decode_only_checks_existence(cuhk_root):
    _break_two_images(cuhk_root)
    with pytest.raises(DataError, match="^1 of 7 images"):
        check_images(load_dataset("cuhk-pedes", cuhk_root), decode=False)


def test_skip_bad_images_drops_them_with_their_captions(cuhk_root):
    _break_two_images(cuhk_root)
    data = load_dataset("cuhk-pedes", cuhk_root)
    assert check_images(data, skip_bad=True) == 2
    counts = data.counts()
    assert counts["train"] == {"ids": 2, "images": 2, "captions": 4}
    assert counts["test"] == {"ids": 2, "images": 2, "captions": 3}
    test = data.splits["test"]
    assert [c.image_id for c in test.captions] == [0, 1, 1]  # renumbered, still consistent
    assert test.captions[0].text == "person 4 image 5 caption 0"


def test_cli_data_check_json(cuhk_root, capsys):
    assert main(["data", "check", "--dataset", "cuhk-pedes", "--root", str(cuhk_root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == EXPECTED


def test_cli_data_check_table(jsonl_root, capsys):
    assert main(["data", "check", "--dataset", "jsonl", "--root", str(jsonl_root)]) == 0
    out = capsys.readouterr().out
    assert "all 7 images exist and open" in out
    assert out.splitlines()[1].split() == ["split", "ids", "images", "captions"]
    assert out.splitlines()[2].split() == ["train", "2", "3", "6"]


def test_cli_errors_are_one_line_without_traceback(cuhk_root, capsys):
    _break_two_images(cuhk_root)
    assert main(["data", "check", "--dataset", "cuhk-pedes", "--root", str(cuhk_root)]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("cpcl data: error: 2 of 7 images")
    assert main(["data", "check", "--dataset", "rstpreid", "--root", str(cuhk_root)]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "no rstpreid annotation file" in err[0]


def _error_lines(stderr: str) -> list[str]:
    """stderr without progress log records; asserts there is no traceback."""
    assert "Traceback" not in stderr
    return [line for line in stderr.strip().splitlines() if " INFO " not in line]


def test_cli_skip_bad_images_says_how_many(cuhk_root, capsys):
    _break_two_images(cuhk_root)
    assert main(["data", "check", "--dataset", "cuhk-pedes", "--root", str(cuhk_root),
                 "--skip-bad-images"]) == 0
    assert "skipped 2 bad images and their captions" in capsys.readouterr().out

