"""k-reciprocal re-ranking (cpcl.clustering.rerank) against a dense loop reference of its definition,
its invariants, and re-ranked evaluation against a brute-force argsort."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpcl.clustering.rerank import RerankConfig, prepare_gallery, rerank_distances, top_k
from cpcl.evaluation.metrics import retrieval_metrics
from cpcl.utils.errors import ConfigError


def clustered(seed: int, persons: int = 8, gallery_per: int = 5, queries: int = 14, dim: int = 16,
              spread: float = 0.7):
    """Gallery [G, D] with `gallery_per` images a person, queries [Q, D] from the same persons (noisier),
    both L2-normalised, and their person ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(persons, dim))
    gallery_ids = np.repeat(np.arange(persons), gallery_per)
    query_ids = rng.integers(0, persons, queries)

    def noisy(ids: np.ndarray, scale: float) -> np.ndarray:
        x = centres[ids] + scale * rng.normal(size=(len(ids), dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return noisy(query_ids, 1.5 * spread), noisy(gallery_ids, spread), query_ids, gallery_ids


def reference(queries: np.ndarray, gallery: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """The module docstring's d*, with Python sets and loops over a dense similarity matrix."""
    g = len(gallery)
    s = gallery.astype(np.float64) @ gallery.T.astype(np.float64)
    rank = [[i] + sorted((j for j in range(g) if j != i), key=lambda j: (-s[i, j], j)) for i in range(g)]

    def reciprocal(i: int, members: int) -> set[int]:
        return {j for j in rank[i][:members] if i in rank[j][:members]}

    near, half = k1 + 1, round(k1 / 2) + 1  # Zhong's sizes, the point itself included

    def grown(base: set[int]) -> set[int]:
        out = set(base)
        for c in base:
            rc = reciprocal(c, half)
            if 3 * len(rc & base) > 2 * len(rc):
                out |= rc
        return out

    def weights(sims: np.ndarray, members: set[int]) -> np.ndarray:
        v = np.zeros(g)
        for j in members:
            v[j] = np.exp(-(2 - 2 * sims[j]))
        return v / v.sum()

    v_g = np.array([weights(s[i], grown(reciprocal(i, near))) for i in range(g)])
    vq_g = np.array([v_g[rank[i][:k2]].mean(axis=0) for i in range(g)])
    out = np.zeros((len(queries), g))
    for q, query in enumerate(queries):
        sims = gallery.astype(np.float64) @ query.astype(np.float64)
        order = sorted(range(g), key=lambda j: (-sims[j], j))
        v = weights(sims, grown(set(order[:k1])))
        vq = (v + sum(v_g[j] for j in order[:k2 - 1])) / k2
        for j in range(g):
            m = sum(min(vq[k], vq_g[j, k]) for k in range(g))
            out[q, j] = (1 - lam) * max(0.0, 1 - m / (2 - m)) + lam * (1 - sims[j]) / 2
    return out


@pytest.mark.parametrize(("seed", "k1", "k2", "lam"), [(0, 6, 3, 0.3), (1, 4, 1, 0.0), (2, 10, 6, 0.5),
                                                       (3, 50, 2, 0.3)])
def test_rerank_distances_match_a_dense_loop_reference(seed, k1, k2, lam):
    queries, gallery, _, _ = clustered(seed)
    prepared = prepare_gallery(gallery, RerankConfig(k1=k1, k2=k2, lambda_value=lam))
    got = rerank_distances(queries, prepared)
    assert got.shape == (len(queries), len(gallery))
    np.testing.assert_allclose(got, reference(queries, gallery, k1, k2, lam), atol=1e-6)


def test_top_k_orders_by_value_then_index():
    sims = np.array([[0.5, 0.9, 0.5, 0.1, 0.5], [0.2, 0.2, 0.2, 0.2, 0.3]], dtype=np.float32)
    assert top_k(sims, 3).tolist() == [[1, 0, 2], [4, 0, 1]]
    assert top_k(sims, 9).tolist() == [[1, 0, 2, 4, 3], [4, 0, 1, 2, 3]]


def test_queries_are_reranked_independently_and_lambda_one_keeps_the_order():
    queries, gallery, _, _ = clustered(4)
    prepared = prepare_gallery(gallery, RerankConfig(k1=6, k2=3))
    together = rerank_distances(queries, prepared)
    alone = np.concatenate([rerank_distances(queries[i:i + 1], prepared) for i in range(len(queries))])
    np.testing.assert_allclose(together, alone, atol=1e-7)  # BLAS rounds a matrix product and a vector's apart
    assert (np.argsort(together, axis=1, kind="stable") == np.argsort(alone, axis=1, kind="stable")).all()
    kept = rerank_distances(queries, prepare_gallery(gallery, RerankConfig(k1=6, k2=3, lambda_value=1.0)))
    np.testing.assert_allclose(kept, (1 - queries.astype(np.float64) @ gallery.T) / 2, atol=1e-6)


def brute_force_metrics(score: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray) -> dict[str, float]:
    """Stable argsort of every row, metrics read off the match matrix."""
    order = np.argsort(-score, axis=1, kind="stable")
    matches = gallery_ids[order] == query_ids[:, None]
    first = matches.argmax(axis=1) + 1
    aps = []
    for row in matches:
        hits = np.flatnonzero(row) + 1
        aps.append(np.mean(np.arange(1, len(hits) + 1) / hits))
    return {"R1": 100 * np.mean(first <= 1), "R5": 100 * np.mean(first <= 5), "mAP": 100 * np.mean(aps)}


def test_reranked_metrics_rank_by_the_reranked_distance_and_help_on_clustered_data():
    queries, gallery, query_ids, gallery_ids = clustered(5, persons=12, gallery_per=6, queries=60)
    config = RerankConfig(k1=8, k2=3)
    args = (torch.from_numpy(queries), torch.from_numpy(gallery), torch.from_numpy(query_ids),
            torch.from_numpy(gallery_ids))
    plain = retrieval_metrics(*args)
    reranked = retrieval_metrics(*args, chunk_size=7, rerank=config)
    expected = brute_force_metrics(-reference(queries, gallery, 8, 3, config.lambda_value), query_ids, gallery_ids)
    for key, value in expected.items():
        assert reranked[key] == pytest.approx(value, abs=1e-9)
    assert reranked["mAP"] > plain["mAP"] + 5  # several images a person: re-ranking finds the rest of them


def test_rerank_config_is_checked():
    with pytest.raises(ConfigError, match="lambda_value"):
        RerankConfig(lambda_value=1.5)
    with pytest.raises(ConfigError, match="k1"):
        RerankConfig(k1=0)
