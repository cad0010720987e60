"""Writing files so that a reader, or a run stopped at any moment, never sees half of one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cpcl.utils.errors import CpclError

HASH_CHUNK = 1 << 20  # bytes read at a time when hashing a file


def cache_dir() -> Path:
    """cpcl's cache folder (downloaded weights, the kNN engine probe): $CPCL_CACHE, else
    $XDG_CACHE_HOME/cpcl, else ~/.cache/cpcl."""
    if os.environ.get("CPCL_CACHE"):
        return Path(os.environ["CPCL_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "cpcl"


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


@contextmanager
def writing(target: Path, hint: str, error: type[CpclError] = CpclError) -> Iterator[None]:
    """Turn an OSError while writing `target` (a read-only folder, a full disk, a quota, a file where a folder is
    due) into one line: `error`("cannot write TARGET: REASON; HINT"). Only for blocks that write and read
    nothing else, so that the line is true."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        cause = os_error(err)
        if cause is None:
            raise
        raise error(f"cannot write {target}: {cause.strerror or cause}; {hint}") from None


def os_error(err: BaseException | None) -> OSError | None:
    """`err`, or the OSError behind it: torch.save reports a failed write as a RuntimeError of its zip
    writer raised while the OSError was being handled."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


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
