"""SynthPedes: layout, determinism, identities, captions, pretraining corpus, options and CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cpcl.cli import main
from cpcl.data.readers import load_dataset
from cpcl.synth import (SynthConfig, diff_groups, plan_benchmark, plan_pretrain, render_image,
                        render_preview_grid, sample_identity, sample_scene, write_caption,
                        write_pretrain_corpus, write_synthpedes)
from cpcl.synth.attributes import outfit_of_one_image
from cpcl.synth.captions import visible_attributes
from cpcl.synth.preview import _crop_and_captions
from cpcl.synth.wording import shift_words
from cpcl.synth.config import SHAPES
from cpcl.synth.writer import tokenize
from cpcl.utils.errors import CpclError

SMALL = SynthConfig(ids_train=6, ids_val=2, ids_test=3, images_per_id=(2, 3), images_per_id_mean=None,
                    height=64, width=24, seed=3, workers=1)
KEYS = ["split", "captions", "file_path", "processed_tokens", "id"]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth")
    return out, write_synthpedes(out, SMALL)


@pytest.fixture(scope="module")
def records(bench) -> list[dict]:
    return json.loads((bench[0] / "CUHK-PEDES" / "reid_raw.json").read_text())


def test_layout_and_keys_match_cuhk_pedes(bench, records):
    out, _ = bench
    for r in records:
        assert list(r) == KEYS
        assert r["split"] in ("train", "val", "test")
        assert len(r["captions"]) == 2 and all(isinstance(c, str) and c for c in r["captions"])
        assert r["processed_tokens"] == [tokenize(c) for c in r["captions"]]
        assert all(t == t.lower() and t.replace("-", "").replace("'", "").isalnum()
                   for tokens in r["processed_tokens"] for t in tokens)
        with Image.open(out / "CUHK-PEDES" / "imgs" / r["file_path"]) as img:
            assert img.format == "JPEG" and img.size == (24, 64) and img.mode == "RGB"
    # the project's own CUHK-PEDES reader takes it as is
    data = load_dataset("cuhk-pedes", out)
    assert {s: c["ids"] for s, c in data.counts().items()} == {"train": 6, "val": 2, "test": 3}


def test_counts_per_split_as_asked(bench, records):
    _, counts = bench
    for split, n_ids in SMALL.ids_per_split().items():
        rows = [r for r in records if r["split"] == split]
        ids = {r["id"] for r in rows}
        assert counts[split] == {"ids": n_ids, "images": len(rows), "captions": 2 * len(rows)}
        assert len(ids) == n_ids
        per_id = [sum(r["id"] == i for r in rows) for i in ids]
        assert all(2 <= n <= 3 for n in per_id)


def test_ids_are_one_based_and_disjoint_across_splits(records):
    by_split = {s: {r["id"] for r in records if r["split"] == s} for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    assert sorted(set().union(*by_split.values())) == list(range(1, 12))


def test_same_seed_same_bytes_other_seed_differs(bench, tmp_path):
    out, _ = bench
    write_synthpedes(tmp_path / "a", SMALL)
    assert _tree_bytes(tmp_path / "a" / "CUHK-PEDES") == _tree_bytes(out / "CUHK-PEDES")
    write_synthpedes(tmp_path / "b", replace(SMALL, seed=4))
    other = (tmp_path / "b" / "CUHK-PEDES" / "reid_raw.json").read_bytes()
    assert other != (out / "CUHK-PEDES" / "reid_raw.json").read_bytes()


def test_worker_count_does_not_change_output(tmp_path):
    cfg = replace(SMALL, ids_train=8, ids_val=0, ids_test=0, images_per_id=(3, 3))
    write_synthpedes(tmp_path / "one", cfg)
    write_synthpedes(tmp_path / "two", replace(cfg, workers=2))
    assert _tree_bytes(tmp_path / "one") == _tree_bytes(tmp_path / "two")


def test_near_duplicates_differ_in_one_or_two_attributes():
    people = plan_benchmark(replace(SMALL, ids_train=40, ids_val=8, ids_test=8))
    dups = [p for p in people if p.source is not None]
    assert len(dups) == 10 + 2 + 2  # 25% of each split
    for p in dups:
        source = next(q for q in people if q.split == p.split and q.index == p.source)
        assert 1 <= len(diff_groups(source.identity, p.identity)) <= 2
        assert p.identity.signature() != source.identity.signature()
    signatures = [p.identity.signature() for p in people]
    assert len(set(signatures)) == len(signatures)


def test_split_plan_does_not_depend_on_other_sizes():
    small = [p.identity for p in plan_benchmark(SMALL) if p.split == "test"]
    big = [p.identity for p in plan_benchmark(replace(SMALL, ids_train=30, ids_test=5)) if p.split == "test"]
    assert big[:3] == small


def test_two_captions_of_an_image_differ(records):
    assert sum(r["captions"][0] != r["captions"][1] for r in records) >= 0.95 * len(records)


def test_captions_mention_a_visible_subset():
    rng = np.random.default_rng(0)
    coverage, partial, lengths = [], 0, []
    for _ in range(300):
        ident, scene = sample_identity(rng), sample_scene(rng, SMALL)
        visible = visible_attributes(ident, scene.view)
        caption = write_caption(ident, scene, rng, SMALL)
        assert set(caption.mentioned) <= set(visible)
        if scene.view == "back":
            assert "glasses" not in caption.mentioned and "logo" not in caption.text
        coverage.append(len(caption.mentioned) / len(visible))
        partial += len(caption.mentioned) < len(visible)
        lengths.append(len(caption.text.split()))
    assert 0.45 < np.mean(coverage) < 0.8
    assert partial > 0.7 * 300
    assert 15 <= np.median(lengths) <= 35


def test_drawing_is_deterministic_given_the_generator():
    def draw(seed: int) -> tuple:
        rng = np.random.default_rng(seed)
        ident, scene = sample_identity(rng), sample_scene(rng, SMALL)
        return ident, render_image(ident, scene, rng, 64, 24).tobytes(), write_caption(ident, scene, rng, SMALL)

    assert draw(5) == draw(5)
    assert draw(5)[1] != draw(6)[1]


def test_pretrain_corpus_is_jsonl_and_disjoint_from_the_benchmark(tmp_path):
    counts = write_pretrain_corpus(tmp_path, replace(SMALL, pretrain_pairs=12))
    root = tmp_path / "SynthPedes-pretrain"
    lines = (root / "annotations.jsonl").read_text().splitlines()
    assert counts["images"] == len(lines) == 12 and counts["identities"] >= 6
    for line in lines:
        row = json.loads(line)
        assert set(row) == {"image", "captions", "split"} and row["split"] == "train"
        assert len(row["captions"]) == 1 and 2 <= len(row["captions"][0].split()) <= 20
        assert (root / row["image"]).is_file()
    bench = {p.identity.signature() for p in plan_benchmark(SMALL)}
    assert not bench & {ident.signature() for _, ident, _ in plan_pretrain(replace(SMALL, pretrain_pairs=12))}
    assert load_dataset("jsonl", root).counts()["train"]["images"] == 12


@pytest.mark.parametrize("fields,message", [
    ({"ids_train": -1}, "ids_train must be >= 0"),
    ({"images_per_id": (5, 3)}, "1 <= MIN <= MAX"),
    ({"images_per_id": (4, 6)}, "images_per_id_mean must lie in images_per_id 4..6, got 3.1"),
    ({"caption_coverage": 0.0}, "caption_coverage"),
    ({"height": 8}, "at least 32x16"),
    ({"style": "cartoon"}, "style must be one of standard, shifted, observed, got 'cartoon'"),
])
def test_bad_config_raises_a_clear_error(fields, message):
    with pytest.raises(CpclError, match=message):
        SynthConfig(**fields)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_shapes_follow_the_real_datasets(shape):
    like = SHAPES[shape]
    cfg = SynthConfig.shaped(shape, ids_train=3000, ids_val=0, ids_test=0)
    counts = np.array([person.n_images for person in plan_benchmark(cfg)])
    lo, hi = like.images_per_id
    assert counts.min() >= lo and counts.max() <= hi
    assert abs(counts.mean() - like.images_per_id_mean) < 0.1
    assert cfg.captions_per_image == like.captions_per_image


def test_default_benchmark_is_shaped_like_cuhk_pedes():
    cuhk = SHAPES["cuhk-pedes"]
    assert (SynthConfig().images_per_id, SynthConfig().images_per_id_mean, SynthConfig().captions_per_image) \
        == (cuhk.images_per_id, cuhk.images_per_id_mean, cuhk.captions_per_image)


@pytest.mark.parametrize("options,images,captions", [
    (["--shape", "rstpreid"], {5}, {2}),
    (["--shape", "icfg-pedes", "--images-per-id", "2", "3"], {2, 3}, {1}),
    (["--images-per-id", "2", "2", "--captions-per-image", "3"], {2}, {3}),
])
def test_cli_shape_and_its_overrides(tmp_path, options, images, captions):
    args = ["synth", str(tmp_path), "--ids-train", "3", "--ids-val", "0", "--ids-test", "0",
            "--size", "64", "24", "--workers", "1"]
    assert main(args + options) == 0
    records = json.loads((tmp_path / "CUHK-PEDES" / "reid_raw.json").read_text())
    per_id = np.unique([r["id"] for r in records], return_counts=True)[1]
    assert set(per_id.tolist()) <= images and {len(r["captions"]) for r in records} == captions


def test_cli_writes_and_reports(tmp_path, capsys):
    args = ["synth", str(tmp_path), "--ids-train", "2", "--ids-val", "1", "--ids-test", "1",
            "--images-per-id", "1", "2", "--size", "64", "24", "--workers", "1", "--seed", "1"]
    assert main(args) == 0
    assert "train" in capsys.readouterr().out
    assert (tmp_path / "CUHK-PEDES" / "reid_raw.json").is_file()
    assert main(args) == 2  # refuses to mix with the existing dataset
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--captions-per-image", "3"]) == 0
    records = json.loads((tmp_path / "CUHK-PEDES" / "reid_raw.json").read_text())
    assert {len(r["captions"]) for r in records} == {3}


@pytest.mark.parametrize("extra,message", [
    (["--ids-test", "-2"], "ids_test must be >= 0"),
    (["--images-per-id", "4", "2"], "MIN <= MAX"),
    (["--pretrain", "--pairs", "0"], "pretrain_pairs must be >= 1"),
    (["--captions-per-image", "0"], "captions_per_image must be >= 1"),
    (["--wrong-adjective-rate", "1.5"], "wrong_adjective_rate must be a probability"),
    (["--outfit-change-prob", "-0.1"], "outfit_change_prob must be a probability"),
    (["--style", "observed", "--detector-box-prob", "2"], "detector_box_prob must be a probability"),
    (["--figure-scale", "0.9", "0.2"], "figure_scale must be MIN MAX"),
])
def test_cli_bad_options_exit_with_one_line(tmp_path, capsys, extra, message):
    assert main(["synth", str(tmp_path)] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_preview_grid(tmp_path):
    sheet = render_preview_grid(replace(SMALL, ids_train=4), n_ids=2, per_id=2)
    assert sheet.width > 2 * 24 and sheet.height > 2 * 64
    target = tmp_path / "grid.png"
    assert main(["synth", "--preview", str(target), "--ids-train", "4", "--size", "64", "24"]) == 0
    assert Image.open(target).format == "PNG"



def _colour_cast(path: Path) -> float:
    """How far an image's mean colour leans off grey: the larger of |log R/G| and |log B/G|."""
    r, g, b = np.asarray(Image.open(path), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return max(abs(np.log(r / g)), abs(np.log(b / g)))


def test_shifted_style_draws_and_words_the_same_people_differently(bench, records, tmp_path):
    write_synthpedes(tmp_path, replace(SMALL, style="shifted"))
    shifted = json.loads((tmp_path / "CUHK-PEDES" / "reid_raw.json").read_text())
    # the same people, images and caption counts; other pixels and words
    assert [(r["id"], r["file_path"], len(r["captions"])) for r in shifted] == \
        [(r["id"], r["file_path"], len(r["captions"])) for r in records]
    ours = [tmp_path / "CUHK-PEDES" / "imgs" / r["file_path"] for r in records]
    theirs = [bench[0] / "CUHK-PEDES" / "imgs" / r["file_path"] for r in records]
    assert all(a.read_bytes() != b.read_bytes() for a, b in zip(ours, theirs))
    # the shifted cameras' white balance: mean colours lean further off grey
    assert np.mean([_colour_cast(p) for p in ours]) > 1.25 * np.mean([_colour_cast(p) for p in theirs])
    words = lambda rows: {w for r in rows for c in r["captions"] for w in tokenize(c)}
    standard_words, shifted_words = words(records), words(shifted)
    assert "wearing" in standard_words and "wearing" not in shifted_words
    assert {"sneakers", "backpack", "jeans", "pants"} & standard_words
    assert not {"sneakers", "backpack", "jeans", "pants", "t-shirt"} & shifted_words


def test_shift_words_replaces_whole_words_longest_first():
    assert shift_words("a dark blue t-shirt, blue jeans and a black backpack") == \
        "a navy tee, blue denims and a black rucksack"
    assert shift_words("long pants and cappuccino") == "trousers and cappuccino"


def test_pretrain_corpus_is_drawn_in_the_standard_style(tmp_path):
    cfg = replace(SMALL, pretrain_pairs=4)
    write_pretrain_corpus(tmp_path / "a", cfg)
    write_pretrain_corpus(tmp_path / "b", replace(cfg, style="shifted"))
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")


def test_an_images_outfit_leaves_each_removable_item_off_with_its_probability():
    rng = np.random.default_rng(0)
    people = [sample_identity(rng) for _ in range(400)]
    assert [outfit_of_one_image(p, rng, 0.0) for p in people] == people
    for person in people:
        bare = outfit_of_one_image(person, rng, 1.0)
        assert bare.headwear == ("hood" if person.headwear == "hood" else "none")
        assert bare.bag == "none" and bare.bag_colour == "" and bare.accessories == ()
        assert replace(bare, headwear=person.headwear, headwear_colour=person.headwear_colour, bag=person.bag,
                       bag_colour=person.bag_colour, accessories=person.accessories) == person  # nothing else
    worn = sum(len(p.accessories) for p in people)
    kept = sum(len(outfit_of_one_image(p, rng, 0.5).accessories) for p in people)
    assert worn > 100 and 0.4 < kept / worn < 0.6


def test_outfit_changes_redraw_only_the_images_of_people_with_removable_items(bench, records, tmp_path):
    write_synthpedes(tmp_path, replace(SMALL, outfit_change_prob=1.0))
    changed = json.loads((tmp_path / "CUHK-PEDES" / "reid_raw.json").read_text())
    removable = {p.person_id: p.identity.headwear not in ("none", "hood") or p.identity.bag != "none"
                 or bool(p.identity.accessories) for p in plan_benchmark(SMALL)}
    assert 0 < sum(removable.values()) < len(removable)
    redrawn = []
    for before, after in zip(records, changed):
        assert before["file_path"] == after["file_path"] and before["id"] == after["id"]
        same = ((bench[0] / "CUHK-PEDES" / "imgs" / before["file_path"]).read_bytes()
                == (tmp_path / "CUHK-PEDES" / "imgs" / after["file_path"]).read_bytes()
                and before["captions"] == after["captions"])
        if removable[before["id"]]:
            redrawn.append(not same)
        else:
            assert same  # the outfit's stream leaves every other draw as it was
    assert sum(redrawn) > 0.8 * len(redrawn)


def test_the_preview_shows_an_images_outfit_as_written(tmp_path):
    cfg = replace(SMALL, outfit_change_prob=1.0, ids_val=0, ids_test=0)
    write_synthpedes(tmp_path, cfg)
    records = json.loads((tmp_path / "CUHK-PEDES" / "reid_raw.json").read_text())
    written = {r["file_path"]: r["captions"] for r in records}
    carrier = next(p for p in plan_benchmark(cfg) if p.identity.bag != "none")  # a bag the outfit leaves off
    assert _crop_and_captions(cfg, carrier, 0)[1] == written[f"train/{carrier.person_id:05d}_0.jpg"]
