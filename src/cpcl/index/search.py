"""Searching an index: a sentence or an example image in, ranked gallery images with scores and metadata out.

`Searcher.open` loads the index and the model it was built with (checked against the
manifest), chooses exact search or IVF by the gallery's size, and answers queries with
optional metadata filters (camera, time range) applied inside the search and a score floor.
Scores are cosine similarities in [-1, 1].
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cpcl.index.backends import Backend, backend_name, make_backend
from cpcl.index.encoder import Encoder
from cpcl.index.gallery import parse_time
from cpcl.index.store import IndexStore, Manifest
from cpcl.utils.errors import SearchIndexError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filters:
    """Which gallery rows a query may return; rows without the filtered field never pass."""

    cameras: tuple[str, ...] = ()  # keep rows whose camera is one of these (empty: any camera)
    time_from: float | None = None  # keep rows taken at or after this (seconds since the epoch)
    time_to: float | None = None  # keep rows taken at or before this

    @classmethod
    def parse(cls, cameras: Sequence[str] = (), time_from: Any = None, time_to: Any = None) -> Filters:
        """From user input: times as ISO 8601 or seconds, empty strings as absent."""
        start = parse_time(time_from, "time_from") if time_from not in (None, "") else None
        stop = parse_time(time_to, "time_to") if time_to not in (None, "") else None
        if start is not None and stop is not None and start > stop:
            raise SearchIndexError(f"time range is empty: from {time_from} is after to {time_to}")
        return cls(tuple(str(c) for c in cameras if str(c)), start, stop)

    @property
    def active(self) -> bool:
        return bool(self.cameras) or self.time_from is not None or self.time_to is not None


@dataclass
class Hit:
    """One result."""

    rank: int  # 1-based
    score: float  # cosine similarity in [-1, 1]
    row: int  # row of the index
    path: str  # relative to the gallery root
    metadata: dict[str, Any] = field(default_factory=dict)  # the record's other fields (camera, time, ...)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": round(self.score, 6), "path": self.path, "metadata": self.metadata}


class Searcher:
    """An index loaded for search, with the model that embeds queries (None: vectors only)."""

    def __init__(self, directory: Path, manifest: Manifest, embeddings: np.ndarray, records: list[dict[str, Any]],
                 backend: Backend, encoder: Encoder | None = None):
        self.directory = directory
        self.manifest = manifest
        self.records = records
        self.backend = backend
        self.encoder = encoder
        self.count, self.dim = embeddings.shape
        self.cameras = np.array([str(r.get("camera", "")) for r in records], dtype=object)  # "" = none
        self.times = np.array([parse_time(r["time"]) if "time" in r else math.nan for r in records], dtype=np.float64)
        self._paths = {record["path"]: row for row, record in enumerate(records)}

    @classmethod
    def open(cls, directory: Path, checkpoint: Path | None = None, device: str = "auto", precision: str = "auto",
             load_model: bool = True) -> Searcher:
        """Load `directory` and (unless `load_model` is False) the checkpoint it was built with, checked.

        `checkpoint` overrides the manifest's path (a moved file); it must hash the same.
        """
        store = IndexStore.open(directory)
        manifest = store.manifest
        if not manifest.complete:
            log.warning("%s: the last build or add did not finish; searching the %d images it embedded "
                        "(run cpcl index build or add again to finish)", directory, manifest.count)
        encoder = Encoder.for_index(manifest, directory, checkpoint, device, precision) if load_model else None
        embeddings, records = store.read()
        if len(records) == 0:
            raise SearchIndexError(f"{directory} holds no images yet; run cpcl index build")
        name = backend_name(len(records), manifest.config)
        saved = store.saved_ivf(embeddings) if name == "ivf" else None
        if name == "ivf" and saved is None:
            log.warning("%s: %s is missing or was not trained on these %d embeddings; training IVF for this "
                        "session (cpcl index add --index %s saves one)", directory, store.ivf_path.name,
                        len(records), directory)
        backend = make_backend(name, embeddings, manifest.config, saved=saved)
        log.info("opened %s: %d images, %s search", directory, len(records), backend.name)
        return cls(Path(directory), manifest, embeddings, records, backend, encoder)

    @property
    def root(self) -> Path:
        return self.manifest.root

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) the model reads images at."""
        height, width = self.manifest.preprocessing["image_size"]
        return int(height), int(width)

    def camera_names(self) -> list[str]:
        return sorted(set(self.cameras) - {""})

    def time_range(self) -> tuple[float, float] | None:
        """(earliest, latest) time of the gallery, or None when no row has one."""
        known = self.times[~np.isnan(self.times)]
        return (float(known.min()), float(known.max())) if known.size else None

    def row_of(self, path: str) -> int | None:
        """The row of an indexed relative path, or None."""
        return self._paths.get(path)

    def allowed(self, filters: Filters) -> np.ndarray | None:
        """[N] bool of the rows that pass `filters` (None when nothing is filtered)."""
        if not filters.active:
            return None
        mask = np.ones(self.count, dtype=bool)
        if filters.cameras:
            if not self.camera_names():
                raise SearchIndexError("this index has no camera metadata (build it with --metadata FILE)")
            mask &= np.isin(self.cameras, list(filters.cameras))
        if filters.time_from is not None or filters.time_to is not None:
            if self.time_range() is None:
                raise SearchIndexError("this index has no time metadata (build it with --metadata FILE)")
            with np.errstate(invalid="ignore"):
                if filters.time_from is not None:
                    mask &= self.times >= filters.time_from
                if filters.time_to is not None:
                    mask &= self.times <= filters.time_to
        return mask

    def search_vector(self, query: np.ndarray, k: int, min_score: float | None = None,
                      filters: Filters = Filters()) -> list[Hit]:
        """query [D] (L2-normalised) -> up to k hits, best first, each scoring >= min_score.

        k is clamped to the rows that may be returned: no more slots are ever asked of the backend.
        """
        allowed = self.allowed(filters)
        k = min(k, self.count if allowed is None else int(allowed.sum()))
        if k < 1:
            return []
        scores, rows = self.backend.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k, allowed)
        hits = []
        for score, row in zip(scores[0].tolist(), rows[0].tolist()):
            if row < 0 or (min_score is not None and score < min_score):
                continue
            record = self.records[row]
            meta = {key: value for key, value in record.items() if key != "path"}
            hits.append(Hit(len(hits) + 1, float(score), row, record["path"], meta))
        return hits

    def _encoder(self) -> Encoder:
        if self.encoder is None:
            raise SearchIndexError("this searcher was opened without its model; open it with load_model=True")
        return self.encoder

    def search_text(self, text: str, k: int, min_score: float | None = None, filters: Filters = Filters()) -> list[Hit]:
        """A sentence -> hits (see `search_vector`)."""
        return self.search_vector(self._encoder().texts([text])[0], k, min_score, filters)

    def search_image(self, image: Image.Image, k: int, min_score: float | None = None,
                     filters: Filters = Filters()) -> list[Hit]:
        """An example image -> hits (see `search_vector`)."""
        return self.search_vector(self._encoder().pil_images([image])[0], k, min_score, filters)
