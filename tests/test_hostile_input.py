"""Input as an attacker or a careless user gives it, besides footage: sidecars that would break an index, NaN
thresholds, blank queries, a NUL byte in a dataset, two annotation files, exports over earlier ones, writes into
read-only folders or onto a full disk, a broken bench.json, a malicious pickle. Each is refused or reported in one
line, or lands whole; nothing is lost without a word."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from cpcl.cli import main
from cpcl.data.readers import load_dataset
from cpcl.index.gallery import read_sidecar
from cpcl.index.search import Searcher
from cpcl.index.store import IndexStore
from cpcl.model.checkpoints import read_checkpoint
from cpcl.utils.errors import CpclError, DataError
from cpcl.web.app import create_app
from conftest import public_records, write_public
from fault_support import disk_full_after, one_error_line, read_only
from search_support import build_gallery_index

DEVICE = ["--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    """base/imgs (12 crops and meta.csv), base/tiny.pt and base/idx built from them."""
    base = tmp_path_factory.mktemp("gallery")
    build_gallery_index(base)
    return base


def build(gallery: Path, out: Path, *extra: str) -> int:
    return main(["-q", "index", "build", "--checkpoint", str(gallery / "tiny.pt"), "--images", str(gallery / "imgs"),
                 "--out", str(out), "--workers", "0", *DEVICE, *extra])


def sidecar(tmp_path: Path, text: str, name: str = "meta.csv") -> Path:
    (tmp_path / name).write_bytes(text.encode("utf-8"))
    return tmp_path / name


# --- sidecars ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, message", [
    ("m.csv", "path,camera,time\nc1/000.png,c1,1e20\n", "m.csv:2: time: 1e+20 seconds since 1970 is outside the "
     "years 1-9999"),
    ("m.csv", "path,camera,time\nc1/000.png,c1,-1e20\n", "m.csv:2: time: -1e+20 seconds since 1970 is outside"),
    ("m.csv", "path,box,frame,source\nc1/000.png,1,2,../../x\n", "m.csv:2: the column 'box' is a field of the "
     "index's own (path, source, frame, offset, box, detector_score, file, crop); rename it"),
    ("m.jsonl", '{"path": "c1/000.png", "source": "x"}\n', "m.jsonl:1: the column 'source' is a field of the "
     "index's own"),
    ("m.csv", 'path,camera\nc1/000.png,"c1\nc1/003.webp,c2\nc2/001.jpg,c3\n', "m.csv:2: a quote opened in this row "
     "is never closed, so the rest of the file would be one value"),
    ("m.csv", 'path,camera\nc1/000.png,"c1"x\n', "m.csv:2: not valid CSV"),
    ("m.csv", "path,camera\nc1/000.png," + "x" * 140_000 + "\n", "m.csv:2: a value is longer than the 10,000 "
     "characters a metadata value may hold"),
    ("m.csv", "path,note\nc1/000.png," + "x" * 10_001 + "\n", "m.csv:2: 'note': 10,003 characters, over the "
     "10,000 a metadata value may hold"),
    ("m.csv", "path,camera\nc1/000.png,c1,extra\n", "m.csv:2: the value 'extra' has no column name in the header"),
    ("m.csv", "path,camera,camera\nc1/000.png,c1,c2\n", "m.csv:1: column 'camera' is named twice"),
    ("m.jsonl", '{"path": "c1/000.png", "note": NaN}\n', "m.jsonl:1: 'note': NaN and infinities are not values "
     "JSON can hold"),
    ("m.jsonl", '{"path": "c1/000.png", "note": "\\ud800"}\n', "m.jsonl:1: 'note': the text holds a lone "
     "surrogate"),
    ("m.jsonl", '{"path": "c1/000.png", "time": 1' + "0" * 5000 + "}\n", "m.jsonl:1: malformed JSON"),
])
def test_a_sidecar_that_would_break_the_index_is_refused_at_build_in_one_line(gallery, tmp_path, capsys, name, text,
                                                                             message):
    assert build(gallery, tmp_path / "idx", "--metadata", str(sidecar(tmp_path, text, name))) == 2
    line = one_error_line(capsys)
    assert line.startswith("cpcl index: error: ") and message in line
    assert not (tmp_path / "idx").exists()  # checked whole before anything is written


def test_an_index_of_times_out_of_range_from_an_older_build_is_refused_in_one_line(gallery, tmp_path, capsys):
    shutil.copytree(gallery / "idx", tmp_path / "idx")
    jsonl = sorted((tmp_path / "idx" / "shards").glob("*.jsonl"))[0]
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    records[3]["time"] = 1e20  # what builds accepted before times were checked in range
    jsonl.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert main(["-q", "search", "--index", str(tmp_path / "idx"), "a man", *DEVICE]) == 2
    assert "a record's time: 1e+20 seconds since 1970 is outside the years 1-9999; build the index again" in \
        one_error_line(capsys)


def test_the_page_formats_the_extreme_times_a_sidecar_may_hold(gallery, tmp_path):
    sidecar(tmp_path, "path,time\nc1/000.png,0001-01-01T00:00:00\nc2/001.jpg,253402300799\n")
    assert build(gallery, tmp_path / "idx", "--metadata", str(tmp_path / "meta.csv")) == 0
    client = TestClient(create_app(Searcher.open(tmp_path / "idx", device="cpu", precision="fp32")))
    info = client.get("/api/info")
    assert info.status_code == 200 and info.json()["time_range"] == ["0001-01-01T00:00:00", "9999-12-31T23:59:59"]


def test_sidecar_values_read_back_as_written(tmp_path):
    (tmp_path / "imgs").mkdir()
    path = sidecar(tmp_path, '{"path": "a.jpg", "tags": ["red", "bag"], "height": 1.8, "seen": true}\n', "m.jsonl")
    assert read_sidecar(path, tmp_path / "imgs") == {"a.jpg": {"tags": ["red", "bag"], "height": 1.8, "seen": True}}
    quoted = sidecar(tmp_path, 'path,note\na.jpg,"a ""quoted"" word"\nb.jpg,5\'11""\n')
    assert read_sidecar(quoted, tmp_path / "imgs") == {"a.jpg": {"note": 'a "quoted" word'},
                                                      "b.jpg": {"note": "5'11\"\""}}


# --- thresholds and queries ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["a man", "--min-score", "nan"], "the score floor (min_score) must be a finite number (a cosine, -1..1), "
     "got nan"),
    (["\x01\x02\x03"], "the search text is empty (white space or control characters only)"),
    (["\u200b\u2028 \t"], "the search text is empty (white space or control characters only)"),
])
def test_a_nan_floor_or_a_query_of_control_characters_is_refused(gallery, capsys, args, message):
    assert main(["-q", "search", "--index", str(gallery / "idx"), *args, *DEVICE]) == 2
    assert one_error_line(capsys) == f"cpcl search: error: {message}"


def test_the_api_refuses_a_query_of_control_characters(gallery):
    client = TestClient(create_app(Searcher.open(gallery / "idx", device="cpu", precision="fp32")))
    answer = client.post("/api/search", json={"text": "\x00\x1f\u200b"})
    assert answer.status_code == 422 and "the search text is blank" in json.dumps(answer.json())


def test_a_caption_of_control_characters_is_refused(tmp_path):
    records = public_records("img_path")
    records[1]["captions"] = ["a woman", "\x07\x08"]
    (tmp_path / "data_captions.json").write_text(json.dumps(records))
    with pytest.raises(DataError, match=r"record 1 field 'captions'\[1\] must be a string with words"):
        load_dataset("rstpreid", tmp_path)


# --- datasets ------------------------------------------------------------------------------------------------------

def test_a_nul_byte_in_a_dataset_path_is_one_line(tmp_path, capsys):
    records = public_records("file_path")
    records[2]["file_path"] = "imgs/a\x00b.jpg"
    folder = tmp_path / "CUHK-PEDES"
    folder.mkdir()
    (folder / "reid_raw.json").write_text(json.dumps(records))
    assert main(["data", "check", "--dataset", "cuhk-pedes", "--root", str(tmp_path)]) == 2
    assert "reid_raw.json: record 2 field 'file_path' holds a NUL byte, which no file name can" in \
        one_error_line(capsys)


def test_two_different_annotation_files_are_refused_and_two_copies_are_one(tmp_path):
    write_public(tmp_path, "ICFG-PEDES", "ICFG-PEDES.json", "file_path")
    first = tmp_path / "ICFG-PEDES" / "ICFG-PEDES.json"
    shutil.copy(first, first.with_name("ICFG_PEDES.json"))
    assert load_dataset("icfg-pedes", tmp_path).annotation_file == first  # the same bytes: nothing to choose
    changed = json.loads(first.read_text())[:-1]
    first.with_name("ICFG_PEDES.json").write_text(json.dumps(changed))
    with pytest.raises(DataError, match=r"two different icfg-pedes annotation files under .*ICFG-PEDES.json and "
                                        r".*ICFG_PEDES.json; keep the one to read"):
        load_dataset("icfg-pedes", tmp_path)


# --- exports -------------------------------------------------------------------------------------------------------

def test_export_refuses_to_overwrite_without_force_and_a_file_as_its_folder(gallery, tmp_path, capsys):
    checkpoint = str(gallery / "tiny.pt")
    assert main(["-q", "export", "--checkpoint", checkpoint, "--hf", str(tmp_path / "hf")]) == 0
    config = (tmp_path / "hf" / "config.json").read_text()
    (tmp_path / "hf" / "config.json").write_text("{}")
    capsys.readouterr()
    assert main(["-q", "export", "--checkpoint", checkpoint, "--hf", str(tmp_path / "hf")]) == 2
    assert one_error_line(capsys).endswith("already holds config.json, model.safetensors, tokenizer.json, README.md; "
                                           "give --force to overwrite, or another folder")
    assert (tmp_path / "hf" / "config.json").read_text() == "{}"
    assert main(["-q", "export", "--checkpoint", checkpoint, "--hf", str(tmp_path / "hf"), "--force"]) == 0
    assert (tmp_path / "hf" / "config.json").read_text() == config
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "image_encoder.onnx").write_text("earlier")
    capsys.readouterr()
    assert main(["-q", "export", "--checkpoint", checkpoint, "--onnx", str(tmp_path / "onnx")]) == 2
    assert "--onnx" in one_error_line(capsys)
    (tmp_path / "a_file").write_text("")
    assert main(["-q", "export", "--checkpoint", checkpoint, "--hf", str(tmp_path / "a_file")]) == 2
    assert one_error_line(capsys).endswith("a_file is a file; give a folder to write the export into")


# --- writes into read-only folders, onto a full disk -----------------------------------------------------------------

def test_writes_into_a_read_only_folder_are_one_line(gallery, tmp_path, capsys, monkeypatch):
    (tmp_path / "idx").mkdir()
    read_only(monkeypatch)
    commands = [
        ["index", "build", "--checkpoint", str(gallery / "tiny.pt"), "--images", str(gallery / "imgs"), "--out",
         str(tmp_path / "ro" / "idx"), "--workers", "0", *DEVICE],
        ["index", "add", "--index", str(gallery / "idx"), "--workers", "0", *DEVICE],
        ["synth", str(tmp_path / "ro"), "--ids-train", "2", "--ids-val", "1", "--ids-test", "1"],
        ["export", "--checkpoint", str(gallery / "tiny.pt"), "--hf", str(tmp_path / "ro" / "hf")],
    ]
    for command in commands:
        assert main(["-q", *command]) == 2, command
        line = one_error_line(capsys)
        assert f"cpcl {command[0]}: error: cannot write " in line and ": Read-only file system; free space or " \
            "make" in line, line


def test_a_build_on_a_full_disk_is_one_line_and_the_next_run_finishes_it(gallery, tmp_path, capsys, monkeypatch):
    real_append = IndexStore.append_shard

    def full_at_the_second_shard(self, embeddings, records):
        if self.manifest.count:
            disk_full_after(monkeypatch, allowed=64)
        real_append(self, embeddings, records)

    monkeypatch.setattr(IndexStore, "append_shard", full_at_the_second_shard)
    assert build(gallery, tmp_path / "idx", "--shard-size", "5") == 2
    line = one_error_line(capsys)
    assert "cannot write" in line and "No space left on device; free space or make" in line
    assert len(IndexStore.open(tmp_path / "idx").read_records()) == 4  # the first shard, whole (1 of 5 broken)
    monkeypatch.undo()
    assert build(gallery, tmp_path / "idx", "--shard-size", "5") == 0
    rebuilt, whole = IndexStore.open(tmp_path / "idx"), IndexStore.open(gallery / "idx")
    assert [r["path"] for r in rebuilt.read_records()] == [r["path"] for r in whole.read_records()]
    np.testing.assert_allclose(rebuilt.read()[0], whole.read()[0], atol=1e-6)
    assert not list((tmp_path / "idx").rglob(".*.tmp"))


# --- other files -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, retest, quality", [
    ("{", "bench.json: malformed JSON at column 2", "bench.json: malformed JSON at column 2"),
    ('["fast"]', "bench.json is not a benchmark's stamp", "bench.json is not a benchmark's stamp"),
    ('{"preset": "nonesuch"}', "unknown benchmark preset 'nonesuch'", "holds a benchmark of preset 'nonesuch'"),
])
def test_a_broken_bench_json_is_one_line(tmp_path, capsys, text, retest, quality):
    (tmp_path / "bench.json").write_text(text)
    assert main(["bench", "retest", str(tmp_path)]) == 2
    assert retest in one_error_line(capsys)
    assert main(["bench", "quality", "--preset", "fast", "--out", str(tmp_path)]) == 2
    assert quality in one_error_line(capsys)


def test_a_malicious_pickle_is_refused_without_advice_to_run_it(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"state_dict": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CpclError) as refused:
        read_checkpoint(tmp_path / "evil.pt")
    message = str(refused.value)
    assert message == (f"cannot read {tmp_path / 'evil.pt'}: it holds an object other than tensors and plain types "
                       f"(posix.system); cpcl reads weights only and never runs code from a file")
    assert "weights_only=False" not in message and "\n" not in message
