"""`cpcl synth`: write the SynthPedes benchmark (CUHK-PEDES layout), its pretraining corpus, or a preview."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cpcl.synth.config import DEFAULT_SHAPE, SHAPES, STYLE_SETTINGS, STYLES, FootageConfig, SynthConfig
from cpcl.utils.errors import CpclError

DEFAULTS = SynthConfig()
FOOTAGE = FootageConfig()
OBSERVED = STYLE_SETTINGS["observed"]


def _constancy(text: str) -> float | None:
    """--colour-constancy: a share in [0, 1], or "none" (captions name the identity's colours)."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'none', got {text!r}") from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth", help="generate the SynthPedes synthetic person search data",
        description="Draw synthetic pedestrians and captions. OUT/CUHK-PEDES/reid_raw.json + imgs/ by default; "
                    "with --pretrain, OUT/SynthPedes-pretrain/annotations.jsonl + imgs/ (use the same --seed "
                    "and --ids-* as the benchmark it goes with, so its identities stay disjoint from it); with "
                    "--footage, OUT/SynthPedes-footage/scene_NNN/ (frames/, video.mp4, det.txt, gt.json).")
    parser.add_argument("out", nargs="?", type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--ids-train", metavar="N", type=int, default=DEFAULTS.ids_train, help="train identities")
    parser.add_argument("--ids-val", metavar="N", type=int, default=DEFAULTS.ids_val, help="val identities")
    parser.add_argument("--ids-test", metavar="N", type=int, default=DEFAULTS.ids_test, help="test identities")
    parser.add_argument("--seed", metavar="S", type=int, default=DEFAULTS.seed,
                        help="master seed (same seed, same bytes)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=DEFAULT_SHAPE,
                        help="images per person and captions per image as in this real dataset "
                             "(cuhk-pedes: 1 + Poisson(2.1) images, at most 10, 2 captions; icfg-pedes: "
                             "2 + Poisson(9.2), at most 30, 1 caption; rstpreid: 5 images, 2 captions)")
    parser.add_argument("--style", choices=STYLES, default=DEFAULTS.style,
                        help="how the benchmark is drawn and worded: standard (the pretraining corpus' cameras and "
                             "annotators), shifted (other cameras and annotators: a domain gap for the start) or "
                             "observed (shifted, with captions written from each image as seen: the options below "
                             "take its settings unless given)")
    parser.add_argument("--images-per-id", type=int, nargs=2, metavar=("MIN", "MAX"),
                        help="images per identity, inclusive range (replaces the shape's; uniform "
                             "unless --images-per-id-mean is given)")
    parser.add_argument("--images-per-id-mean", metavar="M", type=float,
                        help="mean images per identity: MIN + Poisson(M - MIN), capped at MAX")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=[DEFAULTS.height, DEFAULTS.width],
                        help="image height and width")
    parser.add_argument("--workers", metavar="N", type=int, default=DEFAULTS.workers, help="rendering processes")
    parser.add_argument("--near-duplicate-fraction", metavar="F", type=float,
                        default=DEFAULTS.near_duplicate_fraction,
                        help="share of identities that are near-duplicates (hard negatives)")
    parser.add_argument("--caption-coverage", metavar="F", type=float, default=DEFAULTS.caption_coverage,
                        help="mean share of visible attributes one caption names")
    parser.add_argument("--captions-per-image", metavar="N", type=int,
                        help="independent captions per benchmark image (replaces the shape's)")
    parser.add_argument("--outfit-change-prob", metavar="P", type=float, default=DEFAULTS.outfit_change_prob,
                        help="per image, probability that each removable item (hat, bag, accessory) is left off")
    parser.add_argument("--wrong-adjective-rate", metavar="P", type=float,
                        help=f"per-caption probability that one colour is named wrongly (default "
                             f"{DEFAULTS.wrong_adjective_rate}; observed {OBSERVED['wrong_adjective_rate']})")
    parser.add_argument("--typo-rate", metavar="P", type=float, default=DEFAULTS.typo_rate,
                        help="per-word typo probability")
    parser.add_argument("--occlusion-prob", metavar="P", type=float, default=DEFAULTS.occlusion_prob,
                        help="probability of an occluder per image")
    parser.add_argument("--blur-prob", metavar="P", type=float, default=DEFAULTS.blur_prob,
                        help="probability of blur per image")
    seen = parser.add_argument_group(
        "captions written from the image (each its own random stream; default: the style's, off but for observed)")
    seen.add_argument("--colour-constancy", metavar="C", type=_constancy, default=argparse.SUPPRESS,
                      help="name colours as the image's camera renders them, that share of the camera discounted "
                           f"(0..1; 'none': the identity's colours; observed {OBSERVED['colour_constancy']})")
    seen.add_argument("--scene-visibility", action=argparse.BooleanOptionalAction,
                      help="captions leave out what the occluder, the box, blur or low resolution hides")
    seen.add_argument("--shared-salience", metavar="S", type=float,
                      help="sd of a per-image log-prominence both captions of an image share "
                           f"(0: none; observed {OBSERVED['shared_salience']})")
    seen.add_argument("--annotator-pool", metavar="N", type=int,
                      help="annotators with lasting habits, two different ones an image "
                           f"(0: none; observed {OBSERVED['annotator_pool']})")
    seen.add_argument("--detector-box-prob", metavar="P", type=float,
                      help="share of images boxed as a detector would: cut at the knees or neck, loose, off-centre "
                           f"(observed {OBSERVED['detector_box_prob']})")
    seen.add_argument("--occluder-scale", metavar="F", type=float,
                      help=f"size of the occluders (1: as before; observed {OBSERVED['occluder_scale']})")
    seen.add_argument("--view-details", action=argparse.BooleanOptionalAction,
                      help="fronts and backs differ: open jackets, back prints, backpacks over the back, ponytails")
    seen.add_argument("--cameras", metavar="N", type=int,
                      help="a fixed network of N cameras, a person's images taken by different ones "
                           f"(0: each image its own; observed {OBSERVED['cameras']})")
    seen.add_argument("--figure-scale", metavar=("MIN", "MAX"), type=float, nargs=2,
                      help="person height range, share of the image (observed "
                           f"{' '.join(map(str, OBSERVED['figure_scale']))})")
    seen.add_argument("--low-res-range", metavar=("MIN", "MAX"), type=float, nargs=2,
                      help="resolution factor range of low-res images (observed "
                           f"{' '.join(map(str, OBSERVED['low_res_range']))})")
    parser.add_argument("--stats", type=Path, metavar="DIR",
                        help="print the diagnostics of the SynthPedes under DIR (attribute ceiling, fact overlap, "
                             "visibility) instead of generating")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test", help="the split --stats reads")
    parser.add_argument("--json", action="store_true", help="--stats as JSON")
    parser.add_argument("--pretrain", action="store_true",
                        help="write the web-style pretraining corpus instead of the benchmark")
    parser.add_argument("--pairs", metavar="N", type=int, default=DEFAULTS.pretrain_pairs,
                        help="image-caption pairs of the pretraining corpus (with --pretrain)")
    footage = parser.add_argument_group("scene mode (--footage): frames and a video of several persons at known boxes")
    footage.add_argument("--footage", action="store_true",
                         help="write camera footage (frames, mp4, true boxes) instead of the benchmark")
    footage.add_argument("--scenes", metavar="N", type=int, default=FOOTAGE.scenes, help="scenes to write")
    footage.add_argument("--frames", metavar="N", type=int, default=FOOTAGE.frames, help="frames per scene")
    footage.add_argument("--persons", metavar="N", type=int, default=FOOTAGE.persons, help="persons per scene")
    footage.add_argument("--frame-size", type=int, nargs=2, metavar=("W", "H"),
                         default=[FOOTAGE.width, FOOTAGE.height], help="frame width and height")
    footage.add_argument("--fps", metavar="F", type=float, default=FOOTAGE.fps, help="frame rate of the video")
    parser.add_argument("--preview", type=Path, metavar="PNG",
                        help="save a contact sheet (4 identities x 3 crops with captions) to PNG")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    parser.set_defaults(func=handler)


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """The validated `SynthConfig` the options describe (raises ConfigError on a bad value)."""
    shape: dict = {}
    if args.images_per_id is not None:
        shape.update(images_per_id=tuple(args.images_per_id), images_per_id_mean=None)
    if args.images_per_id_mean is not None:
        shape["images_per_id_mean"] = args.images_per_id_mean
    if args.captions_per_image is not None:
        shape["captions_per_image"] = args.captions_per_image
    given = {name: getattr(args, name) for name in ("wrong_adjective_rate", "scene_visibility", "shared_salience",
                                                     "annotator_pool", "detector_box_prob", "occluder_scale",
                                                     "view_details", "cameras") if getattr(args, name) is not None}
    given.update({name: tuple(getattr(args, name)) for name in ("figure_scale", "low_res_range")
                  if getattr(args, name) is not None})
    if hasattr(args, "colour_constancy"):  # given, "none" included
        given["colour_constancy"] = args.colour_constancy
    return SynthConfig.styled(
        args.style, args.shape, **shape, **given,
        ids_train=args.ids_train, ids_val=args.ids_val, ids_test=args.ids_test,
        height=args.size[0], width=args.size[1],
        near_duplicate_fraction=args.near_duplicate_fraction, caption_coverage=args.caption_coverage,
        outfit_change_prob=args.outfit_change_prob,
        typo_rate=args.typo_rate, occlusion_prob=args.occlusion_prob, blur_prob=args.blur_prob,
        pretrain_pairs=args.pairs, seed=args.seed, workers=args.workers,
    )


