"""PMM: reset from cluster means; the vectorised update equals the per-sample loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cpcl.memory import PrototypeMemory, cluster_means


def test_reset_is_the_normalised_cluster_mean():
    feats = F.normalize(torch.randn(10, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.tensor([0, 1, 0, -1, 2, 2, 1, -1, 0, 2])
    memory = PrototypeMemory(4, momentum=0.2)
    memory.reset(feats, labels)
    assert memory.num_clusters == 3
    for k in range(3):
        mean = feats[labels == k].mean(0)
        assert torch.allclose(memory.prototypes[k], mean / mean.norm(), atol=1e-6)
    assert torch.allclose(cluster_means(feats, labels, 3), memory.prototypes)


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_update_equals_per_sample_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(5, 8, generator=gen), dim=1)
    feats = F.normalize(torch.randn(16, 8, generator=gen), dim=1)
    labels = torch.randint(-1, 5, (16,), generator=gen)  # repeats and outliers
    labels[:4] = 3  # one label many times in a row
    mu = 0.2
    expected = protos.clone()
    for f, y in zip(feats, labels.tolist()):
        if y < 0:
            continue
        c = mu * expected[y] + (1 - mu) * f
        expected[y] = c / c.norm()
    memory = PrototypeMemory(8, momentum=mu)
    memory.prototypes = protos.clone()
    memory.update(feats, labels)
    assert torch.allclose(memory.prototypes, expected, atol=1e-6)


def test_update_without_labelled_samples_changes_nothing_and_takes_no_grad():
    memory = PrototypeMemory(3, momentum=0.5)
    memory.prototypes = torch.eye(3)
    feats = torch.randn(2, 3, requires_grad=True)
    memory.update(feats, torch.tensor([-1, -1]))
    assert torch.equal(memory.prototypes, torch.eye(3))
    memory.update(feats, torch.tensor([0, 2]))
    assert not memory.prototypes.requires_grad
    assert list(dict(memory.named_parameters())) == []  # a buffer, not a parameter
