"""SynthPedes scene mode: camera footage of several persons walking over a background, at known boxes.

Each scene is a static camera: one background, `persons` identities walking across it (side
views) or standing and turning (front and back views), nearer persons lower in the frame and
taller, drawn far to near. The box of a person in a frame is the bounding box of its painted
pixels (amodal: a person hidden behind a nearer one keeps its whole box), clipped to the frame.

    OUT/SynthPedes-footage/scene_NNN/frames/000001.jpg ...   the frames, numbered from 1 as MOTChallenge's img1
    OUT/SynthPedes-footage/scene_NNN/video.mp4                the same frames through OpenCV's VideoWriter (mp4v)
    OUT/SynthPedes-footage/scene_NNN/det.txt                  the true boxes as MOTChallenge detections (conf 1)
    OUT/SynthPedes-footage/scene_NNN/gt.json                  fps, size, persons with a caption, boxes per frame

Every scene has its own `SeedSequence([seed, FOOTAGE_CODE, scene])`: same seed, same frames.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from cpcl.synth.attributes import Identity, sample_identity
from cpcl.synth.captions import write_caption
from cpcl.synth.config import FootageConfig, SynthConfig
from cpcl.synth.render import draw_shadow, person_layer
from cpcl.synth.scene import BACKGROUNDS, Scene, draw_background, finish_photo, sample_scene
from cpcl.utils.errors import CpclError
from cpcl.utils.files import atomic_write
from cpcl.utils.optional import require

FOOTAGE_DIR = "SynthPedes-footage"
FOOTAGE_CODE = 11  # SeedSequence entropy word of the scene mode (the splits use 0-2, pretraining 7)
CAPTIONS = SynthConfig(caption_coverage=1.0, typo_rate=0.0, wrong_adjective_rate=0.0)  # complete, exact captions
STEP_HZ = 1.6  # walking cadence: full stride cycles a second
FOURCC = "mp4v"  # the MPEG-4 codec every OpenCV wheel writes

Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels


@dataclass(frozen=True)
class Walker:
    """One person of a scene and the path it takes (positions in output pixels)."""

    person: int  # 1-based id within the scene
    identity: Identity  # who it is
    scene: Scene  # the view, umbrella and the like (pose is set per frame)
    x_from: float  # centre x at the first frame
    x_to: float  # centre x at the last frame
    feet_y: float  # y of the feet (constant: people walk across the image)
    height: float  # person height in pixels
    phase: float  # stride phase at the first frame, in cycles


def plan_walkers(rng: np.random.Generator, cfg: FootageConfig) -> list[Walker]:
    """The persons of one scene, far to near (the order they are drawn in)."""
    walkers = []
    lo, hi = cfg.person_height
    for person in range(1, cfg.persons + 1):
        depth = float(rng.uniform(0.0, 1.0))  # 0 = far (high in the frame, small), 1 = near
        height = cfg.height * (lo + (hi - lo) * depth)
        feet_y = cfg.height * 0.02 + height + (cfg.height * 0.96 - height) * float(rng.uniform(0.6, 1.0))
        x_from, x_to = (float(v) for v in rng.uniform(0.12, 0.88, size=2) * cfg.width)
        base = sample_scene(rng, CAPTIONS)
        if abs(x_to - x_from) < 0.15 * cfg.width:  # hardly moving: facing the camera or away, in place
            view, x_to = ("front", "back")[int(rng.integers(2))], x_from
        else:
            view = "right" if x_to > x_from else "left"
        scene = replace(base, view=view, occluder="none", blur=0.0, low_res=1.0)
        walkers.append(Walker(person, sample_identity(rng), scene, x_from, x_to, min(feet_y, cfg.height * 0.99),
                              height, float(rng.uniform(0.0, 1.0))))
    return sorted(walkers, key=lambda w: w.feet_y)


def _pose(walker: Walker, t: float, moving: bool) -> Scene:
    """The walker's scene at time `t` seconds: legs and arms at their point of the stride."""
    cycle = 2 * math.pi * (walker.phase + STEP_HZ * t)
    stride = math.sin(cycle) if moving else 0.25 * math.sin(cycle)
    return replace(walker.scene, stride=stride, arm_swing=-stride)


