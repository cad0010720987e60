"""The index directory: manifest, embeddings and records in shards, the unreadable-file list, the IVF file.

    INDEX/manifest.json        what the index was built with (see `Manifest`); written atomically
    INDEX/shards/NNNNNN.npy    embeddings of one shard, [M, D] float32, L2-normalised
    INDEX/shards/NNNNNN.jsonl  its records, one JSON object a row: {"path": relative path, metadata...}
    INDEX/unreadable.jsonl     files the last build or add could not read: {"path", "problem"}
    INDEX/ivf.faiss            the trained IVF index, for galleries large enough to use it

With `--backend milvus` the shards are records only (.jsonl) and the embeddings live in a Milvus collection,
row i as id i (`cpcl.index.milvus`): a shard is upserted there before its .jsonl is written.

Footage (videos, frame folders) adds detection records: {"path": "SOURCE#FRAME:K", "source", "frame",
"box", "detector_score", "offset", ...} (`cpcl.index.footage`), and the manifest's `sources` records
each source's settings and how far it was scanned.

A shard is written as .npy first and .jsonl second, each through a temporary file and a
rename, so a shard counts once its .jsonl exists: an interrupted build leaves whole shards
only, and building again continues after them. Row i of the index is row i of the shards in
order. The manifest binds ivf.faiss to what it was trained on (`Manifest.ivf`: row count,
dimension, sha256 of the embeddings in row order, sha256 of the file), recorded after the file
is written; a file that does not match the shards beside it is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cpcl import __version__
from cpcl.index.config import IndexConfig
from cpcl.index.milvus import MilvusBackend
from cpcl.utils.closing import Closing
from cpcl.utils.errors import SearchIndexError
from cpcl.utils.files import atomic_write, remove_stale_temporaries, sha256_of, writing

log = logging.getLogger(__name__)

INDEX_FORMAT = "cpcl-index"  # value of the manifest's "format" field
INDEX_VERSION = 3  # newest index layout this code reads and the one it writes (2: footage `sources`; 3: the
# settings' backend and Milvus fields)
MANIFEST = "manifest.json"
SHARDS = "shards"
UNREADABLE = "unreadable.jsonl"
IVF_FILE = "ivf.faiss"


@dataclass
class Manifest:
    """What an index was built from; searching checks the model against it."""

    checkpoint_path: str  # absolute path of the checkpoint the embeddings came from
    checkpoint_sha256: str  # its content hash (a directory: the hash of its files)
    model: dict[str, Any]  # asdict(ClipConfig) of the model at the index's image size
    preprocessing: dict[str, Any]  # {"image_size": [H, W], "resize": "bicubic", "mean": [...], "std": [...]}
    gallery_root: str  # absolute path of the folder records are relative to
    settings: dict[str, Any] = field(default_factory=lambda: asdict(IndexConfig()))  # asdict(IndexConfig)
    count: int = 0  # rows in the index
    dim: int = 0  # embedding size
    complete: bool = False  # False while a build or add is running (or was interrupted)
    ivf: dict[str, Any] | None = None  # what ivf.faiss was trained on (see `IndexStore.ivf_binding`); None: nothing
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # footage source -> asdict(SourceState)
    cpcl_version: str = __version__  # cpcl that wrote the index
    format: str = INDEX_FORMAT
    version: int = INDEX_VERSION

    @cached_property
    def config(self) -> IndexConfig:
        """`settings` as an IndexConfig, built (and checked) on first use (settings never change after)."""
        return IndexConfig(**self.settings)

    @property
    def root(self) -> Path:
        return Path(self.gallery_root)


def embeddings_sha256(embeddings: np.ndarray) -> str:
    """Hex sha256 of embeddings [N, D] as float32 bytes in row order."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(embeddings, dtype=np.float32)).cast("B")).hexdigest()


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (split at "\\n" only: U+2028 and the like may sit inside a string)."""
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SearchIndexError(f"{path} cannot be read ({err}); delete it and its .npy, then run cpcl index "
                               f"build again") from None


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    """JSON lines, ASCII only (any text, even a lone surrogate, is written as an escape and read back the same)."""
    return "".join(json.dumps(row) + "\n" for row in rows).encode("ascii")


class IndexStore(Closing):
    """Reads and writes one index directory (see the module docstring)."""

    def __init__(self, directory: Path, manifest: Manifest):
        self.directory = Path(directory)
        self.manifest = manifest
        self._collection: MilvusBackend | None = None

    @property
    def collection(self) -> MilvusBackend | None:
        """The Milvus collection holding the embeddings (connected on first use); None: the shards hold them."""
        if self._collection is None and self.manifest.config.backend == "milvus":
            self._collection = MilvusBackend.open(None, self.manifest.config)
        return self._collection

    def close(self) -> None:
        """Release the Milvus collection's connection where one was opened (the next use connects again)."""
        if self._collection is not None:
            self._collection.close()
            self._collection = None

    @classmethod
    def create(cls, directory: Path, manifest: Manifest) -> IndexStore:
        """Start a new index in `directory` (created; must not hold an index already), and its Milvus collection."""
        directory = Path(directory)
        if (directory / MANIFEST).exists():
            raise SearchIndexError(f"{directory} already holds an index")
        store = cls(directory, manifest)
        try:
            if store.collection is not None:
                store.collection.create(manifest)
            with store.writing(directory):
                (directory / SHARDS).mkdir(parents=True, exist_ok=True)
            store.write_manifest()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open(cls, directory: Path) -> IndexStore:
        """An existing index; SearchIndexError when `directory` holds none or one of another format."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise SearchIndexError(f"{directory} is not a cpcl index (no {MANIFEST}); make one with cpcl index build")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise SearchIndexError(f"{path} cannot be read: {err}") from None
        if not isinstance(raw, dict) or raw.get("format") != INDEX_FORMAT:
            raise SearchIndexError(f"{path} is not a cpcl index manifest (format {raw.get('format')!r})")
        if raw.get("version", 0) > INDEX_VERSION:
            raise SearchIndexError(f"{path} is index version {raw['version']}, newer than this cpcl reads "
                                   f"({INDEX_VERSION}); upgrade cpcl")
        try:
            return cls(directory, Manifest(**raw))
        except TypeError as err:
            raise SearchIndexError(f"{path} is malformed: {err}") from None

    def writing(self, path: Path) -> AbstractContextManager[None]:
        """A failed write of `path` (a read-only folder, a full disk) as one SearchIndexError line."""
        return writing(path, f"free space or make {self.directory} writable, then run the command again (a build "
                             f"continues after the shards it finished)", SearchIndexError)

    def _write(self, path: Path, write: Callable[[BinaryIO], object]) -> None:
        """`atomic_write` of a file of the index (see `writing`)."""
        with self.writing(path):
            atomic_write(path, write)

    def _write_bytes(self, path: Path, data: bytes) -> None:
        self._write(path, lambda stream: stream.write(data))

    def write_manifest(self) -> None:
        self.manifest.version = INDEX_VERSION  # what this code writes, whichever version it read
        self._write_bytes(self.directory / MANIFEST, json.dumps(asdict(self.manifest), indent=2).encode())

    def shards(self) -> list[tuple[Path, Path]]:
        """(embeddings .npy, records .jsonl) of every complete shard, in order (with Milvus: no .npy)."""
        folder = self.directory / SHARDS
        return [(jsonl.with_suffix(".npy"), jsonl) for jsonl in sorted(folder.glob("[0-9]*.jsonl"))]

    def read_records(self) -> list[dict[str, Any]]:
        """Every record, in row order."""
        records: list[dict[str, Any]] = []
        for _, jsonl in self.shards():
            records.extend(_read_jsonl(jsonl))
        return records

    def update_metadata(self, sidecar: dict[str, dict[str, Any]]) -> int:
        """Set the metadata of indexed paths named in `sidecar` (replacing theirs); returns how many changed.

        Only shards with a changed record are rewritten (atomically, like any shard file).
        """
        changed = first = 0
        for _, jsonl in self.shards():
            records = _read_jsonl(jsonl)
            updated = [{"path": r["path"], **sidecar[r["path"]]} if r["path"] in sidecar else r for r in records]
            differing = [i for i, (old, new) in enumerate(zip(records, updated)) if old != new]
            if differing:
                if self.collection is not None:  # its filter fields first: a kill in between is redone next time
                    self.collection.relabel([first + i for i in differing], [updated[i] for i in differing])
                self._write_bytes(jsonl, _jsonl(updated))
                changed += len(differing)
            first += len(records)
        return changed

    def read(self) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """(embeddings [N, D] float32, records [N]) in row order; SearchIndexError on a damaged shard. With Milvus,
        the embeddings are read back from the collection."""
        if self.collection is not None:
            records = self.read_records()
            self.collection.check(self.manifest, len(records))
            return self.collection.vectors(len(records)), records
        arrays, records = [], []
        for npy, jsonl in self.shards():
            rows = _read_jsonl(jsonl)
            try:
                array = np.load(npy)
            except (OSError, ValueError) as err:
                raise SearchIndexError(f"{npy} cannot be read ({err}); delete it and {jsonl.name}, then "
                                       f"run cpcl index build again") from None
            if array.ndim != 2 or len(array) != len(rows):
                raise SearchIndexError(f"{npy} holds {array.shape} embeddings for {len(rows)} records in "
                                       f"{jsonl.name}; delete both and run cpcl index build again")
            arrays.append(array)
            records.extend(rows)
        dim = self.manifest.dim or int(self.manifest.model.get("embed_dim", 0))
        embeddings = np.concatenate(arrays) if arrays else np.empty((0, dim), dtype=np.float32)
        return np.ascontiguousarray(embeddings, dtype=np.float32), records

    def append_shard(self, embeddings: np.ndarray, records: list[dict[str, Any]]) -> None:
        """Add one shard: embeddings [M, D] float32 with their M records."""
        if len(embeddings) != len(records):
            raise ValueError(f"{len(embeddings)} embeddings for {len(records)} records")
        done = self.shards()
        number = int(done[-1][1].stem) + 1 if done else 0
        folder = self.directory / SHARDS
        npy, jsonl = folder / f"{number:06d}.npy", folder / f"{number:06d}.jsonl"
        if self.collection is not None:  # keyed by row: a shard written again after a kill overwrites its rows
            self.collection.put(self.manifest.count, embeddings, records)
        else:
            self._write(npy, lambda stream: np.save(stream, np.ascontiguousarray(embeddings, dtype=np.float32)))
        self._write_bytes(jsonl, _jsonl(records))
        self.manifest.count += len(records)
        self.manifest.dim = int(embeddings.shape[1])

    def write_unreadable(self, problems: dict[str, str]) -> None:
        """Record the files the latest run could not read (relative path -> problem)."""
        self._write_bytes(self.directory / UNREADABLE,
                          _jsonl([{"path": path, "problem": problem} for path, problem in sorted(problems.items())]))

    @property
    def ivf_path(self) -> Path:
        return self.directory / IVF_FILE

    def ivf_binding(self, embeddings: np.ndarray) -> dict[str, Any]:
        """What ties ivf.faiss (as it is on disk now) to `embeddings` [N, D]."""
        return {"rows": int(embeddings.shape[0]), "dim": int(embeddings.shape[1]),
                "embeddings_sha256": embeddings_sha256(embeddings), "file_sha256": sha256_of(self.ivf_path)}

    def saved_ivf(self, embeddings: np.ndarray) -> Path | None:
        """ivf.faiss when the manifest records it was trained on exactly `embeddings` [N, D] (rows, dim and
        digest) and the file is unchanged since; None otherwise (missing, stale, damaged or never bound)."""
        bound = self.manifest.ivf
        if not bound or not self.ivf_path.is_file() or \
                (bound.get("rows"), bound.get("dim")) != (len(embeddings), embeddings.shape[1]):
            return None
        return self.ivf_path if bound == self.ivf_binding(embeddings) else None

    def save_ivf(self, backend: Any, embeddings: np.ndarray) -> None:
        """Write `backend` (trained on `embeddings`) to ivf.faiss and bind it in the manifest (written last)."""
        self.manifest.ivf = None
        with self.writing(self.ivf_path):
            backend.save(self.ivf_path)
        self.manifest.ivf = self.ivf_binding(embeddings)
        self.write_manifest()

    def remove_stale_temporaries(self) -> None:
        """Delete what writes killed mid-way left behind (only while no other process writes this index)."""
        stale = remove_stale_temporaries(self.directory) + remove_stale_temporaries(self.directory / SHARDS)
        if stale:
            log.info("%s: removed %d temporary files left by an interrupted run", self.directory, len(stale))
