"""The milvus backend against Milvus Lite: the folder index's answers, crash-safe writes, failures in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cpcl.cli import build_parser, main
from cpcl.cli.index import index_config
from cpcl.index.backends import ExactBackend
from cpcl.index.build import build_index
from cpcl.index.config import IndexConfig
from cpcl.index.encoder import Encoder
from cpcl.index.milvus import MilvusBackend, expression
from cpcl.index.search import Filters, Searcher
from cpcl.index.store import IndexStore, Manifest
from cpcl.utils.errors import SearchIndexError
from cpcl.web.app import create_app
from fault_support import one_error_line
from search_support import build_crops, write_checkpoint, write_crop, write_gallery

DEVICE = ["--device", "cpu", "--precision", "fp32"]
TEXT = "a woman in a red coat with a black backpack"


def build(gallery, out: Path, *extra: str) -> int:
    return build_crops(gallery, out, "--shard-size", "4", *extra)


def on_milvus(uri: str, collection: str = "gallery") -> list[str]:
    return ["--backend", "milvus", "--milvus-uri", uri, "--collection", collection]


def search(index: Path, capsys, *args: str) -> list[dict]:
    capsys.readouterr()
    assert main(["-q", "search", "--index", str(index), "--json", *DEVICE, *args]) == 0
    return json.loads(capsys.readouterr().out)["results"]


def same_results(got: list[dict], want: list[dict]) -> None:
    assert [r["path"] for r in got] == [r["path"] for r in want]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], atol=1e-5)
    distances = [[r.get("distance") for r in results] for results in (got, want)]
    assert [d is None for d in distances[0]] == [d is None for d in distances[1]]
    np.testing.assert_allclose(*[[d for d in ds if d is not None] for ds in distances], atol=1e-5)


def test_a_milvus_index_answers_every_search_as_the_folder_index(gallery, lite, tmp_path, capsys):
    root, _, paths = gallery
    assert build(gallery, tmp_path / "flat") == 0 and build(gallery, tmp_path / "idx", *on_milvus(lite)) == 0
    store, flat = IndexStore.open(tmp_path / "idx"), IndexStore.open(tmp_path / "flat")
    settings = store.manifest.settings
    assert (settings["backend"], settings["milvus_uri"], settings["milvus_collection"], settings["milvus_index"]) == \
        ("milvus", lite, "gallery", "FLAT")
    assert not list((tmp_path / "idx" / "shards").glob("*.npy")) and store.collection.count() == 12
    embeddings, records = store.read()
    np.testing.assert_allclose(embeddings, flat.read()[0], atol=1e-6)
    assert records == flat.read()[1]
    for args in ([TEXT], [TEXT, "-k", "100"], [TEXT, "--camera", "c1", "--camera", "c3"],
                 [TEXT, "--from", "2024-05-01T10:00", "--to", "2024-05-01T15:00", "--camera", "c2"],
                 [TEXT, "--min-score", "0"], [TEXT, "--rerank", "-k", "5"], ["--image", str(root / paths[3])]):
        same_results(search(tmp_path / "idx", capsys, *args), search(tmp_path / "flat", capsys, *args))
    served = TestClient(create_app(Searcher.open(tmp_path / "idx", device="cpu", precision="fp32")))
    info = served.get("/api/info").json()
    assert info["backend"] == "milvus" and info["count"] == 12 and info["cameras"] == ["c1", "c2", "c3"]
    found = served.post("/api/search", json={"text": TEXT, "k": 3, "cameras": ["c2"]}).json()["results"]
    same_results(found, search(tmp_path / "flat", capsys, TEXT, "-k", "3", "--camera", "c2"))


def test_filters_inside_milvus_pass_the_rows_the_mask_passes(lite, tmp_path):
    """Camera names that need escaping, rows without a camera or a time, footage sources: Milvus' expression and
    the folder index's mask agree, row for row and score for score."""
    rng = np.random.default_rng(0)
    cameras = ['c"1', "back\\slash", "caf\u00e9 \u65e5\u672c", "new\nline", "it's", None]
    records = []
    for i in range(60):
        record = {"path": f"p{i}.png", "camera": cameras[i % 6], "time": 1_700_000_000 + 60 * i,
                  "source": "a.mp4" if i % 5 == 0 else None}
        records.append({key: value for key, value in record.items() if value is not None and (key, i % 7) != ("time", 3)})
    embeddings = rng.standard_normal((60, 16)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    config = IndexConfig(backend="milvus", milvus_uri=lite, milvus_collection="filters", milvus_index="FLAT")
    manifest = Manifest("tiny.pt", "0" * 64, {}, {}, str(tmp_path), settings=asdict(config), count=60, dim=16)
    collection = MilvusBackend.open(None, config)
    collection.create(manifest)
    collection.put(0, embeddings, records)
    milvus = Searcher(tmp_path, manifest, None, records, collection)
    exact = Searcher(tmp_path, manifest, embeddings, records, ExactBackend(embeddings, config))
    queries = rng.standard_normal((4, 16)).astype(np.float32)
    for filters in (Filters(cameras=('c"1', "new\nline")), Filters(cameras=("back\\slash", "caf\u00e9 \u65e5\u672c")),
                    Filters(cameras=("it's",), time_to=1_700_002_000.0), Filters(time_from=1_700_000_600.5),
                    Filters(sources=("a.mp4",), time_from=1_700_000_000, time_to=1_700_003_000)):
        assert expression(filters)
        for query in queries:
            got, want = milvus.search_vector(query, 60, filters=filters), exact.search_vector(query, 60, filters=filters)
            assert [h.row for h in got] == [h.row for h in want] and want
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)


