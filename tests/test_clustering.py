"""Clustering layer: the sparse Jaccard path against a slow loop reference of the definition."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN

from cpcl.clustering import (
    ClusterConfig,
    FeatureError,
    JaccardOptions,
    check_features,
    cluster_features,
    dbscan_precomputed,
    jaccard_distance_sparse,
    knn_device,
    nearest_neighbours,
    relabel_consecutive,
)
from cpcl.clustering.knn import _tile_top
from cpcl.utils.errors import ConfigError, CpclError

TOL = 1e-5


def clustered(n: int, dim: int = 32, n_centres: int = 8, noise: float = 0.6, outliers: float = 0.15,
              seed: int = 0) -> np.ndarray:
    """[n, dim] float32 unit vectors: points around a few centres plus uniform outliers."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    n_out = int(outliers * n)
    x = centres[rng.integers(0, n_centres, n - n_out)]
    x = x + noise * rng.standard_normal(x.shape) / np.sqrt(dim)
    x = np.concatenate([x, rng.standard_normal((n_out, dim))])[rng.permutation(n)]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_rank(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full ranking by the definition: self first, then similarity descending, index ascending."""
    x64 = x.astype(np.float64)
    n = len(x)
    sims = np.empty((n, n))
    rank = np.empty((n, n), np.int64)
    for i in range(n):
        sims[i] = (x64 * x64[i]).sum(axis=1)  # same summation order for every row
        others = sorted((j for j in range(n) if j != i), key=lambda j: (-sims[i, j], j))
        rank[i] = [i, *others]
    return rank, sims


def reference_jaccard(x: np.ndarray, k1: int, k2: int, convention: str) -> np.ndarray:
    """Dense [N, N] Jaccard distance, Python loops over the sets, straight from the definition.

    Both public codes slice their neighbour lists the same way (N(i, k) = list[:k+1], query
    expansion over list[:k2]); they differ in the lists: cluster-contrast-reid's kNN search
    returns k1 points, self included, Zhong et al.'s code ranks every point.
    """
    rank, sims = reference_rank(x)
    if convention == "cluster_contrast":
        rank = rank[:, :k1]
    n = len(x)

    def near(i: int, k: int) -> list[int]:
        return list(rank[i, : k + 1])

    def recip(i: int, k: int) -> list[int]:
        return [j for j in near(i, k) if i in near(j, k)]

    v = np.zeros((n, n))
    for i in range(n):
        r1 = set(recip(i, k1))
        expanded = set(r1)
        for c in recip(i, k1):
            rc = set(recip(c, int(round(k1 / 2))))
            if len(rc & r1) > 2 / 3 * len(rc):
                expanded |= rc
        cols = sorted(expanded)
        weight = np.exp(-(2.0 - 2.0 * sims[i, cols]))
        v[i, cols] = weight / weight.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    jac = np.empty((n, n))
    for i in range(n):
        m = np.minimum(v[i], v).sum(axis=1)
        jac[i] = np.maximum(1.0 - m / (2.0 - m), 0.0)
    return jac


def reference_labels(jac: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(jac)
    return relabel_consecutive(labels)


def assert_matches_reference(x: np.ndarray, cfg: ClusterConfig) -> np.ndarray:
    """Every stored J equals the reference, every reference pair <= eps is stored, same labels."""
    ref = reference_jaccard(x, cfg.k1, cfg.k2, cfg.convention)
    got = jaccard_distance_sparse(x, cfg.k1, cfg.k2, cfg.eps, cfg.search, convention=cfg.convention).tocoo()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.data, ref[got.row, got.col], atol=TOL, rtol=0)
    assert (got.data <= cfg.eps).all()
    stored = np.zeros(ref.shape, bool)
    stored[got.row, got.col] = True
    assert stored.diagonal().all()
    missing = (ref <= cfg.eps - TOL) & ~stored
    assert not missing.any(), f"{missing.sum()} pairs with J <= eps not stored"
    labels = cluster_features(x, cfg).labels
    np.testing.assert_array_equal(labels, reference_labels(ref, cfg.eps, cfg.min_samples))
    return labels


@pytest.mark.parametrize("convention", ["cluster_contrast", "zhong"])
@pytest.mark.parametrize(
    "k1,k2,eps,search",
    [
        (30, 6, 0.6, JaccardOptions()),
        (20, 1, 0.6, JaccardOptions(knn_block=64)),  # no query expansion
        (10, 3, 0.4, JaccardOptions(prefix_fraction=1.0, row_chunk=37, verify_rows=5)),
        (15, 6, 0.7, JaccardOptions(prefix_fraction=0.0, row_chunk=64, verify_rows=64, knn_backend="faiss_flat")),
        (25, 12, 0.6, JaccardOptions(prefix_fraction=0.3, row_chunk=1, verify_rows=1, knn_block=33)),
        (5, 8, 0.6, JaccardOptions()),  # k2 > k1: cluster_contrast's lists hold k1 rows to expand over
    ],
)
def test_sparse_jaccard_matches_loop_reference(k1, k2, eps, search, convention):
    x = clustered(220, seed=k1)
    cfg = ClusterConfig(k1=k1, k2=k2, eps=eps, search=search, convention=convention)
    labels = assert_matches_reference(x, cfg)
    assert labels.max() >= 1 and (labels == -1).any(), "test data should give clusters and outliers"


def test_default_convention_is_the_fields_and_differs_from_zhong():
    assert ClusterConfig().convention == "cluster_contrast"
    x = clustered(400, seed=21)
    field = jaccard_distance_sparse(x, 30, 6, 0.6, convention="cluster_contrast")
    zhong = jaccard_distance_sparse(x, 30, 6, 0.6, convention="zhong")
    assert (field != zhong).nnz > 0  # one neighbour more per list moves the distances
    np.testing.assert_array_equal(cluster_features(x, ClusterConfig()).labels,
                                  reference_labels(reference_jaccard(x, 30, 6, "cluster_contrast"), 0.6, 4))


@pytest.mark.parametrize("n", [1, 2, 12])
@pytest.mark.parametrize("convention", ["cluster_contrast", "zhong"])
def test_fewer_points_than_k1(n, convention):
    x = clustered(n, n_centres=2, outliers=0.0, seed=3)
    assert_matches_reference(x, ClusterConfig(k1=30, k2=6, eps=0.6, min_samples=2, convention=convention))


@pytest.mark.parametrize("convention,clustered_rows", [("cluster_contrast", 4), ("zhong", 5)])
def test_all_points_identical(convention, clustered_rows):
    # every similarity ties, so only the index tie-break decides the neighbour lists
    x = np.repeat(clustered(1, seed=8), 9, axis=0)
    cfg = ClusterConfig(k1=4, k2=3, eps=0.3, convention=convention, search=JaccardOptions(knn_block=2))
    labels = assert_matches_reference(x, cfg)
    # high indices never reciprocal: lists hold indices 0..k1-1 (cluster_contrast) or 0..k1 (zhong)
    assert (labels[:clustered_rows] == 0).all() and (labels[clustered_rows:] == -1).all()


@pytest.mark.parametrize("knn", ["flat", "faiss_flat"])
@pytest.mark.parametrize("convention", ["cluster_contrast", "zhong"])
def test_duplicates_and_a_tie_group_larger_than_k1(knn, convention):
    base = clustered(90, seed=5)
    # 40 copies of one point (a tie group larger than k1 + 1), 3 extra copies of five others
    groups = [np.repeat(base[:1], 40, axis=0), np.repeat(base[1:6], 3, axis=0)]
    x = np.concatenate([base, *groups])[np.random.default_rng(0).permutation(90 + 40 + 15)]
    search = JaccardOptions(knn_backend=knn, knn_block=16)
    assert_matches_reference(x, ClusterConfig(k1=30, k2=6, eps=0.6, convention=convention, search=search))
    dist = jaccard_distance_sparse(x, 30, 6, 0.6, search, convention=convention).tocoo()
    stored = dict(zip(zip(dist.row.tolist(), dist.col.tolist()), dist.data.tolist()))
    for row in base[1:6]:  # copies of a point, in a group smaller than k1: identical V' rows
        copies = np.flatnonzero((x == row).all(axis=1)).tolist()
        assert len(copies) == 4
        assert all(stored.get((a, b), 1.0) < 1e-12 for a in copies for b in copies)


@pytest.mark.parametrize("knn,block", [("flat", 4096), ("flat", 7), ("flat", 1), ("faiss_flat", 4096)])
def test_neighbour_order_breaks_ties_by_index(knn, block):
    x = clustered(60, seed=7)
    x[[10, 20, 30, 40]] = x[5]
    opts = JaccardOptions(knn_block=block)
    rank, sims = nearest_neighbours(x, 3, knn, opts)
    ref_rank, ref_sims = reference_rank(x)
    np.testing.assert_array_equal(rank, ref_rank[:, :3])
    np.testing.assert_array_equal(rank[20], [20, 5, 10])
    np.testing.assert_allclose(sims, np.take_along_axis(ref_sims, rank, 1), atol=1e-6)
    deep, _ = nearest_neighbours(x, 40, knn, opts)  # tie groups inside the lists, across blocks
    np.testing.assert_array_equal(deep, ref_rank[:, :40])


def test_tile_top_keeps_the_topk_values():
    rng = np.random.default_rng(3)
    tile = torch.from_numpy(rng.integers(0, 40, (50, 512)).astype(np.float32))  # many ties
    for view in (tile, tile.T.contiguous().T):  # row-major, and the transpose of a row-major tile
        vals, pos = _tile_top(view, 32)
        np.testing.assert_array_equal(vals.numpy(), view.topk(32, dim=1).values.numpy())
        np.testing.assert_array_equal(view.gather(1, pos).numpy(), vals.numpy())
        assert all(len(set(row)) == 32 for row in pos.tolist())


@pytest.mark.parametrize("n,block", [(300, 4096), (300, 50), (300, 13), (1100, 512)])
def test_torch_and_faiss_knn_agree_with_the_reference(n, block):
    x = clustered(n, seed=12)
    x[100:120] = x[7]  # a tie group of 21 points
    ref_rank, _ = reference_rank(x)
    torch_rank, torch_sims = nearest_neighbours(x, 31, "flat", JaccardOptions(knn_block=block))
    faiss_rank, faiss_sims = nearest_neighbours(x, 31, "faiss_flat", JaccardOptions())
    np.testing.assert_array_equal(torch_rank, ref_rank[:, :31])
    np.testing.assert_array_equal(faiss_rank, ref_rank[:, :31])
    np.testing.assert_allclose(torch_sims, faiss_sims, atol=1e-6)


def test_knn_device_follows_the_features_and_the_option():
    x = torch.from_numpy(clustered(5, seed=1))
    assert knn_device(x, "cpu") == torch.device("cpu")
    assert knn_device(x.numpy(), "auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="knn_device"):
        JaccardOptions(knn_device="gpu0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_flat_knn_on_the_gpu_matches_the_reference():
    x = clustered(300, seed=13)
    x[50:60] = x[3]
    rank, _ = nearest_neighbours(x, 31, "flat", JaccardOptions(knn_block=64), torch.device("cuda"))
    np.testing.assert_array_equal(rank, reference_rank(x)[0][:, :31])
    labels = cluster_features(torch.from_numpy(x).cuda(), ClusterConfig()).labels
    np.testing.assert_array_equal(labels, cluster_features(x, ClusterConfig(search=JaccardOptions(knn_device="cpu"))).labels)


def test_hnsw_backend_agrees_with_exact_on_small_data():
    x = clustered(300, seed=11)
    exact, _ = nearest_neighbours(x, 31, "faiss_flat", JaccardOptions())
    approx, _ = nearest_neighbours(x, 31, "hnsw", JaccardOptions(knn_backend="hnsw"))
    assert (np.sort(exact, 1) == np.sort(approx, 1)).mean() > 0.99


def test_sparse_output_layout():
    x = clustered(150, seed=2)
    dist = jaccard_distance_sparse(x, 20, 6, 0.6, convention="cluster_contrast")
    assert isinstance(dist, sp.csr_matrix) and dist.has_sorted_indices
    assert (dist != dist.T).nnz == 0
    assert dist.nnz > 150 and (dist.diagonal() == 0).all()


def test_dbscan_counts_explicit_zero_distances():
    n = 4
    rows, cols = np.divmod(np.arange(n * n), n)
    dist = sp.csr_matrix((np.zeros(n * n), cols, np.arange(0, n * n + 1, n)), shape=(n, n))
    assert dist.nnz == n * n  # all stored, all zero
    np.testing.assert_array_equal(dbscan_precomputed(dist, 0.5, 4), [0, 0, 0, 0])
    np.testing.assert_array_equal(dbscan_precomputed(dist, 0.5, 5), [-1, -1, -1, -1])


def test_cluster_features_result_and_torch_input():
    x = clustered(200, seed=4)
    res = cluster_features(torch.from_numpy(x), ClusterConfig())
    assert res.labels.dtype == np.int64 and res.labels.shape == (200,)
    assert res.n_clusters == res.labels.max() + 1 and res.n_outliers == (res.labels == -1).sum()
    assert set(np.unique(res.labels)) == set(range(-1, res.n_clusters)) - ({-1} - set(res.labels))
    assert set(res.seconds) == {"knn", "jaccard", "dbscan", "total"} and res.peak_rss_mb > 0


def test_relabel_consecutive():
    got = relabel_consecutive([7, -1, 3, 7, -5, 3, 9])
    np.testing.assert_array_equal(got, [0, -1, 1, 0, -1, 1, 2])


@pytest.mark.parametrize(
    "feats,match",
    [
        (np.ones((5, 4), np.float32), "L2-normalised"),
        (np.full((5, 4), np.nan, np.float32), "NaN"),
        (np.ones(4, np.float32) / 2, "2-D"),
        (np.ones((2, 2, 4), np.float32) / 2, "2-D"),
        (np.zeros((0, 4), np.float32), "non-empty"),
        (np.ones((3, 4), np.int64), "floating"),
    ],
)
def test_invalid_features_raise(feats, match):
    with pytest.raises(FeatureError, match=match) as err:
        cluster_features(feats, ClusterConfig())
    assert isinstance(err.value, ValueError) and isinstance(err.value, CpclError)


def test_check_features_accepts_float64_and_tensors():
    x = clustered(10, seed=1)
    assert check_features(x.astype(np.float64), 1e-3).dtype == np.float32
    assert check_features(torch.from_numpy(x), 1e-3).shape == (10, 32)


@pytest.mark.parametrize(
    "kwargs",
    [dict(eps=1.0), dict(eps=0.0), dict(k1=0), dict(k2=0), dict(min_samples=0),
     dict(convention="zhong2017"), dict(search=None)],
)
def test_invalid_config_raises(kwargs):
    with pytest.raises(ConfigError):
        if kwargs.get("search", 1) is None:
            JaccardOptions(knn_backend="nope")
        ClusterConfig(**kwargs)


# ---------------------------------------------------------------- cpcl cluster


def _blobs(n_per: int = 12, centres: int = 4, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim))
    x = np.repeat(means, n_per, axis=0) + 0.05 * rng.normal(size=(centres * n_per, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_cli_cluster_writes_the_labels_cluster_features_gives(tmp_path, capsys):
    from cpcl.cli import main

    feats = _blobs()
    np.save(tmp_path / "f.npy", feats)
    out = tmp_path / "labels.npy"
    args = ["cluster", "--features", str(tmp_path / "f.npy"), "--out", str(out), "--k1", "8", "--k2", "3",
            "--eps", "0.6", "--min-samples", "4", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    expected = cluster_features(feats, ClusterConfig(k1=8, k2=3, eps=0.6, min_samples=4)).labels
    labels = np.load(out)
    np.testing.assert_array_equal(labels, expected)
    assert summary["clusters"] == 4 == labels.max() + 1 and summary["outliers"] == int((labels < 0).sum())
    assert summary["seconds"] >= 0 and summary["peak_mb"] > 0
    np.savez(tmp_path / "emb.npz", image=feats, text=feats[:0])  # the layout `cpcl encode` writes
    assert main(["cluster", "--features", str(tmp_path / "emb.npz"), "--key", "image", "--out", str(out),
                 "--k1", "8", "--k2", "3"]) == 0
    np.testing.assert_array_equal(np.load(out), expected)
    assert main(["cluster", "--features", str(tmp_path / "f.npy"), "--out", str(out), "--k1", "8", "--k2", "3",
                 "--convention", "zhong", "--knn", "faiss_flat", "--knn-device", "cpu"]) == 0
    zhong = cluster_features(feats, ClusterConfig(k1=8, k2=3, convention="zhong")).labels
    np.testing.assert_array_equal(np.load(out), zhong)


def test_cli_cluster_bad_input_is_one_line(tmp_path, capsys):
    from cpcl.cli import main

    np.save(tmp_path / "raw.npy", 3 * _blobs())
    np.savez(tmp_path / "two.npz", image=_blobs(), text=_blobs())
    cases = [
        (["--features", str(tmp_path / "missing.npy")], "feature file not found"),
        (["--features", str(tmp_path / "raw.npy")], "raw.npy: features must be L2-normalised"),
        (["--features", str(tmp_path / "two.npz")], "holds arrays image, text; name the array with --key"),
        (["--features", str(tmp_path / "two.npz"), "--key", "x"], "it has no array 'x'"),
        (["--features", str(tmp_path / "raw.npy"), "--eps", "1.5"], "expected 0 <= value < 1, got 1.5"),
    ]
    for extra, message in cases:
        assert main(["cluster", "--out", str(tmp_path / "l.npy"), *extra]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if " INFO " not in line]
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "l.npy").exists()


def test_clustering_modules_import_each_other_without_a_cycle():
    """No module of cpcl.clustering imports, even for type checking only, one that imports it back (jaccard and
    knn did: JaccardOptions lives in knn, which jaccard imports)."""
    import ast
    from graphlib import CycleError, TopologicalSorter
    from pathlib import Path

    import cpcl.clustering

    folder = Path(cpcl.clustering.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        if path.stem == "__init__":
            continue
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            imported |= {name.split(".")[2] for name in names if name.startswith("cpcl.clustering.")}
        graph[path.stem] = imported
    assert "knn" in graph["jaccard"]
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as err:
        pytest.fail(f"import cycle among cpcl.clustering modules: {err.args[1]}")
