"""Gallery sidecars as people write them: Excel's BOM, `;`-delimited CSV, quoted fields holding newlines."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpcl.index.gallery import csv_delimiter, read_sidecar
from cpcl.utils.errors import DataError


def sidecar(tmp_path: Path, data: bytes, name: str = "meta.csv") -> Path:
    (tmp_path / "imgs").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_utf8_csv_with_a_byte_order_mark_reads_its_path_column(tmp_path):
    path = sidecar(tmp_path, "\ufeffpath,camera,note\r\na.jpg,c1,café\r\n".encode())
    assert read_sidecar(path, tmp_path / "imgs") == {"a.jpg": {"camera": "c1", "note": "café"}}


def test_a_jsonl_sidecar_with_a_byte_order_mark_reads(tmp_path):
    path = sidecar(tmp_path, '\ufeff{"path": "a.jpg", "camera": "c2"}\n'.encode(), "meta.jsonl")
    assert read_sidecar(path, tmp_path / "imgs") == {"a.jpg": {"camera": "c2"}}


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_the_delimiter_is_sniffed(tmp_path, delimiter):
    rows = [["path", "camera", "time"], ["a.jpg", "c1", "2024-05-01T08:30:00"], ["b.jpg", "c2", "5"]]
    path = sidecar(tmp_path, "".join(delimiter.join(row) + "\n" for row in rows).encode())
    assert read_sidecar(path, tmp_path / "imgs") == {"a.jpg": {"camera": "c1", "time": "2024-05-01T08:30:00"},
                                                     "b.jpg": {"camera": "c2", "time": "5"}}


def test_semicolon_csv_keeps_commas_inside_its_fields(tmp_path):
    path = sidecar(tmp_path, b"path;note\na.jpg;red coat, black bag\n")
    assert read_sidecar(path, tmp_path / "imgs") == {"a.jpg": {"note": "red coat, black bag"}}


def test_a_one_column_csv_reads_with_commas():
    assert csv_delimiter("path\na.jpg\n") == ","


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_quoted_fields_keep_their_newlines_exactly(tmp_path, line_end):
    note = "first line\r\nsecond line\nthird"
    text = f'path,note{line_end}a.jpg,"{note}"{line_end}b.jpg,plain{line_end}'
    path = sidecar(tmp_path, text.encode())
    assert read_sidecar(path, tmp_path / "imgs") == {"a.jpg": {"note": note}, "b.jpg": {"note": "plain"}}


def test_a_csv_without_a_path_column_names_the_fields_it_found(tmp_path):
    path = sidecar(tmp_path, b"file;camera\na.jpg;c1\n")
    with pytest.raises(DataError, match=r"meta.csv:2 has no 'path' field .*its fields: 'file', 'camera'"):
        read_sidecar(path, tmp_path / "imgs")
