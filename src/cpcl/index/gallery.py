"""The gallery side of an index: which image files a folder holds, and their metadata sidecar.

Records name images by their path relative to the gallery root, POSIX-style, so an index moves
with its gallery. The sidecar is a CSV (header row; delimited by `,`, `;`, tab or `|`, sniffed; a
UTF-8 byte-order mark allowed) or JSONL file with a `path` field per row
(relative to the gallery root) and any other fields; `camera` and `time` are the ones search can
filter on. A time is an ISO 8601 date-time (`2024-05-01T08:30:00`, naive = UTC) or a number of
seconds.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cpcl.data.readers import parse_json
from cpcl.utils.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
LEGACY_ENCODING = "cp1252"  # Windows-1252: what spreadsheets and editors on Windows save text in unless told
CSV_DELIMITERS = (",", ";", "\t", "|")  # sidecar CSV delimiters recognised (";": spreadsheets in comma-decimal locales)


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


def parse_time(value: Any, where: str = "time") -> float:
    """Seconds since the epoch from a finite number or an ISO 8601 date-time (naive = UTC); DataError otherwise
    (NaN and infinities too: no row would compare with them)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            return float(value)
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = None
    if seconds is not None and math.isfinite(seconds):
        return seconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DataError(f"{where}: {value!r} is not a time; use ISO 8601 (2024-05-01T08:30:00) "
                        f"or seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def csv_delimiter(text: str) -> str:
    """The delimiter of a CSV text: of `CSV_DELIMITERS`, the one that splits its header row into the most
    fields (the first on a tie, so a one-column file reads with ",")."""
    def header_fields(delimiter: str) -> int:
        return len(next(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), []))

    return max(CSV_DELIMITERS, key=header_fields)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV (with header) or JSONL sidecar as dicts.

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
        delimiter = csv_delimiter(text)
        log.debug("%s: CSV delimited by %r", path, delimiter)
        return [dict(row) for row in csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)]
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"metadata file {path}: expected a .csv or .jsonl file")
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit inside a string
        if line.strip():
            row = parse_json(line, f"{path}:{number}")
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object per line")
            rows.append(row)
    return rows


def _encoding_hint(data: bytes) -> str:
    """", it reads as Windows-1252" when those bytes decode in the encoding Excel and Notepad write by default."""
    try:
        data.decode(LEGACY_ENCODING)
    except UnicodeDecodeError:
        return ""
    return ", it reads as Windows-1252"


def read_sidecar(path: Path, root: Path) -> dict[str, dict[str, Any]]:
    """Relative image path -> its metadata (every field but `path`; empty values dropped).

    Paths may be relative to `root` or absolute inside it. Times are checked here, so a bad one
    is reported with its line, not at search time.
    """
    root = root.resolve()
    out: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(_read_rows(path), start=1):
        if "path" not in row:
            raise DataError(f"{path}: row {number} has no 'path' field (the image path relative to {root}); "
                            f"its fields: {', '.join(map(repr, row)) or 'none'}")
        raw = Path(str(row["path"]))
        rel = relative_to_root(raw if raw.is_absolute() else root / raw, root)
        if rel is None:
            raise DataError(f"{path}: row {number}: {raw} is outside the gallery root {root}")
        meta = {key: value for key, value in row.items() if key != "path" and value not in (None, "")}
        if "time" in meta:
            parse_time(meta["time"], f"{path}: row {number}")
        if "camera" in meta:
            meta["camera"] = str(meta["camera"])
        out[rel] = meta
    return out
