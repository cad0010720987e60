"""Searching an index: a sentence or an example image in, ranked gallery images with scores and metadata out.

`Searcher.open` loads the index and the model it was built with (checked against the
manifest), chooses exact search or IVF by the gallery's size (or connects to its Milvus collection, released by
`close` or at the end of a `with` block), and answers queries with
optional metadata filters (camera, time range, footage source) applied inside the search and a
score floor. Scores are cosine similarities in [-1, 1]. With `rerank`, the gallery is ordered by the
k-reciprocal re-ranked distance (`cpcl.clustering.rerank`, exact over every row; the gallery's side is
prepared once per session, on the first such query); scores stay cosines. Detections from footage followed into
one track (`cpcl.index.tracks`) come back as one hit, the person: scored by the mean cosine of its best
`track_top` detections (re-ranked: placed by its first detection in the re-ranked order), shown at the detection
that matched best, with the track's span, best crop and a strip of detections along it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cpcl.clustering.rerank import RerankConfig, RerankGallery, prepare_gallery, rerank_distances
from cpcl.index.backends import Backend, backend_name, make_backend
from cpcl.index.encoder import Encoder
from cpcl.index.footage import SourceState
from cpcl.index.gallery import FOOTAGE_FIELDS, filter_fields, parse_time
from cpcl.index.store import IndexStore, Manifest
from cpcl.index.tracks import link_tracks
from cpcl.utils.closing import Closing
from cpcl.utils.errors import DataError, SearchIndexError

log = logging.getLogger(__name__)

GROUP_FETCH = 4  # with tracks, each search asks the backend for this many times more rows than results (again
# with four times as many while tracks leave fewer than k results)
STRIP = 5  # detections shown along a person's track


@dataclass(frozen=True)
class Filters:
    """Which gallery rows a query may return; rows without the filtered field never pass."""

    cameras: tuple[str, ...] = ()  # keep rows whose camera is one of these (empty: any camera)
    time_from: float | None = None  # keep rows taken at or after this (seconds since the epoch)
    time_to: float | None = None  # keep rows taken at or before this
    sources: tuple[str, ...] = ()  # keep detections from these footage sources (empty: any row)

    @classmethod
    def parse(cls, cameras: Sequence[str] = (), time_from: Any = None, time_to: Any = None,
              sources: Sequence[str] = ()) -> Filters:
        """From user input: times as ISO 8601 or seconds, empty strings as absent."""
        start = parse_time(time_from, "time_from") if time_from not in (None, "") else None
        stop = parse_time(time_to, "time_to") if time_to not in (None, "") else None
        if start is not None and stop is not None and start > stop:
            raise SearchIndexError(f"time range is empty: from {time_from} is after to {time_to}")
        return cls(tuple(str(c) for c in cameras if str(c)), start, stop, tuple(str(s) for s in sources if str(s)))

    @property
    def active(self) -> bool:
        return bool(self.cameras) or self.time_from is not None or self.time_to is not None or bool(self.sources)


@dataclass
class Hit:
    """One result."""

    rank: int  # 1-based
    score: float  # cosine similarity in [-1, 1]
    row: int  # row of the index
    path: str  # relative to the gallery root (a detection: SOURCE#FRAME:K)
    metadata: dict[str, Any] = field(default_factory=dict)  # the record's other fields (camera, time, ...)
    footage: dict[str, Any] | None = None  # a detection: source, frame, offset, box, detector_score, frame_size;
    # grouped also span (its track: first / last frame and offset, detections), best (the row of its best crop)
    # and strip (row, frame, offset and box of up to STRIP detections along it); None for a crop
    distance: float | None = None  # re-ranked searches: the re-ranked distance the hits are ordered by

    def to_dict(self) -> dict[str, Any]:
        out = {"rank": self.rank, "score": round(self.score, 6), "path": self.path, "metadata": self.metadata}
        if self.distance is not None:
            out["distance"] = round(self.distance, 6)
        return out if self.footage is None else {**out, "footage": self.footage}


class Searcher(Closing):
    """An index loaded for search, with the model that embeds queries (None: vectors only)."""

    def __init__(self, directory: Path, manifest: Manifest, embeddings: np.ndarray | None,
                 records: list[dict[str, Any]], backend: Backend, encoder: Encoder | None = None,
                 rerank: RerankConfig | None = None):
        """embeddings: [N, D], or None where `backend` holds them (Milvus: read back on first use, `embeddings`).

        Takes 7 parameters because an opened index is these parts, read apart by `open` (and by tests that build
        one in memory): folder, manifest, vectors, records, backend, the query model and the re-ranking.
        """
        self.directory = directory
        self._embeddings = embeddings
        self._embeddings_lock = threading.Lock()
        self.rerank_config = rerank or RerankConfig()
        self._reranked: RerankGallery | None = None
        self._rerank_lock = threading.Lock()
        self.manifest = manifest
        self.records = records
        self.backend = backend
        self.encoder = encoder
        self.count, self.dim = len(records), embeddings.shape[1] if embeddings is not None else manifest.dim
        try:
            cameras, times, sources = zip(*map(filter_fields, records)) if records else ((), (), ())
        except DataError as err:  # an index built before times were checked in range at build
            raise SearchIndexError(f"{directory}: a record's {err}; build the index again with a sidecar of "
                                   f"valid times") from None
        self.cameras = np.array(cameras, dtype=object)  # "" = none
        self.times = np.array(times, dtype=np.float64)  # NaN = none
        self.row_sources = np.array(sources, dtype=object)  # "" = a crop
        self._paths = {record["path"]: row for row, record in enumerate(records)}
        self.sources = {name: SourceState.from_dict(raw, f"{directory}: source {name}")
                        for name, raw in manifest.sources.items()}
        self.track_top = manifest.config.track_top
        rates = {name: state.source_fps for name, state in self.sources.items()}
        self.track, self.tracks = link_tracks(records, self.embeddings if rates else np.empty((0, self.dim)), rates,
                                              manifest.config)

    @property
    def embeddings(self) -> np.ndarray:
        """[N, D] every row's embedding; from Milvus read back once, when footage or re-ranking first needs it."""
        if self._embeddings is None:  # only a MilvusBackend is given no embeddings
            with self._embeddings_lock:
                if self._embeddings is None:
                    self._embeddings = self.backend.vectors(self.count)
        return self._embeddings

    @classmethod
    def open(cls, directory: Path, checkpoint: Path | None = None, device: str = "auto", precision: str = "auto",
             load_model: bool = True, rerank: RerankConfig | None = None) -> Searcher:
        """Load `directory` and (unless `load_model` is False) the checkpoint it was built with, checked.

        `checkpoint` overrides the manifest's path (a moved file); it must hash the same. `rerank`: the
        re-ranking's parameters for searches that ask for it (default RerankConfig()).
        """
        store = IndexStore.open(directory)
        manifest = store.manifest
        if not manifest.complete:
            log.warning("%s: the last build or add did not finish; searching the %d images it embedded "
                        "(run cpcl index build or add again to finish)", directory, manifest.count)
        encoder = Encoder.for_index(manifest, directory, checkpoint, device, precision) if load_model else None
        try:
            if store.collection is not None:
                records, embeddings = store.read_records(), None
                store.collection.check(manifest, len(records))
            else:
                embeddings, records = store.read()
            if len(records) == 0:
                raise SearchIndexError(f"{directory} holds no images yet; run cpcl index build")
            backend = store.collection or cls._faiss(store, embeddings)
            log.info("opened %s: %d images, %s search", directory, len(records), backend.name)
            return cls(Path(directory), manifest, embeddings, records, backend, encoder, rerank)
        except BaseException:
            store.close()  # a Milvus connection opened for nothing
            raise

    def close(self) -> None:
        """Release what the backend holds open (a Milvus connection); searches fail after it."""
        self.backend.close()

    @staticmethod
    def _faiss(store: IndexStore, embeddings: np.ndarray) -> Backend:
        """Exact search or IVF over `embeddings` [N, D], by the gallery's size; IVF from ivf.faiss where it is bound
        to them."""
        name = backend_name(len(embeddings), store.manifest.config)
        saved = store.saved_ivf(embeddings) if name == "ivf" else None
        if name == "ivf" and saved is None:
            log.warning("%s: %s is missing or was not trained on these %d embeddings; training IVF for this "
                        "session (cpcl index add --index %s saves one)", store.directory, store.ivf_path.name,
                        len(embeddings), store.directory)
        return make_backend(name, embeddings, store.manifest.config, saved=saved)

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

    def source_names(self) -> list[str]:
        """The footage sources with detections in the index."""
        return sorted(set(self.row_sources) - {""})

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
        if filters.sources:
            if not self.source_names():
                raise SearchIndexError("this index holds no footage (build it with --video or --frames)")
            mask &= np.isin(self.row_sources, list(filters.sources))
        return mask

    def search_vector(self, query: np.ndarray, k: int, min_score: float | None = None,
                      filters: Filters = Filters(), group: bool = True, rerank: bool = False) -> list[Hit]:
        """query [D] (L2-normalised) -> up to k hits, best first, each scoring >= min_score.

        With `group`, a track of detections is one hit (see the module docstring); its score counts only the
        detections `filters` allow. The rows asked of the backend are clamped to the rows that may be returned:
        no more slots are ever allocated. The grouped order is exact: rows are fetched until no track left
        unseen (all its rows scoring at most the last row fetched) could enter the top k. With `rerank`, best
        first means by the re-ranked distance (`rerank_config`), over every row.
        """
        if min_score is not None and not math.isfinite(min_score):
            raise SearchIndexError(f"the score floor (min_score) must be a finite number (a cosine, -1..1), got "
                                   f"{min_score}")
        allowed = self.allowed(filters)
        limit = self.count if allowed is None else int(allowed.sum())
        capped = self.backend.max_rows is not None and limit > self.backend.max_rows
        if capped:
            limit = self.backend.max_rows
            if k > limit:
                log.warning("the %s backend returns at most %d rows a search: %d results, not %d", self.backend.name,
                            limit, limit, k)
        k = min(k, limit)
        if k < 1:
            return []
        group = group and bool(self.tracks)
        fetch = min(limit, k * GROUP_FETCH) if group else k
        query = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if rerank:
            return self._reranked_hits(query, k, min_score, allowed, group, fetch)
        while True:
            scores, rows = self.backend.search(query, fetch, allowed, filters)
            found = rows[0] >= 0
            ranked = (scores[0][found].tolist(), rows[0][found].tolist())
            if group:
                ranked = self._by_track(*ranked, query[0], allowed)
            hits = self._hits(*ranked, k, min_score, group)
            last = float(scores[0][found][-1]) if found.any() else -math.inf
            full = len(hits) >= k and (not group or hits[-1].score >= last)  # grouped: no unseen track beats them
            if full or fetch >= limit or (min_score is not None and last < min_score):
                if capped and not full and fetch >= limit:
                    log.warning("the %s backend returns at most %d rows a search: these results are the best "
                                "among them, not among every row the filters pass", self.backend.name, limit)
                return hits
            fetch = min(limit, fetch * GROUP_FETCH)

    def _by_track(self, scores: list[float], rows: list[int], query: np.ndarray,
                  allowed: np.ndarray | None) -> tuple[list[float], list[int]]:
        """Ranked rows -> (score, row) of each track among them, best score first (ties: in their first row's
        order): a track's score is the mean of its best `track_top` allowed detections' cosines, its row the best
        of them. Rows without a track (crops) keep their own."""
        out: list[tuple[float, int]] = []
        seen: set[int] = set()
        for score, row in zip(scores, rows):
            key = int(self.track[row])
            if key in seen:
                continue
            seen.add(key)
            track = self.tracks.get(key)
            if track is not None:
                members = track.rows if allowed is None else track.rows[allowed[track.rows]]
                cosines = self.embeddings[members] @ query
                best = np.argsort(-cosines, kind="stable")[:self.track_top]
                score, row = float(cosines[best].mean()), int(members[best[0]])
            out.append((score, row))
        order = sorted(range(len(out)), key=lambda i: -out[i][0])
        return [out[i][0] for i in order], [out[i][1] for i in order]

    def rerank_gallery(self) -> RerankGallery:
        """The gallery's side of the re-ranking, prepared on first use (once per session, thread-safe)."""
        with self._rerank_lock:
            if self._reranked is None:
                start = time.perf_counter()
                self._reranked = prepare_gallery(self.embeddings, self.rerank_config)
                log.info("prepared re-ranking over %d rows (k1 %d, k2 %d) in %.1f s", self.count,
                         self.rerank_config.k1, self.rerank_config.k2, time.perf_counter() - start)
            return self._reranked

    def _reranked_hits(self, query: np.ndarray, k: int, min_score: float | None, allowed: np.ndarray | None,
                       group: bool, fetch: int) -> list[Hit]:
        """Up to k hits in the order of the re-ranked distance (ties: the lower row), each with its distance."""
        distance = rerank_distances(query, self.rerank_gallery())[0]
        order = np.lexsort((np.arange(self.count), distance))
        if allowed is not None:
            order = order[allowed[order]]
        while True:
            rows = order[:fetch]
            scores = self.embeddings[rows] @ query[0]
            hits = self._hits(scores.tolist(), rows.tolist(), k, min_score, group, distance)
            if len(hits) >= k or fetch >= len(order):
                return hits
            fetch = min(len(order), fetch * GROUP_FETCH)

    def _hits(self, scores: list[float], rows: list[int], k: int, min_score: float | None, group: bool,
              distance: np.ndarray | None = None) -> list[Hit]:
        """Up to k hits from ranked rows; with `group`, the first row of each track only.
        distance: [N] the re-ranked distance of every row, given to the hits of a re-ranked search."""
        hits: list[Hit] = []
        seen: set[int] = set()
        for score, row in zip(scores, rows):
            if min_score is not None and score < min_score:
                continue
            if group:
                if int(self.track[row]) in seen:
                    continue
                seen.add(int(self.track[row]))
            record = self.records[row]
            meta = {key: value for key, value in record.items() if key != "path" and key not in FOOTAGE_FIELDS}
            hits.append(Hit(len(hits) + 1, float(score), row, record["path"], meta, self._footage(row, group),
                            None if distance is None else float(distance[row])))
            if len(hits) == k:
                break
        return hits

    def _footage(self, row: int, group: bool) -> dict[str, Any] | None:
        """The footage fields of a detection row (with its frame size and, grouped, its track: span, best crop,
        strip)."""
        record = self.records[row]
        if "source" not in record:
            return None
        state = self.sources.get(record["source"])
        info = {key: record[key] for key in FOOTAGE_FIELDS if key in record}
        info["frame_size"] = state.size if state else None
        track = self.tracks.get(int(self.track[row])) if group else None
        info["span"] = track.to_dict() if track else None
        if track is not None:
            info["best"] = track.best
            info["strip"] = [{"row": r, **{key: self.records[r].get(key) for key in ("frame", "offset", "box")}}
                             for r in track.strip(STRIP)]
        return info

    def _encoder(self) -> Encoder:
        if self.encoder is None:
            raise SearchIndexError("this searcher was opened without its model; open it with load_model=True")
        return self.encoder

    def search_text(self, text: str, k: int, min_score: float | None = None, filters: Filters = Filters(),
                    group: bool = True, rerank: bool = False) -> list[Hit]:
        """A sentence -> hits (see `search_vector`)."""
        return self.search_vector(self._encoder().texts([text])[0], k, min_score, filters, group, rerank)

    def search_image(self, image: Image.Image, k: int, min_score: float | None = None,
                     filters: Filters = Filters(), group: bool = True, rerank: bool = False) -> list[Hit]:
        """An example image -> hits (see `search_vector`)."""
        return self.search_vector(self._encoder().pil_images([image])[0], k, min_score, filters, group, rerank)
