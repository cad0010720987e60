"""Writing SynthPedes to disk: the CUHK-PEDES-format benchmark and the web-style pretraining corpus.

Identities are drawn per split from `SeedSequence([seed, split code])`, one after another, so
a split's first N identities do not depend on how many are asked for nor on the other splits'
sizes. Every image (and its captions) has its own `SeedSequence([seed, split code, person
index, image index])`, so the bytes written do not depend on the number of worker processes.
With `outfit_change_prob`, the cameras, detector boxes, occluders placed by the scene, view details
and the captions written from the image (`annotation`), each mechanism draws from a stream of its
own (`streams`), so every other draw is the same as without it. Beside reid_raw.json the writer
puts synthpedes_facts.json: for every image what it shows of each attribute slot and the facts
each of its captions states, and every person's attributes (`cpcl synth --stats` reads it).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from cpcl.synth.annotation import SLOTS, annotate_image, annotator_pool, identity_slots, shown_slots
from cpcl.synth.attributes import Identity, near_duplicate, outfit_of_one_image, sample_identity, with_view_details
from cpcl.synth.cameras import camera_network, camera_of_image, through_camera
from cpcl.synth.captions import Caption, write_alt_text, write_captions
from cpcl.synth.config import SPLIT_NAMES, SynthConfig
from cpcl.synth.render import render_image
from cpcl.synth.scene import Scene, sample_scene
from cpcl.synth.streams import BOX_CODE, CAMERA_CODE, OCCLUDER_CODE, OUTFIT_CODE, VIEW_DETAILS_CODE, stream
from cpcl.synth.visibility import with_detector_box, with_occluder_box
from cpcl.utils.errors import CpclError
from cpcl.utils.files import atomic_write
from cpcl.utils.progress import Progress

log = logging.getLogger(__name__)

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
PRETRAIN_CODE = 7
BENCHMARK_DIR = "CUHK-PEDES"
FACTS_FILE = "synthpedes_facts.json"  # beside reid_raw.json: what each image shows, what each caption states
PRETRAIN_DIR = "SynthPedes-pretrain"
TOKEN_RE = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


@dataclass(frozen=True)
class Person:
    """One planned identity of the benchmark."""

    split: str  # train | val | test
    index: int  # position within its split (0-based)
    person_id: int  # 1-based id, unique across splits
    identity: Identity  # its attributes
    n_images: int  # images to render
    source: int | None  # index (same split) of the identity this one near-duplicates, None if original


@dataclass(frozen=True)
class ImageJob:
    """Everything a worker needs to render, save and caption one image."""

    path: Path  # absolute output path of the JPEG
    identity: Identity  # who is in it
    entropy: tuple[int, ...]  # SeedSequence entropy of this image
    alt_text: bool  # write one web alt-text instead of benchmark captions
    cfg: SynthConfig  # generator settings


def tokenize(caption: str) -> list[str]:
    """CUHK-PEDES `processed_tokens`: lowercased words, punctuation dropped ("t-shirt" kept whole)."""
    return TOKEN_RE.findall(caption.lower())


def _is_near_duplicate(index: int, fraction: float) -> bool:
    """Spread near-duplicates evenly: position i is one when floor((i+1)f) > floor(i f)."""
    return index > 0 and math.floor((index + 1) * fraction + 1e-9) > math.floor(index * fraction + 1e-9)


def draw_image_count(rng: np.random.Generator, cfg: SynthConfig) -> int:
    """Images of one benchmark identity: MIN + Poisson(mean - MIN) capped at MAX, or uniform
    over MIN..MAX when the config gives no mean."""
    lo, hi = cfg.images_per_id
    if cfg.images_per_id_mean is None:
        return int(rng.integers(lo, hi + 1))
    return min(hi, lo + int(rng.poisson(cfg.images_per_id_mean - lo)))


def _plan_split(cfg: SynthConfig, split: str, count: int, taken: set[tuple]) -> list[tuple[Identity, int, int | None]]:
    """(identity, images, near-duplicate source) for the first `count` identities of `split`."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, SPLIT_CODES[split]]))
    planned: list[tuple[Identity, int, int | None]] = []
    for index in range(count):
        source = int(rng.integers(index)) if _is_near_duplicate(index, cfg.near_duplicate_fraction) else None
        while True:
            ident = sample_identity(rng) if source is None else near_duplicate(planned[source][0], rng)
            if ident.signature() not in taken:
                break
        taken.add(ident.signature())
        planned.append((ident, draw_image_count(rng, cfg), source))
    return planned