def test_add_and_a_corrected_sidecar_reach_the_collection(lite, tmp_path, capsys):
    root = tmp_path / "imgs"
    gallery = (root, write_checkpoint(tmp_path / "tiny.pt"), write_gallery(root))
    assert build(gallery, tmp_path / "idx", *on_milvus(lite)) == 0
    write_crop(root / "c4" / "new0.png", 100)
    write_crop(root / "c4" / "new1.jpg", 101)
    (root / "fix.csv").write_text("path,camera\nc4/new0.png,c9\nc1/000.png,c9\n")
    assert main(["-q", "index", "add", "--index", str(tmp_path / "idx"), "--metadata", str(root / "fix.csv"),
                 "--workers", "0", *DEVICE]) == 0
    store = IndexStore.open(tmp_path / "idx")
    assert store.manifest.count == 14 and store.collection.count() == 14
    moved = search(tmp_path / "idx", capsys, TEXT, "--camera", "c9", "-k", "5")
    assert sorted(r["path"] for r in moved) == ["c1/000.png", "c4/new0.png"]
    assert "c1/000.png" not in [r["path"] for r in search(tmp_path / "idx", capsys, TEXT, "--camera", "c1")]


def test_a_build_stopped_at_any_step_then_run_again_holds_every_crop_once(gallery, lite, tmp_path, monkeypatch):
    """A stop before each Milvus request and each file write of a build (so after each one too), then the same
    build again: every crop exactly once, with its own embedding and record (0 lost, 0 duplicated)."""
    root, checkpoint, _ = gallery
    encoder = Encoder.load(checkpoint, None, "cpu", "fp32")
    whole = build_index(encoder, root, tmp_path / "whole", root / "meta.csv", IndexConfig(shard_size=4), 5, 0)
    want_embeddings, want_records = IndexStore.open(tmp_path / "whole").read()
    steps: list[str] = []
    real_call, real_write = MilvusBackend._call, IndexStore._write

    def counted(real):
        def step(self, *args, **kwargs):
            steps.append(args[0] if isinstance(args[0], str) else args[0].name)
            if len(steps) == stop_at:
                raise KeyboardInterrupt
            return real(self, *args, **kwargs)
        return step

    monkeypatch.setattr(MilvusBackend, "_call", counted(real_call))
    monkeypatch.setattr(IndexStore, "_write", counted(real_write))
    stop_at, stopped = 0, 1
    while True:
        stop_at, steps = stopped, []
        config = IndexConfig(backend="milvus", milvus_uri=lite, milvus_collection=f"run{stopped}", shard_size=4)
        out = tmp_path / f"run{stopped}"
        try:
            build_index(encoder, root, out, root / "meta.csv", config, 5, 0)
            break  # fewer steps than `stopped`: every step was tried
        except KeyboardInterrupt:
            pass
        stop_at = 0
        assert build_index(encoder, root, out, root / "meta.csv", config, 5, 0).total == whole.total == 12
        store = IndexStore.open(out)
        assert store.manifest.complete and store.collection.count() == 12
        embeddings, records = store.read()
        assert records == want_records, f"stopped before step {stopped}"
        np.testing.assert_allclose(embeddings, want_embeddings, atol=1e-6, err_msg=f"stopped before step {stopped}")
        stopped += 1
    assert stopped > 10 and {"write vectors", "delete rows of an interrupted build", "000002.jsonl"} <= set(steps)


