"""Index settings: a small module with no heavy imports, so the CLI can show the defaults in --help."""

from __future__ import annotations

from dataclasses import dataclass

from cpcl.utils.errors import ConfigError

MAX_DETECTIONS = 300  # footage: detections kept a frame by default, the best scoring (as Ultralytics' max_det)
BACKENDS = ("faiss", "milvus")  # IndexConfig.backend: where the vectors live and what searches them
MILVUS_INDEXES = ("IVF_FLAT", "FLAT")  # IndexConfig.milvus_index: the collection's vector index (both in Milvus
# Lite, which answers IVF_FLAT from an interim index of its own: `cpcl index build` picks FLAT there)
TRACKERS = {"bytetrack": "ByteTrackTracker", "ocsort": "OCSORTTracker", "sort": "SORTTracker"}  # IndexConfig.tracker
# -> its class in the trackers package


@dataclass(frozen=True)
class IndexConfig:
    """How an index is built and searched (stored in the manifest, so a gallery keeps its settings)."""

    backend: str = "faiss"  # "faiss": the folder's shards, exact search or IVF (ivf_threshold); "milvus": a collection
    milvus_uri: str = ""  # milvus: a Milvus Lite file (an absolute path ending in .db) or a server (http://HOST:19530)
    milvus_collection: str = ""  # milvus: the collection holding the vectors (one index a collection)
    milvus_index: str = "IVF_FLAT"  # milvus: the collection's vector index (in MILVUS_INDEXES); IVF: nlist, nprobe
    shard_size: int = 2048  # images embedded per shard file: the unit of resuming an interrupted build
    ivf_threshold: int = 200_000  # galleries with at least this many images use IVF, smaller ones exact search
    nlist: int = 4096  # IVF (faiss, and Milvus' IVF_FLAT in each segment): number of inverted lists
    nprobe: int = 32  # IVF (both): lists visited per query
    train_per_list: int = 64  # IVF: k-means training sample, this many vectors per list
    kmeans_iterations: int = 10  # IVF: k-means iterations when training the lists
    min_per_list: int = 39  # IVF: fewer lists on small galleries, so each has this many training vectors
    seed: int = 0  # IVF: seed of the training sample and of k-means
    tracker: str = "sort"  # footage: the multi-object tracker that follows persons (a name in TRACKERS)
    link_iou: float = 0.1  # footage: the tracker matches a box to a track's predicted box overlapping it this much
    lost_seconds: float = 1.0  # footage: the tracker keeps a track it lost this long for the person to come back
    link_seconds: float = 5.0  # footage: a track that ends is re-linked to one starting at most this much later...
    link_cosine: float = 0.85  # ... when their mean embeddings are this similar (appearance re-linking)
    track_top: int = 3  # footage: a person's score for a query is the mean of its best this many detections' scores

    def __post_init__(self) -> None:
        for name in ("shard_size", "ivf_threshold", "nlist", "nprobe", "train_per_list", "min_per_list",
                     "kmeans_iterations", "track_top"):
            if getattr(self, name) < 1:
                raise ConfigError(f"index setting {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.link_iou <= 1.0:
            raise ConfigError(f"index setting link_iou must be in (0, 1], got {self.link_iou}")
        self._check_backend()
        if self.tracker not in TRACKERS:
            raise ConfigError(f"index setting tracker {self.tracker!r} is unknown; valid: {', '.join(TRACKERS)}")
        for name in ("lost_seconds", "link_seconds"):
            if not 0.0 <= getattr(self, name) < 1e6:
                raise ConfigError(f"index setting {name} must be a number of seconds >= 0, got {getattr(self, name)}")
        if not -1.0 <= self.link_cosine <= 1.0:
            raise ConfigError(f"index setting link_cosine must be in [-1, 1], got {self.link_cosine}")

    def _check_backend(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"index backend {self.backend!r} is unknown; valid: {', '.join(BACKENDS)}")
        if self.backend == "faiss" and (self.milvus_uri or self.milvus_collection):
            raise ConfigError("--milvus-uri and --collection are for --backend milvus")
        if self.backend == "milvus" and not (self.milvus_uri and self.milvus_collection):
            raise ConfigError("--backend milvus needs --milvus-uri: a Milvus Lite file (gallery.db) or a server "
                              "(http://HOST:19530)")
        if self.milvus_index not in MILVUS_INDEXES:
            raise ConfigError(f"milvus index {self.milvus_index!r} is unknown; valid: {', '.join(MILVUS_INDEXES)}")