def plan_benchmark(cfg: SynthConfig) -> list[Person]:
    """All identities of the benchmark, train then val then test, with 1-based ids (and, with
    `view_details`, fronts and backs that differ, from a stream of each person's shade seed)."""
    taken: set[tuple] = set()
    people: list[Person] = []
    for split, count in cfg.ids_per_split().items():
        for index, (ident, n_images, source) in enumerate(_plan_split(cfg, split, count, taken)):
            if cfg.view_details:
                ident = with_view_details(ident, stream([ident.shade_seed], VIEW_DETAILS_CODE))
            people.append(Person(split, index, len(people) + 1, ident, n_images, source))
    return people


def image_rngs(entropy: tuple[int, ...]) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent (scene, render, caption) generators of one image."""
    scene, render, caption = np.random.SeedSequence(list(entropy)).spawn(3)
    return np.random.default_rng(scene), np.random.default_rng(render), np.random.default_rng(caption)


@dataclass(frozen=True)
class DrawnImage:
    """One benchmark image as the writer makes it."""

    image: Image.Image  # the photo
    captions: list[Caption]  # its captions (one web alt-text, without facts, for the pretraining corpus)
    scene: Scene  # how it was taken
    shows: dict[str, str]  # attribute slot -> what the image shows of it (annotation.shown_slots)


@lru_cache(maxsize=8)
def _dataset_entities(cfg: SynthConfig) -> tuple:
    """The camera network and the annotator pool of the dataset `cfg` describes (once a process)."""
    return camera_network(cfg), annotator_pool(cfg)


def observe_scene(scene: Scene, entropy: tuple[int, ...], cfg: SynthConfig) -> Scene:
    """`scene` through the image's camera, boxed as a detector would, its occluder placed by the scene:
    each as `cfg` asks, each from its own stream."""
    aspect = cfg.height / cfg.width
    if cfg.cameras:
        network, _ = _dataset_entities(cfg)
        camera = camera_of_image(network, entropy[:3], entropy[3])
        scene = through_camera(scene, camera, stream(entropy, CAMERA_CODE))
    if cfg.detector_box_prob > 0:
        rng = stream(entropy, BOX_CODE)
        if rng.random() < cfg.detector_box_prob:
            scene = with_detector_box(scene, rng, aspect)
    if cfg.scene_visibility or cfg.occluder_scale != 1.0:
        scene = with_occluder_box(scene, stream(entropy, OCCLUDER_CODE), cfg.occluder_scale, aspect)
    return scene


def draw_image(identity: Identity, entropy: tuple[int, ...], cfg: SynthConfig, alt_text: bool = False) -> DrawnImage:
    """One image of `identity` and its captions (one web alt-text with `alt_text`), from the image's entropy."""
    scene_rng, render_rng, caption_rng = image_rngs(entropy)
    person = identity
    if cfg.outfit_change_prob > 0 and not alt_text:  # its own stream: the other draws stay as without it
        person = outfit_of_one_image(person, stream(entropy, OUTFIT_CODE), cfg.outfit_change_prob)
    scene = sample_scene(scene_rng, cfg)
    if not alt_text:
        scene = observe_scene(scene, entropy, cfg)
    image = render_image(person, scene, render_rng, cfg.height, cfg.width, cfg.render_scale)
    if alt_text:
        return DrawnImage(image, [Caption(write_alt_text(person, scene, caption_rng), ())], scene, {})
    annotation = None
    if cfg.annotates_images:
        annotation = annotate_image(person, scene, cfg, entropy, _dataset_entities(cfg)[1])
    captions = write_captions(person, scene, caption_rng, cfg, annotation)
    return DrawnImage(image, captions, scene, shown_slots(person, scene.view, annotation, cfg.view_details))


def _run_job(job: ImageJob) -> tuple[list[str], dict]:
    """Render, save and caption one image; returns its captions and its facts (`write_synthpedes`)."""
    drawn = draw_image(job.identity, job.entropy, job.cfg, job.alt_text)
    job.path.parent.mkdir(parents=True, exist_ok=True)
    drawn.image.save(job.path, format="JPEG", quality=job.cfg.jpeg_quality)
    if job.alt_text:
        return [c.text for c in drawn.captions], {}
    facts = {"view": drawn.scene.view, "camera": drawn.scene.camera, "box": drawn.scene.box,
             "shows": [drawn.shows.get(slot, "") for slot in SLOTS],
             "captions": [[[slot, list(values)] for slot, values in c.facts] for c in drawn.captions]}
    return [c.text for c in drawn.captions], facts


def _run_all(jobs: list[ImageJob], workers: int, desc: str) -> Iterator[tuple[list[str], dict]]:
    """Captions and facts of every job, in job order, rendered by `workers` processes."""
    with Progress(len(jobs), desc, unit="img") as progress:
        if workers == 1 or len(jobs) < 8 * workers:
            for job in jobs:
                yield _run_job(job)
                progress.update()
            return
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers) as pool:
            for done in pool.imap(_run_job, jobs, chunksize=16):
                yield done
                progress.update()


