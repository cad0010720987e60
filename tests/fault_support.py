"""Helpers for tests of failures: the one line a failed command prints, a disk that fills up, a call that fails."""

from __future__ import annotations

import errno
import io
import os

from cpcl.utils import files


def one_error_line(capsys) -> str:
    """The single line a failed command printed on stderr (log records aside); no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if " INFO " not in line and " WARNING " not in line]
    assert len(lines) == 1, lines
    return lines[0]


def disk_full_after(monkeypatch, allowed: int) -> None:
    """Make every file `atomic_write` opens raise ENOSPC once `allowed` bytes went to it."""
    real_fdopen = os.fdopen

    class Full(io.RawIOBase):
        def __init__(self, stream):
            self.stream, self.written = stream, 0

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            if self.written + len(data) > allowed:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return self.stream.write(data)

        def fileno(self) -> int:
            return self.stream.fileno()

        def close(self) -> None:
            self.stream.close()
            super().close()

    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))


def failing_open(error: int):
    def fail(*args, **kwargs):
        raise OSError(error, os.strerror(error))
    return fail


def read_only(monkeypatch) -> None:
    """Make every folder or file cpcl creates fail as on a read-only file system (EROFS): Path.mkdir and the
    temporary file of `atomic_write`."""
    monkeypatch.setattr(files.Path, "mkdir", lambda self, *a, **k: failing_open(errno.EROFS)())
    monkeypatch.setattr(files.tempfile, "mkstemp", failing_open(errno.EROFS))