def _print_counts(counts: dict[str, dict[str, int]]) -> None:
    print(f"{'split':<6} {'ids':>6} {'images':>7} {'captions':>9}")
    for split, c in counts.items():
        print(f"{split:<6} {c['ids']:>6} {c['images']:>7} {c['captions']:>9}")


def write_footage_scenes(args: argparse.Namespace) -> int:
    """`cpcl synth OUT --footage`: the scene mode."""
    from cpcl.synth.footage import write_footage

    if args.out is None:
        raise CpclError("--footage needs an output folder OUT")
    cfg = FootageConfig(scenes=args.scenes, frames=args.frames, persons=args.persons, width=args.frame_size[0],
                        height=args.frame_size[1], fps=args.fps, seed=args.seed)
    start = time.perf_counter()
    folders = write_footage(args.out, cfg, overwrite=args.overwrite)
    print(f"SynthPedes footage (seed {cfg.seed}): {len(folders)} scenes of {cfg.frames} frames, {cfg.persons} "
          f"persons each -> {folders[0].parent}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def print_stats(args: argparse.Namespace) -> int:
    """`cpcl synth --stats DIR`: the diagnostics of a generated split."""
    import json

    from cpcl.synth.stats import split_stats, stats_table

    stats = split_stats(args.stats, args.split)
    print(json.dumps(stats, indent=2) if args.json else stats_table(stats), end="" if not args.json else "\n")
    return 0


def handler(args: argparse.Namespace) -> int:
    """Write what the arguments ask for; a failed write (a read-only folder, a full disk) is one line. --stats
    only reads, outside that."""
    from cpcl.utils.files import writing

    if args.stats is not None:
        return print_stats(args)
    target = args.out if args.out is not None else args.preview
    with writing(target, "free space or make it writable, then run again (with --overwrite over a partial "
                         "dataset)"):
        return write_footage_scenes(args) if args.footage else write_dataset(args)


def write_dataset(args: argparse.Namespace) -> int:
    """`cpcl synth [OUT] [--preview PNG]`: the benchmark, the pretraining corpus, a preview."""
    from cpcl.synth.preview import render_preview_grid
    from cpcl.synth.writer import BENCHMARK_DIR, PRETRAIN_DIR, write_pretrain_corpus, write_synthpedes

    cfg = config_from_args(args)
    if args.out is None and args.preview is None:
        raise CpclError("nothing to do: give an output folder OUT, --preview PNG, or both")
    if args.preview is not None:
        if args.preview.suffix.lower() != ".png":
            raise CpclError(f"--preview expects a .png path, got {args.preview}")
        args.preview.parent.mkdir(parents=True, exist_ok=True)
        render_preview_grid(cfg).save(args.preview)
        print(f"preview: {args.preview}")
    if args.out is None:
        return 0
    start = time.perf_counter()
    if args.pretrain:
        counts = write_pretrain_corpus(args.out, cfg, overwrite=args.overwrite)
        print(f"SynthPedes pretraining corpus (seed {cfg.seed}) -> {args.out / PRETRAIN_DIR}")
        print(f"{counts['identities']} identities, {counts['images']} images, {counts['captions']} captions")
    else:
        counts = write_synthpedes(args.out, cfg, overwrite=args.overwrite)
        print(f"SynthPedes (seed {cfg.seed}) -> {args.out / BENCHMARK_DIR}")
        _print_counts(counts)
    workers = f"{cfg.workers} worker" + ("s" if cfg.workers != 1 else "")
    print(f"done in {time.perf_counter() - start:.1f} s ({workers})")
    return 0
