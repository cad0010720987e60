"""Index settings: a small module with no heavy imports, so the CLI can show the defaults in --help."""

from __future__ import annotations

from dataclasses import dataclass

from cpcl.utils.errors import ConfigError

MAX_DETECTIONS = 300  # footage: detections kept a frame by default, the best scoring (as Ultralytics' max_det)


@dataclass(frozen=True)
class IndexConfig:
    """How an index is built and searched (stored in the manifest, so a gallery keeps its settings)."""

    shard_size: int = 2048  # images embedded per shard file: the unit of resuming an interrupted build
    ivf_threshold: int = 200_000  # galleries with at least this many images use IVF, smaller ones exact search
    nlist: int = 4096  # IVF: number of inverted lists (k-means centroids)
    nprobe: int = 32  # IVF: lists visited per query
    train_per_list: int = 64  # IVF: k-means training sample, this many vectors per list
    kmeans_iterations: int = 10  # IVF: k-means iterations when training the lists
    min_per_list: int = 39  # IVF: fewer lists on small galleries, so each has this many training vectors
    seed: int = 0  # IVF: seed of the training sample and of k-means
    link_iou: float = 0.3  # footage: detections in consecutive sampled frames whose boxes overlap this much (IoU)
    link_cosine: float = 0.75  # footage: ... and whose embeddings are this similar are one person: one result

    def __post_init__(self) -> None:
        for name in ("shard_size", "ivf_threshold", "nlist", "nprobe", "train_per_list", "min_per_list",
                     "kmeans_iterations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"index setting {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.link_iou <= 1.0:
            raise ConfigError(f"index setting link_iou must be in (0, 1], got {self.link_iou}")
        if not -1.0 <= self.link_cosine <= 1.0:
            raise ConfigError(f"index setting link_cosine must be in [-1, 1], got {self.link_cosine}")
