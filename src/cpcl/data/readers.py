"""Annotation readers: CUHK-PEDES, ICFG-PEDES, RSTPReid and the generic JSONL format.

Every reader turns its file into the one record model of `cpcl.data.records`. A split value
other than "train" or "test" is val (METHOD.md, Data formats). Nothing is dropped: a bad
record raises `DataError` naming the file, the record and the field.

Generic JSONL (for a user's own data): a file `annotations.jsonl` (``--root`` is its folder or
the file itself), one JSON object per line::

    {"image": "imgs/0001.jpg", "captions": ["a man in a blue jacket ..."], "split": "train", "person_id": 12}

``image`` is relative to the file's folder (or absolute); ``captions`` is a non-empty list of
strings; ``split`` is optional (default "train"); ``person_id`` (int or string) is optional,
but given on every line or on none. Blank lines are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cpcl.data.records import PersonSearchData
from cpcl.utils.errors import DataError


def split_name(value: str) -> str:
    """Map an annotation split value to train / val / test (anything else is val)."""
    return value if value in ("train", "test") else "val"


def find_annotation_file(root: Path, folder: str, names: tuple[str, ...], dataset: str) -> Path:
    """Look for `root/folder/name`, then `root/name`, for each accepted file name."""
    root = Path(root)
    candidates = list(dict.fromkeys([root / folder / name for name in names] + [root / name for name in names]))
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise DataError(f"no {dataset} annotation file under {root}: looked for {looked}")


def load_json(path: Path) -> Any:
    """Parse a JSON file; malformed content raises `DataError` with the position."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read annotation file: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: malformed JSON at line {err.lineno} column {err.colno} (char {err.pos}): {err.msg}"
        ) from None


def _field(record: Any, key: str, expected: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(record, dict):
        raise DataError(f"{where} is not a JSON object (got {type(record).__name__})")
    if key not in record:
        raise DataError(f"{where} is missing field '{key}'")
    value = record[key]
    if not isinstance(value, expected) or isinstance(value, bool):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise DataError(f"{where} field '{key}' must be {names}, got {type(value).__name__}")
    return value


def _captions(record: dict, key: str, where: str) -> list[str]:
    captions = _field(record, key, list, where)
    if not captions:
        raise DataError(f"{where} field '{key}' is an empty list; expected at least one caption")
    for j, text in enumerate(captions):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where} field '{key}'[{j}] must be a non-empty string, got {text!r}")
    return captions


def _read_record_list(
    path: Path, dataset: str, path_key: str, id_key: str = "id"
) -> PersonSearchData:
    """Shared body of the three public formats: a JSON list of per-image records."""
    records = load_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records, got a {type(records).__name__}")
    data = PersonSearchData(dataset, path)
    image_root = path.parent / "imgs"
    for i, record in enumerate(records):
        where = f"{path}: record {i}"
        split = _field(record, "split", str, where)
        rel_path = _field(record, path_key, str, where)
        person_id = _field(record, id_key, int, where)
        captions = _captions(record, "captions", where)
        data.splits[split_name(split)].add(image_root / rel_path, person_id, captions)
    return data


def read_cuhk_pedes(root: Path) -> PersonSearchData:
    """CUHK-PEDES: `CUHK-PEDES/reid_raw.json`, keys split, captions, file_path, id."""
    path = find_annotation_file(root, "CUHK-PEDES", ("reid_raw.json",), "cuhk-pedes")
    return _read_record_list(path, "cuhk-pedes", "file_path")


def read_icfg_pedes(root: Path) -> PersonSearchData:
    """ICFG-PEDES: `ICFG-PEDES/ICFG-PEDES.json` (or `ICFG_PEDES.json`), keys as CUHK-PEDES."""
    names = ("ICFG-PEDES.json", "ICFG_PEDES.json")
    path = find_annotation_file(root, "ICFG-PEDES", names, "icfg-pedes")
    return _read_record_list(path, "icfg-pedes", "file_path")


def read_rstpreid(root: Path) -> PersonSearchData:
    """RSTPReid: `RSTPReid/data_captions.json`, keys id, img_path, captions, split."""
    path = find_annotation_file(root, "RSTPReid", ("data_captions.json",), "rstpreid")
    return _read_record_list(path, "rstpreid", "img_path")


def read_jsonl(root: Path) -> PersonSearchData:
    """Generic JSONL (see the module docstring)."""
    root = Path(root)
    path = root if root.suffix == ".jsonl" and root.is_file() else None
    if path is None:
        path = find_annotation_file(root, "", ("annotations.jsonl",), "jsonl")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read annotation file: {err}") from None
    data = PersonSearchData("jsonl", path)
    id_map: dict[int | str, int] = {}
    has_ids: bool | None = None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: malformed JSON at column {err.colno}: {err.msg}") from None
        image = Path(_field(record, "image", str, where))
        captions = _captions(record, "captions", where)
        split = _field(record, "split", str, where) if "split" in record else "train"
        line_has_id = "person_id" in record
        if has_ids is None:
            has_ids = line_has_id
        elif line_has_id != has_ids:
            state = "has" if line_has_id else "has no"
            raise DataError(f"{where} {state} 'person_id' unlike the lines before it; give it on every line or none")
        person_id = None
        if line_has_id:
            raw_id = _field(record, "person_id", (int, str), where)
            person_id = id_map.setdefault(raw_id, len(id_map))
        data.splits[split_name(split)].add(path.parent / image, person_id, captions)
    return data


DATASETS: dict[str, Callable[[Path], PersonSearchData]] = {
    "cuhk-pedes": read_cuhk_pedes,
    "icfg-pedes": read_icfg_pedes,
    "rstpreid": read_rstpreid,
    "jsonl": read_jsonl,
}


def load_dataset(name: str, root: Path) -> PersonSearchData:
    """Read the annotations of dataset `name` under `root` (images are not opened here)."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; valid: {', '.join(DATASETS)}")
    return DATASETS[name](Path(root))
