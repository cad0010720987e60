"""Retrieval metrics against a brute-force argsort reference."""

from __future__ import annotations

import math

import pytest
import torch

import cpcl.evaluation.metrics as metrics
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


def test_rows_without_hits_rank_nothing():
    positives = torch.full((metrics.BLOCK_ROWS + 1, 3), -1)
    positives[-1, 0] = 2
    ranks = hit_ranks(torch.zeros(metrics.BLOCK_ROWS + 1, 5), positives)
    assert ranks[:-1].eq(6).all() and ranks[-1].tolist() == [3, 6, 6]


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


def brute_force_ranks(scores: torch.Tensor, positives: torch.Tensor) -> list[list[int]]:
    """Each row's hit ranks from a full stable sort (descending score, then gallery order)."""
    out = []
    for row, hits in zip(scores.tolist(), positives.tolist()):
        order = sorted(range(len(row)), key=lambda g: (-row[g], g))
        position = {g: i + 1 for i, g in enumerate(order)}
        ranks = sorted(position[h] for h in hits if h >= 0)
        out.append(ranks + [len(row) + 1] * (len(hits) - len(ranks)))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_hit_ranks_equal_a_full_sort_with_ties_in_and_across_bins(dtype, seed):
    """Scores on a grid finer than a bin (several per bin, many exact ties, hits sharing bins with
    each other and with other items), across the whole allowed range, rows of several blocks."""
    gen = torch.Generator().manual_seed(seed)
    rows, size = metrics.BLOCK_ROWS + 5, 300
    half = metrics.BINS / 2
    coarse = torch.randint(-8, 9, (rows, size), generator=gen) * (half / 8)  # -half .. half
    fine = torch.randint(0, 4, (rows, size), generator=gen) / 4  # quarter steps: ties within a bin
    scores = (coarse + fine).clamp(-half, half).to(dtype)
    scores[:, 50:60] = scores[:, :10]  # exact duplicates of other items
    positives = torch.stack([torch.randperm(size, generator=gen)[:12] for _ in range(rows)])
    positives[::3, 8:] = -1  # padding
    assert hit_ranks(scores, positives).tolist() == brute_force_ranks(scores, positives)


def test_hit_ranks_of_continuous_scores_equal_a_full_sort():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(40, 2000, generator=gen) * 600
    scores = scores.clamp(-metrics.BINS / 2, metrics.BINS / 2)
    positives = torch.stack([torch.randperm(2000, generator=gen)[:30] for _ in range(40)])
    counts = torch.randint(1, 31, (40, 1), generator=gen)
    positives[torch.arange(30)[None, :] >= counts] = -1  # 1 to 30 hits a row, then padding
    assert hit_ranks(scores, positives).tolist() == brute_force_ranks(scores, positives)


@pytest.mark.parametrize("outside", [metrics.BINS / 2 + 952, -metrics.BINS, float("nan")])
def test_scores_outside_the_bins_are_refused_not_ranked_wrongly(outside):
    scores = torch.tensor([[0.5, 0.25, 0.0, -0.5], [1.0, 0.0, 2.0, 3.0]])
    scores[0, 2] = outside
    with pytest.raises(ValueError, match="score_scale"):
        hit_ranks(scores, torch.tensor([[1, -1], [0, 2]]))


def test_similarities_are_scaled_by_a_power_of_two_into_the_bins():
    for bound in (1e-6, 0.3, 1.0, 1.001, 7.5, 1e4):
        scale = metrics.score_scale(bound)
        assert math.log2(scale) == int(math.log2(scale))  # exact: the order and ties are kept
        assert metrics.BINS / 4 < bound * scale <= metrics.BINS / 2


def test_metrics_at_scale_with_duplicated_images_match_brute_force():
    """Several hundred queries over a gallery with copies of hits and of other images: every
    rank exact, so the metrics equal the reference's."""
    gen = torch.Generator().manual_seed(4)
    gallery_ids = torch.randint(0, 30, (400,), generator=gen)
    centres = torch.randn(30, 32, generator=gen)
    gallery = normalised(centres[gallery_ids] + 1.5 * torch.randn(400, 32, generator=gen))
    gallery[200:260] = gallery[:60]  # copies: exact ties, within and across persons
    query_ids = gallery_ids[torch.randint(0, 400, (300,), generator=gen)]
    queries = normalised(centres[query_ids] + 1.5 * torch.randn(300, 32, generator=gen))
    expected = brute_force(queries @ gallery.T, query_ids, gallery_ids)
    got = retrieval_metrics(queries, gallery, query_ids, gallery_ids, chunk_size=64)
    assert got == pytest.approx(expected, abs=1e-9)


def test_non_finite_features_are_an_error():
    with pytest.raises(CpclError, match="NaN or inf"):
        retrieval_metrics(torch.full((2, 2), float("nan")), torch.eye(2), torch.tensor([0, 1]), torch.tensor([0, 1]))


def test_chunks_are_scored_in_order_and_a_failure_reaches_the_caller():
    """The next chunk is scored in a background thread: the chunks still come in order, each with
    its own rows, and an error raised while scoring one is raised to the caller."""
    def score(start: int, stop: int) -> torch.Tensor:
        return torch.arange(start, min(stop, 10), dtype=torch.float32)[:, None]

    chunks = list(metrics._scored_chunks(score, 10, 4))
    assert [rows for rows, _ in chunks] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    assert torch.cat([scores for _, scores in chunks]).squeeze(1).tolist() == list(range(10))

    def failing(start: int, stop: int) -> torch.Tensor:
        if start == 4:
            raise ValueError("chunk at 4")
        return score(start, stop)

    with pytest.raises(ValueError, match="chunk at 4"):
        list(metrics._scored_chunks(failing, 10, 4))
