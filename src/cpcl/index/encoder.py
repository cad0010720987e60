"""The model side of an index: embeds gallery images and queries, and proves it is the model the index was built with.

An index is only meaningful with the exact weights and preprocessing that made it, so opening
a model for an existing index compares the checkpoint's sha256, the model config and the
preprocessing (the one the checkpoint records) with the manifest and refuses a mismatch in one line.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cpcl.data.check import find_bad_images
from cpcl.evaluation.features import extract_image_features, pil_image_features
from cpcl.index.store import Manifest
from cpcl.model.inference import LoadedModel, load_for_inference
from cpcl.model.shipped import resolve_checkpoint
from cpcl.utils.errors import SearchIndexError
from cpcl.utils.files import sha256_of
from cpcl.utils.progress import Progress

log = logging.getLogger(__name__)


class Encoder:
    """A checkpoint's `LoadedModel` and the file's identity: images and texts in, L2-normalised [N, D] float32 out.

    Safe to call from several threads: model calls are serialised by a lock (on a CPU they
    would only compete for the same cores).
    """

    def __init__(self, loaded: LoadedModel, checkpoint: Path, sha256: str):
        self.loaded = loaded  # the model with its device, dtype, preprocessing (the checkpoint's) and tokenizer
        self.checkpoint = checkpoint
        self.sha256 = sha256  # of `checkpoint`, as the manifest records it
        self._lock = threading.Lock()

    @classmethod
    def load(cls, checkpoint: str | Path, image_size: tuple[int, int] | None = None, device: str = "auto",
             precision: str = "auto") -> Encoder:
        """Read a checkpoint (any format `cpcl.model.checkpoints` reads, or a name) for indexing or search."""
        path = resolve_checkpoint(checkpoint).resolve()
        return cls._read(path, sha256_of(path), image_size, device, precision)

    @classmethod
    def _read(cls, path: Path, sha256: str, image_size: tuple[int, int] | None, device: str,
              precision: str) -> Encoder:
        """The model in the checkpoint file `path` (resolved already, its bytes hashing to `sha256`)."""
        return cls(load_for_inference(path, device, precision, image_size), path, sha256)

    @classmethod
    def for_index(cls, manifest: Manifest, index: Path, checkpoint: str | Path | None = None, device: str = "auto",
                  precision: str = "auto") -> Encoder:
        """The model `index` was built with, at its image size, checked against its manifest.

        `checkpoint` overrides the manifest's path (the file moved); it must hash the same. The checkpoint is
        resolved (a name to its file) and hashed once, and the hash compared once, before the model is loaded.
        """
        path = resolve_checkpoint(checkpoint) if checkpoint else Path(manifest.checkpoint_path)
        if not path.exists():
            raise SearchIndexError(f"checkpoint {path} (the one {index} was built with) is missing; "
                                   f"pass --checkpoint with where it is now")
        sha256 = sha256_of(path)
        _check_sha256(sha256, path, manifest, index)  # before loading: a wrong file is refused at once
        encoder = cls._read(path.resolve(), sha256, tuple(manifest.preprocessing["image_size"]), device, precision)
        encoder._check_model(manifest, index)
        return encoder

    @property
    def dim(self) -> int:
        return self.loaded.dim

    def preprocessing(self) -> dict[str, Any]:
        """What the manifest records about preprocessing (compared on every load): the checkpoint's."""
        return self.loaded.preprocessing.to_dict()

    def model_config(self) -> dict[str, Any]:
        """asdict(ClipConfig) as JSON would give it back (tuples as lists)."""
        return json.loads(json.dumps(asdict(self.loaded.model.config)))

    def check(self, manifest: Manifest, index: Path) -> None:
        """Refuse (SearchIndexError) a model that is not the one `manifest` was built with."""
        _check_sha256(self.sha256, self.checkpoint, manifest, index)
        self._check_model(manifest, index)

    def _check_model(self, manifest: Manifest, index: Path) -> None:
        """Refuse a model whose config or preprocessing differs from `manifest`'s (the hash is `check`'s)."""
        model = self.model_config()
        if model != manifest.model:
            diff = sorted(k for k in set(manifest.model) | set(model) if manifest.model.get(k) != model.get(k))
            raise SearchIndexError(f"{index}: the model config differs from the index's in {', '.join(diff)}; "
                                   f"build a new index")
        if self.preprocessing() != manifest.preprocessing:
            raise SearchIndexError(f"{index}: preprocessing {manifest.preprocessing} was used to build it, "
                                   f"this model uses {self.preprocessing()}; build a new index")

    def images(self, paths: list[Path], batch_size: int, workers: int,
               progress: Progress | None = None) -> tuple[np.ndarray, dict[Path, str]]:
        """(embeddings [M, D] of the readable paths, in order; unreadable path -> problem)."""
        bad = find_bad_images(paths, show_progress=False)
        good = [path for path in paths if path not in bad]
        if not good:
            return np.empty((0, self.dim), dtype=np.float32), bad
        with self._lock:
            feats = extract_image_features(self.loaded, good, batch_size, workers,
                                           progress=progress if progress is not None else "image features")
        if progress is not None:
            progress.update(len(bad))
        return feats.numpy(), bad

    @torch.no_grad()
    def pil_images(self, images: list[Image.Image]) -> np.ndarray:
        """RGB PIL images -> [Q, D] (query by example)."""
        with self._lock:
            return pil_image_features(self.loaded, images, max(1, len(images))).numpy()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> np.ndarray:
        """Sentences -> [Q, D] (longer ones are cut at the model's context length, as in training)."""
        tokens = self.loaded.tokenize(texts)
        with self._lock:
            return self.loaded.embed_texts(tokens).cpu().numpy()


def _check_sha256(sha256: str, checkpoint: Path, manifest: Manifest, index: Path) -> None:
    """SearchIndexError unless `sha256` (of `checkpoint`) is the one `manifest` records."""
    if sha256 != manifest.checkpoint_sha256:
        raise SearchIndexError(
            f"{index} was built with checkpoint {manifest.checkpoint_path} (sha256 "
            f"{manifest.checkpoint_sha256[:12]}), but {checkpoint} has sha256 {sha256[:12]}; "
            f"use the checkpoint the index was built with, or build a new index")
