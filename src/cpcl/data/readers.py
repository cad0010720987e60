"""Annotation readers: CUHK-PEDES, ICFG-PEDES, RSTPReid and the generic JSONL format.

Every reader turns its file into the one record model of `cpcl.data.records`. Split values are
compared case-insensitively; a value other than train, val or test is val (docs/method.md, Data
formats), with a warning naming it. Nothing is dropped: a bad record raises `DataError` naming
the file, the record and the field, and two different files that could each be the annotations
(ICFG-PEDES.json beside ICFG_PEDES.json, or one in the dataset's folder and one above it) are
refused. Person ids are 64-bit integers (JSONL: integers or strings,
`1` and `"1"` being one person). `load_dataset` then checks the images lie inside the dataset's
image folder and that no image leaks between splits (`cpcl.data.integrity`).

CUHK-PEDES also ships as the original release's `caption_all.json`: the records of `reid_raw.json`
(id, file_path, captions) without their split field. Its split is derived the way the field's code
fixes it, by person id: ids 1-11003 train, 11004-12003 val, 12004-13003 test (IRRA's CUHKPEDES
reader documents these ranges; they are the split field of `reid_raw.json`, and the order the
public MATLAB preparation of Image-Text-Embedding relies on: the last 2,000 ids val and test).
An id outside 1-13003 cannot be placed and is refused in one line. `reid_raw.json` wins when both exist.

Generic JSONL (for a user's own data): a file `annotations.jsonl` (``--root`` is its folder or
the file itself), one JSON object per line::

    {"image": "imgs/0001.jpg", "captions": ["a man in a blue jacket ..."], "split": "train", "person_id": 12}

``image`` is relative to the file's folder (an absolute path, or one that leads out of the folder,
is refused unless `load_dataset(allow_outside_root=True)`); ``captions`` is a non-empty list of
strings; ``split`` is optional (default "train"); ``person_id`` (int or string) is optional,
but given on every line or on none. Lines end at "\\n" only (a U+2028 inside a caption is text).
Blank lines are ignored.
"""

from __future__ import annotations

import filecmp
import json
import logging
import os
import reprlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cpcl.data.integrity import check_dataset
from cpcl.data.records import SPLITS, PersonSearchData
from cpcl.utils.errors import DataError
from cpcl.utils.text import blank

log = logging.getLogger(__name__)

ID_BOUNDS = (-(2**63), 2**63 - 1)  # person ids are stored and compared as int64
CUHK_STANDARD_SPLIT = {"train": (1, 11003), "val": (11004, 12003), "test": (12004, 13003)}  # caption_all.json's ids


def split_name(value: str) -> str:
    """Map an annotation split value to train / val / test, ignoring case and spaces (anything else is val)."""
    name = value.strip().lower()
    return name if name in ("train", "test") else "val"


def warn_unknown_splits(path: Path, values: Counter) -> None:
    """One warning naming the split values (with their record counts) that were read as val."""
    unknown = {value: count for value, count in values.items() if value.strip().lower() not in SPLITS}
    if unknown:
        listed = ", ".join(f"{value!r} ({count} records)" for value, count in sorted(unknown.items()))
        log.warning("%s: split values other than train, val and test are read as val: %s", path, listed)


def parse_json(text: str, where: str) -> Any:
    """json.loads with its failures as one-line DataErrors naming `where` (position, or nesting too deep)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        at = f"line {err.lineno} column {err.colno} (char {err.pos})" if "\n" in text else f"column {err.colno}"
        raise DataError(f"{where}: malformed JSON at {at}: {err.msg}") from None
    except ValueError as err:  # a number of more than 4,300 digits
        raise DataError(f"{where}: malformed JSON: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply to read (arrays or objects inside each other "
                        f"thousands of levels down)") from None


def person_id(value: int, where: str) -> int:
    """`value` when it fits a 64-bit integer; DataError otherwise."""
    if not ID_BOUNDS[0] <= value <= ID_BOUNDS[1]:
        raise DataError(f"{where}: person id {value} does not fit in 64 bits; expected an integer of at most "
                        f"{ID_BOUNDS[1]} in magnitude")
    return value


def find_annotation_file(root: Path, folder: str, names: tuple[str, ...], dataset: str, ranked: bool = False) -> Path:
    """The annotation file `root/folder/NAME` or `root/NAME` for a NAME of `names`: alternative names of one file,
    or, `ranked`, names in order of preference. DataError when none exists, or when two different files could be
    meant (one would be read and the other ignored without a word)."""
    root = Path(root)
    per_name = [list(dict.fromkeys([root / folder / name, root / name])) for name in names]
    for group in per_name if ranked else [[path for paths in per_name for path in paths]]:
        found: list[Path] = []
        for path in group:
            if path.is_file() and not any(_same_content(path, other) for other in found):
                found.append(path)
        if len(found) > 1:
            raise DataError(f"two different {dataset} annotation files under {root}: {found[0]} and {found[1]}; "
                            f"keep the one to read, or give --root the folder of one")
        if found:
            return found[0]
    looked = ", ".join(str(p) for paths in per_name for p in paths)
    raise DataError(f"no {dataset} annotation file under {root}: looked for {looked}")


def _same_content(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (one file by two names included)."""
    return a.samefile(b) or filecmp.cmp(a, b, shallow=False)


