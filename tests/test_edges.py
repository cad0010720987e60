"""The small edges: the licence, a sidecar in Windows-1252, the exit code of an index nothing could be read into,
progress records outside a terminal, and shell completion."""

from __future__ import annotations

import itertools
import logging
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from cpcl.cli import main
from cpcl.index.gallery import read_sidecar
from cpcl.utils import progress as progress_module
from cpcl.utils.errors import DataError
from cpcl.utils.progress import Progress
from search_support import write_checkpoint, write_crop

REPO = Path(__file__).parents[1]


def test_the_licence_is_the_mit_one_pyproject_names():
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == {"text": "MIT"}
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in text


def test_a_windows_1252_sidecar_says_how_to_make_it_utf8(tmp_path):
    sidecar = tmp_path / "meta.csv"
    sidecar.write_bytes("path,camera,note\na.png,c1,caf\u00e9 entr\u00e9e\n".encode("cp1252"))
    with pytest.raises(DataError) as info:
        read_sidecar(sidecar, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"metadata file {sidecar} is not UTF-8 (byte 0xe9 at offset 29), it reads as "
                              f"Windows-1252; save it as UTF-8")
    assert message.endswith(f"iconv -f cp1252 -t utf-8 {sidecar} > {tmp_path / 'utf8-meta.csv'}")


def test_index_build_fails_when_no_file_could_be_read(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "m.pt")
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for name in ("a.jpg", "b.png"):
        (gallery / name).write_bytes(b"not an image")
    args = ["index", "build", "--checkpoint", str(checkpoint), "--images", str(gallery), "--out", str(tmp_path / "i")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "cpcl index: error: none of the 2 files could be read, so nothing was indexed" in err
    write_crop(gallery / "c.png", 1)  # one readable file: an index, and success
    assert main(args) == 0


def test_outside_a_terminal_a_quick_loop_writes_one_record(monkeypatch, caplog):
    clock = itertools.count()
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: 0.0)
    with caplog.at_level(logging.INFO, logger="cpcl.utils.progress"):
        with Progress(100, "quick") as progress:
            for _ in range(100):
                progress.update()
    assert [record.getMessage().split(" [")[0] for record in caplog.records] == ["quick: 100/100 it"]
    caplog.clear()
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: float(next(clock)))  # a second a call
    with caplog.at_level(logging.INFO, logger="cpcl.utils.progress"):
        with Progress(100, "slow") as progress:
            for _ in range(100):
                progress.update()
    lines = [record.getMessage().split(" [")[0] for record in caplog.records]
    assert len(lines) == 10 and lines[-1] == "slow: 100/100 it"  # about every 10% of a long loop, as before


def test_shell_completion_completes_commands_and_options(tmp_path, capsys):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "cpcl.bash"
    script.write_text(capsys.readouterr().out)

    def complete(*words: str) -> set[str]:
        line = " ".join(words)
        probe = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; "
                 f"COMP_POINT=${{#COMP_LINE}}; _shtab_cpcl; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        return set(subprocess.run([bash, "-c", probe], capture_output=True, text=True, check=True).stdout.split())

    assert {"index", "export", "report"} <= complete("cpcl", "")
    assert "index" in complete("cpcl", "in")
    assert {"--opset", "--onnx"} <= complete("cpcl", "export", "--o")
    assert main(["completion", "zsh"]) == 0 and "#compdef cpcl" in capsys.readouterr().out
