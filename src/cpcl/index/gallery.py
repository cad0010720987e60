"""The gallery side of an index: which image files a folder holds, and their metadata sidecar.

Records name images by their path relative to the gallery root, POSIX-style, so an index moves
with its gallery. The sidecar is a CSV (header row; delimited by `,`, `;`, tab or `|`, sniffed; a
UTF-8 byte-order mark allowed) or JSONL file with a `path` field per row
(relative to the gallery root) and any other fields; `camera` and `time` are the ones search can
filter on. A time is an ISO 8601 date-time (`2024-05-01T08:30:00`, naive = UTC) or a number of
seconds, within the years 1-9999.

A sidecar is checked whole before anything is indexed, each problem one line naming the file and line:
a column named like a field of the index's own (`RESERVED_FIELDS`), a quote that is never closed, a
row with more values than the header has names, a value longer than `MAX_VALUE_CHARS`, a time that is
not one, and (JSONL) NaN, infinities or text that is not valid Unicode. So every value an index holds
can be written back as JSON, shown and compared.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import reprlib
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cpcl.data.readers import parse_json
from cpcl.utils.errors import DataError


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
LEGACY_ENCODING = "cp1252"  # Windows-1252: what spreadsheets and editors on Windows save text in unless told
CSV_DELIMITERS = (",", ";", "\t", "|")  # sidecar CSV delimiters recognised (";": spreadsheets in comma-decimal locales)
FOOTAGE_FIELDS = ("source", "frame", "offset", "box", "detector_score", "file", "crop")  # a detection's own fields
RESERVED_FIELDS = ("path", *FOOTAGE_FIELDS)  # record fields a sidecar column may not be named
MAX_VALUE_CHARS = 10_000  # longest sidecar value (JSONL: as JSON text), and longest column name
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def list_images(root: Path, under: Iterable[Path] = ()) -> list[str]:
    """Relative POSIX paths of the image files below `root` (or below the given files / folders in it), sorted.

    Hidden files and folders (a leading dot) are skipped; symlinks that lead outside `root` too.
    """
    root = root.resolve()
    starts = [Path(p) for p in under] or [root]
    found: set[str] = set()
    for start in starts:
        start = start if start.is_absolute() else Path.cwd() / start
        if not start.exists():
            raise DataError(f"{start}: no such file or folder")
        candidates = [start] if start.is_file() else sorted(start.rglob("*"))
        for path in candidates:
            rel = relative_to_root(path, root)
            if rel is not None and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and \
                    not any(part.startswith(".") for part in Path(rel).parts):
                found.add(rel)
    return sorted(found)


def relative_to_root(path: Path, root: Path) -> str | None:
    """`path` relative to `root` as POSIX text, or None when it (or its symlink target) lies outside."""
    try:
        rel = Path(os.path.normpath(path.absolute())).relative_to(root)
        path.resolve().relative_to(root)
    except ValueError:
        return None
    return rel.as_posix()


def utc(seconds: float, where: str = "time") -> datetime:
    """The moment `seconds` after the epoch, in UTC; DataError outside the years 1-9999 (what datetime holds)."""
    try:
        return EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise DataError(f"{where}: {seconds!r} seconds since 1970 is outside the years 1-9999") from None


def utc_iso(seconds: float, timespec: str = "seconds", where: str = "time") -> str:
    """`seconds` since 1970 as ISO 8601 in UTC, without an offset (2024-05-01T08:30:00); DataError outside the years
    1-9999."""
    return utc(seconds, where).replace(tzinfo=None).isoformat(timespec=timespec)


def _seconds(value: Any) -> float | None:
    """`value` (a number, or text of one) as a finite float, or None."""
    try:
        seconds = float(value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value))
    except (ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) else None


def parse_time(value: Any, where: str = "time") -> float:
    """Seconds since the epoch from a finite number or an ISO 8601 date-time (naive = UTC), within the years
    1-9999 (`utc`); DataError otherwise (NaN and infinities too: no row would compare with them)."""
    seconds = _seconds(value)
    if seconds is None:
        try:
            moment = datetime.fromisoformat(value.strip()) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None:
            raise DataError(f"{where}: {reprlib.repr(value)} is not a time; use ISO 8601 (2024-05-01T08:30:00) "
                            f"or seconds")
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    utc(seconds, where)
    return seconds


def filter_fields(record: dict[str, Any]) -> tuple[str, float, str]:
    """What search filters compare of a record: (camera, "" = none; time in seconds since the epoch, NaN = none;
    footage source, "" = a crop). DataError on a time that is not one."""
    time = parse_time(record["time"]) if "time" in record else math.nan
    return str(record.get("camera", "")), time, str(record.get("source", ""))


def csv_delimiter(text: str) -> str:
    """The delimiter of a CSV text: of `CSV_DELIMITERS`, the one that splits its header row into the most
    fields (the first on a tie, so a one-column file reads with ",")."""
    def header_fields(delimiter: str) -> int:
        return len(next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), []))

    return max(CSV_DELIMITERS, key=header_fields)


def _csv_rows(path: Path, text: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(where: "FILE:LINE", row as a dict) of a CSV sidecar, read strictly: a quote that is never closed (it
    would swallow the rest of the file), a value longer than MAX_VALUE_CHARS or a row longer than its
    header is a DataError naming the line."""
    line = 1
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=csv_delimiter(text), strict=True)
        header = next(reader, [])
        repeated = sorted({name for name in header if header.count(name) > 1 and name})
        if repeated:
            raise DataError(f"{path}:1: column {repeated[0]!r} is named twice")
        while True:
            line = reader.line_num + 1
            values = next(reader, None)
            if values is None:
                return
            names = header + [""] * max(0, len(values) - len(header))
            unnamed = [value for name, value in zip(names, values) if not name and value]
            if unnamed:
                raise DataError(f"{path}:{line}: the value {unnamed[0][:40]!r} has no column name in the header; "
                                f"name its column or remove it")
            yield f"{path}:{line}", {name: value for name, value in zip(header, values) if name}
    except csv.Error as err:
        if "field larger than field limit" in str(err):
            raise DataError(f"{path}:{line}: a value is longer than the {MAX_VALUE_CHARS:,} characters a metadata "
                            f"value may hold") from None
        if "unexpected end of data" in str(err):
            raise DataError(f"{path}:{line}: a quote opened in this row is never closed, so the rest of the file "
                            f"would be one value; close it, or double a quote that is part of the text") from None
        raise DataError(f"{path}:{line}: not valid CSV ({err}); a quoted value must end at its quote") from None


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where: "FILE:LINE", row) of a JSONL sidecar; DataError for a line that is not a JSON object."""
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit inside a string
        if line.strip():
            row = parse_json(line, f"{path}:{number}")
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object per line")
            yield f"{path}:{number}", row


def _read_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) of a CSV (with header) or JSONL sidecar.

    Read as people write them: a UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped, the CSV
    delimiter is sniffed (`csv_delimiter`), and the bytes are decoded without newline translation, so
    a quoted field keeps its line breaks exactly ("\r\n" included).
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"metadata file {path} cannot be read: {err}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"metadata file {path} is not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start})"
                        f"{_encoding_hint(data)}; save it as UTF-8 (Excel: Save As, 'CSV UTF-8') or convert it: "
                        f"iconv -f {LEGACY_ENCODING} -t utf-8 {path} > {path.with_name('utf8-' + path.name)}") from None
    if path.suffix.lower() == ".csv":
        return _csv_rows(path, text)
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"metadata file {path}: expected a .csv or .jsonl file")
    return _jsonl_rows(path, text)


def check_value(value: Any, where: str) -> None:
    """DataError unless `value` can be written back as JSON and shown: finite numbers, valid Unicode (no lone
    surrogate), at most MAX_VALUE_CHARS as JSON text."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where}: the text holds a lone surrogate (\\ud800-\\udfff): not valid Unicode") from None
    except ValueError:
        raise DataError(f"{where}: NaN and infinities are not values JSON can hold; leave the field out") from None
    except RecursionError:
        raise DataError(f"{where}: nested too deeply") from None
    if len(text) > MAX_VALUE_CHARS:
        raise DataError(f"{where}: {len(text):,} characters, over the {MAX_VALUE_CHARS:,} a metadata value may "
                        f"hold")


