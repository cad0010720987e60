"""`cpcl synth --stats`: the diagnostics of a generated split, each against a slow reference on tiny data."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from cpcl.synth.annotation import HIDDEN
from cpcl.synth.config import SynthConfig
from cpcl.synth.stats import ceiling, fact_overlap, load_split, people_fitting, split_stats, visibility
from cpcl.synth.writer import write_synthpedes

SLOTS = ["sex", "upper", "upper_colour", "bag"]


def _random_facts(tmp_path: Path, seed: int) -> Path:
    """A facts file of 6 people, 1-3 images each, 2 captions an image, drawn at random over a small vocabulary
    (many ties, hidden slots and people without a bag)."""
    rng = np.random.default_rng(seed)
    values = {"sex": ["male", "female"], "upper": ["coat", "jacket", "shirt"], "upper_colour": ["red", "blue"],
              "bag": ["none", "handbag", "backpack"]}
    people = {str(pid): [str(rng.choice(values[s])) for s in SLOTS] for pid in range(1, 7)}
    images = []
    for pid, person in people.items():
        for _ in range(int(rng.integers(1, 4))):
            shows = [HIDDEN if rng.random() < 0.2 else (str(rng.choice(values[s])) if rng.random() < 0.15 else v)
                     for s, v in zip(SLOTS, person)]
            captions = []
            for _ in range(2):
                slots = rng.choice(len(SLOTS), size=int(rng.integers(1, 4)), replace=False)
                captions.append([[SLOTS[j], sorted({person[j], str(rng.choice(values[SLOTS[j]]))})
                                  if rng.random() < 0.3 else [person[j]]] for j in slots])
            images.append({"file_path": f"x/{len(images)}.jpg", "id": int(pid), "split": "test", "shows": shows,
                           "captions": captions, "view": "front", "camera": -1, "box": "none"})
    (tmp_path / "CUHK-PEDES").mkdir()
    path = tmp_path / "CUHK-PEDES" / "synthpedes_facts.json"
    path.write_text(json.dumps({"config": {}, "slots": SLOTS, "people": people, "images": images}))
    return tmp_path


def _reference(data: dict, against: str) -> tuple[float, float, list[int]]:
    """R1, own@1 (expected under random ties) and the people each caption's facts fit, by plain loops."""
    images = data["images"]
    rows = [img["shows"] if against == "image" else data["people"][str(img["id"])] for img in images]
    r1, own, fits = [], [], []
    for q, img in enumerate(images):
        for caption in img["captions"]:
            scores = [sum(row[SLOTS.index(slot)] in allowed for slot, allowed in caption) for row in rows]
            best = max(scores)
            top = [g for g, s in enumerate(scores) if s == best]
            r1.append(sum(images[g]["id"] == img["id"] for g in top) / len(top))
            own.append((q in top) / len(top))
            shown = [all(images[g]["shows"][SLOTS.index(slot)] in allowed for slot, allowed in caption)
                     for g in range(len(images))]
            fits.append(len({images[g]["id"] for g in range(len(images)) if shown[g]}))
    return 100 * float(np.mean(r1)), 100 * float(np.mean(own)), fits


@pytest.mark.parametrize("seed", range(5))
def test_ceiling_and_fit_equal_a_slow_reference(tmp_path, seed):
    root = _random_facts(tmp_path, seed)
    data = json.loads((root / "CUHK-PEDES" / "synthpedes_facts.json").read_text())
    split = load_split(root, "test")
    for against in ("image", "identity"):
        r1, own, fits = _reference(data, against)
        got = ceiling(split, against)
        assert got["R1"] == pytest.approx(r1) and got["own@1"] == pytest.approx(own)
    assert people_fitting(split) == fits


def test_overlap_and_visibility_equal_a_slow_reference(tmp_path):
    root = _random_facts(tmp_path, 7)
    data = json.loads((root / "CUHK-PEDES" / "synthpedes_facts.json").read_text())
    split = load_split(root, "test")
    as_set = lambda caption: {(slot, tuple(values)) for slot, values in caption}  # noqa: E731
    jac = lambda a, b: len(a & b) / len(a | b)  # noqa: E731
    same = [jac(as_set(i["captions"][0]), as_set(i["captions"][1])) for i in data["images"]]
    other = []
    for pid in data["people"]:
        firsts = [as_set(i["captions"][0]) for i in data["images"] if str(i["id"]) == pid]
        other += [jac(a, b) for a, b in combinations(firsts, 2)]
    overlap = fact_overlap(split)
    assert overlap["same_image"] == pytest.approx(np.mean(same))
    assert overlap["same_person"] == pytest.approx(np.mean(other))
    shown = visibility(split)
    for j, slot in enumerate(SLOTS):
        has = [(i["shows"][j], data["people"][str(i["id"])][j]) for i in data["images"]
               if data["people"][str(i["id"])][j] not in ("", "no", "none")]
        if has:
            visible = [(s, t) for s, t in has if s != HIDDEN]
            assert shown[slot]["shown"] == pytest.approx(len(visible) / len(has))
            if slot == "upper_colour":
                assert shown[slot]["renamed"] == pytest.approx(sum(s != t for s, t in visible) / len(visible))


def test_the_facts_file_follows_reid_raw_and_a_shifted_split_leaves_its_known_room(tmp_path):
    cfg = SynthConfig(ids_train=0, ids_val=0, ids_test=60, style="shifted", seed=0, workers=1, height=64, width=24)
    write_synthpedes(tmp_path, cfg)
    records = json.loads((tmp_path / "CUHK-PEDES" / "reid_raw.json").read_text())
    facts = json.loads((tmp_path / "CUHK-PEDES" / "synthpedes_facts.json").read_text())
    assert [i["file_path"] for i in facts["images"]] == [r["file_path"] for r in records]
    assert [len(i["captions"]) for i in facts["images"]] == [len(r["captions"]) for r in records]
    stats = split_stats(tmp_path, "test")
    # captions written from the identity: a perfect matcher finds the person, not the image (own@1 ~ R1 / 3)
    assert stats["ceiling_identity"]["R1"] > 85 and stats["ceiling_image"]["R1"] > 85
    assert stats["ceiling_identity"]["own@1"] < 0.5 * stats["ceiling_identity"]["R1"]
    assert abs(stats["overlap"]["same_image"] - stats["overlap"]["same_person"]) < 0.1
    assert stats["visibility"]["upper_colour"] == {"shown": 1.0, "renamed": 0.0}
