"""Pseudo labels that use the image-caption pairing beyond OPLM (docs/method.md, step 3b).

Three building blocks, each a pure function on labels and features (numpy in, numpy out):
  - `image_centred_labels`: one label per image; an image outlier is rescued through the caption
    clusters of its captions (OPLM's rule, at the level of images); captions then take their
    image's label.
  - `pair_features`: one L2-normalised vector per pair (a caption with its image) whose cosine is
    a weighted sum of the image-image, text-text and cross-modal similarities, so the existing
    k-reciprocal Jaccard + DBSCAN clusters pairs.
  - `split_by_captions`, `merge_by_captions`: refine per-pair cluster labels by the caption
    clusters: split a cluster whose captions fall into several caption clusters, none holding
    most of them; merge clusters whose pairs sit mostly in one and the same caption cluster and whose
    images look alike.
Labels are in {-1, 0..K-1}, -1 an outlier; outputs are renumbered by `relabel_consecutive`.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from cpcl.clustering.dbscan import relabel_consecutive
from cpcl.clustering.knn import FeatureError


def image_centred_labels(image_labels: np.ndarray, text_labels: np.ndarray, image_index: np.ndarray,
                         image_feats: np.ndarray, theta: float) -> tuple[np.ndarray, int]:
    """Labels per image: a clustered image keeps its cluster; an image outlier with a clustered caption
    takes the label of the most cosine-similar clustered image that has a caption in one of its own
    captions' clusters, if that similarity is at least theta (ties: the lower image index).

    image_labels [N] of the images, text_labels [P] of the captions, image_index [P] the image of each
    caption, image_feats [N, D] L2-normalised. Returns (labels [N], images rescued).
    """
    image_labels = np.asarray(image_labels, dtype=np.int64)
    text_labels, image_index = np.asarray(text_labels, dtype=np.int64), np.asarray(image_index, dtype=np.int64)
    feats = np.asarray(image_feats, dtype=np.float32)
    out = image_labels.copy()
    captioned = text_labels >= 0
    outlier_pair = captioned & (image_labels[image_index] < 0)
    if not outlier_pair.any():
        return out, 0
    clustered_pair = captioned & (image_labels[image_index] >= 0)
    best_sim = np.full(len(out), -np.inf, dtype=np.float32)
    best_image = np.full(len(out), len(out), dtype=np.int64)  # past every index: no candidate yet
    for group in np.unique(text_labels[outlier_pair]):
        queries = np.unique(image_index[outlier_pair & (text_labels == group)])
        candidates = np.unique(image_index[clustered_pair & (text_labels == group)])  # ascending
        if candidates.size == 0:
            continue
        sims = feats[queries] @ feats[candidates].T
        pick = sims.argmax(axis=1)  # first maximum: the lowest index among ties
        sim, image = sims[np.arange(len(queries)), pick], candidates[pick]
        better = (sim > best_sim[queries]) | ((sim == best_sim[queries]) & (image < best_image[queries]))
        best_sim[queries[better]], best_image[queries[better]] = sim[better], image[better]
    rescued = (best_image < len(out)) & (best_sim >= theta)
    out[rescued] = image_labels[best_image[rescued]]
    return out, int(rescued.sum())


def pair_features(image_feats: np.ndarray, text_feats: np.ndarray, image_weight: float, text_weight: float,
                  cross_weight: float) -> np.ndarray:
    """One L2-normalised feature per pair: image_feats [P, D] (each pair's image), text_feats [P, D], both
    L2-normalised; returns [P, B * D] float32 (B <= 3: the blocks of nonzero weight).

    f_p = [a v_p, b t_p, c (v_p + t_p)] with a^2 = image_weight - cross_weight, b^2 = text_weight -
    cross_weight, c^2 = cross_weight, so that f_p . f_q = w_v v_p.v_q + w_t t_p.t_q + w_x (v_p.t_q + t_p.v_q)
    before normalisation; the cosine of the pair features is that fused similarity over the norms.
    Needs 0 <= cross_weight <= min(image_weight, text_weight) (the fused similarity is then a kernel).
    """
    if not 0 <= cross_weight <= min(image_weight, text_weight):
        raise ValueError(f"pair_features: need 0 <= cross_weight <= min(image_weight, text_weight), got "
                         f"{cross_weight}, {image_weight}, {text_weight}")
    v, t = np.asarray(image_feats, dtype=np.float32), np.asarray(text_feats, dtype=np.float32)
    coefficients = (np.sqrt(image_weight - cross_weight), np.sqrt(text_weight - cross_weight), np.sqrt(cross_weight))
    blocks = [c * x for c, x in zip(coefficients, (v, t, v + t)) if c > 0]
    fused = np.concatenate(blocks, axis=1) if blocks else np.zeros_like(v)
    norms = np.linalg.norm(fused, axis=1, keepdims=True)
    if not (norms > 0).all():
        raise FeatureError(f"pair features: {int((norms <= 0).sum())} pairs have zero fused norm; raise the image "
                           "or text weight")
    return (fused / norms).astype(np.float32)


def split_by_captions(labels: np.ndarray, text_labels: np.ndarray, image_index: np.ndarray, image_feats: np.ndarray,
                      agreement: float, min_pairs: int) -> tuple[np.ndarray, int]:
    """Split the clusters whose captions disagree (docs/method.md, step 3b).

    labels [P] per-pair cluster labels; text_labels [P] the caption clusters; image_index [P]; image_feats
    [N, D] L2-normalised. A cluster is split when its largest caption cluster holds less than `agreement`
    of its captioned pairs (text label >= 0) and at least two caption clusters hold `min_pairs` of its pairs
    or more: those caption clusters become its parts. Each of the cluster's images (its pairs in the cluster,
    together) goes to the part most of those pairs' captions are in (ties: the larger part, then the lower
    caption cluster); an image with no caption in a part goes to the part whose mean image feature (over
    the images voted into it) is most cosine-similar (ties: the lower caption cluster).
    Returns (labels [P], clusters split).
    """
    labels, text_labels = np.asarray(labels, dtype=np.int64), np.asarray(text_labels, dtype=np.int64)
    image_index, feats = np.asarray(image_index, dtype=np.int64), np.asarray(image_feats, dtype=np.float32)
    out, next_label, split = labels.copy(), int(labels.max(initial=-1)) + 1, 0
    for cluster in np.unique(labels[labels >= 0]):
        pairs = np.flatnonzero(labels == cluster)
        texts = text_labels[pairs]
        groups, counts = np.unique(texts[texts >= 0], return_counts=True)
        if counts.size < 2 or counts.max() >= agreement * counts.sum():
            continue
        parts, part_size = groups[counts >= min_pairs], counts[counts >= min_pairs]
        if parts.size < 2:
            continue
        images, image_of_pair = np.unique(image_index[pairs], return_inverse=True)
        votes = np.zeros((images.size, parts.size), dtype=np.int64)
        inside = np.isin(texts, parts)
        np.add.at(votes, (image_of_pair[inside], np.searchsorted(parts, texts[inside])), 1)
        # most votes, then the larger part, then the lower caption cluster (parts are ascending)
        score = votes * (part_size.sum() + 1) + part_size[None, :]
        choice = np.where(votes.max(axis=1) > 0, score.argmax(axis=1), -1)
        unvoted = choice < 0
        if unvoted.any():
            centres = np.zeros((parts.size, feats.shape[1]), dtype=np.float32)
            np.add.at(centres, choice[~unvoted], feats[images[~unvoted]])
            centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
            choice[unvoted] = (feats[images[unvoted]] @ centres.T).argmax(axis=1)
        out[pairs] = next_label + choice[image_of_pair]
        next_label += parts.size
        split += 1
    return relabel_consecutive(out), split


def merge_by_captions(labels: np.ndarray, text_labels: np.ndarray, pair_image_feats: np.ndarray, share: float,
                      min_similarity: float) -> tuple[np.ndarray, int]:
    """Merge the clusters whose pairs sit in one caption cluster and whose images look alike (docs/method.md,
    step 3b).

    labels [P] per-pair cluster labels, text_labels [P] the caption clusters, pair_image_feats [P, D] each
    pair's image feature, L2-normalised. A cluster's dominant caption cluster is the one holding at least
    `share` (> 0.5, so at most one) of all its pairs; two clusters with the same dominant caption cluster are
    linked when the cosine of their mean image features (over their pairs, normalised) is at least
    `min_similarity`; the linked components become one cluster each. Returns (labels [P], clusters merged
    into another).
    """
    if not 0.5 < share <= 1:
        raise ValueError(f"merge_by_captions: share must be in (0.5, 1], got {share}")
    labels, text_labels = np.asarray(labels, dtype=np.int64), np.asarray(text_labels, dtype=np.int64)
    clustered = labels >= 0
    if not clustered.any():
        return labels.copy(), 0
    sizes = np.bincount(labels[clustered])
    both = clustered & (text_labels >= 0)
    combos, counts = np.unique(np.stack([labels[both], text_labels[both]]), axis=1, return_counts=True)
    cluster, text = combos[:, counts >= share * sizes[combos[0]]]
    centres = np.zeros((sizes.size, pair_image_feats.shape[1]))
    np.add.at(centres, labels[clustered], np.asarray(pair_image_feats, dtype=np.float64)[clustered])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    links = [(a, b) for k in np.unique(text) for a, b in itertools.combinations(cluster[text == k], 2)
             if centres[a] @ centres[b] >= min_similarity]
    graph = sp.coo_matrix((np.ones(len(links)), ([a for a, _ in links], [b for _, b in links])),
                          shape=(sizes.size, sizes.size))
    _, component = connected_components(graph, directed=False)
    lowest = np.full(sizes.size, sizes.size)
    np.minimum.at(lowest, component, np.arange(sizes.size))  # each component's lowest cluster
    target = lowest[component]
    out = np.where(clustered, target[np.maximum(labels, 0)], -1)
    return relabel_consecutive(out), int((target != np.arange(sizes.size)).sum())