def load_json(path: Path) -> Any:
    """Parse a JSON file; malformed content raises `DataError` with the position."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read: {err}") from None
    return parse_json(text, str(path))


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


def _image_path(record: Any, key: str, where: str) -> str:
    """The image path in `record[key]`; DataError when no file name can be it (a NUL byte, a lone surrogate the file
    system encoding cannot write)."""
    path = _field(record, key, str, where)
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        raise DataError(f"{where} field '{key}' is not valid Unicode (a lone surrogate): {reprlib.repr(path)}") \
            from None
    if "\0" in path:
        raise DataError(f"{where} field '{key}' holds a NUL byte, which no file name can: {reprlib.repr(path)}")
    return path


def _captions(record: dict, key: str, where: str) -> list[str]:
    captions = _field(record, key, list, where)
    if not captions:
        raise DataError(f"{where} field '{key}' is an empty list; expected at least one caption")
    for j, text in enumerate(captions):
        if not isinstance(text, str) or blank(text):
            raise DataError(f"{where} field '{key}'[{j}] must be a string with words, got {reprlib.repr(text)}")
    return captions


def cuhk_standard_split(identity: int, where: str) -> str:
    """The standard CUHK-PEDES split of a person id (`CUHK_STANDARD_SPLIT`); DataError outside 1-13003."""
    for name, (low, high) in CUHK_STANDARD_SPLIT.items():
        if low <= identity <= high:
            return name
    raise DataError(f"{where}: person id {identity} is outside CUHK-PEDES's 1-13003, so caption_all.json's standard "
                    f"split cannot be derived; put the release's reid_raw.json (the same records with a 'split' "
                    f"field) beside it, or convert your data to the jsonl format with a split per line")


def _read_record_list(
    path: Path, dataset: str, path_key: str, id_key: str = "id",
    derive_split: Callable[[int, str], str] | None = None,
) -> PersonSearchData:
    """Shared body of the three public formats: a JSON list of per-image records. With `derive_split`,
    a record without a split field gets `derive_split(person id, where)`."""
    records = load_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records, got a {type(records).__name__}")
    image_root = path.parent / "imgs"
    data = PersonSearchData(dataset, path, image_root=image_root)
    split_values: Counter = Counter()
    for i, record in enumerate(records):
        where = f"{path}: record {i}"
        rel_path = _image_path(record, path_key, where)
        identity = person_id(_field(record, id_key, int, where), f"{where} field '{id_key}'")
        derived = derive_split is not None and "split" not in record
        split = derive_split(identity, where) if derived else _field(record, "split", str, where)
        captions = _captions(record, "captions", where)
        split_values[split] += 1
        data.splits[split_name(split)].add(image_root / rel_path, identity, captions)
    warn_unknown_splits(path, split_values)
    return data


def read_cuhk_pedes(root: Path) -> PersonSearchData:
    """CUHK-PEDES: `CUHK-PEDES/reid_raw.json`, keys split, captions, file_path, id; or the original
    `caption_all.json` (no split field), split by person id as `CUHK_STANDARD_SPLIT` says (module docstring)."""
    path = find_annotation_file(root, "CUHK-PEDES", ("reid_raw.json", "caption_all.json"), "cuhk-pedes", ranked=True)
    if path.name != "caption_all.json":
        return _read_record_list(path, "cuhk-pedes", "file_path")
    log.info("%s: no split field; the standard split is derived from person ids (train %s, val %s, test %s)", path,
             *("-".join(map(str, bounds)) for bounds in CUHK_STANDARD_SPLIT.values()))
    return _read_record_list(path, "cuhk-pedes", "file_path", derive_split=cuhk_standard_split)


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
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028 may sit inside a caption
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read annotation file: {err}") from None
    data = PersonSearchData("jsonl", path)
    id_map: dict[str, int] = {}
    has_ids: bool | None = None
    split_values: Counter = Counter()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        record = parse_json(line, where)
        image = Path(_image_path(record, "image", where))
        captions = _captions(record, "captions", where)
        split = _field(record, "split", str, where) if "split" in record else "train"
        line_has_id = "person_id" in record
        if has_ids is None:
            has_ids = line_has_id
        elif line_has_id != has_ids:
            state = "has" if line_has_id else "has no"
            raise DataError(f"{where} {state} 'person_id' unlike the lines before it; give it on every line or none")
        identity = None
        if line_has_id:  # 1 and "1" are one person: ids are compared as text, then numbered 0, 1, ...
            identity = id_map.setdefault(str(_field(record, "person_id", (int, str), where)), len(id_map))
        split_values[split] += 1
        data.splits[split_name(split)].add(path.parent / image, identity, captions)
    warn_unknown_splits(path, split_values)
    return data


DATASETS: dict[str, Callable[[Path], PersonSearchData]] = {
    "cuhk-pedes": read_cuhk_pedes,
    "icfg-pedes": read_icfg_pedes,
    "rstpreid": read_rstpreid,
    "jsonl": read_jsonl,
}


def load_dataset(name: str, root: Path, allow_outside_root: bool = False, strict: bool = False) -> PersonSearchData:
    """Read the annotations of dataset `name` under `root` and check them (`cpcl.data.integrity.check_dataset`:
    images inside the dataset's image folder unless `allow_outside_root`; leakage between splits warned
    about, or refused when `strict`). Images are not opened here."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; valid: {', '.join(DATASETS)}")
    data = DATASETS[name](Path(root))
    check_dataset(data, allow_outside_root, strict)
    return data
