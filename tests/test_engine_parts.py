"""Engine pieces: samplers, the lr schedule, pseudo labels and the oracle diagnostics."""

from __future__ import annotations

import dataclasses
import itertools
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from cpcl.engine.config import CpclSection, OptimSection, TrainConfig
from cpcl.engine.loop import lr_factor, make_scaler, optimizer_step
from cpcl.engine.pseudo_labels.base import ClusterSettings, PairFeatures
from cpcl.engine.pseudo_labels.oracle import oracle_cluster_quality, oracle_pair_labels
from cpcl.engine.pseudo_labels.registry import cluster_pairs
from cpcl.engine.samplers import DistributedBatchSampler, PKBatchSampler, PositionedBatches, RandomBatchSampler
from cpcl.clustering import ClusterConfig
from cpcl.data.datasets import PairDataset
from cpcl.data.records import SplitData
from cpcl.data.transforms import ImageTransformConfig, train_transform
from cpcl.utils.config import load_config
from cpcl.utils.distributed import World
from cpcl.utils.errors import ConfigError
from cpcl.utils.runtime import resolve_precision


def test_random_sampler_is_a_seeded_permutation():
    batches = list(RandomBatchSampler(10, 3, seed=4))
    assert len(batches) == 3 and all(len(b) == 3 for b in batches)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 9
    assert batches == list(RandomBatchSampler(10, 3, seed=4))
    assert batches != list(RandomBatchSampler(10, 3, seed=5))


def test_pk_sampler_groups_identities():
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, -1, 2, 2, 2, 2, 3, -1])
    sampler = PKBatchSampler(labels, batch_size=4, instances=2, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2  # 4 identities, 2 per batch
    seen = set()
    for batch in batches:
        assert len(batch) == 4
        batch_labels = labels[batch].tolist()
        assert -1 not in batch_labels
        assert sorted(set(batch_labels)) == sorted(set(batch_labels[0::2]))  # K=2 consecutive per id
        assert all(batch_labels[i] == batch_labels[i + 1] for i in (0, 2))
        seen |= set(batch_labels)
    assert seen == {0, 1, 2, 3}
    assert batches == list(PKBatchSampler(labels, 4, 2, seed=0))


@pytest.mark.parametrize("size", [1, 2])
def test_positions_number_the_global_batches_whatever_the_world_size(size):
    batches = RandomBatchSampler(30, 6, seed=2)
    one = [item for batch in PositionedBatches(batches, 6, World()) for item in batch]
    assert one == list(enumerate(pair for batch in batches for pair in batch))
    ranks = [list(PositionedBatches(DistributedBatchSampler(batches, World(rank, size)) if size > 1 else batches,
                                    6, World(rank, size))) for rank in range(size)]
    assert sorted(itertools.chain(*itertools.chain(*ranks))) == sorted(one)  # each pair at its global position


def test_a_pairs_augmentation_depends_on_its_position_only_not_on_the_loader_workers(tmp_path: Path):
    rng = np.random.default_rng(0)
    split = SplitData()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        split.add(tmp_path / f"{i}.png", i, [f"a{i}", f"b{i}"])
    transform = partial(train_transform, size=(32, 16), cfg=ImageTransformConfig(pad=4))
    dataset = PairDataset(split, torch.zeros(8, 5, dtype=torch.long), transform, seed=11)
    batches = PositionedBatches(RandomBatchSampler(8, 4, seed=3), 4, World())

    def images_loaded(workers: int) -> torch.Tensor:
        loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers)
        return torch.cat([batch["image"] for batch in loader])

    serial = images_loaded(0)
    assert torch.equal(serial, images_loaded(2))
    assert torch.equal(dataset[(5, 1)]["image"], dataset[(5, 1)]["image"])
    assert not torch.equal(dataset[(5, 1)]["image"], dataset[(6, 1)]["image"])  # another draw, another crop


def test_lr_schedule_warmup_then_cosine():
    cfg = OptimSection(epochs=10, warmup_epochs=2, warmup_start_factor=0.1, min_lr_factor=0.0)
    assert lr_factor(0.0, cfg) == pytest.approx(0.1)
    assert lr_factor(1.0, cfg) == pytest.approx(0.55)
    assert lr_factor(2.0, cfg) == pytest.approx(1.0)
    assert lr_factor(6.0, cfg) == pytest.approx(0.5)
    assert lr_factor(10.0, cfg) == pytest.approx(0.0, abs=1e-12)
    no_warmup = dataclasses.replace(cfg, warmup_epochs=0)
    assert lr_factor(0.0, no_warmup) == pytest.approx(1.0)


def test_train_config_validation():
    with pytest.raises(ConfigError, match="must divide by cpcl.pk_instances"):
        load_config(TrainConfig, None, ["cpcl.sampler=pk", "optim.batch_size=10"])
    with pytest.raises(ConfigError, match="cpcl.oplm' must be one of off, one_stage, two_stage"):
        load_config(TrainConfig, None, ["cpcl.oplm=three_stage"])


