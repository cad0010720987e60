"""Text-to-image retrieval metrics: Rank-k, mAP, mINP (docs/method.md, Evaluation).

Every query is ranked against the whole gallery by similarity, descending; ties are broken by
gallery order (the lower index ranks first), as a stable sort would. A gallery item is a hit
when its person id equals the query's. Instead of sorting the gallery per query, the rank of
each hit is counted directly (how many items score higher, plus equal-scoring items before it),
in query chunks, so memory stays bounded at any gallery size.
"""

from __future__ import annotations

import torch

from cpcl.clustering.rerank import RerankConfig, prepare_gallery, rerank_distances
from cpcl.utils.errors import CpclError

RANKS = (1, 5, 10)  # Rank-k reported
CHUNK_SIZE = 128  # queries per chunk: 128 was faster than 256 and 1024 at ICFG size (benchmarks/bench_evaluation.py)


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


def _hit_ranks_direct(similarity: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Unsorted 1-based hit ranks by direct comparison with every gallery item, O(B * P * G)."""
    index = positives.clamp(min=0)
    hit_scores = torch.gather(similarity, 1, index)[:, :, None]  # [B, P, 1]
    higher = (similarity[:, None, :] > hit_scores).sum(-1)
    earlier = torch.arange(similarity.shape[1])[None, None, :] < index[:, :, None]
    tied_earlier = ((similarity[:, None, :] == hit_scores) & earlier).sum(-1)
    return higher + tied_earlier + 1


def hit_ranks(similarity: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """1-based ranks of the hits: similarity [B, G]; positives [B, P] gallery indices (-1 = pad).

    Returns [B, P] ranks sorted ascending per row, padding as G + 1. One pass over the gallery:
    each item is bucketed among the row's sorted hit scores (O(G log P)), and the bucket
    histogram gives, for every hit, how many items score strictly higher. Rows where some item
    ties a hit's score (duplicates) are recounted directly to apply the gallery-order rule.
    """
    batch, gallery_size = similarity.shape
    width = positives.shape[1]
    valid = positives >= 0
    hit_scores = torch.gather(similarity, 1, positives.clamp(min=0))
    ascending = torch.sort(torch.where(valid, hit_scores, torch.inf), dim=1).values  # pads last
    below = torch.searchsorted(ascending, similarity)  # [B, G]: hits scoring strictly lower
    histogram = torch.zeros(batch, width + 1, dtype=torch.long).scatter_add_(
        1, below, torch.ones_like(below))
    at_least = histogram.flip(1).cumsum(1).flip(1)  # [B, P + 1]: items with `below` >= c
    hits_not_above = torch.searchsorted(ascending, ascending, right=True)  # [B, P]
    ranks = torch.gather(at_least, 1, hits_not_above) + 1  # items strictly higher, plus one
    # the lowest hit score >= an item's score is ascending[below]: equal means a tie
    next_hit = torch.gather(torch.nn.functional.pad(ascending, (0, 1), value=torch.inf), 1, below)
    ties = (next_hit == similarity).sum(1) > valid.sum(1)  # an item ties a hit other than itself
    pair_ties = (ascending[:, 1:] == ascending[:, :-1]) & torch.isfinite(ascending[:, 1:])  # pads are inf
    ties |= pair_ties.any(1)  # two hits tie each other
    if bool(ties.any()):
        ranks[ties] = _hit_ranks_direct(similarity[ties], positives[ties])
    ranks = torch.where(valid, ranks, gallery_size + 1)  # valid hits come first in both orders
    return torch.sort(ranks, dim=1).values


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
    gallery_ids: [G] person ids. Memory is O(chunk_size * P * G) booleans.
    """
    if query_feats.shape[1] != gallery_feats.shape[1]:
        raise CpclError(f"query and gallery features differ in width: {query_feats.shape[1]} vs {gallery_feats.shape[1]}")
    query_ids, gallery_ids = query_ids.long().cpu(), gallery_ids.long().cpu()
    reranked = prepare_gallery(gallery_feats.float().cpu(), rerank) if rerank is not None else None
    positives, num_pos = _positives_table(gallery_ids, query_ids)
    top = max(RANKS)
    hits_at = torch.zeros(top, dtype=torch.float64)
    ap_sum = inp_sum = 0.0
    for start in range(0, len(query_ids), chunk_size):
        stop = start + chunk_size
        if reranked is None:
            sim = (query_feats[start:stop].float() @ gallery_feats.float().T).cpu()
        else:
            sim = -torch.from_numpy(rerank_distances(query_feats[start:stop].float().cpu().numpy(), reranked))
        pos = positives[start:stop]
        ranks = hit_ranks(sim, pos).double()  # [B, P], ascending, padded past the end
        n = num_pos[start:stop].double()
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