def _paste_walker(canvas: Image.Image, walker: Walker, frame: int, cfg: FootageConfig,
                  rng: np.random.Generator) -> Box | None:
    """Draw `walker` at `frame` onto `canvas` (render scale, in place); its box in output pixels, or None if
    it is outside the frame."""
    s = cfg.render_scale
    t = frame / cfg.fps
    share = frame / max(1, cfg.frames - 1)
    cx = (walker.x_from + (walker.x_to - walker.x_from) * share) * s
    feet_y, height = walker.feet_y * s, walker.height * s
    half = int(0.75 * height)  # the region painted: room for arms, bags and an open umbrella
    size = (2 * half, int(1.25 * height))
    left, top = int(cx) - half, int(feet_y + 0.1 * height) - size[1]
    scene = _pose(walker, t, walker.x_to != walker.x_from)
    layer = person_layer(walker.identity, scene, size, half, feet_y - top, height, rng)
    if scene.view == "left":  # drawn facing right; mirrored about the region's centre, which is cx
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    draw_shadow(canvas, cx, feet_y, height)
    canvas.paste(layer, (left, top), layer)
    painted = layer.getchannel("A").getbbox()
    if painted is None:
        return None
    x0 = max(0, math.floor((left + painted[0]) / s))
    y0 = max(0, math.floor((top + painted[1]) / s))
    x1 = min(cfg.width, math.ceil((left + painted[2]) / s))
    y1 = min(cfg.height, math.ceil((top + painted[3]) / s))
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def render_scene(cfg: FootageConfig, index: int) -> tuple[list[Image.Image], dict]:
    """Scene `index`: (its frames, RGB at cfg.width x cfg.height; its truth: fps, size, persons, boxes).

    Boxes are {"frame": 0-based frame index, "person": id, "box": [x, y, w, h]}.
    """
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, FOOTAGE_CODE, index]))
    s = cfg.render_scale
    background = draw_background(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], (cfg.width * s, cfg.height * s),
                                 rng)
    camera = replace(sample_scene(rng, CAPTIONS), blur=0.0, low_res=1.0, noise=2.0)
    walkers = plan_walkers(rng, cfg)
    persons = [{"person": w.person, "view": w.scene.view, "height": round(w.height, 1),
                "caption": write_caption(w.identity, w.scene, rng, CAPTIONS).text} for w in walkers]
    frames, boxes = [], []
    for frame in range(cfg.frames):
        canvas = background.copy()
        for walker in walkers:
            box = _paste_walker(canvas, walker, frame, cfg, rng)
            if box is not None:
                boxes.append({"frame": frame, "person": walker.person, "box": list(box)})
        frames.append(finish_photo(canvas, camera, (cfg.width, cfg.height), rng))
    truth = {"fps": cfg.fps, "size": [cfg.width, cfg.height], "frames": cfg.frames,
             "persons": sorted(persons, key=lambda p: p["person"]), "boxes": boxes}
    return frames, truth


def write_video(path: Path, frames: list[Image.Image], fps: float) -> None:
    """`frames` (RGB, one size) as an MPEG-4 video through OpenCV's VideoWriter."""
    cv2 = require("cv2", "opencv-python", "writing SynthPedes footage video", "footage")
    width, height = frames[0].size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise CpclError(f"{path}: OpenCV cannot write an {FOURCC} video here (is the folder writable?)")
    try:
        for image in frames:
            writer.write(cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def mot_detections(boxes: list[dict]) -> str:
    """Boxes as MOTChallenge det.txt lines: frame (from 1), -1, left, top, width, height, conf 1, -1, -1, -1."""
    return "".join(f"{b['frame'] + 1},-1,{b['box'][0]},{b['box'][1]},{b['box'][2]},{b['box'][3]},1,-1,-1,-1\n"
                   for b in sorted(boxes, key=lambda b: (b["frame"], b["person"])))


def write_footage(out: Path, cfg: FootageConfig, overwrite: bool = False) -> list[Path]:
    """Render every scene of `cfg` into OUT/SynthPedes-footage (layout in the module docstring); the scene folders."""
    root = Path(out) / FOOTAGE_DIR
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise CpclError(f"{root} already holds footage; pass --overwrite to replace it, or another OUT")
    written = []
    for index in range(cfg.scenes):
        folder = root / f"scene_{index:03d}"
        frames, truth = render_scene(cfg, index)
        (folder / "frames").mkdir(parents=True, exist_ok=True)
        for number, image in enumerate(frames, start=1):
            image.save(folder / "frames" / f"{number:06d}.jpg", quality=cfg.jpeg_quality)
        write_video(folder / "video.mp4", frames, cfg.fps)
        atomic_write(folder / "det.txt", lambda stream: stream.write(mot_detections(truth["boxes"]).encode()))
        atomic_write(folder / "gt.json", lambda stream: stream.write(json.dumps(truth, indent=1).encode()))
        written.append(folder)
    return written
