"""Distributed pieces: launcher detection, rank devices, sharded extraction and its gather order,
the distributed batch sampler, and the collectives in a real 2-process gloo group."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cpcl.engine.distributed import extract_sharded
from cpcl.engine.samplers import DistributedBatchSampler, PKBatchSampler, RandomBatchSampler, epoch_sampler
from cpcl.utils.distributed import (World, broadcast_object, detect_world, gather_objects, gather_with_grad,
                                    merge_shards, rank_device, rank_seed, shard_range)
from cpcl.utils.errors import ConfigError


def test_detect_world_reads_the_launcher_variables():
    assert detect_world({}) == World()
    assert detect_world({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    with pytest.raises(ConfigError, match="inconsistent"):
        detect_world({"RANK": "4", "WORLD_SIZE": "4", "LOCAL_RANK": "0"})
    with pytest.raises(ConfigError, match="must be integers"):
        detect_world({"RANK": "x", "WORLD_SIZE": "2"})


def test_rank_device():
    world = World(1, 2, 1)
    assert rank_device("cpu", world) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert rank_device("auto", world) == torch.device("cpu")
    with pytest.raises(ConfigError, match="pins every rank"):
        rank_device("cuda:0", world)
    assert rank_device("cpu", World()) == torch.device("cpu")


def test_rank_seed_keeps_rank_zero_and_separates_the_others():
    assert rank_seed(7, 0) == 7
    seeds = {rank_seed(7, rank) for rank in range(8)}
    assert len(seeds) == 8 and rank_seed(7, 1) == rank_seed(7, 1) != rank_seed(8, 1)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("total", [0, 1, 7, 16, 37])
def test_shards_are_contiguous_whole_batches_covering_everything(total, size):
    batch = 4
    ranges = [shard_range(total, batch, rank, size) for rank in range(size)]
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    for (_, stop), (start, _) in itertools.pairwise(ranges):
        assert stop == start
    assert all(start % batch == 0 or start == total for start, _ in ranges)


@pytest.mark.parametrize("size", [2, 3])
def test_sharded_extraction_runs_the_single_process_batches_in_dataset_order(size):
    total, batch = 23, 4
    features = torch.randn(total, 5, generator=torch.Generator().manual_seed(0))
    ran: list[tuple[int, int]] = []

    def extract(start: int, stop: int) -> torch.Tensor:  # as extract_text_features: batches from `start`
        ran.extend((a, min(a + batch, stop)) for a in range(start, stop, batch))
        return features[start:stop]

    ranges = [shard_range(total, batch, rank, size) for rank in range(size)]
    rows = max(stop - start for start, stop in ranges)
    blocks = [torch.cat([extract(start, stop), torch.full((rows - stop + start, 5), float("nan"))])
              for start, stop in ranges]  # what all_gather hands each rank: padded blocks
    assert torch.equal(merge_shards(blocks, [stop - start for start, stop in ranges]), features)
    assert sorted(ran) == [(a, min(a + batch, total)) for a in range(0, total, batch)]


@pytest.mark.parametrize("size", [2, 3, 4])
def test_distributed_sampler_splits_every_global_batch(size):
    labels = torch.arange(40) // 3  # 14 pseudo identities
    for make in (lambda seed: RandomBatchSampler(50, 12, seed), lambda seed: PKBatchSampler(labels, 12, 3, seed)):
        global_batches = list(make(5))
        per_rank = [list(DistributedBatchSampler(make(5), World(rank, size))) for rank in range(size)]
        assert all(len(batches) == len(global_batches) for batches in per_rank)
        for step, batch in enumerate(global_batches):
            slices = [batches[step] for batches in per_rank]
            assert all(len(s) == 12 // size for s in slices)
            assert list(itertools.chain(*slices)) == batch  # disjoint, covering, in rank order
        assert list(DistributedBatchSampler(make(6), World(0, size))) != per_rank[0]  # per-epoch seed


def test_epoch_sampler_is_the_plain_sampler_for_one_process():
    assert isinstance(epoch_sampler(20, 4, None, 2, 0, World()), RandomBatchSampler)
    assert isinstance(epoch_sampler(20, 4, torch.arange(20) // 2, 2, 0, World(1, 2)), DistributedBatchSampler)


def _gloo_worker(rank: int, size: int, store: str, out: str) -> None:
    """One rank of the collectives test: results of every check written as JSON by each rank."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    world, device = World(rank, size, rank), torch.device("cpu")
    try:
        gathered = {}
        for total in (0, 3, 17, 40):  # shards of 4-row batches; some ranks get none
            rows = extract_sharded(lambda start, stop: torch.arange(start, stop, dtype=torch.float32)[:, None]
                                   .repeat(1, 2), total, 4, world, device)
            gathered[total] = rows[:, 0].tolist()
        local = torch.full((3, 2), float(rank + 1), requires_grad=True)
        weights = torch.arange(3 * size * 2, dtype=torch.float32).view(3 * size, 2)
        (gather_with_grad(local, world) * weights).sum().backward()  # the same loss on every rank
        result = {"gathered": gathered, "grad": local.grad.tolist(),
                  "expected_grad": (weights[3 * rank:3 * rank + 3] * size).tolist(),
                  "broadcast": broadcast_object({"from": rank}, world), "objects": gather_objects(rank * 10, world)}
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_collectives_in_a_two_process_gloo_group(tmp_path):
    mp.spawn(_gloo_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["gathered"] == {str(n): [float(i) for i in range(n)] for n in (0, 3, 17, 40)}
        assert result["grad"] == result["expected_grad"]  # this rank's rows, times the world size
        assert result["broadcast"] == {"from": 0} and result["objects"] == [0, 10]


def test_dry_run_prints_the_distributed_settings(tmp_path, monkeypatch, capsys):
    from cpcl.cli import main

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    argv = ["train", "--out", str(tmp_path / "run"), "--dry-run", "device=cpu", "optim.batch_size=64", "optim.lr=2e-5"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["distributed"] | {"lr_scaling": None} == {
        "world_size": 2, "rank": 1, "local_rank": 1, "backend": "gloo", "device": "cpu",
        "global_batch": 64, "batch_per_rank": 32, "lr": 2e-5, "lr_scaling": None}
    assert printed["config"]["optim"]["batch_size"] == 64 and not (tmp_path / "run").exists()
    assert main([*argv, "optim.batch_size=63"]) == 2
    assert "does not divide by the 2 processes" in capsys.readouterr().err
