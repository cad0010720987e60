"""One SynthPedes photo: background, person, occluder and camera effects, drawn with PIL.

Everything is drawn at `render_scale` times the output size and downsampled with
antialiasing. Given the same identity, scene and Generator state the pixels are identical.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw

from cpcl.synth import props
from cpcl.synth.attributes import Identity, sample_identity
from cpcl.synth.figure import Figure
from cpcl.synth.scene import Scene, draw_background, draw_static_occluder, finish_photo


def paint_person(ident: Identity, scene: Scene, size: tuple[int, int], cx: float, feet_y: float,
                 person_h: float) -> Image.Image:
    """An RGBA layer of `size` (W, H) with the person standing at `cx` with feet at `feet_y`.

    Side views are drawn facing right; the caller mirrors the photo for "left".
    """
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    fig = Figure(ident, scene, layer, cx, feet_y, person_h)
    props.behind_body(fig)
    fig.paint_body()
    props.behind_head(fig)
    fig.paint_head()
    props.on_head(fig)
    props.in_hand(fig)
    return layer


def person_layer(ident: Identity, scene: Scene, size: tuple[int, int], cx: float, feet_y: float, person_h: float,
                 rng: np.random.Generator) -> Image.Image:
    """`paint_person` lit from above (see `_light`): the RGBA layer of one person, ready to paste. Takes 7
    parameters because it is `paint_person`'s six (who, the scene, the canvas size, where the person stands and
    how tall) and the generator of the lighting's jitter."""
    return _light(paint_person(ident, scene, size, cx, feet_y, person_h), cx, feet_y - person_h, person_h, rng)


def _light(layer: Image.Image, cx: float, top: float, person_h: float, rng: np.random.Generator) -> Image.Image:
    """Round the person with soft side shading and a top-down gradient (the light comes from above)."""
    arr = np.asarray(layer, dtype=np.float32)
    h, w = arr.shape[:2]
    centre = cx + rng.normal(0.0, 0.06) * person_h
    half = 0.2 * person_h
    across = np.clip(1.08 - 0.3 * ((np.arange(w) - centre) / half) ** 2, 0.7, 1.08)
    down = np.clip(1.05 - 0.12 * (np.arange(h) - top) / person_h, 0.85, 1.05)
    arr[..., :3] *= (down[:, None] * across[None, :])[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")


def draw_shadow(canvas: Image.Image, cx: float, feet_y: float, person_h: float) -> None:
    """A soft dark ellipse under the feet, blended into the background (in place)."""
    shadow = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(shadow).ellipse([cx - 0.16 * person_h, feet_y - 0.015 * person_h,
                                    cx + 0.16 * person_h, feet_y + 0.03 * person_h], fill=90)
    canvas.paste((20, 20, 20), (0, 0), shadow)


def _passer_by(canvas: Image.Image, scene: Scene, rng: np.random.Generator) -> None:
    """Part of another, closer pedestrian at the `scene.occluder_side` edge (in place)."""
    w, h = canvas.size
    other = sample_identity(rng)
    views = ("front", "back", "right")
    other_scene = replace(scene, view=views[int(rng.integers(len(views)))], occluder="none",
                          stride=float(rng.uniform(-1, 1)), arm_swing=float(rng.uniform(-1, 1)))
    if scene.occluder_box is None:
        person_h = h * rng.uniform(1.0, 1.2)
        cx = w * (0.5 + scene.occluder_side * rng.uniform(0.72, 0.9))
        feet_y = h * rng.uniform(0.95, 1.1)
    else:  # the scene placed them (visibility.with_occluder_box)
        x0, top, x1, feet = scene.occluder_box
        person_h, cx, feet_y = (feet - top) * h, (x0 + x1) / 2 * w, feet * h
    layer = person_layer(other, other_scene, (w, h), cx, feet_y, person_h, rng)
    canvas.paste(layer, (0, 0), layer)


def _second_person(canvas: Image.Image, scene: Scene, rng: np.random.Generator) -> None:
    """Another pedestrian beside the person, at about the same distance: a loose detector box holds two
    (`visibility.with_detector_box`, box "loose"), drawn behind the person (in place)."""
    w, h = canvas.size
    other = sample_identity(rng)
    views = ("front", "back", "right")
    other_scene = replace(scene, view=views[int(rng.integers(len(views)))], occluder="none",
                          stride=float(rng.uniform(-1, 1)), arm_swing=float(rng.uniform(-1, 1)))
    person_h = h * scene.scale * rng.uniform(0.9, 1.1)
    away = -1.0 if scene.offset_x > 0 else 1.0
    cx = w * (0.5 + scene.offset_x + away * rng.uniform(0.55, 0.75))
    feet_y = h * (0.5 + scene.scale / 2 + scene.offset_y) - 0.02 * h + h * rng.uniform(-0.03, 0.02)
    layer = person_layer(other, other_scene, (w, h), cx, feet_y, person_h, rng)
    canvas.paste(layer, (0, 0), layer)


def render_image(ident: Identity, scene: Scene, rng: np.random.Generator, height: int = 128, width: int = 48,
                 render_scale: int = 2) -> Image.Image:
    """One RGB photo `height` x `width` of `ident` under `scene`; deterministic given `rng`."""
    w, h = width * render_scale, height * render_scale
    canvas = draw_background(scene.background, (w, h), rng)
    person_h = scene.scale * h
    feet_y = h * (0.5 + scene.scale / 2 + scene.offset_y) - 0.02 * h
    cx = w * (0.5 + scene.offset_x)
    if scene.box == "loose":
        _second_person(canvas, scene, rng)
    draw_shadow(canvas, cx, feet_y, person_h)
    layer = person_layer(ident, scene, (w, h), cx, feet_y, person_h, rng)
    canvas.paste(layer, (0, 0), layer)
    if scene.occluder == "passer-by":
        _passer_by(canvas, scene, rng)
    elif scene.occluder != "none":
        draw_static_occluder(canvas, scene.occluder, scene.occluder_side, rng, scene.occluder_box)
    if scene.view == "left":
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return finish_photo(canvas, scene, (width, height), rng)
