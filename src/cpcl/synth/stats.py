"""Diagnostics of a generated SynthPedes split (`cpcl synth --stats DIR`): how much room it leaves, and why.

Read from the facts the writer puts beside reid_raw.json (`writer.FACTS_FILE`): what every image shows
of each attribute slot, what every caption states, and every person's attributes.
- **Attribute ceiling**: a perfect matcher scores every gallery image by how many of a caption's
  facts it shows; R1 is its expected R1 under uniformly random tie-breaking, own@1 the same for the
  caption's own image. Against what each image shows ("image"), and against the person's attributes
  whatever the image ("identity", the matcher that captions written from the identity favour).
- **Fact overlap**: Jaccard of the fact sets of two captions of one image, and of the first captions
  of two images of one person. Captions written from the image overlap more within an image.
- **Fit**: how many people have an image that shows every fact of a caption.
- **Visibility**: per slot, the share of images whose person has the item in which it is shown; and
  per colour slot the share named otherwise than the person's colour.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from cpcl.synth.annotation import HIDDEN
from cpcl.synth.writer import BENCHMARK_DIR, FACTS_FILE
from cpcl.utils.errors import CpclError

ABSENT = ("", "no", "none")  # slot values that mean the person has no such item


@dataclass(frozen=True)
class SplitFacts:
    """The facts of one split: images in reid_raw.json order, captions in image order."""

    slots: tuple[str, ...]  # attribute slots, the column order of `shows` and `persons`
    person: np.ndarray  # [n_images] person id of each image
    shows: list[tuple[str, ...]]  # per image: its value of each slot (HIDDEN where it does not show it)
    persons: dict[int, tuple[str, ...]]  # person id -> their value of each slot
    caption_image: np.ndarray  # [n_captions] index of each caption's image
    facts: list[tuple[tuple[str, tuple[str, ...]], ...]]  # per caption: (slot, allowed values) pairs


def facts_path(root: Path) -> Path:
    """The facts file of the SynthPedes under `root` (the folder holding CUHK-PEDES/, or CUHK-PEDES/ itself)."""
    root = Path(root)
    for candidate in (root / BENCHMARK_DIR / FACTS_FILE, root / FACTS_FILE):
        if candidate.is_file():
            return candidate
    raise CpclError(f"{root}: no {BENCHMARK_DIR}/{FACTS_FILE}; it is written by `cpcl synth` beside reid_raw.json "
                    "(generate the data again with this version of cpcl)")


def load_split(root: Path, split: str) -> SplitFacts:
    """The facts of `split` of the SynthPedes under `root`."""
    path = facts_path(root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        slots = tuple(data["slots"])
        images = [image for image in data["images"] if image["split"] == split]
        persons = {int(pid): tuple(values) for pid, values in data["people"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CpclError(f"{path}: not a SynthPedes facts file ({type(err).__name__}: {err})") from None
    if not images:
        raise CpclError(f"{path}: no image in split {split!r}")
    caption_image, facts = [], []
    for index, image in enumerate(images):
        for caption in image["captions"]:
            caption_image.append(index)
            facts.append(tuple((slot, tuple(values)) for slot, values in caption))
    return SplitFacts(slots, np.array([image["id"] for image in images]), [tuple(i["shows"]) for i in images],
                      persons, np.array(caption_image, dtype=np.int64), facts)


def _columns(rows: list[tuple[str, ...]], slots: tuple[str, ...]) -> dict[tuple[str, str], np.ndarray]:
    """(slot, value) -> bool[n_rows]: which rows have that value."""
    table = np.array(rows, dtype=object).reshape(len(rows), len(slots))
    return {(slot, value): table[:, j] == value for j, slot in enumerate(slots) for value in set(table[:, j])}


def ceiling(split: SplitFacts, against: str = "image") -> dict[str, float]:
    """The perfect matcher's expected R1 and own@1 (%), scoring each gallery image by the caption's facts it
    shows (`against` "image") or its person has (`against` "identity")."""
    rows = split.shows if against == "image" else [split.persons[int(p)] for p in split.person]
    columns = _columns(rows, split.slots)
    none = np.zeros(len(rows), dtype=bool)
    r1, own = [], []
    for image, facts in zip(split.caption_image, split.facts):
        score = np.zeros(len(rows), dtype=np.int32)
        for slot, allowed in facts:
            match = none
            for value in allowed:
                match = match | columns.get((slot, value), none)
            score += match
        top = score == score.max()
        r1.append((top & (split.person == split.person[image])).sum() / top.sum())
        own.append(top[image] / top.sum())
    return {"R1": 100 * float(np.mean(r1)), "own@1": 100 * float(np.mean(own))}


def people_fitting(split: SplitFacts) -> list[int]:
    """Per caption: how many people have an image that shows every one of its facts."""
    columns = _columns(split.shows, split.slots)
    none = np.zeros(len(split.shows), dtype=bool)
    counts = []
    for facts in split.facts:
        fits = np.ones(len(split.shows), dtype=bool)
        for slot, allowed in facts:
            match = none
            for value in allowed:
                match = match | columns.get((slot, value), none)
            fits &= match
        counts.append(len(set(split.person[fits].tolist())))
    return counts


def _jaccard(a: tuple, b: tuple) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def fact_overlap(split: SplitFacts) -> dict[str, float | None]:
    """Mean fact Jaccard of two captions of one image, and of the first captions of two images of one person
    (None where the split has no such pair)."""
    by_image: dict[int, list[tuple]] = {}
    for image, facts in zip(split.caption_image.tolist(), split.facts):
        by_image.setdefault(image, []).append(facts)
    same_image = [_jaccard(a, b) for caps in by_image.values() for a, b in combinations(caps, 2)]
    by_person: dict[int, list[tuple]] = {}
    for image, caps in by_image.items():
        by_person.setdefault(int(split.person[image]), []).append(caps[0])
    same_person = [_jaccard(a, b) for caps in by_person.values() for a, b in combinations(caps, 2)]
    mean = lambda values: statistics.fmean(values) if values else None  # noqa: E731
    return {"same_image": mean(same_image), "same_person": mean(same_person)}


def visibility(split: SplitFacts) -> dict[str, dict[str, float]]:
    """Per slot: "shown", the share of images whose person has the item in which the image shows it; per
    colour slot also "renamed", the share of those showing it under another name than the person's."""
    out = {}
    for j, slot in enumerate(split.slots):
        has = [(image[j], split.persons[int(pid)][j]) for image, pid in zip(split.shows, split.person)
               if split.persons[int(pid)][j] not in ABSENT]
        if not has:
            continue
        shown = [(seen, true) for seen, true in has if seen != HIDDEN]
        row = {"shown": len(shown) / len(has)}
        if slot.endswith("_colour") or slot == "back_print":
            row["renamed"] = sum(seen != true for seen, true in shown) / max(1, len(shown))
        out[slot] = row
    return out


