"""A Milvus collection as an index's vector store and search backend (`cpcl index build --backend milvus`).

The index folder keeps its manifest (model, preprocessing, the settings naming the Milvus URI and collection)
and its records (`shards/NNNNNN.jsonl`, no `.npy`); the vectors live in the collection, one entity a row:

    id      INT64, primary key: the row of the index (row i of the shards' records)
    vector  FLOAT_VECTOR [D], L2-normalised; inner product; index `milvus_index` (IVF_FLAT: `nlist`, `nprobe`)
    camera  VARCHAR: the record's camera ("" = none)
    time    DOUBLE: seconds since the epoch (NaN = none: no comparison passes it)
    source  VARCHAR: the footage source of a detection ("" = a crop)

Texts are stored as the content of a JSON string (`stored`: quotes, backslashes and control characters escaped),
since Milvus' expressions cannot hold a line break and read no escapes but a backslash's and a double quote's.

The schema's description binds the collection to its index: the checkpoint's sha256 and the dimension. An
index whose collection holds another model's vectors, or another count of rows than its records, is refused
in one line (`check`), as a stale ivf.faiss is never used.

Crash safety is the folder index's (`cpcl.index.store`): a shard is upserted, keyed by its rows, before its
.jsonl is written, and counts once that exists. A build killed at any moment leaves at most rows past the
whole shards in the collection; the next build or add deletes them (`trim`) before it embeds anything, so
every crop is there exactly once. Filters run inside Milvus as a boolean expression (`expression`) that passes
the rows the folder index's mask passes. Every request has a timeout; a server that is down or refuses is one
SearchIndexError line. pymilvus is imported on first use; a Milvus Lite file is open in one process at a time, until the backend is
closed (`close`, or a `with` block).
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cpcl.index.config import IndexConfig
from cpcl.index.gallery import filter_fields
from cpcl.utils.closing import Closing
from cpcl.utils.errors import SearchIndexError
from cpcl.utils.optional import require

if TYPE_CHECKING:
    from cpcl.index.search import Filters
    from cpcl.index.store import Manifest

FORMAT = "cpcl-index"  # the description's "format": a collection cpcl made
TIMEOUT_S = 120  # seconds one Milvus request may take (else pymilvus retries a dead server for minutes)
PAGE = 4096  # rows written or read back a request
MAX_TOPK = 16_384  # Milvus returns at most this many rows a query
TEXT_LENGTH = 65_535  # VARCHAR fields' capacity (Milvus' largest)
LITE_NAME = re.compile(r"[A-Za-z0-9._-]{1,36}")  # what Milvus Lite accepts as a .db file name
PYMILVUS_LOGGERS = ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer")  # they print tracebacks themselves


def _pymilvus() -> Any:
    return require("pymilvus", "pymilvus", "the milvus index backend", "milvus")


def is_lite(uri: str) -> bool:
    """Whether a Milvus URI names a Milvus Lite file (else a server)."""
    return uri.endswith(".db")


def default_index(uri: str) -> str:
    """The vector index a collection at `uri` gets unless --milvus-index says: FLAT on a Milvus Lite file, IVF_FLAT
    on a server. Milvus Lite builds no index of its own: it answers IVF_FLAT (and AUTOINDEX) from an interim index
    with settings of its own, whatever nlist and nprobe say (its recall at 1M rows: docs/scaling.md)."""
    return "FLAT" if is_lite(uri) else "IVF_FLAT"


def lite_uri(uri: str) -> str:
    """A --milvus-uri as the manifest keeps it: a Milvus Lite file (*.db) as an absolute path, a server as given."""
    if not is_lite(uri):
        return uri
    path = Path(uri).expanduser().resolve()
    if not LITE_NAME.fullmatch(path.name):
        raise SearchIndexError(f"--milvus-uri {uri}: Milvus Lite takes a file name of up to 36 letters, digits, "
                               f"'.', '_' or '-'")
    if not path.parent.is_dir():
        raise SearchIndexError(f"--milvus-uri {uri}: the folder {path.parent} does not exist")
    return str(path)


def collection_name(out: Path) -> str:
    """The default collection of an index folder: cpcl_ and its name, other characters as '_'."""
    return "cpcl_" + re.sub(r"[^A-Za-z0-9_]", "_", out.expanduser().resolve().name)[:200]


def stored(text: str) -> str:
    """A camera or source name as the collection holds it: the content of its JSON string (see the docstring)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def expression(filters: Filters) -> str:
    """The Milvus boolean expression passing the rows `filters` pass ("" when nothing is filtered)."""
    def listed(field: str, values: tuple[str, ...]) -> str:
        literals = ('"' + stored(value).replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
        return f"{field} in [{', '.join(literals)}]"

    parts = [listed("camera", filters.cameras)] if filters.cameras else []
    parts += [f"time >= {filters.time_from!r}"] if filters.time_from is not None else []
    parts += [f"time <= {filters.time_to!r}"] if filters.time_to is not None else []
    parts += [listed("source", filters.sources)] if filters.sources else []
    return " and ".join(parts)


@contextmanager
def answering(uri: str, what: str) -> Iterator[None]:
    """A failed Milvus request (server down, refused, an error it returns) as one SearchIndexError line."""
    pymilvus = _pymilvus()
    import grpc  # pymilvus's transport

    try:
        yield
    except (pymilvus.MilvusException, grpc.RpcError) as err:
        message = " ".join(str(getattr(err, "message", None) or err).split())
        raise SearchIndexError(f"Milvus at {uri} failed to {what}: {message}") from None


class MilvusBackend(Closing):
    """The collection `config.milvus_collection` at `config.milvus_uri`: search (the `Backend` protocol) and the
    writes of a build (`create`, `put`, `relabel`, `trim`, `flush`)."""

    name = "milvus"
    max_rows = MAX_TOPK

    def __init__(self, client: Any, config: IndexConfig):
        self.client, self.config = client, config
        self.uri, self.collection = config.milvus_uri, config.milvus_collection

    @classmethod
    def open(cls, embeddings: np.ndarray | None, config: IndexConfig, saved: Path | None = None) -> MilvusBackend:
        """Connect to the collection's server (the vectors are in the collection: `embeddings`, `saved` unused)."""
        pymilvus = _pymilvus()
        for name in PYMILVUS_LOGGERS:  # cpcl reports a failure in one line; pymilvus would add a traceback
            logging.getLogger(name).setLevel(logging.CRITICAL)
        what = "connect" + " (a Milvus Lite file is open in one process at a time: is another using it?)" * \
            is_lite(config.milvus_uri)
        with warnings.catch_warnings(), answering(config.milvus_uri, what):
            warnings.simplefilter("ignore", UserWarning)  # milvus-lite's import of pkg_resources
            silenced = logging.root.manager.disable
            logging.disable(logging.ERROR)  # milvus-lite logs its failure to start on the root logger: a second line
            try:
                client = pymilvus.MilvusClient(config.milvus_uri, timeout=TIMEOUT_S)
            finally:
                logging.disable(silenced)
        return cls(client, config)

    def close(self) -> None:
        """Release the connection (a Milvus Lite file: for another process to open); requests fail after it."""
        self.client.close()

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """client.method(collection, ...) with the timeout; a failure as one line saying `what` failed."""
        with answering(self.uri, what):
            return getattr(self.client, method)(self.collection, *args, timeout=TIMEOUT_S, **kwargs)

    def _binding(self, manifest: Manifest) -> dict[str, Any]:
        return {"format": FORMAT, "checkpoint_sha256": manifest.checkpoint_sha256, "dim": manifest.dim}

    def create(self, manifest: Manifest) -> None:
        """Make the collection for a new index of `manifest`. An empty one made for it (by a build killed before
        its manifest was written) is kept; any other of that name is refused."""
        if self._exists():
            if self._bound() != self._binding(manifest) or self.count():
                raise SearchIndexError(f"collection {self.collection} already exists at {self.uri} (another index's?);"
                                       f" give another --collection, or drop it")
            return
        pymilvus = _pymilvus()
        text = pymilvus.DataType.VARCHAR
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, description=json.dumps(self._binding(manifest)))
        schema.add_field("id", pymilvus.DataType.INT64, is_primary=True)
        schema.add_field("vector", pymilvus.DataType.FLOAT_VECTOR, dim=manifest.dim)
        schema.add_field("camera", text, max_length=TEXT_LENGTH)
        schema.add_field("time", pymilvus.DataType.DOUBLE)
        schema.add_field("source", text, max_length=TEXT_LENGTH)
        index = self.client.prepare_index_params()
        params = {"nlist": self.config.nlist} if self.config.milvus_index.startswith("IVF") else {}
        index.add_index("vector", index_type=self.config.milvus_index, metric_type="IP", params=params)
        self._call(f"create collection {self.collection}", "create_collection", schema=schema, index_params=index,
                   consistency_level="Strong")

    def _exists(self) -> bool:
        with answering(self.uri, f"look up collection {self.collection}"):
            return bool(self.client.has_collection(self.collection, timeout=TIMEOUT_S))

    def _bound(self) -> dict[str, Any] | None:
        """What the collection's description binds it to (None: not a description cpcl wrote)."""
        with answering(self.uri, f"describe collection {self.collection}"):
            described = self.client.describe_collection(self.collection, timeout=TIMEOUT_S).get("description", "")
        try:
            bound = json.loads(described)
        except ValueError:
            return None
        return bound if isinstance(bound, dict) and bound.get("format") == FORMAT else None

    def check(self, manifest: Manifest, count: int | None = None) -> None:
        """SearchIndexError unless the collection exists, was made for `manifest`'s checkpoint and dimension and
        (when given) holds `count` rows."""
        if not self._exists():
            raise SearchIndexError(f"{self.uri} has no collection {self.collection}; build the index again")
        bound, want = self._bound(), self._binding(manifest)
        if bound is None:
            raise SearchIndexError(f"collection {self.collection} at {self.uri} was not made by cpcl; build the index "
                                   f"again with another --collection")
        if bound != want:
            raise SearchIndexError(f"collection {self.collection} at {self.uri} holds vectors of checkpoint sha256 "
                                   f"{str(bound.get('checkpoint_sha256'))[:12]} (dim {bound.get('dim')}), the index "
                                   f"{want['checkpoint_sha256'][:12]} (dim {want['dim']}); build the index again")
        held = self.count() if count is not None else None
        if held != count:
            raise SearchIndexError(f"collection {self.collection} at {self.uri} holds {held} vectors for the "
                                   f"index's {count} records; run cpcl index add to finish an interrupted build, "
                                   f"or build the index again")

    def count(self) -> int:
        """Rows in the collection (strongly consistent: every write acknowledged so far)."""
        rows = self._call("count the collection", "query", filter="", output_fields=["count(*)"],
                          consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def trim(self, count: int) -> None:
        """Delete the rows from `count` on: what a killed build upserted past its whole shards."""
        self._call("delete rows of an interrupted build", "delete", filter=f"id >= {int(count)}")

    def put(self, first: int, embeddings: np.ndarray, records: list[dict[str, Any]]) -> None:
        """Upsert rows first, first + 1, ...: embeddings [M, D] float32 with their M records."""
        for start in range(0, len(records), PAGE):
            stop = min(len(records), start + PAGE)
            self._upsert(list(range(first + start, first + stop)), embeddings[start:stop], records[start:stop])

    def _upsert(self, rows: list[int], embeddings: np.ndarray, records: list[dict[str, Any]]) -> None:
        """Upsert `rows` with embeddings [len(rows), D] and their records' filter fields."""
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        self._call("write vectors", "upsert", [{"id": row, "vector": vector, **_scalars(record)}
                                               for row, vector, record in zip(rows, vectors, records)])

    def _read(self, ids: list[int]) -> np.ndarray:
        """[len(ids), D] float32: the vectors of rows `ids`, in their order."""
        rows = self._call("read vectors", "query", ids=ids, output_fields=["vector"])
        found = {int(row["id"]): row["vector"] for row in rows}
        if len(found) != len(set(ids)):
            raise SearchIndexError(f"collection {self.collection} at {self.uri} lacks rows of the index; build the "
                                   f"index again")
        return np.asarray([found[i] for i in ids], dtype=np.float32).reshape(len(ids), -1)

    def relabel(self, rows: list[int], records: list[dict[str, Any]]) -> None:
        """Write the filter fields of `records` to rows `rows` (their vectors read back and kept)."""
        for start in range(0, len(rows), PAGE):
            chunk = rows[start:start + PAGE]
            self._upsert(chunk, self._read(chunk), records[start:start + PAGE])

    def vectors(self, count: int) -> np.ndarray:
        """[count, D] float32: every row's vector, in row order."""
        parts = [self._read(list(range(start, min(count, start + PAGE)))) for start in range(0, count, PAGE)]
        return np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.float32)

    def flush(self) -> None:
        """Seal what was written, so the server indexes it."""
        self._call("flush the collection", "flush")

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, filters: Filters | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """queries [Q, D] float32 -> (scores [Q, k], ids [Q, k]), best first; empty slots id -1, score -inf.
        Rows are filtered by `filters` inside Milvus (`allowed`, the same rows as a mask, is not needed)."""
        params = {"nprobe": self.config.nprobe} if self.config.milvus_index.startswith("IVF") else {}
        answer = self._call("search", "search", data=np.ascontiguousarray(queries, dtype=np.float32),
                            limit=min(k, MAX_TOPK), filter=expression(filters) if filters else "",
                            anns_field="vector", search_params={"metric_type": "IP", "params": params})
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for i, hits in enumerate(answer):
            scores[i, :len(hits)] = [hit["distance"] for hit in hits]
            ids[i, :len(hits)] = [hit["id"] for hit in hits]
        return scores, ids

    def save(self, path: Path) -> None:
        """Nothing to save: the collection keeps its index."""


def _scalars(record: dict[str, Any]) -> dict[str, Any]:
    """A record's filter fields as the collection holds them (see the module docstring)."""
    camera, time, source = filter_fields(record)
    return {"camera": stored(camera), "time": time, "source": stored(source)}
