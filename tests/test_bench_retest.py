"""`cpcl bench retest`: a finished benchmark's checkpoints evaluated on larger held-out splits."""

from __future__ import annotations

import json

import pytest

from cpcl.cli import main


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "quality", "--preset", "fast", "--seeds", "2", "--out", str(out),
                 "--methods", "itc", "cpcl", "--synth", "annotator_pool=4", "shared_salience=0.5"]) == 0
    return out


def _split(reid_raw, split):
    return [entry for entry in json.loads(reid_raw.read_text()) if entry["split"] == split]


def test_retest_at_the_benchmark_sizes_reproduces_its_metrics(bench, capsys):
    assert main(["bench", "retest", str(bench), "--ids-val", "8", "--ids-test", "10"]) == 0  # the fast preset's
    retested = json.loads((bench / "retest_8x10" / "results.json").read_text())
    original = json.loads((bench / "results.json").read_text())
    assert retested["methods"].keys() == original["methods"].keys() == {"itc", "cpcl"}
    for method, per_seed in original["methods"].items():
        assert per_seed.keys() == retested["methods"][method].keys() == {"0", "1"}
        for seed, record in per_seed.items():
            again = retested["methods"][method][seed]
            for metric in ("R1", "R5", "R10", "mAP", "mINP", "val_R1", "seconds", "last_R1", "last_mAP"):
                assert again[metric] == pytest.approx(record[metric], abs=1e-6), (method, seed, metric)
    assert "cpcl seed 1: test R1" in capsys.readouterr().out


def test_retest_on_larger_splits_keeps_train_and_the_benchmarks_people(bench, capsys):
    assert main(["bench", "retest", str(bench), "--ids-val", "12", "--ids-test", "16"]) == 0
    out = bench / "retest_12x16"
    old, new = bench / "data" / "CUHK-PEDES" / "reid_raw.json", out / "data" / "CUHK-PEDES" / "reid_raw.json"
    assert _split(new, "train") == _split(old, "train")
    for split, people in (("val", 12), ("test", 16)):
        before, after = _split(old, split), _split(new, split)
        assert len({entry["id"] for entry in after}) == people
        assert [entry["captions"] for entry in after[:len(before)]] == [entry["captions"] for entry in before]
    results = json.loads((out / "results.json").read_text())
    assert results["retest"] == "12 val and 16 test people"
    assert set(results["methods"]["cpcl"]) == {"0", "1"}
    table = (out / "table.md").read_text()
    assert "re-tested on 12 val and 16 test people" in table and "| CPCL - ITC | 0, 1 |" in table
    config = json.loads((out / "data" / "CUHK-PEDES" / "synthpedes_facts.json").read_text())["config"]
    assert config["annotator_pool"] == 4 and config["shared_salience"] == 0.5  # the benchmark's own SynthPedes
    assert {"last_R1", "last_mAP", "last_val_R1"} <= set(results["methods"]["itc"]["1"])
    stamp = (out / "runs" / "cpcl_s0.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["bench", "retest", str(bench), "--ids-val", "12", "--ids-test", "16"]) == 0
    assert (out / "runs" / "cpcl_s0.json").stat().st_mtime_ns == stamp  # written once, then kept
    assert " seed " not in capsys.readouterr().out.split("\n\n")[0]


def test_retest_refuses_what_is_not_a_finished_benchmark(tmp_path, bench, capsys):
    assert main(["bench", "retest", str(tmp_path)]) == 2
    assert "is not a benchmark folder (no bench.json)" in capsys.readouterr().err
    assert main(["bench", "retest", str(bench), "--ids-test", "0"]) == 2
    assert "--ids-val and --ids-test must be >= 1, got 1000 and 0" in capsys.readouterr().err
    (tmp_path / "bench.json").write_text(json.dumps({"preset": "fast"}))
    assert main(["bench", "retest", str(tmp_path)]) == 2
    assert "holds no finished run to re-test" in capsys.readouterr().err