KILLED_BUILD = """
import os, signal, sys
from cpcl.cli import main
from cpcl.index.milvus import MilvusBackend
put = MilvusBackend.put
def put_then_die(self, first, embeddings, records):
    put(self, first, embeddings, records)
    if first >= 4:  # the second shard's rows are in the collection, its .jsonl is not written yet
        os.kill(os.getpid(), signal.SIGKILL)
MilvusBackend.put = put_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_build_killed_between_the_upsert_and_its_shard_is_whole_on_the_rerun(gallery, lite, tmp_path):
    """SIGKILL of the whole process (and so of Milvus Lite's server) with rows upserted past the whole shards."""
    root, checkpoint, _ = gallery
    args = ["index", "build", "--checkpoint", str(checkpoint), "--images", str(root), "--out", str(tmp_path / "idx"),
            "--metadata", str(root / "meta.csv"), "--workers", "0", "--shard-size", "4", *DEVICE, *on_milvus(lite)]
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_BUILD), *args], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store = IndexStore.open(tmp_path / "idx")
    assert len(store.read_records()) == 4 and store.collection.count() == 7  # and the second shard's 3 (+ a broken
    # file) rows, orphaned
    assert build(gallery, tmp_path / "idx", *on_milvus(lite)) == 0
    assert build(gallery, tmp_path / "flat") == 0
    store = IndexStore.open(tmp_path / "idx")
    embeddings, records = store.read()
    assert store.collection.count() == 12 and records == IndexStore.open(tmp_path / "flat").read_records()
    np.testing.assert_allclose(embeddings, IndexStore.open(tmp_path / "flat").read()[0], atol=1e-6)


HOLD = """
import sys, time, warnings
warnings.simplefilter("ignore")
from pymilvus import MilvusClient
client = MilvusClient(sys.argv[1])
print("holding", flush=True)
time.sleep(60)
"""


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def edit_settings(index: Path, **changes) -> None:
    path = index / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["settings"].update(changes)
    path.write_text(json.dumps(manifest))


