"""Losses on hand-made cases and against literal formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cpcl.losses import cluster_nce, icpm_loss, itc_loss, pcm_losses, positive_mask


def unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


def test_cluster_nce_formula_and_outliers_skipped():
    feats = unit([1, 0], [0, 1], [1, 1])
    memory = unit([1, 0], [0, 1])
    labels = torch.tensor([0, 1, -1])
    tau = 0.5
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1)) * 2) / 2  # both labelled rows alike
    assert float(cluster_nce(feats, memory, labels, tau)) == pytest.approx(expected)
    assert float(cluster_nce(feats, memory, torch.tensor([-1, -1, -1]), tau)) == 0.0


def test_pcm_modes_pick_the_right_memories():
    v = t = unit([1, 0], [0, 1])
    image_memory = unit([1, 0], [0, 1])
    text_memory = unit([0, 1], [1, 0])  # text cluster k points where image cluster 1 - k does
    yv, yt = torch.tensor([0, 1]), torch.tensor([1, 0])  # so each caption's text label is 1 - k
    both = pcm_losses(v, t, yv, yt, image_memory, text_memory, 0.1, "both")
    assert set(both) == {"pcm_image_loss", "pcm_text_loss", "pcm_image_to_text_loss", "pcm_text_to_image_loss"}
    assert set(pcm_losses(v, t, yv, yt, image_memory, text_memory, 0.1, "single")) == {"pcm_image_loss", "pcm_text_loss"}
    assert set(pcm_losses(v, t, yv, yt, image_memory, text_memory, 0.1, "cross")) == {
        "pcm_image_to_text_loss", "pcm_text_to_image_loss"}
    # every feature sits on its target prototype in each of the four terms
    assert all(float(value) < 1e-4 for value in both.values())
    # image -> text uses the text memory with the text labels: give it the image memory instead
    wrong = pcm_losses(v, t, yv, yt, image_memory, image_memory, 0.1, "cross")
    assert float(wrong["pcm_image_to_text_loss"]) > 10.0
    assert float(wrong["pcm_text_to_image_loss"]) < 1e-4


def test_positive_mask_rules():
    yv = torch.tensor([0, 0, 1, -1])
    yt = torch.tensor([5, 6, 5, -1])
    eye = torch.eye(4, dtype=torch.bool)
    image = eye.clone()
    image[0, 1] = image[1, 0] = True
    text = eye.clone()
    text[0, 2] = text[2, 0] = True
    assert torch.equal(positive_mask(yv, yt, "image"), image)
    assert torch.equal(positive_mask(yv, yt, "text"), text)
    assert torch.equal(positive_mask(yv, yt, "either"), image | text)
    assert torch.equal(positive_mask(yv, yt, "both"), eye)
    with pytest.raises(ValueError, match="valid: image, text, either, both"):
        positive_mask(yv, yt, "all")


def test_icpm_matches_the_kl_formula():
    gen = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(5, 8, generator=gen, dtype=torch.float64), dim=1)
    t = F.normalize(torch.randn(5, 8, generator=gen, dtype=torch.float64), dim=1)
    mask = positive_mask(torch.tensor([0, 0, 1, 1, -1]), torch.tensor([0, 1, 2, 3, 4]), "image")
    scale, eps = 50.0, 1e-8
    total = 0.0
    for logits, m in ((scale * v @ t.T, mask), (scale * t @ v.T, mask.T)):
        for i in range(5):
            p = torch.softmax(logits[i], 0)
            q = m[i].double() / m[i].sum()
            total += float((p * (torch.log(p) - torch.log(q + eps))).sum()) / 5
    assert float(icpm_loss(v, t, mask, scale, eps)["icpm_loss"]) == pytest.approx(total, rel=1e-9)


def test_icpm_is_lowest_when_matching_the_positives():
    v = unit([1, 0], [1, 0], [0, 1])
    mask = positive_mask(torch.tensor([0, 0, 1]), torch.tensor([-1, -1, -1]), "image")
    good = icpm_loss(v, v, mask, 50.0, 1e-8)["icpm_loss"]
    bad = icpm_loss(v, unit([0, 1], [0, 1], [1, 0]), mask, 50.0, 1e-8)["icpm_loss"]
    assert float(good) < 1e-6 < 1.0 < float(bad)


def test_itc_is_clip_loss_and_treats_same_image_pairs_as_positives():
    gen = torch.Generator().manual_seed(1)
    v = F.normalize(torch.randn(4, 6, generator=gen), dim=1)
    t = F.normalize(torch.randn(4, 6, generator=gen), dim=1)
    logits = 10.0 * v @ t.T
    clip = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))) / 2
    assert float(itc_loss(v, t, 10.0)["itc_loss"]) == pytest.approx(float(clip), rel=1e-6)
    assert float(itc_loss(v, t, 10.0, torch.arange(4))["itc_loss"]) == pytest.approx(float(clip), rel=1e-6)
    same = torch.tensor([0, 0, 1, 2])  # the first two pairs show one image
    targets = torch.tensor([[.5, .5, 0, 0], [.5, .5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    expected = ((-targets * F.log_softmax(logits, 1)).sum(1).mean()
                + (-targets * F.log_softmax(logits.T, 1)).sum(1).mean()) / 2
    assert float(itc_loss(v, t, 10.0, same)["itc_loss"]) == pytest.approx(float(expected), rel=1e-6)


def test_losses_backpropagate_into_features_only():
    v = torch.randn(6, 4, requires_grad=True)
    t = torch.randn(6, 4, requires_grad=True)
    memory = F.normalize(torch.randn(3, 4), dim=1)
    labels = torch.tensor([0, 1, 2, -1, 0, 1])
    fv, ft = F.normalize(v, dim=1), F.normalize(t, dim=1)
    loss = sum(pcm_losses(fv, ft, labels, labels, memory, memory, 0.05).values())
    loss = loss + icpm_loss(fv, ft, positive_mask(labels, labels, "image"), 50.0, 1e-8)["icpm_loss"]
    loss.backward()
    assert v.grad is not None and t.grad is not None and not memory.requires_grad
