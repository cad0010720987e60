"""OPLM on constructed examples, every mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cpcl.clustering.oplm import mine_outliers


def unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows), dim=1)


def example():
    """Five pairs.

    image labels: pairs 0, 1 in image cluster 0; pair 2 in 1; pairs 3, 4 outliers.
    text labels:  pairs 0, 3 in text cluster 0; pairs 1, 2 in 1; pair 4 an outlier.
    Pair 3 (image outlier, caption in text cluster 0): its only candidate is pair 0, similar.
    Pair 4 (both outliers): nothing to mine from in one stage.
    """
    image_labels = torch.tensor([0, 0, 1, -1, -1])
    text_labels = torch.tensor([0, 1, 1, 0, -1])
    image_feats = unit([1, 0], [0.9, 0.1], [0, 1], [1, 0.05], [1, 0.1])
    text_feats = unit([1, 0], [0, 1], [0.1, 1], [1, 0], [1, 0.1])
    return image_labels, text_labels, image_feats, text_feats


def test_off_changes_nothing():
    yv, yt, fv, ft = example()
    result = mine_outliers(yv, yt, fv, ft, "off", 0.5)
    assert torch.equal(result.image_labels, yv) and torch.equal(result.text_labels, yt)
    assert result.rescued_images == result.rescued_texts == 0


def test_one_stage_mines_both_from_the_clustering_labels():
    yv, yt, fv, ft = example()
    result = mine_outliers(yv, yt, fv, ft, "one_stage", 0.5)
    assert result.image_labels.tolist() == [0, 0, 1, 0, -1]  # pair 3 borrows pair 0's label
    assert result.text_labels.tolist() == [0, 1, 1, 0, -1]
    assert (result.rescued_images, result.rescued_texts) == (1, 0)
    assert yv.tolist() == [0, 0, 1, -1, -1]  # inputs untouched


def test_most_similar_candidate_wins():
    yv = torch.tensor([0, 1, -1])
    yt = torch.tensor([0, 0, 0])  # both clustered images share text cluster 0 with pair 2
    fv = unit([1, 0], [0, 1], [0.2, 1])  # pair 2's image is closest to pair 1's
    result = mine_outliers(yv, yt, fv, fv, "one_stage", 0.5)
    assert result.image_labels.tolist() == [0, 1, 1]


def test_text_outlier_mined_within_its_image_cluster():
    yv = torch.tensor([3, 3, 3, 4])
    yt = torch.tensor([7, 8, -1, 9])
    ft = unit([1, 0], [0, 1], [0.1, 1], [0.1, 1])  # pair 3 is closer but in another image cluster
    result = mine_outliers(yv, yt, ft, ft, "one_stage", 0.5)
    assert result.text_labels.tolist() == [7, 8, 8, 9] and result.rescued_texts == 1


def test_two_stage_mines_texts_with_the_updated_image_labels():
    # pair 2's caption is an outlier in image cluster 0; its only similar candidate, pair 1,
    # joins image cluster 0 in stage one (its caption shares text cluster 5 with pair 0)
    yv = torch.tensor([0, -1, 0])
    yt = torch.tensor([5, 5, -1])
    fv = unit([1, 0], [1, 0.1], [1, 0.2])
    ft = unit([0, 1], [1, 0], [1, 0.05])  # pair 2's text resembles pair 1's, not pair 0's
    one = mine_outliers(yv, yt, fv, ft, "one_stage", 0.9)
    two = mine_outliers(yv, yt, fv, ft, "two_stage", 0.9)
    assert one.image_labels.tolist() == [0, 0, 0] == two.image_labels.tolist()
    assert one.text_labels.tolist() == [5, 5, -1]  # only pair 0 was a candidate: too far
    assert two.text_labels.tolist() == [5, 5, 5]  # pair 1 joined image cluster 0 first
    assert (two.rescued_images, two.rescued_texts) == (1, 1)


def test_theta_gates_rescue():
    yv, yt, fv, ft = example()
    result = mine_outliers(yv, yt, fv, ft, "two_stage", 1.01)
    assert result.rescued_images == result.rescued_texts == 0
