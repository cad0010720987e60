"""SynthPedes' observation switches: each draws from its own stream, leaves the output as it was when off,
and the captions say what their image shows (colours as seen, nothing hidden, salience, annotators, boxes,
view details, cameras)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest

from cpcl.cli import main
from cpcl.synth.annotation import HIDDEN, SLOTS, Annotator, annotate_image, annotator_pool, habitual, perceived_name
from cpcl.synth.attributes import COLOURS, sample_identity, with_view_details
from cpcl.synth.cameras import camera_network
from cpcl.synth.config import STYLE_SETTINGS, SynthConfig
from cpcl.synth.figure import palette
from cpcl.synth.scene import Scene, sample_scene
from cpcl.synth.stats import _jaccard
from cpcl.synth.streams import VIEW_DETAILS_CODE, stream
from cpcl.synth.visibility import hidden_groups, with_detector_box
from cpcl.synth.writer import PRETRAIN_CODE, SPLIT_CODES, draw_image, plan_benchmark, plan_pretrain
from cpcl.utils.errors import ConfigError

BASE = SynthConfig(ids_train=30, ids_val=0, ids_test=0, seed=1, style="shifted", wrong_adjective_rate=0.0)


def _images(cfg: SynthConfig, people: int | None = None):
    """(person, k, drawn image) for every image of the first `people` train people of `cfg`."""
    plan = [p for p in plan_benchmark(cfg) if p.split == "train"][:people]
    return [(p, k, draw_image(p.identity, (cfg.seed, SPLIT_CODES[p.split], p.index, k), cfg))
            for p in plan for k in range(p.n_images)]


def _digest(cfg: SynthConfig) -> str:
    h = hashlib.sha256()
    for _, _, drawn in _images(cfg):
        h.update(drawn.image.tobytes())
        h.update("\n".join(c.text for c in drawn.captions).encode())
    return h.hexdigest()[:16]


# Recorded at 6dd54a0, before the observation switches existed (numpy 2.x, Pillow 12.x): pixels and captions
# of every image of 4 / 2 / 2 people, seed 5, so that the existing styles stay byte-identical.
GOLDEN = {("standard", "cuhk-pedes", 0.0): "b29548d08864288b", ("standard", "icfg-pedes", 0.0): "472b5c0020b1f5bf",
          ("shifted", "cuhk-pedes", 0.0): "07db59759dd80494", ("shifted", "icfg-pedes", 0.0): "f7c7c61fb1e39543",
          ("shifted", "cuhk-pedes", 0.5): "f769104429ea274f", ("shifted", "icfg-pedes", 0.5): "98eeceba5eaa7e84"}


@pytest.mark.parametrize("style,shape,outfits", sorted(GOLDEN))
def test_the_existing_styles_are_byte_identical(style, shape, outfits):
    cfg = SynthConfig.shaped(shape, ids_train=4, ids_val=2, ids_test=2, seed=5, style=style,
                             outfit_change_prob=outfits)
    h = hashlib.sha256()
    for p in plan_benchmark(cfg):
        for k in range(p.n_images):
            drawn = draw_image(p.identity, (cfg.seed, SPLIT_CODES[p.split], p.index, k), cfg)
            h.update(drawn.image.tobytes())
            h.update("\n".join(c.text for c in drawn.captions).encode())
    assert h.hexdigest()[:16] == GOLDEN[(style, shape, outfits)]


def test_the_pretraining_corpus_is_byte_identical_and_ignores_the_observed_style():
    def digest(cfg: SynthConfig) -> str:
        h = hashlib.sha256()
        for index, ident, n in plan_pretrain(cfg):
            for k in range(n):
                drawn = draw_image(ident, (cfg.seed, PRETRAIN_CODE, index, k), cfg.web(), alt_text=True)
                h.update(drawn.image.tobytes())
                h.update(drawn.captions[0].text.encode())
        return h.hexdigest()[:16]

    sizes = dict(ids_train=4, ids_val=2, ids_test=2, seed=5, pretrain_pairs=12)
    assert digest(SynthConfig(**sizes)) == "e0f4e978ee59535c"  # recorded at 6dd54a0
    assert digest(SynthConfig.styled("observed", **sizes)) == "e0f4e978ee59535c"


@pytest.mark.parametrize("switch", ["colour_constancy", "shared_salience", "annotator_pool"])
def test_switches_that_only_change_captions_keep_every_image(switch):
    value = {"colour_constancy": 0.5, "shared_salience": 1.5, "annotator_pool": 6}[switch]
    plain, switched = _images(BASE, 12), _images(replace(BASE, **{switch: value}), 12)
    assert all(a[2].image.tobytes() == b[2].image.tobytes() for a, b in zip(plain, switched))
    changed = sum(a[2].captions != b[2].captions for a, b in zip(plain, switched))
    assert changed > 0.3 * len(plain)


def test_boxes_and_placed_occluders_redraw_only_their_images():
    plain = _images(BASE, 20)
    boxed = _images(replace(BASE, detector_box_prob=0.4), 20)
    kinds = [b[2].scene.box for b in boxed]
    assert 0.2 < np.mean([k != "none" for k in kinds]) < 0.6
    for a, b in zip(plain, boxed):
        same = a[2].image.tobytes() == b[2].image.tobytes() and a[2].captions == b[2].captions
        assert same == (b[2].scene.box == "none")  # the box's stream moves no other draw
    placed = _images(replace(BASE, occluder_scale=1.5), 20)
    for a, b in zip(plain, placed):
        same = a[2].image.tobytes() == b[2].image.tobytes()
        assert same == (a[2].scene.occluder == "none")
        assert (b[2].scene.occluder_box is None) == (a[2].scene.occluder == "none")


def test_view_details_change_only_the_people_who_have_them():
    plain = _images(BASE, 30)
    detailed = _images(replace(BASE, view_details=True), 30)
    people = [p for p, k, _ in detailed if k == 0]
    assert any(p.identity.inner_colour for p in people) and any(p.identity.back_print for p in people)
    for (p, _, a), (q, _, b) in zip(plain, detailed):
        plain_person = not (q.identity.inner_colour or q.identity.back_print)
        if plain_person:
            assert a.image.tobytes() == b.image.tobytes()
        assert replace(q.identity, inner_colour="", back_print="") == p.identity


def test_view_details_come_from_the_shade_seed_and_fit_the_garment():
    rng = np.random.default_rng(0)
    people = [sample_identity(rng) for _ in range(600)]
    detailed = [with_view_details(p, stream([p.shade_seed], VIEW_DETAILS_CODE)) for p in people]
    assert detailed == [with_view_details(p, stream([p.shade_seed], VIEW_DETAILS_CODE)) for p in people]
    opened = [d for d in detailed if d.inner_colour]
    assert opened and all(d.upper in ("jacket", "coat") and d.inner_colour != d.upper_colour for d in opened)
    printed = [d for d in detailed if d.back_print]
    assert printed and all(d.upper in ("t-shirt", "hoodie", "sweater", "jacket") for d in printed)


def test_captions_name_the_colours_the_image_shows():
    cfg = replace(BASE, colour_constancy=0.0)
    named = renamed = 0
    for p, _, drawn in _images(cfg, 30):
        for caption in drawn.captions:
            for slot, values in caption.facts:
                if slot == "upper_colour":
                    assert values == (drawn.shows["upper_colour"],)
                    named += 1
                    renamed += values[0] != p.identity.upper_colour
    assert named > 30 and renamed > 0.25 * named  # shifted casts, nothing discounted: many names change


def test_perceived_names_follow_the_cast_and_constancy_discounts_it():
    white = COLOURS["white"]
    neutral = Scene("front", 0, 0, 0.8, 0, 0, "street", "none", 1, 1.0, 1.0, (1.0, 1.0, 1.0), 0, 1.0, 0, False)
    sodium = replace(neutral, cast=(1.22, 1.0, 0.72), brightness=0.8)
    assert perceived_name(white, neutral, 0.0) == "white"
    assert perceived_name(white, sodium, 0.0) != "white"
    assert perceived_name(white, sodium, 1.0) == "white"


def test_captions_never_state_what_the_scene_hides():
    cfg = replace(BASE, scene_visibility=True, detector_box_prob=0.6, occluder_scale=2.0, view_details=True)
    hidden_images = 0
    for _, _, drawn in _images(cfg, 40):
        hidden_images += HIDDEN in drawn.shows.values()
        for caption in drawn.captions:
            for slot, _ in caption.facts:
                assert drawn.shows[slot] != HIDDEN, (slot, caption.text)
    assert hidden_images > 10


def test_detector_boxes_cut_where_they_say():
    rng = np.random.default_rng(0)
    ident = sample_identity(rng)
    base = sample_scene(np.random.default_rng(1), SynthConfig())
    cuts = {}
    for seed in range(60):
        boxed = with_detector_box(base, np.random.default_rng(seed), 128 / 48)
        cuts.setdefault(boxed.box, hidden_groups(ident, boxed, 128 / 48))
    assert set(cuts) == {"knees", "neck", "loose", "offcentre"}
    assert "shoes" in cuts["knees"] and "upper" not in cuts["knees"]
    assert {"hair", "headwear"} <= cuts["neck"] and "shoes" not in cuts["neck"]
    assert "upper" not in cuts["loose"]


def test_shared_salience_makes_an_images_captions_alike():
    def overlaps(cfg: SynthConfig) -> tuple[float, float]:
        drawn = _images(cfg, 30)
        same = [_jaccard(d.captions[0].facts, d.captions[1].facts) for _, _, d in drawn]
        firsts: dict[int, list] = {}
        for p, _, d in drawn:
            firsts.setdefault(p.person_id, []).append(d.captions[0].facts)
        other = [_jaccard(a, b) for caps in firsts.values() for a, b in combinations(caps, 2)]
        return float(np.mean(same)), float(np.mean(other))

    same, other = overlaps(replace(BASE, shared_salience=1.5))
    plain_same, _ = overlaps(BASE)
    assert same > other + 0.1 and same > plain_same + 0.05


def test_an_images_annotators_are_two_different_people_with_lasting_habits():
    cfg = replace(BASE, annotator_pool=6)
    pool = annotator_pool(cfg)
    assert pool == annotator_pool(cfg) and len(pool) == 6
    ident = sample_identity(np.random.default_rng(2))
    scene = sample_scene(np.random.default_rng(3), cfg)
    for k in range(20):
        writers = annotate_image(ident, scene, cfg, (1, 0, 0, k), pool).annotators
        assert len(writers) == 2 and writers[0] != writers[1]
    habit = Annotator(0, (("dark blue", "black"),), (1.0,) * 13, 0.0, 0.0)
    rng = np.random.default_rng(4)
    said = [habitual({"upper": "dark blue", "hair": "black"}, habit, rng) for _ in range(1000)]
    assert 0.75 < np.mean([s["upper"] == "black" for s in said]) < 0.85
    assert all(s["hair"] == "black" for s in said)


def test_a_persons_images_come_from_different_cameras_that_keep_their_look():
    cfg = replace(BASE, cameras=6, images_per_id=(4, 6), images_per_id_mean=None)
    network = camera_network(cfg)
    assert len(network) == 6 and network == camera_network(replace(cfg, ids_train=3))
    seen: dict[int, set] = {}
    for p, _, drawn in _images(cfg, 10):
        seen.setdefault(p.person_id, []).append(drawn.scene.camera)
        camera = network[drawn.scene.camera]
        assert drawn.scene.background == camera.background and drawn.scene.low_res == camera.low_res
        assert np.allclose(drawn.scene.cast, camera.cast, rtol=0.1)
    assert all(len(set(cams)) == len(cams) for cams in seen.values())


def test_open_jackets_show_their_top_from_the_front_only():
    rng = np.random.default_rng(5)
    ident = replace(sample_identity(rng), upper="jacket", upper_colour="black", upper_pattern="plain",
                    pattern_colour="", inner_colour="yellow", headwear="none", bag="none", accessories=())
    cfg = replace(BASE, view_details=True, colour_constancy=None)
    front = replace(sample_scene(np.random.default_rng(6), SynthConfig()), view="front", occluder="none",
                    offset_x=0.0, scale=0.9, low_res=1.0, blur=0.0, cast=(1.0, 1.0, 1.0), brightness=1.0)
    from cpcl.synth.render import render_image

    def chest(view: str) -> np.ndarray:
        image = render_image(ident, replace(front, view=view), np.random.default_rng(7), 128, 48)
        return np.asarray(image, dtype=np.float64)[40:50, 22:26].mean(axis=(0, 1))

    assert chest("front")[2] < chest("front")[0] - 60  # yellow: little blue
    assert abs(chest("back")[0] - chest("back")[2]) < 40  # the black jacket
    annotation = annotate_image(ident, replace(front, view="back"), cfg, (1, 0, 0, 0), ())
    assert "inner" not in annotation.hidden
    from cpcl.synth.annotation import shown_slots

    assert shown_slots(ident, "back", annotation, True)["inner_colour"] == HIDDEN
    assert shown_slots(ident, "front", annotation, True)["inner_colour"] == "yellow"
    assert palette(ident)["inner"] != palette(replace(ident, inner_colour=""))["inner"]


def test_the_observed_style_sets_its_settings_and_fields_win():
    observed = SynthConfig.styled("observed")
    assert all(getattr(observed, name) == value for name, value in STYLE_SETTINGS["observed"].items())
    assert observed.shifted_look and observed.annotates_images
    assert SynthConfig.styled("observed", annotator_pool=0).annotator_pool == 0
    assert not SynthConfig.styled("shifted").annotates_images
    with pytest.raises(ConfigError, match="annotator_pool must be 0"):
        SynthConfig(annotator_pool=1)
    with pytest.raises(ConfigError, match="figure_scale must be MIN MAX"):
        SynthConfig(figure_scale=(0.9, 0.5))


def test_cli_observed_style_and_its_switches(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["synth", str(out), "--style", "observed", "--ids-train", "4", "--ids-val", "1", "--ids-test", "3",
                 "--colour-constancy", "none", "--annotator-pool", "0", "--no-view-details", "--workers", "1"]) == 0
    import json

    facts = json.loads((out / "CUHK-PEDES" / "synthpedes_facts.json").read_text())
    config = facts["config"]
    assert config["style"] == "observed" and config["colour_constancy"] is None and config["annotator_pool"] == 0
    assert config["view_details"] is False and config["scene_visibility"] is True and config["cameras"] == 8
    assert facts["slots"] == list(SLOTS) and len(facts["people"]) == 8
    capsys.readouterr()
    assert main(["synth", "--stats", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| against what the image shows |" in printed and "| upper_colour |" in printed
    assert main(["synth", "--stats", str(tmp_path / "none")]) == 2
    assert "no CUHK-PEDES/synthpedes_facts.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's own usage error
        main(["synth", str(out), "--colour-constancy", "warm"])
    assert "expected a number in [0, 1] or 'none', got 'warm'" in capsys.readouterr().err
    assert main(["synth", str(out), "--annotator-pool", "1", "--overwrite"]) == 2
    assert capsys.readouterr().err.strip().endswith("annotator_pool must be 0 (no habits) or >= 2 (two different "
                                                    "annotators an image)")
