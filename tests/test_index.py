"""The search index: backends against brute force, build / resume / add, unreadable files, manifest checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cpcl.cli import main
from cpcl.data.transforms import ImageTransformConfig, eval_transform, load_rgb
from cpcl.index.backends import INDEX_BACKENDS, ExactBackend, IVFBackend, make_backend
from cpcl.index.config import IndexConfig
from cpcl.index.encoder import Encoder
from cpcl.index.search import Searcher
from cpcl.index.store import IndexStore, sha256_of
from cpcl.model.checkpoints import load_clip
from cpcl.utils.errors import ConfigError
from search_support import build_crops as build, write_checkpoint, write_crop, write_gallery


def clustered(n: int, dim: int = 16, centres: int = 10, seed: int = 0) -> np.ndarray:
    """[n, dim] unit rows around `centres` random directions."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((centres, dim))
    x = mu[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(gallery: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None):
    """Reference top-k by inner product: (scores, ids), ids of disallowed rows never returned."""
    sims = queries @ gallery.T
    if allowed is not None:
        sims[:, ~allowed] = -np.inf
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def test_exact_backend_matches_brute_force_with_and_without_a_filter():
    gallery, queries = clustered(500), clustered(20, seed=1)
    backend = ExactBackend(gallery, IndexConfig())
    scores, ids = backend.search(queries, 7)
    want_scores, want_ids = brute_force(gallery, queries, 7)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert (ids == want_ids).mean() > 0.99  # float ties may swap neighbours
    allowed = np.zeros(500, dtype=bool)
    allowed[::7] = True
    scores, ids = backend.search(queries, 7, allowed)
    assert allowed[ids].all()
    np.testing.assert_allclose(scores, brute_force(gallery, queries, 7, allowed)[0], atol=1e-5)


def test_filter_with_fewer_rows_than_k_leaves_empty_slots():
    gallery = clustered(50)
    allowed = np.zeros(50, dtype=bool)
    allowed[[3, 9]] = True
    scores, ids = ExactBackend(gallery, IndexConfig()).search(gallery[:1], 5, allowed)
    assert sorted(ids[0, :2]) == [3, 9] and (ids[0, 2:] == -1).all() and np.isneginf(scores[0, 2:]).all()


def test_ivf_agrees_with_exact_on_small_data():
    gallery, queries = clustered(2000), clustered(50, seed=1)
    exact_ids = ExactBackend(gallery, IndexConfig()).search(queries, 10)[1]
    every_list = IVFBackend(gallery, IndexConfig(nlist=8, nprobe=8))  # visits every list: exact
    assert every_list.index.nlist == 8
    np.testing.assert_array_equal(np.sort(every_list.search(queries, 10)[1]), np.sort(exact_ids))
    some_lists = IVFBackend(gallery, IndexConfig(nlist=16, nprobe=4))
    found = some_lists.search(queries, 10)[1]
    recall = np.mean([len(np.intersect1d(f, e)) / 10 for f, e in zip(found, exact_ids)])
    assert recall >= 0.8  # a quarter of the lists visited: approximate, but mostly right


def test_ivf_is_saved_and_reused_only_when_it_matches(tmp_path):
    gallery = clustered(400)
    config = IndexConfig(nlist=4, nprobe=2)
    make_backend("ivf", gallery, config).save(tmp_path / "ivf.faiss")
    reused = make_backend("ivf", gallery, config, saved=tmp_path / "ivf.faiss")
    assert reused.index.ntotal == 400 and reused.index.nprobe == 2
    retrained = make_backend("ivf", clustered(500), config, saved=tmp_path / "ivf.faiss")
    assert retrained.index.ntotal == 500


def test_unknown_backend_and_bad_settings_name_the_valid_ones():
    assert set(INDEX_BACKENDS) == {"exact", "ivf", "milvus"}
    with pytest.raises(ConfigError, match="valid: exact, ivf, milvus"):
        make_backend("hnsw", clustered(10), IndexConfig())
    with pytest.raises(ConfigError, match="nprobe"):
        IndexConfig(nprobe=0)


def test_build_embeds_every_image_and_reports_unreadable_ones(gallery, tmp_path, capsys):
    root, checkpoint, paths = gallery
    assert build(gallery, tmp_path / "idx") == 0
    out = capsys.readouterr().out
    assert "12 images embedded" in out and "1 files could not be read" in out and "broken.jpg" in out
    store = IndexStore.open(tmp_path / "idx")
    manifest = store.manifest
    assert manifest.complete and manifest.count == 12 and manifest.dim == 32
    assert manifest.checkpoint_sha256 == sha256_of(checkpoint) and manifest.cpcl_version
    assert manifest.preprocessing["image_size"] == [32, 16] and manifest.gallery_root == str(root.resolve())
    embeddings, records = store.read()
    assert [r["path"] for r in records] == paths  # relative, sorted, no hidden / non-image / broken files
    assert records[0]["camera"] == "c1" and records[0]["time"] == "2024-05-01T08:00:00" and records[0]["note"] == "n0"
    unreadable = [json.loads(line) for line in (tmp_path / "idx" / "unreadable.jsonl").read_text().splitlines()]
    assert [u["path"] for u in unreadable] == ["c1/broken.jpg"]
    model, _ = load_clip(checkpoint, (32, 16))
    pixels = torch.stack([eval_transform(load_rgb(root / p), (32, 16), ImageTransformConfig()) for p in paths])
    with torch.no_grad():
        want = F.normalize(model.encode_image(pixels), dim=1).numpy()
    np.testing.assert_allclose(embeddings, want, atol=1e-5)


def test_interrupted_build_resumes_without_embedding_again(gallery, tmp_path, monkeypatch):
    assert build(gallery, tmp_path / "whole", "--shard-size", "4") == 0
    calls: list[int] = []
    original = Encoder.images

    def interrupted(self, paths, *args, **kwargs):
        calls.append(len(paths))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, paths, *args, **kwargs)

    monkeypatch.setattr(Encoder, "images", interrupted)
    assert build(gallery, tmp_path / "idx", "--shard-size", "4") == 130
    store = IndexStore.open(tmp_path / "idx")
    assert not store.manifest.complete and len(store.shards()) == 1
    monkeypatch.setattr(Encoder, "images", original)
    embedded: list[int] = []
    monkeypatch.setattr(Encoder, "images", lambda self, paths, *a, **kw: (embedded.append(len(paths)),
                                                                          original(self, paths, *a, **kw))[1])
    assert build(gallery, tmp_path / "idx", "--shard-size", "4") == 0
    assert sum(embedded) == 13 - 4  # 12 good + 1 broken, minus the first shard
    resumed, whole = IndexStore.open(tmp_path / "idx"), IndexStore.open(tmp_path / "whole")
    assert resumed.manifest.complete and resumed.manifest.count == 12
    np.testing.assert_array_equal(resumed.read()[0], whole.read()[0])
    assert resumed.read()[1] == whole.read()[1]