def split_stats(root: Path, split: str = "test") -> dict:
    """Every diagnostic of `split` (the module docstring), as a JSON-ready dict."""
    facts = load_split(root, split)
    fitting = people_fitting(facts)
    return {
        "split": split, "people": len(set(facts.person.tolist())), "images": len(facts.shows),
        "captions": len(facts.facts), "facts_per_caption": statistics.fmean(len(f) for f in facts.facts),
        "ceiling_image": ceiling(facts, "image"), "ceiling_identity": ceiling(facts, "identity"),
        "people_fitting_mean": statistics.fmean(fitting), "people_fitting_median": statistics.median(fitting),
        "overlap": fact_overlap(facts), "visibility": visibility(facts),
    }


def stats_table(stats: dict) -> str:
    """`split_stats` as markdown."""
    overlap = stats["overlap"]
    fmt = lambda value: "-" if value is None else f"{value:.3f}"  # noqa: E731
    lines = [f"Split `{stats['split']}`: {stats['people']} people, {stats['images']} images, {stats['captions']} "
             f"captions, {stats['facts_per_caption']:.1f} facts a caption.", "",
             "| attribute ceiling | R1 | own@1 | own@1 / R1 |", "|---|---|---|---|"]
    for name in ("image", "identity"):
        row = stats[f"ceiling_{name}"]
        lines.append(f"| against what the {name} shows | {row['R1']:.2f} | {row['own@1']:.2f} | "
                     f"{row['own@1'] / max(row['R1'], 1e-9):.3f} |" if name == "image" else
                     f"| against the person's attributes | {row['R1']:.2f} | {row['own@1']:.2f} | "
                     f"{row['own@1'] / max(row['R1'], 1e-9):.3f} |")
    lines += ["", f"- fact Jaccard, two captions of one image: {fmt(overlap['same_image'])}; first captions of two "
              f"images of one person: {fmt(overlap['same_person'])}",
              f"- people with an image showing every fact of a caption: mean {stats['people_fitting_mean']:.2f}, "
              f"median {stats['people_fitting_median']:.0f}", "",
              "| slot | shown | named otherwise |", "|---|---|---|"]
    for slot, row in stats["visibility"].items():
        renamed = f"{row['renamed']:.3f}" if "renamed" in row else "-"
        lines.append(f"| {slot} | {row['shown']:.3f} | {renamed} |")
    return "\n".join(lines) + "\n"
