"""Retrieval metrics against a brute-force argsort reference."""

from __future__ import annotations

import pytest
import torch

from cpcl.evaluation.metrics import hit_ranks, retrieval_metrics
from cpcl.utils.errors import CpclError


def brute_force(sim: torch.Tensor, query_ids: torch.Tensor, gallery_ids: torch.Tensor) -> dict[str, float]:
    """Per query: stable sort by descending score, then the textbook formulas."""
    r1 = r5 = r10 = ap = inp = 0.0
    for q in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda g: (-float(sim[q, g]), g))
        matches = [bool(gallery_ids[g] == query_ids[q]) for g in order]
        positions = [i + 1 for i, m in enumerate(matches) if m]
        r1 += positions[0] <= 1
        r5 += positions[0] <= 5
        r10 += positions[0] <= 10
        ap += sum((k + 1) / p for k, p in enumerate(positions)) / len(positions)
        inp += len(positions) / positions[-1]
    n = sim.shape[0] / 100.0
    return {"R1": r1 / n, "R5": r5 / n, "R10": r10 / n, "mAP": ap / n, "mINP": inp / n}


def normalised(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    gallery_ids = torch.randint(0, 12, (90,), generator=gen)
    query_ids = gallery_ids[torch.randint(0, 90, (70,), generator=gen)]
    centres = torch.randn(12, 16, generator=gen)
    gallery = normalised(centres[gallery_ids] + 1.2 * torch.randn(90, 16, generator=gen))
    queries = normalised(centres[query_ids] + 1.2 * torch.randn(70, 16, generator=gen))
    expected = brute_force(queries @ gallery.T, query_ids, gallery_ids)
    for chunk in (1, 7, 256):
        got = retrieval_metrics(queries, gallery, query_ids, gallery_ids, chunk_size=chunk)
        assert got == pytest.approx(expected, abs=1e-9)
    assert 0 < expected["R1"] < 100  # a case that exercises both hits and misses


def test_ties_are_broken_by_gallery_order():
    # gallery items 0..5 all score the same; the hit's rank is its index + 1
    sim = torch.zeros(3, 6)
    positives = torch.tensor([[4, -1], [0, 5], [2, 3]])
    assert hit_ranks(sim, positives).tolist() == [[5, 7], [1, 6], [3, 4]]
    gallery = normalised(torch.ones(6, 4))  # duplicates: every score ties
    gallery_ids = torch.tensor([0, 1, 2, 0, 1, 2])
    got = retrieval_metrics(gallery[:3], gallery, torch.tensor([2, 1, 0]), gallery_ids)
    expected = brute_force(gallery[:3] @ gallery.T, torch.tensor([2, 1, 0]), gallery_ids)
    assert got == pytest.approx(expected)
    assert got["R1"] == pytest.approx(100 / 3)


def test_hits_tied_only_with_each_other():
    sim = torch.tensor([[0.9, 0.5, 0.7, 0.5, 0.1]])
    assert hit_ranks(sim, torch.tensor([[1, 3]])).tolist() == [[3, 4]]
    assert hit_ranks(sim, torch.tensor([[3, 1]])).tolist() == [[3, 4]]


def test_partial_ties_in_a_row_match_brute_force():
    gen = torch.Generator().manual_seed(5)
    gallery = normalised(torch.randn(40, 8, generator=gen))
    gallery[10:20] = gallery[0]  # duplicated images: exact ties with a hit
    gallery_ids = torch.arange(40) % 7
    queries = normalised(torch.randn(25, 8, generator=gen))
    query_ids = torch.arange(25) % 7
    expected = brute_force(queries @ gallery.T, query_ids, gallery_ids)
    assert retrieval_metrics(queries, gallery, query_ids, gallery_ids, chunk_size=4) == pytest.approx(expected)


def test_perfect_and_worst_rankings():
    gallery = torch.eye(4)
    ids = torch.arange(4)
    assert retrieval_metrics(gallery, gallery, ids, ids) == {"R1": 100.0, "R5": 100.0, "R10": 100.0,
                                                           "mAP": 100.0, "mINP": 100.0}
    worst = retrieval_metrics(-gallery, gallery, ids, ids)
    assert worst["R1"] == 0.0 and worst["mINP"] == pytest.approx(25.0)


def test_query_without_a_hit_is_an_error():
    with pytest.raises(CpclError, match="1 queries have no image of their person in the gallery"):
        retrieval_metrics(torch.eye(2), torch.eye(2), torch.tensor([0, 9]), torch.tensor([0, 1]))


def test_rows_without_ties_skip_the_direct_recount(monkeypatch):
    """Padding (queries whose person has fewer images than the largest) is not a tie: only rows
    with a real tie pay for the O(P * G) direct recount."""
    import cpcl.evaluation.metrics as metrics

    recounted = []
    real = metrics._hit_ranks_direct
    monkeypatch.setattr(metrics, "_hit_ranks_direct",
                        lambda sim, pos: recounted.append(len(sim)) or real(sim, pos))
    gen = torch.Generator().manual_seed(0)
    gallery_ids = torch.tensor([0] * 6 + [1] * 2 + [2] * 1 + [3] * 3)  # 6, 2, 1 and 3 images
    query_ids = torch.arange(4).repeat(5)
    query, gallery = normalised(torch.randn(20, 8, generator=gen)), normalised(torch.randn(12, 8, generator=gen))
    assert retrieval_metrics(query, gallery, query_ids, gallery_ids) == pytest.approx(
        brute_force(query @ gallery.T, query_ids, gallery_ids))
    assert recounted == []
    gallery[7] = gallery[3]  # an image of person 1 now ties one of person 0
    retrieval_metrics(query, gallery, query_ids, gallery_ids)
    assert sum(recounted) == 10  # the queries of persons 0 and 1, whose hits are in the tie