def _metadata(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A sidecar row's metadata: every field but `path`, empty ones dropped; DataError for a reserved or bad name,
    a bad value or a time that is not one."""
    meta = {}
    for key, value in row.items():
        if key in RESERVED_FIELDS[1:]:
            raise DataError(f"{where}: the column {key!r} is a field of the index's own ({', '.join(RESERVED_FIELDS)}"
                            f"); rename it")
        check_value(key, f"{where}: a column name")
        if key != "path" and value not in (None, ""):
            check_value(value, f"{where}: {key[:40]!r}")
            meta[key] = value
    if "time" in meta:
        parse_time(meta["time"], f"{where}: time")
    if "camera" in meta:
        meta["camera"] = str(meta["camera"])
    return meta


def _encoding_hint(data: bytes) -> str:
    """", it reads as Windows-1252" when those bytes decode in the encoding Excel and Notepad write by default."""
    try:
        data.decode(LEGACY_ENCODING)
    except UnicodeDecodeError:
        return ""
    return ", it reads as Windows-1252"


def read_sidecar(path: Path, root: Path) -> dict[str, dict[str, Any]]:
    """Relative image path -> its metadata (every field but `path`; empty values dropped), checked (module
    docstring).

    Paths may be relative to `root` or absolute inside it. Every row is checked here, so a bad one
    is reported with its line, not at search time.
    """
    root = root.resolve()
    out: dict[str, dict[str, Any]] = {}
    for where, row in _read_rows(path):
        if not isinstance(row.get("path"), str) or not row["path"]:
            raise DataError(f"{where} has no 'path' field (the image path relative to {root}); its fields: "
                            f"{', '.join(repr(key[:40]) for key in row) or 'none'}")
        check_value(row["path"], f"{where}: path")
        raw = Path(row["path"])
        try:
            rel = relative_to_root(raw if raw.is_absolute() else root / raw, root)
        except ValueError:  # a NUL byte
            rel = None
        if rel is None:
            raise DataError(f"{where}: {reprlib.repr(row['path'])} is outside the gallery root {root}")
        out[rel] = _metadata(row, where)
    return out