def test_shipped_configs_resolve():
    from cpcl.configs import resolve_config_path, shipped_configs

    for name in shipped_configs():
        cfg = load_config(TrainConfig, resolve_config_path(name))
        assert cfg.optim.epochs >= 1
    paper = load_config(TrainConfig, resolve_config_path("cuhk_pedes"))
    assert paper.model.image_size == (384, 128) and paper.optim.batch_size == 64
    assert paper.cluster.config() == ClusterConfig(k1=30, k2=6, eps=0.6, min_samples=4)
    with pytest.raises(ConfigError, match="neither a file nor a shipped config"):
        resolve_config_path("nope")


def test_cluster_pairs_copies_image_labels_to_pairs():
    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(6, 32, generator=gen), dim=1)
    image_person = torch.arange(6).repeat_interleave(6)  # 36 images, 6 per person
    image_feats = F.normalize(centres[image_person] + 0.05 * torch.randn(36, 32, generator=gen), dim=1)
    image_index = torch.arange(36).repeat_interleave(2)  # two captions per image
    text_feats = F.normalize(centres[image_person[image_index]] + 0.05 * torch.randn(72, 32, generator=gen), dim=1)
    settings = ClusterSettings.fixed(ClusterConfig(k1=8, k2=3), (1.0, 1.0, 0.5))
    labels = cluster_pairs(PairFeatures(image_feats, text_feats, image_index), settings, "cpcl", CpclSection())
    assert labels.image.shape == labels.text.shape == (72,)
    assert torch.equal(labels.image[0::2], labels.image[1::2])  # both captions' pairs share the image label
    assert labels.stats["image_clusters"] == 6 and labels.stats["text_clusters"] == 6
    truth = image_person[image_index]
    quality = oracle_cluster_quality(labels.image, truth, "image")
    assert quality["oracle_image_nmi"] == pytest.approx(1.0) and quality["oracle_image_purity"] == 1.0


def test_oracle_labels_and_quality_on_a_bad_clustering():
    truth = torch.tensor([10, 10, 20, 20, 30, 30])
    oracle = oracle_pair_labels(truth)
    assert oracle.image.tolist() == [0, 0, 1, 1, 2, 2] and torch.equal(oracle.image, oracle.text)
    merged = torch.tensor([0, 0, 0, 0, -1, -1])  # two persons merged, one left as outliers
    quality = oracle_cluster_quality(merged, truth, "text")
    assert quality["oracle_text_purity"] == 0.5
    assert 0.0 < quality["oracle_text_nmi"] < 1.0 and quality["oracle_text_ari"] < 1.0


# ---------------------------------------------------------------- fp16 loss scaling


def _linear_step(scaler: torch.amp.GradScaler, loss_factor: float, grad_clip: float = 0.0):
    """One optimizer_step of a seeded 4 -> 2 linear layer; returns (stepped, weight after)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    loss = layer(torch.ones(3, 4)).sum() * loss_factor
    stepped = optimizer_step(loss, optimizer, scaler, layer.parameters(), grad_clip)
    return stepped, layer.weight.detach().clone()


def test_grad_scaler_skips_an_inf_step_and_lowers_the_scale():
    torch.manual_seed(0)
    before = torch.nn.Linear(4, 2).weight.detach().clone()
    scaler = make_scaler(torch.float16, torch.device("cpu"))
    assert scaler.is_enabled() and scaler.get_scale() == 65536.0
    stepped, weight = _linear_step(scaler, float("inf"))
    assert not stepped and torch.equal(weight, before)
    assert scaler.get_scale() == 32768.0
    stepped, weight = _linear_step(scaler, 1.0, grad_clip=1.0)  # finite: unscaled, clipped, stepped
    assert stepped and not torch.equal(weight, before)
    assert scaler.get_scale() == 32768.0  # grows only after growth_interval clean steps
    state = scaler.state_dict()
    resumed = make_scaler(torch.float16, torch.device("cpu"))
    resumed.load_state_dict(state)
    assert resumed.get_scale() == 32768.0 and resumed.state_dict() == state


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_disabled_scaler_steps_exactly_as_plain_backward(dtype):
    scaler = make_scaler(dtype, torch.device("cpu"))
    assert not scaler.is_enabled() and scaler.state_dict() == {}
    for clip in (0.0, 0.5):
        stepped, weight = _linear_step(scaler, 3.0, grad_clip=clip)
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 2)
        optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
        (layer(torch.ones(3, 4)).sum() * 3.0).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(layer.parameters(), clip)
        optimizer.step()
        assert stepped and torch.equal(weight, layer.weight)


def test_fp16_precision_resolves_to_float16():
    assert resolve_precision("fp16", torch.device("cpu")) == torch.float16
    assert TrainConfig(precision="fp16").precision == "fp16"
    with pytest.raises(ConfigError, match="precision"):
        load_config(TrainConfig, None, ["precision=fp8"])


@pytest.mark.parametrize("enabled", [False, True])
def test_build_model_applies_grad_checkpointing(enabled):
    from cpcl.engine.config import ModelSection
    from cpcl.engine.train import build_model

    cfg = TrainConfig(model=ModelSection(init="preset:tiny", image_size=(32, 16), context_length=16,
                                         grad_checkpointing=enabled))
    model = build_model(cfg, torch.device("cpu"))
    assert model.visual.transformer.grad_checkpointing is enabled
    assert model.transformer.grad_checkpointing is enabled
