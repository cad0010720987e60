"""Choosing the clustering on val: pairwise scores against a brute-force pair loop, the grid
finds the setting that recovers planted groups, and the engine logs what it chose."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from cpcl.clustering import ClusterConfig, cluster_features
from cpcl.clustering.select import SelectionGrid, pairwise_scores, select_clustering
from cpcl.utils.errors import ConfigError
from train_support import write_config, write_tiny_cuhk


def brute_force_scores(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    together = predicted = actual = 0
    for i, j in itertools.combinations(range(len(labels)), 2):
        same_cluster = labels[i] >= 0 and labels[i] == labels[j]
        same_truth = truth[i] == truth[j]
        together += same_cluster and same_truth
        predicted += same_cluster
        actual += same_truth
    return together / predicted if predicted else 0.0, together / actual if actual else 0.0


@pytest.mark.parametrize("seed", range(5))
def test_pairwise_scores_match_a_pair_loop(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 8, 60)
    labels = np.where(rng.random(60) < 0.2, -1, (truth + (rng.random(60) < 0.3)) % 9)
    scores = pairwise_scores(labels, truth, beta=0.5)
    precision, recall = brute_force_scores(labels, truth)
    assert scores["precision"] == pytest.approx(precision) and scores["recall"] == pytest.approx(recall)
    expected_f = 1.25 * precision * recall / (0.25 * precision + recall)
    assert scores["f"] == pytest.approx(expected_f)


def test_perfect_and_empty_partitions():
    truth = np.array([0, 0, 1, 1, 2])
    assert pairwise_scores(truth, truth)["f"] == 1.0
    assert pairwise_scores(np.full(5, -1), truth) == {"precision": 0.0, "recall": 0.0, "f": 0.0}


def planted(groups: int, per_group: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised features around `groups` random centres, and the group of each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, 32))
    truth = np.repeat(np.arange(groups), per_group)
    feats = centres[truth] + spread * rng.normal(size=(len(truth), 32))
    return (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32), truth


def test_selection_recovers_planted_groups_where_the_papers_setting_fails():
    feats, truth = planted(groups=40, per_group=3, spread=0.3)  # 3 points a person, as CUHK-PEDES
    base = ClusterConfig(k1=30, k2=6, eps=0.6, min_samples=4)  # the paper's: a core needs 4 points
    grid = SelectionGrid(k1=(6, 10, 30), k2=(2, 6), eps=(0.3, 0.6), min_samples=(2, 4))
    selection = select_clustering(feats, truth, base, grid)
    assert selection.config.min_samples == 2 and selection.config.k2 == 2
    assert selection.scores["f"] > 0.95
    assert len(selection.tried) == 3 * 2 * 2 * 2
    papers = [scores for config, scores in selection.tried if config == base][0]
    assert papers["f"] < 0.6


def test_each_setting_scores_what_cluster_features_gives_it():
    feats, truth = planted(groups=12, per_group=4, spread=0.5, seed=1)
    grid = SelectionGrid(k1=(5, 9), k2=(1, 3), eps=(0.4, 0.6), min_samples=(2, 3))
    selection = select_clustering(feats, truth, ClusterConfig(k1=9, k2=3), grid)
    for config, scores in selection.tried:
        labels = cluster_features(feats, config).labels
        assert scores["f"] == pytest.approx(pairwise_scores(labels, truth)["f"]), config


def test_grid_rejects_what_it_cannot_try():
    with pytest.raises(ConfigError, match="at least one value"):
        SelectionGrid(eps=())
    for bad, key in (({"eps": (0.5, 1.0)}, "eps"), ({"beta": float("nan")}, "beta"), ({"k2": (0,)}, "k2")):
        with pytest.raises(ConfigError, match=f"config field 'cluster_select.grid.{key}' must be"):
            SelectionGrid(**bad)
    with pytest.raises(ConfigError, match="above every k1"):
        SelectionGrid(k1=(3,), k2=(4,)).settings(ClusterConfig(k1=10, k2=6))


def test_training_chooses_on_val_and_logs_it(tmp_path):
    from cpcl.cli import main

    root = write_tiny_cuhk(tmp_path / "data", {"train": 10, "val": 4, "test": 3})
    config = write_config(tmp_path / "cfg.yaml", root, optim={"epochs": 1},
                          cluster_select={"on": "val", "grid": {"k1": [3, 4], "k2": [1, 2], "eps": [0.5, 0.7],
                                                          "min_samples": [2]}})
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 0
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    for modality in ("image", "text"):
        assert record[f"select_{modality}_k1"] in (3, 4) and record[f"select_{modality}_eps"] in (0.5, 0.7)
        assert 0.0 <= record[f"select_{modality}_val_f"] <= 1.0


@pytest.mark.parametrize("mode", ["cpcl", "pair_fused"])
def test_weight_by_val_f_scales_the_cluster_terms_by_the_chosen_clusterings_val_f(tmp_path, mode):
    from cpcl.cli import main

    root = write_tiny_cuhk(tmp_path / "data", {"train": 10, "val": 4, "test": 3})
    config = write_config(tmp_path / "cfg.yaml", root, optim={"epochs": 2}, cpcl={"weight_by_val_f": True},
                          labels={"mode": mode}, cluster_select={"on": "val", "grid": {
                              "k1": [3, 4], "k2": [1, 2], "eps": [0.5, 0.7], "min_samples": [2]}})
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    image, text = ("image", "text") if mode == "cpcl" else ("pair", "pair")
    for record in records:
        assert record["cluster_image_weight"] == record[f"select_{image}_val_f"]
        assert record["cluster_text_weight"] == record[f"select_{text}_val_f"]


def test_weight_by_val_f_needs_a_val_selection():
    from cpcl.engine.config import TrainConfig
    from cpcl.utils.config import load_config

    assert load_config(TrainConfig, None, ["cpcl.weight_by_val_f=true", "cluster_select.on=val"]).cpcl.weight_by_val_f
    for extra in (["cluster_select.on=fixed"], ["cluster_select.on=val", "method=oracle"]):
        with pytest.raises(ConfigError, match="cpcl.weight_by_val_f .* needs method=cpcl and cluster_select.on=val"):
            load_config(TrainConfig, None, ["cpcl.weight_by_val_f=true", *extra])


def test_grey_world_labels_cluster_balanced_train_and_val_images(tmp_path, monkeypatch):
    from cpcl.cli import main
    from cpcl.engine import train

    calls, extract = [], train.extract_image_features

    def spy(*args, **kwargs):
        calls.append((kwargs["progress"], kwargs.get("colour_constancy", False)))
        return extract(*args, **kwargs)

    monkeypatch.setattr(train, "extract_image_features", spy)
    root = write_tiny_cuhk(tmp_path / "data", {"train": 10, "val": 4, "test": 3})
    config = write_config(tmp_path / "cfg.yaml", root, optim={"epochs": 2}, labels={"image_colour": "grey_world"},
                          cluster_select={"on": "val", "grid": {"k1": [3, 4], "k2": [1, 2], "eps": [0.5, 0.7],
                                                                "min_samples": [2]}})
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 0
    # each epoch: the train images as drawn (the memories), balanced (the labels), the val images balanced
    epoch = [("train images", False), ("train images (grey world)", True), ("val images", True)]
    assert calls == epoch * 2
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all("select_image_val_f" in record for record in records)
