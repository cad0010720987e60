"""Writing files so that a reader, or a run stopped at any moment, never sees half of one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

HASH_CHUNK = 1 << 20  # bytes read at a time when hashing a file


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Run `write(stream)` on a temporary file beside `path`, flush it to disk, then rename it over
    `path`: `path` holds the old bytes or the new ones, never a part. The file gets the usual mode
    (0666 less the umask; the temporary file starts at 0600). Creates `path`'s folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files `atomic_write` leaves in `folder` when its process is killed mid-write
    (`.NAME.XXXXXXXX.tmp`); returns them. Only for a folder no other process is writing to."""
    folder = Path(folder)
    stale = sorted(path for path in folder.glob(".*.tmp") if path.is_file()) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes, or of a directory's files (relative name and bytes, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as stream:
            while chunk := stream.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
