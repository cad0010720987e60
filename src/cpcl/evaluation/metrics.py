"""Text-to-image retrieval metrics: Rank-k, mAP, mINP (docs/method.md, Evaluation).

Every query is ranked against the whole gallery by similarity, descending; ties are broken by
gallery order (the lower index ranks first), as a stable sort would. A gallery item is a hit
when its person id equals the query's. Instead of sorting the gallery per query, the rank of
each hit is counted directly (how many items score higher, plus equal-scoring items before it):
a histogram of the scores in narrow bins counts the items in higher bins than a hit, and only the
few items sharing a hit's bin are compared with it one by one. Query chunks keep memory bounded at
any gallery size; the next chunk's float32 similarity matmul, most of the time, runs in a
background thread while this chunk's ranks are counted (benchmarks/bench_evaluation.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from cpcl.clustering.rerank import RerankConfig, prepare_gallery, rerank_distances
from cpcl.utils.errors import CpclError

RANKS = (1, 5, 10)  # Rank-k reported
CHUNK_SIZE = 128  # queries per chunk: 128 was faster than 256 and 1024 at ICFG size (benchmarks/bench_evaluation.py)
BLOCK_ROWS = 16  # query rows hit_ranks bins at a time (speed only: their bins and histogram stay in cache)
BINS = 4096  # bins per query row over the score range in hit_ranks (speed only: more, fewer items compared one by one)


def _positives_table(gallery_ids: torch.Tensor, query_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gallery indices of each query's hits: ([Q, P] long, hits first then -1 padding; [Q] counts)."""
    unique, gallery_group = torch.unique(gallery_ids, return_inverse=True)
    counts = torch.bincount(gallery_group, minlength=len(unique))
    order = torch.argsort(gallery_group, stable=True)  # gallery indices grouped by id, in order
    starts = torch.cumsum(counts, 0) - counts
    width = int(counts.max())
    slot = torch.arange(width)
    table = torch.full((len(unique), width), -1, dtype=torch.long)
    valid = slot[None, :] < counts[:, None]
    table[valid] = order[(starts[:, None] + slot[None, :])[valid]]
    where = torch.searchsorted(unique, query_ids).clamp(max=len(unique) - 1)
    found = unique[where] == query_ids
    if not bool(found.all()):
        missing = query_ids[~found][:5].tolist()
        raise CpclError(f"{int((~found).sum())} queries have no image of their person in the gallery "
                        f"(first person ids: {missing}); every query needs at least one hit")
    return table[where], counts[where]


def score_scale(bound: float) -> float:
    """The power of two s with bound * s <= BINS / 2: scores times s keep their order and their ties
    exactly (a power-of-two factor only moves the exponent) and span at most BINS unit bins."""
    return 2.0 ** math.floor(math.log2(BINS / 2 / max(bound, 1e-30)))


