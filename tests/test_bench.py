"""`cpcl bench quality` on the fast preset: every method runs, the tables are written, runs resume."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from cpcl.cli import main
from cpcl.configs import resolve_config_path
from cpcl.engine.config import TrainConfig
from cpcl.experiments.bench import BENCH_PRESETS, METHODS, bench_preset
from cpcl.experiments.quality_table import quality_table
from cpcl.synth.config import SHAPES
from cpcl.utils.config import load_config


@pytest.mark.slow
def test_fast_preset_runs_every_method(tmp_path):
    assert main(["bench", "quality", "--preset", "fast", "--seeds", "1", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["methods"]) == list(METHODS)


def test_quality_bench_writes_results_and_table_and_resumes(tmp_path, capsys):
    args = ["bench", "quality", "--preset", "fast", "--seeds", "2", "--out", str(tmp_path),
            "--methods", "itc", "cpcl", "oplm_off", "oracle"]
    assert main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["methods"]) == {"itc", "cpcl", "oplm_off", "oracle"}
    assert set(results["methods"]["cpcl"]) == {"0", "1"}
    assert set(results["methods"]["oplm_off"]) == {"0"}  # ablations: --ablation-seeds, default 1
    assert {"R1", "R5", "R10", "mAP", "mINP", "val_R1", "seconds"} <= set(results["methods"]["oracle"]["1"])
    table = (tmp_path / "table.md").read_text()
    assert "| cpcl | 2 |" in table and "| oplm_off | 1 |" in table and "CPCL R1 / oracle R1" in table and "oracle R1 - ITC R1" in table
    capsys.readouterr()
    stamp = (tmp_path / "runs" / "cpcl_s0" / "results.json").stat().st_mtime_ns
    assert main(args) == 0  # finished runs are kept, not redone
    assert (tmp_path / "runs" / "cpcl_s0" / "results.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert main(["bench", "quality", "--preset", "standard", "--out", str(tmp_path)]) == 2
    assert "holds a benchmark of preset 'fast'" in capsys.readouterr().err
    assert main(args + ["--synth", "cameras=3"]) == 2  # the same preset on other data is another benchmark
    assert "holds a benchmark of preset 'fast' (ids [24, 8, 10], synth {}, train [])" in capsys.readouterr().err


def test_parallel_jobs_train_every_run_once_and_keep_the_method_order(tmp_path, capsys):
    args = ["bench", "quality", "--preset", "fast", "--seeds", "2", "--out", str(tmp_path),
            "--methods", "oplm_off", "itc", "--jobs", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert sorted(line.split()[0] + line.split()[2][0] for line in printed.splitlines() if " seed " in line) == \
        ["itc0", "itc1", "oplm_off0"]  # each run reported once, as it finishes
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["methods"]) == ["oplm_off", "itc"]
    assert list(results["methods"]["itc"]) == ["0", "1"]
    logs = [(tmp_path / "runs" / name / "train.log").read_text() for name in ("itc_s1", "oplm_off_s0")]
    assert all("method" in log for log in logs)  # the workers' runs keep their own logs
    assert main(["bench", "quality", "--out", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("synth,message", [
    (["magic=1"], "unknown SynthPedes field(s) magic; valid: ids_train"),
    (["cameras"], "--synth expects FIELD=VALUE, got 'cameras'"),
    (["cameras=-1"], "cameras must be >= 0, got -1"),
])
def test_bad_synth_fields_are_one_line(tmp_path, capsys, synth, message):
    assert main(["bench", "quality", "--out", str(tmp_path), "--synth", *synth]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_ids_synth_fields_and_train_overrides_reach_the_preset():
    preset = bench_preset("shifted", (5, 6, 7), {"figure_scale": [0.7, 0.9], "cameras": 4}, ("optim.epochs=2",))
    assert preset.ids == (5, 6, 7) and dict(preset.synth) == {"figure_scale": (0.7, 0.9), "cameras": 4}
    assert preset.style == "shifted" and bench_preset("shifted").ids == (500, 100, 100)
    assert preset.extra == ("optim.epochs=2",) and bench_preset("fast", train=("seed=3",)).extra == \
        ("optim.batch_size=32", "seed=3")  # after the preset's own


def test_unknown_method_or_preset_is_one_line(tmp_path, capsys):
    assert main(["bench", "quality", "--out", str(tmp_path), "--methods", "cpcl", "magic"]) == 2
    assert "unknown method(s) magic; valid: zero_shot, itc, cpcl" in capsys.readouterr().err
    assert main(["bench", "quality", "--out", str(tmp_path), "--preset", "huge"]) == 2
    assert "unknown benchmark preset 'huge'; valid: fast, standard" in capsys.readouterr().err


def test_table_means_spreads_and_ratios():
    results = {"preset": "x", "methods": {
        "itc": {"0": {"R1": 10.0, "R5": 1, "R10": 1, "mAP": 1, "mINP": 1, "val_R1": 20.0, "seconds": 5},
                "1": {"R1": 12.0, "R5": 1, "R10": 1, "mAP": 1, "mINP": 1, "val_R1": 22.0, "seconds": 7}},
        "cpcl": {"0": {"R1": 18.0, "R5": 1, "R10": 1, "mAP": 1, "mINP": 1, "seconds": 9}},
        "oracle": {"0": {"R1": 20.0, "R5": 1, "R10": 1, "mAP": 1, "mINP": 1, "seconds": 9}}}}
    table = quality_table(results)
    assert "| itc | 2 | 11.00 ± 1.41 |" in table and "| 21.00 ± 1.41 | - | 6 |" in table
    assert "| cpcl | 1 | 18.00 | 1.00 | 1.00 | 1.00 | 1.00 | - | - | - | 9 |" in table  # no last, val, purity: dashes
    assert "| CPCL - ITC | 0 | +8.00 | +8.00 - | - | - |" in table  # one seed: no interval
    assert "| oracle - ITC | 0 | +10.00 | +10.00 - | - | - |" in table
    assert "CPCL R1 / oracle R1: 0.900" in table
    assert "CPCL R1 - ITC R1: +7.00 points" in table
    assert "oracle R1 - ITC R1 (room the benchmark leaves): +9.00" in table


def test_table_pairs_each_method_run_on_two_or_more_seeds_against_cpcl():
    def row(r1, val, purity=None, last=None):
        return {"R1": r1, "R5": 1, "R10": 1, "mAP": 1, "mINP": 1, "val_R1": val, "seconds": 1,
                **({"image_purity": purity} if purity is not None else {}),
                **({"last_R1": last} if last is not None else {})}

    results = {"preset": "x", "methods": {
        "itc": {"0": row(10.0, 20.0), "1": row(12.0, 21.0)},
        "cpcl": {"0": row(11.0, 20.0, 0.4, 10.0), "1": row(11.0, 22.0, 0.6, 11.0), "2": row(13.0, 21.0, 0.5, 12.0)},
        "labels_pair_fused": {"0": row(14.0, 21.0, 0.8, 12.0), "1": row(13.0, 24.0, 0.8, 14.0),
                              "2": row(15.0, 23.0, 0.9, 14.0)},
        "oplm_off": {"0": row(9.0, 19.0, 0.4)}}}
    table = quality_table(results)
    assert "| 22.67 ± 1.53 | 0.83 | 1 |" in table and "| 21.00 ± 1.00 | 0.50 | 1 |" in table  # purity: mean
    # per seed +3, +2, +2: mean 2.33, sd 0.577, t(0.975, 2) = 4.303 -> half-width 1.43
    # the last epoch: +2, +3, +2, the same spread -> +2.33 [+0.90, +3.77] too
    assert "| labels_pair_fused - CPCL | 0, 1, 2 | +3.00 / +2.00 / +2.00 | +2.33 [+0.90, +3.77] | " \
           "+2.33 [+0.90, +3.77] | +1.67 [" in table
    assert "| 11.00 ± 1.00 | 21.00 ± 1.00 | 0.50 |" in table  # cpcl: R1 last, val R1, purity
    assert "| CPCL - ITC | 0, 1 | +1.00 / -1.00 | +0.00 [-12.71, +12.71] | - |" in table  # itc has no last R1
    assert "| oplm_off |" in table and "| oplm_off - CPCL |" not in table  # one seed: no paired row


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_is_a_valid_config(method):
    cfg = load_config(TrainConfig, resolve_config_path("synthpedes"), list(METHODS[method]))
    assert cfg != load_config(TrainConfig, resolve_config_path("synthpedes"), []) or method == "cpcl"


def test_the_cpcl_plus_row_is_the_cpcl_plus_recipe():
    recipe = load_config(TrainConfig, resolve_config_path("cpcl_plus"), [])
    row = load_config(TrainConfig, resolve_config_path("synthpedes"), list(METHODS["cpcl_plus"]))
    assert recipe == row and recipe.labels.mode == "pair_fused" and len(recipe.labels.pair_fused.weights_on_val) == 7


@pytest.mark.parametrize("name", sorted(BENCH_PRESETS))
def test_every_preset_generates_its_shape(name, tmp_path):
    preset = BENCH_PRESETS[name]
    preset.generate(tmp_path, (2, 1, 1))
    entries = json.loads((tmp_path / "CUHK-PEDES" / "reid_raw.json").read_text())
    shape = SHAPES[preset.shape]
    assert {len(entry["captions"]) for entry in entries} == {shape.captions_per_image}
    images = Counter(entry["id"] for entry in entries)
    assert len(images) == 4 and all(shape.images_per_id[0] <= n <= shape.images_per_id[1] for n in images.values())


def test_a_presets_caption_coverage_reaches_its_captions(tmp_path):
    def words_per_caption(name: str) -> float:
        BENCH_PRESETS[name].generate(tmp_path / name, (30, 1, 1))
        entries = json.loads((tmp_path / name / "CUHK-PEDES" / "reid_raw.json").read_text())
        captions = [caption for entry in entries for caption in entry["captions"]]
        return sum(len(caption.split()) for caption in captions) / len(captions)

    assert dict(BENCH_PRESETS["shifted_partial"].synth)["caption_coverage"] < 0.6
    assert "caption_coverage" not in dict(BENCH_PRESETS["shifted"].synth)
    assert words_per_caption("shifted_partial") < 0.95 * words_per_caption("shifted")  # 20.4 against 22.7 words
