"""Building an index and adding to it: embed the gallery's images that are not indexed yet, a shard at a time.

`build_index` starts an index (or continues an interrupted one: whole shards survive any
stop, and the images they hold are not embedded again); `add_to_index` embeds images new to
an existing one. Both go through `sync`, which reports unreadable files instead of stopping,
and (re)trains the IVF index when the gallery is large enough for one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cpcl.index.backends import backend_name, make_backend
from cpcl.index.config import IndexConfig
from cpcl.index.encoder import Encoder
from cpcl.index.gallery import list_images, read_sidecar
from cpcl.index.store import MANIFEST, IndexStore, Manifest
from cpcl.utils.errors import SearchIndexError
from cpcl.utils.progress import Progress

log = logging.getLogger(__name__)

BAD_NAME = "file name is not valid UTF-8; rename it to index it"  # the problem listed for such a file


def is_utf8(path: str) -> bool:
    """Whether a path as the OS gave it (undecodable bytes as lone surrogates) is valid UTF-8 text."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str) -> str:
    """`path` with each byte that is not UTF-8 written as \\xNN, for messages and unreadable.jsonl."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass
class SyncReport:
    """What one build or add did."""

    added: int = 0  # images (footage: crops) embedded in this run
    already: int = 0  # images found already indexed (skipped); footage: sources already scanned to the end
    relabelled: int = 0  # indexed images whose metadata the sidecar changed
    unreadable: dict[str, str] = field(default_factory=dict)  # relative path -> problem
    total: int = 0  # rows in the index afterwards
    backend: str = "exact"  # the backend searches will use
    frames: int | None = None  # footage: frames decoded and run through the detector in this run; None: no footage
    skipped: int = 0  # footage: frames the detector cannot look at (too small), skipped and listed as unreadable
    capped: int = 0  # footage: frames with more detections than --max-detections (the best kept)
    past_end: int = 0  # footage: boxes of a detections file for frames after its source's last one
    failed: dict[str, str] = field(default_factory=dict)  # footage: source -> why it could not be read (or read to
    # its end); the frames it gave are kept


def _new_manifest(encoder: Encoder, root: Path, config: IndexConfig) -> Manifest:
    return Manifest(checkpoint_path=str(encoder.checkpoint), checkpoint_sha256=encoder.sha256,
                    model=encoder.model_config(), preprocessing=encoder.preprocessing(),
                    gallery_root=str(root), settings=asdict(config), dim=encoder.dim)


def _records(paths: list[str], sidecar: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"path": path, **sidecar.get(path, {})} for path in paths]


def sync(store: IndexStore, encoder: Encoder, paths: list[str], sidecar: dict[str, dict[str, Any]],
         batch_size: int, workers: int) -> SyncReport:
    """Embed those of `paths` (relative to the gallery root) not yet in `store`, one shard at a time.

    Indexed images that `sidecar` names get its metadata (so a corrected sidecar needs no new embedding).
    Files whose name is not UTF-8 are listed as unreadable (a record holds its path as text). Temporary
    files of an interrupted run are removed first; ivf.faiss is trained again unless it is bound to the rows.
    """
    manifest = store.manifest
    indexed = {record["path"] for record in start_sync(store)}
    badly_named = {path for path in paths if not is_utf8(path)}
    todo = [path for path in paths if path not in indexed and path not in badly_named]
    report = SyncReport(already=len(paths) - len(todo) - len(badly_named))
    report.unreadable.update({printable(path): BAD_NAME for path in sorted(badly_named)})
    report.relabelled = store.update_metadata(sidecar) if sidecar and indexed else 0
    missing = set(sidecar) - set(paths) - indexed
    if missing:
        log.warning("%d metadata rows name no image of the gallery, first: %s", len(missing), sorted(missing)[0])
    shard_size = manifest.config.shard_size
    with Progress(len(todo), "embedding images", "img") as bar:
        for start in range(0, len(todo), shard_size):
            chunk = todo[start:start + shard_size]
            feats, bad = encoder.images([manifest.root / path for path in chunk], batch_size, workers, bar)
            bad_rel = {path.relative_to(manifest.root).as_posix(): problem for path, problem in bad.items()}
            good = [path for path in chunk if path not in bad_rel]
            if good:
                store.append_shard(feats, _records(good, sidecar))
            report.added += len(good)
            report.unreadable.update(bad_rel)
    return finish_sync(store, report)


def start_sync(store: IndexStore) -> list[dict[str, Any]]:
    """Open a build or add on `store`: temporaries of a killed run removed, the count taken from the whole shards
    (a Milvus collection trimmed to them and checked), the manifest marked incomplete; returns the records already
    indexed."""
    store.remove_stale_temporaries()
    records = store.read_records()
    if store.collection is not None:
        store.collection.trim(len(records))
        store.collection.check(store.manifest, len(records))
    store.manifest.count, store.manifest.complete = len(records), False
    store.write_manifest()
    return records


def finish_sync(store: IndexStore, report: SyncReport) -> SyncReport:
    """Close a build or add: unreadable files listed, ivf.faiss (re)trained unless bound to exactly these rows (a
    Milvus collection flushed), the manifest marked complete; `report` gets the total and the backend."""
    manifest = store.manifest
    store.write_unreadable({**report.unreadable, **report.failed})
    report.total, report.backend = manifest.count, backend_name(manifest.count, manifest.config)
    if store.collection is not None:
        store.collection.flush()
    elif report.backend == "ivf":
        embeddings, _ = store.read()
        if store.saved_ivf(embeddings) is None:
            store.save_ivf(make_backend("ivf", embeddings, manifest.config), embeddings)
    manifest.complete = True
    store.write_manifest()
    return report


def open_or_create(encoder: Encoder, root: Path, out: Path, config: IndexConfig) -> IndexStore:
    """The index in `out` to continue (same root, checkpoint and settings, else refused), or a new one there."""
    if (out / MANIFEST).exists():
        store = IndexStore.open(out)
        encoder.check(store.manifest, out)
        if store.manifest.root != root or store.manifest.config != config:
            raise SearchIndexError(f"{out} holds an index of {store.manifest.root} with settings "
                                   f"{store.manifest.settings}; give another --out, or the same gallery and "
                                   f"settings to continue it")
        log.info("continuing the index in %s", out)
        return store
    return IndexStore.create(out, _new_manifest(encoder, root, config))


def open_for_add(encoder: Encoder, index: Path) -> IndexStore:
    """An existing index to add to, checked against `encoder`; its root must still be there."""
    store = IndexStore.open(index)
    encoder.check(store.manifest, index)
    if not store.manifest.root.is_dir():
        raise SearchIndexError(f"the gallery {store.manifest.root} of {index} is gone; an index cannot move away "
                               f"from its images")
    return store


def build_index(encoder: Encoder, images: Path, out: Path, metadata: Path | None, config: IndexConfig,
                batch_size: int, workers: int) -> SyncReport:
    """Index every image below `images` into the new directory `out`, or continue an interrupted build there.

    Continuing needs the same gallery, checkpoint and settings; anything else is refused. Takes 7 parameters
    because it is `cpcl index build`'s input as the command gives it: the model, the gallery (`images`, its
    `metadata` sidecar), the index (`out`, its `config`) and how images are read (`batch_size`, `workers`).
    """
    root = images.expanduser().resolve()
    if not root.is_dir():
        raise SearchIndexError(f"--images {images}: not a folder")
    sidecar = read_sidecar(metadata, root) if metadata else {}
    paths = list_images(root)
    if not paths:
        raise SearchIndexError(f"no image files under {root} (looked for jpg, png, bmp, gif, webp, tif)")
    with open_or_create(encoder, root, out, config) as store:
        return sync(store, encoder, paths, sidecar, batch_size, workers)


def add_to_index(encoder: Encoder, index: Path, under: list[Path], metadata: Path | None,
                 batch_size: int, workers: int) -> SyncReport:
    """Embed the images new to the index: below the given files / folders of its gallery, or the whole gallery
    (never the frames of an indexed frame folder)."""
    store = open_for_add(encoder, index)  # its collection is connected in `sync`, closed after
    root = store.manifest.root
    sidecar = read_sidecar(metadata, root) if metadata else {}
    resolved = [path.expanduser().resolve() for path in under]
    outside = [path for path in resolved if path != root and root not in path.parents]
    if outside:
        raise SearchIndexError(f"{outside[0]} is outside the gallery {root} of {index}; copy it in first")
    frame_folders = [f"{source}/" for source, state in store.manifest.sources.items() if state.get("kind") == "frames"]
    paths = [path for path in list_images(root, under) if not path.startswith(tuple(frame_folders))]
    with store:
        return sync(store, encoder, paths, sidecar, batch_size, workers)