def hit_ranks(scores: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """1-based ranks of the hits: scores [B, G] float32 or float64 with every |score| <= BINS / 2
    (see `score_scale`); positives [B, P] gallery indices (-1 = pad). Returns [B, P] ranks sorted
    ascending per row, padding as G + 1.

    Each score falls in a unit bin: score + an offset that lands it where the float's spacing is 1,
    whose bit pattern then is the bin number. A monotone map, so an item in a higher bin than a hit
    scores higher and one in a lower bin lower. A histogram of the bins counts, for every hit, the
    items in higher bins; only the items sharing a bin with a hit are compared with it one by one
    (score, then gallery order). No row is sorted; BLOCK_ROWS rows at a time stay in cache.
    """
    batch, size = scores.shape
    values = scores.contiguous().numpy()
    valid = positives >= 0
    ranks = torch.full_like(positives, size + 1)
    ranks[valid] = torch.from_numpy(np.concatenate([
        _block_ranks(values[start:start + BLOCK_ROWS], positives[start:start + BLOCK_ROWS].numpy())
        for start in range(0, batch, BLOCK_ROWS)]))
    return torch.sort(ranks, dim=1).values


def _block_ranks(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """`hit_ranks` of a few rows: scores [b, G], positives [b, P]; the hits' ranks, row-major [H]."""
    batch, size = scores.shape
    if scores.size and not (-BINS / 2 <= scores.min() and scores.max() <= BINS / 2):  # NaN fails too
        raise ValueError(f"hit_ranks needs scores within +-{BINS // 2} (scale them by score_scale); got "
                         f"{scores.min()} .. {scores.max()}")
    half = BINS // 2 + 1
    width = 2 * half + 1  # row r's bins are r * width + (1 .. 2 * half - 1)
    dtype = scores.dtype
    floor = dtype.type(2.0 ** np.finfo(dtype).nmant)  # from here to twice it, floats are 1 apart
    offsets = floor + (np.arange(batch) * width + half).astype(dtype)  # exact integers
    as_int = np.dtype(f"int{8 * dtype.itemsize}")
    bins = np.subtract((scores + offsets[:, None]).view(as_int), floor.view(as_int), dtype=np.int64).ravel()
    rows, hits = np.nonzero(positives >= 0)
    hit_items = rows * size + positives[rows, hits]  # [H] flat positions, row-major
    hit_bins = bins[hit_items]
    cumulative = np.bincount(bins, minlength=batch * width).reshape(batch, width).cumsum(1).ravel()
    shared = np.zeros(batch * width, dtype=bool)
    shared[hit_bins] = True
    items = np.flatnonzero(shared[bins])  # [M] items sharing a bin with a hit (the hits among them)
    flat = scores.ravel()
    ties = _ties_in_bin(items, flat[items], bins[items], hit_bins, flat[hit_items], hit_items)
    return size - cumulative[hit_bins] + ties + 1  # items in higher bins, ties, the hit itself


def _ties_in_bin(items: np.ndarray, item_scores: np.ndarray, item_bins: np.ndarray,
                 hit_bins: np.ndarray, hit_scores: np.ndarray, hit_items: np.ndarray) -> np.ndarray:
    """For each hit [H] (its bin, score and flat position), how many of `items` [M] (the same) in
    its bin rank above it: a higher score, or an equal one earlier in the gallery."""
    if not len(hit_bins):
        return np.zeros(0, np.int64)
    order = np.argsort(hit_bins, kind="stable")
    shared, first, count = np.unique(hit_bins[order], return_index=True, return_counts=True)
    first_of, count_of = np.zeros((2, int(hit_bins.max()) + 1), np.int64)
    first_of[shared], count_of[shared] = first, count
    start, left = first_of[item_bins], count_of[item_bins]  # the item's bin's hits: order[start:start + left]
    counts = np.zeros(len(hit_bins), dtype=np.int64)
    active = np.arange(len(items))
    while active.size:
        hit = order[start[active]]
        score, other = hit_scores[hit], item_scores[active]
        above = (other > score) | ((other == score) & (items[active] < hit_items[hit]))
        counts += np.bincount(hit[above], minlength=len(counts))
        start[active] += 1
        left[active] -= 1
        active = active[left[active] > 0]
    return counts


def _scored_chunks(score: Callable[[int, int], torch.Tensor], total: int, chunk_size: int
                   ) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, score(start, stop)) for each chunk of `total` queries in order. The next chunk's
    scores are computed in a background thread while the caller ranks this one, so the matmul
    (many threads) and the counting (one) overlap."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(score, 0, chunk_size)
        for start in range(0, total, chunk_size):
            scores = pending.result()
            if start + chunk_size < total:
                pending = pool.submit(score, start + chunk_size, start + 2 * chunk_size)
            yield slice(start, start + chunk_size), scores


def retrieval_metrics(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    query_ids: torch.Tensor,
    gallery_ids: torch.Tensor,
    chunk_size: int = CHUNK_SIZE,
    rerank: RerankConfig | None = None,
) -> dict[str, float]:
    """R1/R5/R10, mAP and mINP in percent.

    query_feats: [Q, D], gallery_feats: [G, D], both L2-normalised (similarity = dot product, or with
    `rerank` minus the k-reciprocal re-ranked distance, `cpcl.clustering.rerank`); query_ids: [Q],
    gallery_ids: [G] person ids. Memory is two chunks' similarities, O(chunk_size * G). Every hit's
    rank is exact: equal to a full stable sort of the chunk's float32 similarities
    (tests/test_metrics.py).
    """
    if query_feats.shape[1] != gallery_feats.shape[1]:
        raise CpclError(f"query and gallery features differ in width: {query_feats.shape[1]} vs {gallery_feats.shape[1]}")
    query_ids, gallery_ids = query_ids.long().cpu(), gallery_ids.long().cpu()
    reranked = prepare_gallery(gallery_feats.float().cpu(), rerank) if rerank is not None else None
    positives, num_pos = _positives_table(gallery_ids, query_ids)
    top = max(RANKS)
    hits_at = torch.zeros(top, dtype=torch.float64)
    ap_sum = inp_sum = 0.0
    # |q . g| <= |q| |g|: scaled by a power of two (exact), every similarity fits hit_ranks' bins
    norms = query_feats.float().norm(dim=1).max() * gallery_feats.float().norm(dim=1).max()
    if not bool(torch.isfinite(norms)):
        raise CpclError("query or gallery features contain NaN or inf; check the model's outputs")
    scale = score_scale(1.001 * float(norms))

    def score(start: int, stop: int) -> torch.Tensor:
        if reranked is None:
            return ((query_feats[start:stop].float() * scale) @ gallery_feats.float().T).cpu()
        sim = -torch.from_numpy(rerank_distances(query_feats[start:stop].float().cpu().numpy(), reranked))
        return sim * score_scale(float(sim.abs().max()))

    for rows, sim in _scored_chunks(score, len(query_ids), chunk_size):
        ranks = hit_ranks(sim, positives[rows]).double()  # [B, P], ascending, padded past the end
        n = num_pos[rows].double()
        k = torch.arange(1, ranks.shape[1] + 1, dtype=torch.float64)
        valid = k[None, :] <= n[:, None]
        ap_sum += float((torch.where(valid, k[None, :] / ranks, 0).sum(1) / n).sum())
        last = torch.gather(ranks, 1, (n.long() - 1)[:, None]).squeeze(1)
        inp_sum += float((n / last).sum())
        first = ranks[:, 0]
        hits_at += (first[:, None] <= torch.arange(1, top + 1, dtype=torch.float64)[None, :]).sum(0)
    q = len(query_ids)
    result = {f"R{r}": 100.0 * float(hits_at[r - 1]) / q for r in RANKS}
    result.update(mAP=100.0 * ap_sum / q, mINP=100.0 * inp_sum / q)
    return result
