"""knn_backend "auto": the faster exact kNN engine, measured once per machine and size, remembered."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from cpcl.clustering import ClusterConfig, JaccardOptions, cluster_features
from cpcl.clustering import knn as knn_module
from cpcl.clustering import probe as probe_module
from cpcl.clustering.probe import PROBE_FILE, fastest_engine, machine_key, size_key
from test_clustering import clustered

CPU = torch.device("cpu")


def timed_engines(delays: dict[str, float], calls: list[str]) -> dict:
    """Fake engines that record their calls and take `delays` seconds."""
    def engine(name: str):
        def search(feats, keep, opts, device):
            calls.append(name)
            time.sleep(delays[name])
            return np.zeros((len(feats), keep), np.int64), np.zeros((len(feats), keep), np.float32)
        return search
    return {name: engine(name) for name in delays}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CPCL_CACHE", str(tmp_path))
    return tmp_path / PROBE_FILE


@pytest.mark.parametrize("slow", ["flat", "faiss_flat"])
def test_the_faster_engine_is_picked_and_remembered(cache, slow):
    x = clustered(300, seed=1)
    calls: list[str] = []
    engines = timed_engines({"flat": 0.0, "faiss_flat": 0.0, slow: 0.05}, calls)
    fast = "faiss_flat" if slow == "flat" else "flat"
    assert fastest_engine(x, 10, JaccardOptions(), CPU, engines).engine == fast
    assert sorted(calls) == sorted(["flat", "faiss_flat"] * probe_module.PROBE_ROUNDS)
    entry = json.loads(cache.read_text())[machine_key(CPU)][size_key(300, 32)]
    assert entry["engine"] == fast and entry["points"] == 300
    assert entry["seconds"][slow] > entry["seconds"][fast]
    calls.clear()
    assert fastest_engine(clustered(290, seed=2), 10, JaccardOptions(), CPU, engines).engine == fast  # same size bucket
    assert calls == []  # read from the file, not measured again
    fastest_engine(clustered(600, seed=2), 10, JaccardOptions(), CPU, engines)  # another size: probed
    assert len(calls) == 2 * probe_module.PROBE_ROUNDS
    assert set(json.loads(cache.read_text())[machine_key(CPU)]) == {size_key(300, 32), size_key(600, 32)}


def test_the_probe_times_a_sample_of_the_configured_size(cache):
    sizes: list[int] = []
    engines = {name: (lambda feats, keep, opts, device: sizes.append(len(feats))) for name in ("flat", "faiss_flat")}
    fastest_engine(clustered(500, seed=1), 10, JaccardOptions(knn_probe_points=64), CPU, engines)
    assert sizes == [64] * (2 * probe_module.PROBE_ROUNDS)


def test_an_unreadable_or_unwritable_probe_file_only_costs_a_new_probe(cache, caplog):
    cache.write_text("{not json")
    calls: list[str] = []
    engines = timed_engines({"flat": 0.0, "faiss_flat": 0.02}, calls)
    assert fastest_engine(clustered(100, seed=1), 10, JaccardOptions(), CPU, engines).engine == "flat"
    assert json.loads(cache.read_text())[machine_key(CPU)][size_key(100, 32)]["engine"] == "flat"
    cache.unlink()
    cache.mkdir()  # a folder where the file goes: the choice is used, not remembered
    assert fastest_engine(clustered(100, seed=1), 10, JaccardOptions(), CPU, engines).engine == "flat"
    assert "could not remember the kNN engine" in caplog.text


@pytest.mark.parametrize("machine_entry", [["x"], "flat", 3])
def test_a_machine_entry_of_the_wrong_shape_only_costs_a_new_probe(cache, machine_entry):
    cache.write_text(json.dumps({machine_key(CPU): machine_entry, "another machine": {"1": {"engine": "flat"}}}))
    calls: list[str] = []
    engines = timed_engines({"flat": 0.02, "faiss_flat": 0.0}, calls)
    assert fastest_engine(clustered(100, seed=1), 10, JaccardOptions(), CPU, engines).engine == "faiss_flat"
    known = json.loads(cache.read_text())
    assert known[machine_key(CPU)][size_key(100, 32)]["engine"] == "faiss_flat"
    assert known["another machine"] == {"1": {"engine": "flat"}}  # other machines' entries are kept


def test_labels_are_identical_whichever_engine_auto_takes(cache):
    x = clustered(400, seed=3)
    x[50:60] = x[0]  # ties
    labels = {}
    for engine in ("flat", "faiss_flat"):
        cache.write_text(json.dumps({machine_key(CPU): {size_key(*x.shape): {"engine": engine}}}))
        cfg = ClusterConfig(k1=20, k2=6, eps=0.6, min_samples=4, search=JaccardOptions(knn_device="cpu"))
        labels[engine] = cluster_features(x, cfg).labels
        forced = ClusterConfig(k1=20, k2=6, eps=0.6, min_samples=4, search=JaccardOptions(knn_backend=engine))
        np.testing.assert_array_equal(cluster_features(x, forced).labels, labels[engine])
    np.testing.assert_array_equal(labels["flat"], labels["faiss_flat"])
    assert labels["flat"].max() >= 1  # several clusters: a partition that could differ


def test_a_named_engine_skips_the_probe(cache):
    cluster_features(clustered(200, seed=4), ClusterConfig(search=JaccardOptions(knn_backend="faiss_flat")))
    assert not cache.exists()
    cluster_features(clustered(200, seed=4), ClusterConfig())  # the default, auto: probed and remembered
    assert json.loads(cache.read_text())[machine_key(CPU)][size_key(200, 32)]["engine"] in ("flat", "faiss_flat")


def test_a_probe_of_the_whole_input_hands_its_lists_back(cache, monkeypatch):
    """At most knn_probe_points points: the probe searches all of them, and its winner's lists are the answer (no
    third search), the same lists as the engine named."""
    x = clustered(300, seed=5)
    x[20:25] = x[3]  # ties
    calls: list[str] = []
    for name, search in knn_module.EXACT_BACKENDS.items():
        def counted(*args, _name=name, _search=search):
            calls.append(_name)
            return _search(*args)
        monkeypatch.setitem(knn_module.EXACT_BACKENDS, name, counted)
        monkeypatch.setitem(knn_module.KNN_BACKENDS, name, counted)
    opts = JaccardOptions(knn_device="cpu")
    rank, sims = knn_module.nearest_neighbours(x, 12, "auto", opts)
    assert sorted(calls) == sorted(["flat", "faiss_flat"] * probe_module.PROBE_ROUNDS)
    engine = json.loads(cache.read_text())[machine_key(CPU)][size_key(300, 32)]["engine"]
    want_rank, want_sims = knn_module.nearest_neighbours(x, 12, engine, opts)
    np.testing.assert_array_equal(rank, want_rank)
    np.testing.assert_array_equal(sims, want_sims)
    calls.clear()
    knn_module.nearest_neighbours(x, 12, "auto", opts)  # remembered: one search, by the chosen engine
    assert calls == [engine]


def test_inputs_larger_than_the_sample_share_one_probe(cache):
    """Above knn_probe_points every input is timed on a sample of that size: one probe serves them all."""
    calls: list[str] = []
    engines = timed_engines({"flat": 0.0, "faiss_flat": 0.02}, calls)
    opts = JaccardOptions(knn_probe_points=64)
    assert fastest_engine(clustered(300, seed=1), 10, opts, CPU, engines) == probe_module.Choice("flat")
    assert len(calls) == 2 * probe_module.PROBE_ROUNDS
    assert fastest_engine(clustered(600, seed=2), 10, opts, CPU, engines).engine == "flat"  # another bucket of N
    assert len(calls) == 2 * probe_module.PROBE_ROUNDS  # not probed again
    assert list(json.loads(cache.read_text())[machine_key(CPU)]) == [size_key(64, 32)]
