"""Shared test helpers: tiny annotation trees written in each dataset's exact on-disk format."""

from __future__ import annotations

import os

# Tests start several processes at once (DataLoader workers, the 2-process distributed run, CLI
# subprocesses) on a 2-core machine. OpenMP threads that spin while they wait then steal the core
# another process needs: one training step measured 12 s instead of 1.5 s. Waiting passively
# costs about 25% on an idle machine and avoids that. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory):
    """cpcl's cache folder ($CPCL_CACHE: downloaded weights, the kNN engine probe) in a temporary
    folder for the whole run, its subprocesses included, never the user's."""
    before = os.environ.get("CPCL_CACHE")
    os.environ["CPCL_CACHE"] = str(tmp_path_factory.mktemp("cpcl-cache"))
    yield
    if before is None:
        del os.environ["CPCL_CACHE"]
    else:
        os.environ["CPCL_CACHE"] = before


def write_image(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 8), colour).save(path)
    return path


# (split value as written in the file, person id, number of captions) per image
LAYOUT = [
    ("train", 1, 2), ("train", 1, 2), ("train", 2, 2),
    ("val", 3, 2),
    ("test", 4, 2), ("test", 4, 1), ("test", 5, 2),
]


def public_records(path_key: str) -> list[dict]:
    """Records in the CUHK-PEDES / ICFG-PEDES / RSTPReid shape (path key differs)."""
    records = []
    for i, (split, pid, n_caps) in enumerate(LAYOUT):
        record = {
            "split": split,
            "captions": [f"person {pid} image {i} caption {j}" for j in range(n_caps)],
            path_key: f"cam{i % 2}/{pid:04d}_{i}.jpg",
            "id": pid,
        }
        if path_key == "file_path":
            record["processed_tokens"] = [c.split() for c in record["captions"]]
        records.append(record)
    return records


def write_public(root: Path, folder: str, filename: str, path_key: str) -> Path:
    """Write a public-format tree under `root/folder` and return the annotation file."""
    records = public_records(path_key)
    for record in records:
        write_image(root / folder / "imgs" / record[path_key])
    ann = root / folder / filename
    ann.write_text(json.dumps(records))
    return ann


@pytest.fixture
def cuhk_root(tmp_path: Path) -> Path:
    write_public(tmp_path, "CUHK-PEDES", "reid_raw.json", "file_path")
    return tmp_path


@pytest.fixture
def jsonl_root(tmp_path: Path) -> Path:
    lines = []
    for i, (split, pid, n_caps) in enumerate(LAYOUT):
        rel = f"imgs/{i}.png"
        write_image(tmp_path / rel)
        lines.append(json.dumps({"image": rel, "captions": [f"c{i}.{j}" for j in range(n_caps)],
                                 "split": split, "person_id": f"p{pid}"}))
    (tmp_path / "annotations.jsonl").write_text("\n".join(lines) + "\n\n")
    return tmp_path


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[str]:
    """A Milvus Lite file for one test (the milvus index backend); its server process is stopped afterwards."""
    path = tmp_path / "gallery.db"
    yield str(path)
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(path))


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """(gallery root, checkpoint, good relative paths): `write_gallery` crops and a tiny CLIP checkpoint."""
    from search_support import write_checkpoint, write_gallery

    root = tmp_path_factory.mktemp("gallery")
    paths = write_gallery(root / "imgs")
    return root / "imgs", write_checkpoint(root / "tiny.pt"), paths