def test_add_embeds_only_new_images(gallery, tmp_path, capsys):
    root, _, _ = gallery
    assert build(gallery, tmp_path / "idx") == 0
    write_crop(root / "c4" / "new0.png", 100)
    write_crop(root / "c4" / "new1.jpg", 101)
    try:
        assert main(["index", "add", "--index", str(tmp_path / "idx"), "--workers", "0", "--device", "cpu"]) == 0
        assert "2 images embedded, 12 already indexed, 14 in the index" in capsys.readouterr().out
        store = IndexStore.open(tmp_path / "idx")
        assert store.manifest.count == 14 and store.read()[0].shape == (14, 32)
        assert main(["index", "add", "--index", str(tmp_path / "idx"), str(tmp_path), "--device", "cpu"]) == 2
        assert "outside the gallery" in capsys.readouterr().err
    finally:
        for name in ("new0.png", "new1.jpg"):
            (root / "c4" / name).unlink()
        (root / "c4").rmdir()


def test_a_mismatched_checkpoint_is_refused(gallery, tmp_path, capsys):
    assert build(gallery, tmp_path / "idx") == 0
    other = write_checkpoint(tmp_path / "other.pt", seed=1)
    code = main(["search", "--index", str(tmp_path / "idx"), "a man", "--checkpoint", str(other), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("cpcl search: error:") and "sha256" in err and "built with" in err
    root, _, _ = gallery
    code = main(["index", "build", "--checkpoint", str(other), "--images", str(root), "--out", str(tmp_path / "idx")])
    assert code == 2 and "sha256" in capsys.readouterr().err


def test_manifest_of_another_model_config_or_format_is_refused(gallery, tmp_path, capsys):
    assert build(gallery, tmp_path / "idx") == 0
    manifest_file = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["model"]["embed_dim"] = 64
    manifest_file.write_text(json.dumps(manifest))
    assert main(["search", "--index", str(tmp_path / "idx"), "a man", "--device", "cpu"]) == 2
    assert "embed_dim" in capsys.readouterr().err
    manifest["version"] = 99
    manifest_file.write_text(json.dumps(manifest))
    assert main(["search", "--index", str(tmp_path / "idx"), "a man"]) == 2
    assert "upgrade cpcl" in capsys.readouterr().err
    assert main(["search", "--index", str(tmp_path), "a man"]) == 2
    assert "not a cpcl index" in capsys.readouterr().err


def test_large_gallery_setting_uses_ivf_with_the_same_results(gallery, tmp_path):
    assert build(gallery, tmp_path / "exact") == 0
    assert build(gallery, tmp_path / "ivf", "--ivf-threshold", "10", "--nlist", "2", "--nprobe", "2") == 0
    assert (tmp_path / "ivf" / "ivf.faiss").is_file() and not (tmp_path / "exact" / "ivf.faiss").exists()
    exact = Searcher.open(tmp_path / "exact", device="cpu", precision="fp32")
    ivf = Searcher.open(tmp_path / "ivf", device="cpu", precision="fp32")
    assert (exact.backend.name, ivf.backend.name) == ("exact", "ivf")
    for text in ("a woman in a red coat", "a man with a backpack"):
        assert [h.path for h in exact.search_text(text, 5)] == [h.path for h in ivf.search_text(text, 5)]


def test_a_corrected_sidecar_updates_metadata_without_embedding_again(gallery, tmp_path, capsys, monkeypatch):
    root, _, paths = gallery
    assert build(gallery, tmp_path / "idx") == 0
    embeddings = IndexStore.open(tmp_path / "idx").read()[0]
    sidecar = tmp_path / "fix.jsonl"
    sidecar.write_text(json.dumps({"path": paths[0], "camera": "c9", "time": 5}) + "\n")

    def only_the_broken_file(self, files, *args, **kwargs):  # an unreadable file is tried again on every run
        assert [f.name for f in files] == ["broken.jpg"], "indexed images embedded again"
        return np.empty((0, 32), np.float32), {files[0]: "unreadable"}

    monkeypatch.setattr(Encoder, "images", only_the_broken_file)
    assert main(["index", "add", "--index", str(tmp_path / "idx"), "--metadata", str(sidecar), "--device", "cpu"]) == 0
    assert "metadata of 1 indexed images updated" in capsys.readouterr().out
    store = IndexStore.open(tmp_path / "idx")
    assert store.read_records()[0] == {"path": paths[0], "camera": "c9", "time": 5}
    assert store.read_records()[1]["camera"] == "c1" and np.array_equal(store.read()[0], embeddings)


def test_a_backend_that_returns_fewer_rows_a_search_says_so(gallery, tmp_path, capsys):
    assert build(gallery, tmp_path / "idx") == 0
    searcher = Searcher.open(tmp_path / "idx", device="cpu", precision="fp32")
    query = searcher.encoder.texts(["a man in a red coat"])[0]
    best = [h.row for h in searcher.search_vector(query, 3)]
    searcher.backend.max_rows = 3  # as Milvus' 16,384 a query, on a gallery larger than that
    capsys.readouterr()
    assert [h.row for h in searcher.search_vector(query, 3)] == best
    assert "returns at most" not in capsys.readouterr().err
    assert [h.row for h in searcher.search_vector(query, 5)] == best
    assert "the exact backend returns at most 3 rows a search: 3 results, not 5" in capsys.readouterr().err


def ivf_build(gallery, out: Path) -> int:
    return build(gallery, out, "--ivf-threshold", "10", "--nlist", "2", "--nprobe", "1")


def no_training(*args, **kwargs):
    raise AssertionError("IVF trained again where the saved file should have been used")


def test_a_build_interrupted_while_saving_ivf_writes_it_on_the_rerun(gallery, tmp_path, monkeypatch):
    original = IVFBackend.save
    monkeypatch.setattr(IVFBackend, "save", lambda self, path: (_ for _ in ()).throw(KeyboardInterrupt))
    assert ivf_build(gallery, tmp_path / "idx") == 130
    assert not (tmp_path / "idx" / "ivf.faiss").exists() and IndexStore.open(tmp_path / "idx").manifest.ivf is None
    monkeypatch.setattr(IVFBackend, "save", original)
    assert ivf_build(gallery, tmp_path / "idx") == 0  # nothing left to embed, but the IVF file is written
    store = IndexStore.open(tmp_path / "idx")
    assert store.manifest.complete and store.saved_ivf(store.read()[0]) == store.ivf_path
    monkeypatch.setattr(IVFBackend, "_train", staticmethod(no_training))
    assert Searcher.open(tmp_path / "idx", device="cpu", precision="fp32").backend.name == "ivf"


def test_a_stale_ivf_file_beside_changed_shards_is_never_used(gallery, tmp_path, monkeypatch):
    assert ivf_build(gallery, tmp_path / "idx") == 0
    store = IndexStore.open(tmp_path / "idx")
    npy = store.shards()[0][0]
    changed = clustered(12, dim=32, seed=7)  # same rows and size: only a digest tells them apart
    np.save(npy, changed)
    searcher = Searcher.open(tmp_path / "idx", device="cpu", precision="fp32")
    query = searcher.encoder.texts(["a man in a red coat"])[0]
    hits = searcher.search_vector(query, 12)
    assert sorted(h.row for h in hits) == list(range(12))
    for hit in hits:  # the reported score is the true cosine with the rows now in the shards
        assert hit.score == pytest.approx(float(changed[hit.row] @ query), abs=1e-5)
    assert main(["index", "add", "--index", str(tmp_path / "idx"), "--device", "cpu", "--workers", "0"]) == 0
    store = IndexStore.open(tmp_path / "idx")
    assert store.saved_ivf(changed) == store.ivf_path  # add re-trained and re-bound it
    monkeypatch.setattr(IVFBackend, "_train", staticmethod(no_training))
    Searcher.open(tmp_path / "idx", device="cpu", precision="fp32")


def test_an_ivf_file_swapped_or_damaged_is_not_used(gallery, tmp_path):
    assert ivf_build(gallery, tmp_path / "idx") == 0
    store = IndexStore.open(tmp_path / "idx")
    embeddings = store.read()[0]
    make_backend("ivf", clustered(12, dim=32, seed=3), store.manifest.config).save(store.ivf_path)  # same row count
    assert store.saved_ivf(embeddings) is None
    store.manifest.ivf = None
    assert store.saved_ivf(embeddings) is None  # an index from before the binding: trained again


def test_temporary_files_of_a_killed_run_are_removed_on_the_next(gallery, tmp_path):
    assert build(gallery, tmp_path / "idx", "--shard-size", "4") == 0
    orphans = [tmp_path / "idx" / ".manifest.json.k3j2.tmp", tmp_path / "idx" / "shards" / ".000003.npy.x8d1.tmp",
               tmp_path / "idx" / "shards" / ".000003.jsonl.q0a9.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half a file")
    assert build(gallery, tmp_path / "idx", "--shard-size", "4") == 0
    assert not any(orphan.exists() for orphan in orphans)
    assert IndexStore.open(tmp_path / "idx").manifest.count == 12


def test_a_file_name_that_is_not_utf8_is_listed_and_the_build_goes_on(tmp_path, capsys):
    root = tmp_path / "imgs"
    write_gallery(root, count=3)
    odd = root / os.fsdecode(b"caf\xe9.png")
    write_crop(odd, 50)
    checkpoint = write_checkpoint(tmp_path / "tiny.pt")
    command = ["index", "build", "--checkpoint", str(checkpoint), "--images", str(root), "--out", str(tmp_path / "idx"),
               "--device", "cpu", "--precision", "fp32", "--workers", "0"]
    for _ in range(2):  # every run: it goes on, and says so
        assert main(command) == 0
        out = capsys.readouterr().out
        assert "caf\\xe9.png (file name is not valid UTF-8" in out
    store = IndexStore.open(tmp_path / "idx")
    assert store.manifest.count == 3 and store.manifest.complete
    unreadable = [json.loads(line) for line in (tmp_path / "idx" / "unreadable.jsonl").read_text().splitlines()]
    assert {"path": "caf\\xe9.png", "problem": "file name is not valid UTF-8; rename it to index it"} in unreadable


def test_huge_k_is_clamped_to_the_gallery(gallery, tmp_path, capsys, monkeypatch):
    assert build(gallery, tmp_path / "idx") == 0
    asked: list[int] = []
    original = ExactBackend.search

    def bounded_search(self, queries, k, allowed=None, filters=None):
        asked.append(k)
        assert k <= self.index.ntotal, f"k={k} reached faiss unclamped"  # faiss would allocate k slots a query
        return original(self, queries, k, allowed, filters)

    monkeypatch.setattr(ExactBackend, "search", bounded_search)
    capsys.readouterr()
    assert main(["-q", "search", "--index", str(tmp_path / "idx"), "a man", "-k", "1000000000", "--json",
                 "--device", "cpu", "--precision", "fp32"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 12 and asked == [12]
    assert main(["-q", "search", "--index", str(tmp_path / "idx"), "a man", "-k", "1000000000", "--camera", "c1",
                 "--json", "--device", "cpu", "--precision", "fp32"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 4 and asked[-1] == 4


def test_line_separators_inside_metadata_survive(gallery, tmp_path):
    root, _, paths = gallery
    sidecar = tmp_path / "meta.jsonl"
    sidecar.write_text(json.dumps({"path": paths[0], "note": "left\u2028right\u0085end"}, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    assert main(["index", "add", "--index", str(tmp_path / "idx"), "--device", "cpu"]) == 2  # no index yet
    assert build(gallery, tmp_path / "idx") == 0
    assert main(["index", "add", "--index", str(tmp_path / "idx"), "--metadata", str(sidecar), "--device", "cpu",
                 "--workers", "0"]) == 0
    assert IndexStore.open(tmp_path / "idx").read_records()[0]["note"] == "left\u2028right\u0085end"


def test_the_store_builds_its_index_config_once(gallery, tmp_path, monkeypatch):
    """IndexStore.collection (asked before every write and read) builds the manifest's IndexConfig once."""
    assert build(gallery, tmp_path / "idx") == 0
    built = []
    check = IndexConfig.__post_init__
    monkeypatch.setattr(IndexConfig, "__post_init__", lambda config: (built.append(config), check(config))[1])
    store = IndexStore.open(tmp_path / "idx")
    assert all(store.collection is None for _ in range(5))
    assert store.manifest.config.backend == "faiss" and len(built) == 1
