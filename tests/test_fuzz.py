"""Fuzzing what cpcl reads from people (hypothesis): sidecars, detections files, dataset annotations and the web
API's JSON bodies. The property: success, or one line (a CpclError, or a 4xx with its detail); never a traceback,
never a 500. What a sidecar lets in can be written back as JSON.

Each property runs twice: bounded and derandomised in the default run (`QUICK`, a few seconds), and with many
random examples under the marker (`pytest -m fuzz`, `LONG`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpcl.data.readers import load_dataset
from cpcl.index.boxfiles import read_coco, read_mot
from cpcl.index.gallery import RESERVED_FIELDS, read_sidecar
from cpcl.index.search import Searcher
from cpcl.utils.errors import CpclError
from cpcl.web.app import create_app
from search_support import build_gallery_index

QUICK = settings(max_examples=40, derandomize=True, database=None, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=1500, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text people and attackers write: delimiters, quotes, line ends, NUL, lone surrogates, digits, field names
CHARS = st.characters(codec=None, categories=None) | st.sampled_from(list(',;|\t"\'\n\r\x00\ud800#-.e1 '))
WORDS = st.sampled_from(["path", "camera", "time", "note", "box", "source", "1e20", "nan", "-inf", "2024-05-01",
                         "c1/000.png", "../x", "a.jpg", "", "true", "null", "1" * 30])
TEXT = st.lists(CHARS | WORDS, max_size=40).map("".join)
JSON = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | TEXT,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT | WORDS, inner, max_size=4),
                    max_leaves=12)
NUMBER = st.floats() | st.integers(min_value=-2**70, max_value=2**70) | WORDS


def two_variants(**strategies) -> Callable:
    """A property as two tests: (QUICK in the default run, LONG under the `fuzz` marker)."""
    def make(check: Callable) -> tuple[Callable, Callable]:
        return settings(QUICK)(given(**strategies)(check)), pytest.mark.fuzz(settings(LONG)(given(**strategies)(check)))
    return make


def one_line_or_success(read: Callable) -> object:
    """`read()`, or None when it raised a CpclError of one non-empty line; any other exception fails the test."""
    try:
        return read()
    except CpclError as err:
        assert str(err) and "\n" not in str(err) and "\r" not in str(err), repr(str(err))
        return None


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    (tmp_path_factory.getbasetemp() / "fuzz" / "imgs").mkdir(parents=True)
    return tmp_path_factory.getbasetemp() / "fuzz"


# --- sidecars ------------------------------------------------------------------------------------------------------

def _csv_rows(rows: list[list[str]], delimiter: str) -> str:
    return "".join(delimiter.join(row) + "\n" for row in rows)


def sidecar_property(folder: Path, text: str, suffix: str) -> None:
    path = folder / f"meta{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    read = one_line_or_success(lambda: read_sidecar(path, folder / "imgs"))
    for meta in (read or {}).values():  # what got in can be written back and shown
        json.dumps(meta, allow_nan=False, ensure_ascii=False).encode("utf-8")
        assert not set(meta) & set(RESERVED_FIELDS)


test_sidecar_text, test_sidecar_text_long = two_variants(
    text=TEXT, suffix=st.sampled_from([".csv", ".jsonl"]))(sidecar_property)
test_sidecar_rows, test_sidecar_rows_long = two_variants(
    text=st.builds(_csv_rows, st.lists(st.lists(TEXT | WORDS, min_size=1, max_size=4), min_size=1, max_size=5),
                   st.sampled_from([",", ";", "\t", "|"])),
    suffix=st.just(".csv"))(sidecar_property)
ROW = st.fixed_dictionaries({"path": TEXT | WORDS}, optional={"camera": JSON, "time": JSON | NUMBER, "box": JSON}) | \
    st.dictionaries(WORDS | TEXT, JSON, max_size=4)
test_sidecar_jsonl, test_sidecar_jsonl_long = two_variants(
    text=st.lists(ROW.map(json.dumps), max_size=4).map("\n".join), suffix=st.just(".jsonl"))(sidecar_property)


# --- detections files ----------------------------------------------------------------------------------------------

MOT_LINES = st.lists(st.lists(NUMBER.map(str), max_size=9).map(",".join) | TEXT, max_size=6).map("\n".join)
COCO = st.lists(st.fixed_dictionaries({"image_id": NUMBER | JSON, "bbox": st.lists(NUMBER, max_size=5) | JSON},
                                      optional={"score": NUMBER | JSON, "category_id": st.just(1) | JSON}) | JSON,
                max_size=5).map(lambda items: json.dumps(items))


def detections_property(text: str, coco: bool) -> None:
    table = one_line_or_success(lambda: (read_coco if coco else read_mot)(Path("det"), text))
    if table is not None:
        assert len(table.frames) == len(table.boxes) == len(table.scores) and (table.frames >= 0).all()


test_detections_mot, test_detections_mot_long = two_variants(text=MOT_LINES, coco=st.just(False))(detections_property)
test_detections_coco, test_detections_coco_long = two_variants(text=COCO | TEXT, coco=st.just(True))(
    detections_property)


# --- dataset annotations -------------------------------------------------------------------------------------------

SPLIT = st.sampled_from(["train", "val", "test", "x"])
WELL_FORMED = st.fixed_dictionaries({  # every format's fields, of the right types: the hostile part is their text
    "file_path": TEXT, "img_path": TEXT, "image": TEXT, "id": st.integers(-2**70, 2**70),
    "person_id": st.integers(-2**70, 2**70) | TEXT, "split": SPLIT, "captions": st.lists(TEXT, min_size=1, max_size=3)})
RECORD = WELL_FORMED | st.fixed_dictionaries({}, optional={
    "file_path": TEXT | JSON, "img_path": TEXT | JSON, "image": TEXT | JSON, "id": NUMBER | JSON,
    "person_id": NUMBER | JSON, "split": SPLIT | JSON, "captions": st.lists(TEXT, max_size=3) | JSON})
LAYOUTS = {"cuhk-pedes": ("CUHK-PEDES", "reid_raw.json"), "icfg-pedes": ("ICFG-PEDES", "ICFG-PEDES.json"),
           "rstpreid": ("RSTPReid", "data_captions.json"), "jsonl": ("", "annotations.jsonl")}


def dataset_property(folder: Path, dataset: str, records: list, raw: str | None, outside: bool) -> None:
    sub, name = LAYOUTS[dataset]
    root = folder / "datasets" / dataset
    (root / sub).mkdir(parents=True, exist_ok=True)
    text = raw if raw is not None else ("\n".join(map(json.dumps, records)) if dataset == "jsonl"
                                        else json.dumps(records))
    (root / sub / name).write_bytes(text.encode("utf-8", "surrogatepass"))
    one_line_or_success(lambda: load_dataset(dataset, root, allow_outside_root=outside))


test_dataset_readers, test_dataset_readers_long = two_variants(
    dataset=st.sampled_from(sorted(LAYOUTS)), records=st.lists(RECORD | JSON, max_size=5),
    raw=st.none() | TEXT, outside=st.booleans())(dataset_property)


# --- the web API ---------------------------------------------------------------------------------------------------

FIELDS = ["text", "k", "min_score", "cameras", "time_from", "time_to", "sources", "rerank"]
BODY = st.dictionaries(st.sampled_from(FIELDS) | TEXT, JSON | NUMBER, max_size=6).map(
    lambda body: {"text": "a man in red", **body} if len(body) % 2 else body)


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> TestClient:
    base = tmp_path_factory.mktemp("api")
    build_gallery_index(base)
    return TestClient(create_app(Searcher.open(base / "idx", device="cpu", precision="fp32")))


def api_property(client: TestClient, body: object, raw: bytes | None) -> None:
    content = raw if raw is not None else json.dumps(body).encode("utf-8", "surrogatepass")
    answer = client.post("/api/search", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    if answer.status_code != 200:
        assert "detail" in answer.json()


test_api_json_bodies, test_api_json_bodies_long = two_variants(
    body=BODY | JSON, raw=st.none() | st.binary(max_size=200) | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))(
    api_property)
