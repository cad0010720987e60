"""Pseudo labels that use the image-caption pairing beyond OPLM (docs/method.md, step 3b).

Two building blocks, each a pure function on labels and features (numpy in, numpy out):
  - `image_centred_labels`: one label per image; an image outlier is rescued through the caption
    clusters of its captions (OPLM's rule, at the level of images); captions then take their
    image's label.
  - `pair_features`: one L2-normalised vector per pair (a caption with its image) whose cosine is
    a weighted sum of the image-image, text-text and cross-modal similarities, so the existing
    k-reciprocal Jaccard + DBSCAN clusters pairs.
Labels are in {-1, 0..K-1}, -1 an outlier.
"""

from __future__ import annotations

import numpy as np

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
