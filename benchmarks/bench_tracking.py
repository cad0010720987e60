"""Tracking and search as people on SynthPedes footage: IDF1, MOTA and HOTA (TrackEval) and how people come back.

    PYTHONPATH=src python benchmarks/bench_tracking.py                       # seeds 0 1 2, 2 scenes x 48 frames each
    PYTHONPATH=src python benchmarks/bench_tracking.py --modes true jitter --variants bytetrack ocsort sort

Per seed, `cpcl synth --footage` scenes (640 x 360, 4 persons walking across each other at several depths, so
they cross and hide one another; the count of crossing pairs is printed) are indexed with `--every N` through
three detectors: `true` (the scene's det.txt, its true boxes), `jitter` (the true boxes with each side moved by
N(0, 5%) of the box and one in five dropped, scores uniform in [0.5, 1]) and `hog`. Each index is opened
under each tracking variant (`VARIANTS`: the tracker, appearance re-linking on or off, the person score); the
tracks are scored against the true boxes on the sampled frames with TrackEval (IoU 0.5 for IDF1 and MOTA;
HOTA averaged over its IoU thresholds). Search as people: each person's caption is a query over its scene's
index; `first` is the rank of the first result that is that person (its shown detection overlaps the
person's true box by IoU >= 0.5; 11 when not in the top 10), `takes` how many of the top 10 are that person.
Truth (person ids) is read here, in evaluation only. Numbers are what they are: nothing here is a target.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from cpcl.index.config import IndexConfig
from cpcl.index.detectors import box_iou
from cpcl.index.encoder import Encoder
from cpcl.index.ingest import FootageOptions, build_footage_index
from cpcl.index.search import Searcher
from cpcl.synth.config import FootageConfig
from cpcl.synth.footage import FOOTAGE_DIR, write_footage

VARIANTS = {  # name -> IndexConfig overrides
    "SORT + re-link (default)": {},
    "SORT, no re-link": {"link_cosine": 1.0},
    "SORT + re-link, max score": {"track_top": 1},
    "ByteTrack + re-link": {"tracker": "bytetrack"},
    "OC-SORT + re-link": {"tracker": "ocsort"},
}
JITTER, DROP = 0.05, 0.2  # the jittered detections: side noise (share of the box), share dropped
MATCH_IOU = 0.5  # a detection is a person when it overlaps its true box this much
TOP = 10  # search: results looked at
QUIET = {"PRINT_CONFIG": False}  # TrackEval metric config: no config printed


def jittered(gt: dict, rng: np.random.Generator) -> str:
    """The true boxes of a scene as MOTChallenge det.txt lines, moved and thinned (see the module docstring)."""
    lines = []
    for b in gt["boxes"]:
        if rng.random() < DROP:
            continue
        x, y, w, h = b["box"]
        nx, ny, nw, nh = rng.normal(0, JITTER, 4) * [w, h, w, h]
        lines.append(f"{b['frame'] + 1},-1,{x + nx:.1f},{y + ny:.1f},{w + nw:.1f},{h + nh:.1f},"
                     f"{rng.uniform(0.5, 1):.3f},-1,-1,-1\n")
    return "".join(lines)


def crossings(gt: dict) -> int:
    """Pairs of persons whose left-right order changes while their boxes overlap."""
    boxes = {(b["frame"], b["person"]): b["box"] for b in gt["boxes"]}
    persons = [p["person"] for p in gt["persons"]]
    count = 0
    for i, a in enumerate(persons):
        for b in persons[i + 1:]:
            frames = [f for f in range(gt["frames"]) if (f, a) in boxes and (f, b) in boxes]
            order = {np.sign(boxes[f, a][0] - boxes[f, b][0]) for f in frames} - {0}
            touch = any(box_iou(boxes[f, a], boxes[f, b])[0, 0] > 0 for f in frames)
            count += len(order) == 2 and touch
    return count


def truth_at(gt: dict, frame: int) -> tuple[list[int], np.ndarray]:
    """(person ids, boxes [P, 4]) of a frame."""
    here = [b for b in gt["boxes"] if b["frame"] == frame]
    return [b["person"] for b in here], np.array([b["box"] for b in here], dtype=np.float64).reshape(-1, 4)


def person_of(record: dict, gt: dict) -> int | None:
    """The person a detection shows: the true box it overlaps most, if by IoU >= MATCH_IOU."""
    ids, boxes = truth_at(gt, record["frame"])
    if not ids:
        return None
    overlap = box_iou(np.array(record["box"], dtype=np.float64), boxes)[0]
    return ids[int(overlap.argmax())] if overlap.max() >= MATCH_IOU else None


def track_metrics(searcher: Searcher, gt: dict, frames: list[int]) -> dict[str, dict]:
    """TrackEval's HOTA, CLEAR and Identity results of the searcher's tracks on `frames`."""
    from trackeval.metrics import CLEAR, HOTA, Identity

    gt_index = {p["person"]: i for i, p in enumerate(gt["persons"])}
    track_index = {key: i for i, key in enumerate(sorted(searcher.tracks))}
    data: dict = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    rows_at: dict[int, list[int]] = {}
    for row, record in enumerate(searcher.records):
        rows_at.setdefault(record["frame"], []).append(row)
    for frame in frames:
        ids, boxes = truth_at(gt, frame)
        rows = rows_at.get(frame, [])
        found = np.array([searcher.records[r]["box"] for r in rows], dtype=np.float64).reshape(-1, 4)
        data["gt_ids"].append(np.array([gt_index[i] for i in ids], dtype=int))
        data["tracker_ids"].append(np.array([track_index[int(searcher.track[r])] for r in rows], dtype=int))
        data["similarity_scores"].append(box_iou(boxes, found))
    data.update(num_timesteps=len(frames), num_gt_ids=len(gt_index), num_tracker_ids=len(track_index),
                num_gt_dets=sum(len(i) for i in data["gt_ids"]),
                num_tracker_dets=sum(len(i) for i in data["tracker_ids"]))
    return {name: metric.eval_sequence(data) for name, metric in
            (("hota", HOTA(QUIET)), ("clear", CLEAR(QUIET)), ("identity", Identity(QUIET)))}


def search_as_people(searcher: Searcher, gt: dict, group: bool) -> tuple[list[int], list[int]]:
    """Per person: (rank of its first result, results of its in the top 10), its caption as the query."""
    first, takes = [], []
    for person in gt["persons"]:
        hits = searcher.search_text(person["caption"], TOP, group=group)
        whose = [person_of(searcher.records[hit.row], gt) for hit in hits]
        first.append(next((i + 1 for i, p in enumerate(whose) if p == person["person"]), TOP + 1))
        takes.append(sum(p == person["person"] for p in whose))
    return first, takes


def combined(results: list[dict[str, dict]]) -> dict[str, float]:
    """IDF1, MOTA, HOTA and switches over sequences (TrackEval's own combination)."""
    from trackeval.metrics import CLEAR, HOTA, Identity

    hota = HOTA(QUIET).combine_sequences({str(i): r["hota"] for i, r in enumerate(results)})
    clear = CLEAR(QUIET).combine_sequences({str(i): r["clear"] for i, r in enumerate(results)})
    identity = Identity(QUIET).combine_sequences({str(i): r["identity"] for i, r in enumerate(results)})
    return {"IDF1": identity["IDF1"], "MOTA": clear["MOTA"], "HOTA": float(np.mean(hota["HOTA"])),
            "IDSW": clear["IDSW"]}


def build(encoder: Encoder, scene: Path, detector: str, every: int, out: Path) -> Searcher:
    options = FootageOptions("video", (scene / "video.mp4",), detector, None, every=every)
    build_footage_index(encoder, options, out, scene, IndexConfig(), batch_size=64)
    return Searcher.open(out, device="cpu", precision="fp32")


def with_settings(searcher: Searcher, overrides: dict) -> Searcher:
    """The same index under other settings (tracks made again)."""
    manifest = replace(searcher.manifest, settings={**searcher.manifest.settings, **overrides})
    return Searcher(searcher.directory, manifest, searcher.embeddings, searcher.records, searcher.backend,
                    searcher.encoder)


def evaluate_scene(encoder: Encoder, scene: Path, gt: dict, args: argparse.Namespace, rows: dict) -> None:
    """Index one scene through each detector and add each tracking variant's results to `rows`."""
    frames = list(range(0, gt["frames"], args.every))
    for mode in args.modes:
        detector = {"true": f"detections:{scene / 'det.txt'}", "jitter": f"detections:{scene / 'jitter.txt'}",
                    "hog": "hog"}[mode]
        searcher = build(encoder, scene, detector, args.every, scene / f"idx_{mode}")
        for variant in args.variants:
            tracked = with_settings(searcher, VARIANTS[variant])
            row = rows.setdefault((mode, variant), {"metrics": [], "first": [], "takes": [], "tracks": []})
            row["metrics"].append(track_metrics(tracked, gt, frames))
            row["tracks"].append(len(tracked.tracks))
            first, takes = search_as_people(tracked, gt, group=True)
            row["first"] += first
            row["takes"] += takes
        first, takes = search_as_people(searcher, gt, group=False)
        row = rows.setdefault((mode, "boxes (--no-group)"), {"first": [], "takes": []})
        row["first"] += first
        row["takes"] += takes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--persons", type=int, default=4)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["true", "jitter", "hog"], choices=["true", "jitter", "hog"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--checkpoint", default="synthpedes-small")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    encoder = Encoder.load(Path(args.checkpoint), device="cpu", precision="fp32")
    rows: dict[tuple[str, str], dict[str, list]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cfg = FootageConfig(scenes=args.scenes, frames=args.frames, persons=args.persons, seed=seed)
            write_footage(Path(tmp) / f"seed{seed}", cfg)
            for scene in sorted((Path(tmp) / f"seed{seed}" / FOOTAGE_DIR).iterdir()):
                gt = json.loads((scene / "gt.json").read_text())
                (scene / "jitter.txt").write_text(jittered(gt, np.random.default_rng([seed, int(scene.name[-3:])])))
                print(f"seed {seed} {scene.name}: {crossings(gt)} crossing pairs of {len(gt['persons'])} persons")
                evaluate_scene(encoder, scene, gt, args, rows)
    print(f"\n{len(args.seeds)} seeds x {args.scenes} scenes x {args.frames} frames, every {args.every}; "
          f"search: top {TOP}, one query a person\n")
    print("| detections | tracking | IDF1 | MOTA | HOTA | ID switches | tracks a scene | first right rank | "
          "results a person takes in the top 10 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (mode, variant), row in rows.items():
        first, takes = np.mean(row["first"]), np.mean(row["takes"])
        if "metrics" in row:
            m = combined(row["metrics"])
            print(f"| {mode} | {variant} | {m['IDF1']:.3f} | {m['MOTA']:.3f} | {m['HOTA']:.3f} | {m['IDSW']} | "
                  f"{np.mean(row['tracks']):.1f} | {first:.2f} | {takes:.2f} |")
        else:
            print(f"| {mode} | {variant} | | | | | | {first:.2f} | {takes:.2f} |")


if __name__ == "__main__":
    main()