def test_a_server_down_or_refusing_and_a_collection_that_does_not_match_are_one_line(gallery, lite, tmp_path, capsys):
    down = f"http://127.0.0.1:{closed_port()}"
    assert build(gallery, tmp_path / "down", *on_milvus(down)) == 2
    assert f"Milvus at {down} failed to connect" in one_error_line(capsys)
    assert build(gallery, tmp_path / "idx", *on_milvus(lite)) == 0
    other = write_checkpoint(tmp_path / "other.pt", seed=1)
    root = gallery[0]
    assert main(["-q", "index", "build", "--checkpoint", str(other), "--images", str(root), "--out",
                 str(tmp_path / "other"), *DEVICE, *on_milvus(lite)]) == 2
    assert "collection gallery already exists" in one_error_line(capsys)
    assert main(["-q", "index", "build", "--checkpoint", str(other), "--images", str(root), "--out",
                 str(tmp_path / "other"), *DEVICE, *on_milvus(lite, "other")]) == 0
    edit_settings(tmp_path / "other", milvus_collection="gallery")  # a collection of another model's vectors
    assert main(["search", "--index", str(tmp_path / "other"), TEXT, *DEVICE]) == 2
    assert "holds vectors of checkpoint sha256" in one_error_line(capsys)
    IndexStore.open(tmp_path / "idx").collection.trim(10)  # two rows gone behind the index's back
    assert main(["search", "--index", str(tmp_path / "idx"), TEXT, *DEVICE]) == 2
    assert "holds 10 vectors for the index's 12 records" in one_error_line(capsys)
    edit_settings(tmp_path / "idx", milvus_collection="dropped")
    assert main(["search", "--index", str(tmp_path / "idx"), TEXT, *DEVICE]) == 2
    assert "has no collection dropped" in one_error_line(capsys)
    edit_settings(tmp_path / "idx", milvus_uri=down)
    assert main(["search", "--index", str(tmp_path / "idx"), TEXT, *DEVICE]) == 2
    assert f"Milvus at {down} failed to connect" in one_error_line(capsys)
    for bad, message in ((["--milvus-uri", lite], "are for --backend milvus"),
                         (["--backend", "milvus"], "needs --milvus-uri"),
                         (["--backend", "milvus", "--milvus-uri", str(tmp_path / ("x" * 40 + ".db"))], "36 letters")):
        assert build(gallery, tmp_path / "bad", *bad) == 2 and message in one_error_line(capsys)
    from milvus_lite.server_manager import server_manager_instance  # imported by now (by cpcl, warnings silenced)

    server_manager_instance.release_server(lite)  # this process lets go of the file; another takes it
    holder = subprocess.Popen([sys.executable, "-c", HOLD, lite], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        assert main(["search", "--index", str(tmp_path / "other"), TEXT, *DEVICE]) == 2
        assert "Milvus Lite file is open in one process at a time" in one_error_line(capsys)
    finally:
        holder.kill()
        holder.wait()


NO_MILVUS = """
import sys
from cpcl.cli import main
assert main(sys.argv[1:]) == 0
assert main(["-q", "search", "--index", sys.argv[sys.argv.index("--out") + 1], "a person", "--device", "cpu"]) == 0
print(sorted(name for name in ("pymilvus", "milvus_lite", "grpc") if name in sys.modules))
"""


def test_the_folder_index_imports_no_milvus_and_the_backend_without_its_extra_is_one_line(gallery, tmp_path, capsys,
                                                                                          monkeypatch):
    root, checkpoint, _ = gallery
    args = ["-q", "index", "build", "--checkpoint", str(checkpoint), "--images", str(root), "--out",
            str(tmp_path / "idx"), "--workers", "0", *DEVICE]
    done = subprocess.run([sys.executable, "-c", NO_MILVUS, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # import fails as when the extra is not installed
    assert build(gallery, tmp_path / "m", *on_milvus(str(tmp_path / "g.db"))) == 2
    assert "pip install 'cpcl[milvus]'" in one_error_line(capsys)


def test_the_collection_index_is_flat_on_milvus_lite_and_ivf_on_a_server_unless_named(tmp_path):
    """Milvus Lite answers IVF_FLAT from an interim index of its own (docs/scaling.md), so a Lite file gets FLAT."""
    def chosen(*extra: str) -> str:
        args = build_parser().parse_args(["index", "build", "--checkpoint", "x.pt", "--images", ".", "--out",
                                          str(tmp_path / "idx"), "--backend", "milvus", *extra])
        return index_config(args).milvus_index

    assert chosen("--milvus-uri", str(tmp_path / "g.db")) == "FLAT"
    assert chosen("--milvus-uri", "http://127.0.0.1:19530") == "IVF_FLAT"
    assert chosen("--milvus-uri", str(tmp_path / "g.db"), "--milvus-index", "IVF_FLAT") == "IVF_FLAT"
    assert chosen("--milvus-uri", "http://127.0.0.1:19530", "--milvus-index", "FLAT") == "FLAT"


def test_every_milvus_connection_cpcl_opens_is_closed(lite, tmp_path, capsys, monkeypatch):
    """A build, an add, a search, a failed open and `with` blocks of a Searcher and an IndexStore each close the
    Milvus client they open (a Milvus Lite file stays held by an open one)."""
    import pymilvus

    opened, closed = [], set()
    real_init, real_close = pymilvus.MilvusClient.__init__, pymilvus.MilvusClient.close

    def init(client, *args, **kwargs):
        real_init(client, *args, **kwargs)
        opened.append(client)

    def close(client):
        closed.add(id(client))
        real_close(client)

    monkeypatch.setattr(pymilvus.MilvusClient, "__init__", init)
    monkeypatch.setattr(pymilvus.MilvusClient, "close", close)
    root = tmp_path / "imgs"
    gallery = (root, write_checkpoint(tmp_path / "tiny.pt"), write_gallery(root, count=4))
    assert build(gallery, tmp_path / "idx", *on_milvus(lite)) == 0
    write_crop(root / "c4" / "new0.png", 100)
    assert main(["-q", "index", "add", "--index", str(tmp_path / "idx"), "--workers", "0", *DEVICE]) == 0
    assert len(search(tmp_path / "idx", capsys, TEXT)) == 5
    with Searcher.open(tmp_path / "idx", device="cpu", precision="fp32") as searcher:
        assert len(searcher.search_text(TEXT, 3)) == 3
    with IndexStore.open(tmp_path / "idx") as store:
        assert store.collection.count() == 5
    assert len(opened) >= 5 and {id(client) for client in opened} == closed
    settings = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    settings["settings"]["milvus_collection"] = "absent"
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(settings))
    with pytest.raises(SearchIndexError, match="no collection absent"):
        Searcher.open(tmp_path / "idx", load_model=False)
    assert {id(client) for client in opened} == closed