def _prepare(root: Path, overwrite: bool, annotation: str) -> None:
    """Create `root`; refuse to mix with an earlier dataset unless `overwrite`."""
    if (root / annotation).exists() or (root / "imgs").exists():
        if not overwrite:
            raise CpclError(f"{root} already holds a dataset; pass --overwrite or choose another output folder")
        shutil.rmtree(root / "imgs", ignore_errors=True)
        (root / annotation).unlink(missing_ok=True)
        (root / FACTS_FILE).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda stream: stream.write(text.encode("utf-8")))


def write_synthpedes(out_dir: Path, cfg: SynthConfig, overwrite: bool = False) -> dict:
    """Write `out_dir/CUHK-PEDES/{reid_raw.json, imgs/}`; returns {split: {ids, images, captions}}."""
    root = Path(out_dir) / BENCHMARK_DIR
    _prepare(root, overwrite, "reid_raw.json")
    people = plan_benchmark(cfg)
    jobs, records = [], []
    for person in people:
        for k in range(person.n_images):
            rel = f"{person.split}/{person.person_id:05d}_{k}.jpg"
            entropy = (cfg.seed, SPLIT_CODES[person.split], person.index, k)
            jobs.append(ImageJob(root / "imgs" / rel, person.identity, entropy, False, cfg))
            records.append({"split": person.split, "file_path": rel, "id": person.person_id})
    images = []
    for record, (captions, facts) in zip(records, _run_all(jobs, cfg.workers, "synthpedes")):
        record["captions"] = captions
        record["processed_tokens"] = [tokenize(c) for c in captions]
        images.append({"file_path": record["file_path"], "id": record["id"], "split": record["split"], **facts})
    ordered = [{key: r[key] for key in ("split", "captions", "file_path", "processed_tokens", "id")} for r in records]
    _write_text(root / "reid_raw.json", json.dumps(ordered))
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("workers",)}
    persons = {str(p.person_id): [identity_slots(p.identity)[slot] for slot in SLOTS] for p in people}
    _write_text(root / FACTS_FILE, json.dumps({"config": settings, "slots": list(SLOTS), "people": persons,
                                               "images": images}, separators=(",", ":")))
    counts = {split: {"ids": 0, "images": 0, "captions": 0} for split in SPLIT_NAMES}
    for person in people:
        counts[person.split]["ids"] += 1
        counts[person.split]["images"] += person.n_images
        counts[person.split]["captions"] += person.n_images * cfg.captions_per_image
    log.info("wrote %s: %s", root, counts)
    return counts


def plan_pretrain(cfg: SynthConfig) -> Iterator[tuple[int, Identity, int]]:
    """(identity index, identity, images) until `cfg.pretrain_pairs` images; never a benchmark identity."""
    taken = {person.identity.signature() for person in plan_benchmark(cfg.web())}
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, PRETRAIN_CODE]))
    lo, hi = cfg.pretrain_images_per_id
    index, left = 0, cfg.pretrain_pairs
    while left > 0:
        ident = sample_identity(rng)
        if ident.signature() in taken:
            continue
        taken.add(ident.signature())
        n = min(left, int(rng.integers(lo, hi + 1)))
        yield index, ident, n
        index, left = index + 1, left - n


def write_pretrain_corpus(out_dir: Path, cfg: SynthConfig, overwrite: bool = False) -> dict:
    """Write `out_dir/SynthPedes-pretrain/{annotations.jsonl, imgs/}`: `cfg.pretrain_pairs` image / alt-text pairs.

    Identities are disjoint from the benchmark that `cfg` (same seed and split sizes) describes.
    The corpus is the web's: always drawn in the standard style, with no observation switch (`SynthConfig.web`:
    `cfg.style` and its settings shape the benchmark only). Returns {identities, images, captions}.
    """
    cfg = cfg.web()
    root = Path(out_dir) / PRETRAIN_DIR
    _prepare(root, overwrite, "annotations.jsonl")
    jobs, paths, n_ids = [], [], 0
    for index, ident, n in plan_pretrain(cfg):
        n_ids += 1
        for k in range(n):
            rel = f"imgs/{index // 1000:03d}/{index:06d}_{k}.jpg"
            jobs.append(ImageJob(root / rel, ident, (cfg.seed, PRETRAIN_CODE, index, k), True, cfg))
            paths.append(rel)
    lines = [json.dumps({"image": rel, "captions": captions, "split": "train"})
             for rel, (captions, _) in zip(paths, _run_all(jobs, cfg.workers, "synthpedes-pretrain"))]
    _write_text(root / "annotations.jsonl", "\n".join(lines) + "\n")
    counts = {"identities": n_ids, "images": len(lines), "captions": len(lines)}
    log.info("wrote %s: %s", root, counts)
    return counts
