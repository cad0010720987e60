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
    (["ok", ""], r"field 'captions'\[1\] must be a string with words"),
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



def write_jsonl(root: Path, rows: list[dict]) -> Path:
    path = root / "annotations.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def test_images_outside_the_dataset_folder_are_refused_unless_allowed(tmp_path, caplog, capsys):
    root = tmp_path / "set"
    outside = write_image(tmp_path / "outside.png")
    write_image(root / "imgs" / "a.png")
    (root / "imgs" / "link.png").symlink_to(outside)
    rows = [{"image": "imgs/a.png", "captions": ["x"]}, {"image": "../outside.png", "captions": ["y"]},
            {"image": str(outside), "captions": ["z"]}, {"image": "imgs/link.png", "captions": ["w"]}]
    write_jsonl(root, rows)
    with pytest.raises(DataError, match=r"3 of 4 images of .*annotations.jsonl resolve outside .*set "
                                        r"\(`..`, an absolute path or a symlink out\), first: .*outside.png.*"
                                        r"--allow-outside-root"):
        load_dataset("jsonl", root)
    assert load_dataset("jsonl", root, allow_outside_root=True).counts()["train"]["images"] == 4
    assert "3 of 4 images" in caplog.text and "read anyway" in caplog.text
    capsys.readouterr()  # (a handler a previous test's main() left on its closed stderr complains there)
    assert main(["data", "check", "--dataset", "jsonl", "--root", str(root), "--no-decode"]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "resolve outside" in err[0]
    assert main(["data", "check", "--dataset", "jsonl", "--root", str(root), "--allow-outside-root"]) == 0


def test_a_public_dataset_with_dot_dot_paths_is_refused_but_a_symlinked_image_folder_is_fine(tmp_path):
    records = public_records("file_path")
    store = tmp_path / "disk"
    for record in records:
        write_image(store / record["file_path"])
    (tmp_path / "CUHK-PEDES").mkdir()
    (tmp_path / "CUHK-PEDES" / "imgs").symlink_to(store)  # images kept on another disk: the usual layout
    (tmp_path / "CUHK-PEDES" / "reid_raw.json").write_text(json.dumps(records))
    assert load_dataset("cuhk-pedes", tmp_path).counts() == EXPECTED
    records[2]["file_path"] = "../../disk/" + records[2]["file_path"]
    (tmp_path / "CUHK-PEDES" / "reid_raw.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match="1 of 7 images"):
        load_dataset("cuhk-pedes", tmp_path)


def test_an_image_in_two_splits_or_under_two_ids_is_warned_about_and_refused_when_strict(cuhk_root, caplog,
                                                                                        capsys):
    records = public_records("file_path")
    records[5].update(file_path=records[0]["file_path"], id=records[0]["id"])  # a train image listed in test too
    records.append({**records[1], "id": 9})  # a train image listed again under another person
    (cuhk_root / "CUHK-PEDES" / "reid_raw.json").write_text(json.dumps(records))
    load_dataset("cuhk-pedes", cuhk_root)
    warning = caplog.text
    assert "1 images are in both train and test (test leakage)" in warning
    assert "1 images are listed under more than one person id" in warning and "(ids 1, 9)" in warning
    assert "--strict" in warning
    with pytest.raises(DataError, match=r"1 images are in both train and test .*; fix the annotations \(--strict\)"):
        load_dataset("cuhk-pedes", cuhk_root, strict=True)
    capsys.readouterr()
    assert main(["data", "check", "--dataset", "cuhk-pedes", "--root", str(cuhk_root), "--strict"]) == 2
    assert len(_error_lines(capsys.readouterr().err)) == 1
    assert main(["data", "check", "--dataset", "cuhk-pedes", "--root", str(cuhk_root), "--json"]) == 0


def test_clean_data_raises_no_leakage_warning(cuhk_root, caplog):
    load_dataset("cuhk-pedes", cuhk_root, strict=True)
    assert "leakage" not in caplog.text and "person id" not in caplog.text


def test_split_names_ignore_case_and_unknown_ones_are_named(tmp_path, caplog):
    records = public_records("file_path")
    for record in records:
        write_image(tmp_path / "CUHK-PEDES" / "imgs" / record["file_path"])
    records[0]["split"], records[4]["split"], records[3]["split"] = "TRAIN", " Test ", "validation"
    (tmp_path / "CUHK-PEDES" / "reid_raw.json").write_text(json.dumps(records))
    assert load_dataset("cuhk-pedes", tmp_path).counts() == EXPECTED
    assert "read as val: 'validation' (1 records)" in caplog.text and "TRAIN" not in caplog.text


def test_jsonl_ids_1_and_string_1_are_one_person(tmp_path):
    for name in ("a", "b", "c"):
        write_image(tmp_path / f"{name}.png")
    write_jsonl(tmp_path, [{"image": "a.png", "captions": ["x"], "person_id": 1},
                           {"image": "b.png", "captions": ["y"], "person_id": "1"},
                           {"image": "c.png", "captions": ["z"], "person_id": 10**30}])
    images = load_dataset("jsonl", tmp_path).splits["train"].images
    assert images[0].person_id == images[1].person_id != images[2].person_id


def test_an_id_beyond_64_bits_is_one_line(cuhk_root, capsys):
    records = public_records("file_path")
    records[4]["id"] = 10**30
    (cuhk_root / "CUHK-PEDES" / "reid_raw.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"record 4 field 'id': person id 10{30} does not fit in 64 bits"):
        load_dataset("cuhk-pedes", cuhk_root)
    assert main(["evaluate", "--checkpoint", "x.pt", "--dataset", "cuhk-pedes", "--root", str(cuhk_root)]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "does not fit in 64 bits" in err[0]


def test_jsonl_caption_with_a_line_separator_is_one_record(tmp_path):
    write_image(tmp_path / "a.png")
    caption = "a man in a red coat\u2028with a black bag\u0085and a\u2029hat"
    write_jsonl(tmp_path, [{"image": "a.png", "captions": [caption, "second"]}])
    data = load_dataset("jsonl", tmp_path)
    assert [c.text for c in data.splits["train"].captions] == [caption, "second"]


@pytest.mark.parametrize("dataset, name", [("cuhk-pedes", "reid_raw.json"), ("jsonl", "annotations.jsonl")])
def test_deeply_nested_json_is_one_line(tmp_path, capsys, dataset, name):
    (tmp_path / name).write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(DataError, match="nested too deeply"):
        load_dataset(dataset, tmp_path)
    assert main(["data", "check", "--dataset", dataset, "--root", str(tmp_path)]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "nested too deeply" in err[0]


def test_a_path_part_over_255_bytes_is_one_line(tmp_path, capsys):
    write_image(tmp_path / "a.png")
    write_jsonl(tmp_path, [{"image": "a.png", "captions": ["x"]}, {"image": "b" * 300 + ".png", "captions": ["y"]}])
    for extra in ([], ["--no-decode"]):
        assert main(["data", "check", "--dataset", "jsonl", "--root", str(tmp_path), *extra]) == 2
        err = _error_lines(capsys.readouterr().err)
        assert len(err) == 1 and "1 of 2 images" in err[0] and "File name too long" in err[0]
