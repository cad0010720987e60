"""What one image shows of a person: detector-style boxes, occluders placed by the scene, and the
attribute groups that the frame, the occluder, blur and low resolution hide.

`with_detector_box` re-frames a scene as a person detector would box it (SynthConfig.detector_box_prob);
`with_occluder_box` fixes where the occluder stands and how large it is (SynthConfig.scene_visibility,
occluder_scale), so that the renderer draws it there and the captions know what it covers;
`hidden_groups` says which caption groups an image hides. Geometry is in shares of the image (x of
its width, y of its height), before a left view is mirrored (the renderer mirrors person and
occluder together, which changes nothing here). Body parts are boxes in the figure's head units
(`figure.Figure`: a person is 7.5 units from the top of the head to the soles).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cpcl.synth.attributes import Identity
from cpcl.synth.figure import HEIGHT
from cpcl.synth.scene import Scene

BOXES = {"knees": 0.3, "neck": 0.2, "loose": 0.25, "offcentre": 0.25}  # detector box kinds and their shares
SHOWN = 0.4  # a part is hidden when less than this share of it is inside the frame and not behind the occluder
SMALL_DETAILS = ("glasses", "belt", "pattern")  # lost when the figure is small, low-res or blurred
DETAIL_FLOOR = 0.4  # figure scale x resolution factor (x 0.6 when blurred) under which small details are lost


def _head_unit(scene: Scene, ident: Identity) -> tuple[float, float]:
    """(top of the head, one head unit), shares of the image height, as `render.render_image` places the figure."""
    feet = 0.5 + scene.scale / 2 + scene.offset_y - 0.02
    unit = scene.scale * HEIGHT[ident.height] / 7.6
    return feet - 7.5 * unit, unit


def with_detector_box(scene: Scene, rng: np.random.Generator, aspect: float) -> Scene:
    """`scene` boxed as a detector would: cut at the knees or the neck, loose with a second person beside,
    or off-centre. `aspect` is the image's height / width."""
    kinds = list(BOXES)
    kind = kinds[int(rng.choice(len(kinds), p=np.array(list(BOXES.values()))))]
    side = 1.0 if rng.random() < 0.5 else -1.0
    unit_scale = 0.98 / 7.6  # head unit per unit of scale, for a person of average height
    if kind == "knees":  # the head near the top, the knees (5.6 units down) at the bottom edge
        top = float(rng.uniform(0.0, 0.06))
        unit = (float(rng.uniform(0.96, 1.04)) - top) / 5.6
        scale = unit / unit_scale
        return replace(scene, box=kind, scale=scale, offset_y=top + 7.5 * unit + 0.02 - 0.5 - scale / 2)
    if kind == "neck":  # the top edge at the neck (about 1.1 units down), the feet near the bottom
        cut, feet = float(rng.uniform(1.0, 1.3)), float(rng.uniform(0.95, 1.0))
        unit = feet / (7.5 - cut)
        scale = unit / unit_scale
        return replace(scene, box=kind, scale=scale, offset_y=feet + 0.02 - 0.5 - scale / 2)
    if kind == "loose":  # the box holds a second person: ours is smaller and to one side
        return replace(scene, box=kind, scale=scene.scale * float(rng.uniform(0.68, 0.8)),
                       offset_x=side * float(rng.uniform(0.14, 0.22)))
    return replace(scene, box=kind, offset_x=side * float(rng.uniform(0.22, 0.32)) * min(1.0, 2.67 / aspect))


def with_occluder_box(scene: Scene, rng: np.random.Generator, size: float, aspect: float) -> Scene:
    """`scene` with its occluder's box fixed (x0, y0, x1, y1), `size` times as large as the renderer's own
    placement would draw it; a scene without an occluder is returned as it is."""
    kind, side = scene.occluder, scene.occluder_side
    if kind == "none":
        return scene

    def from_side(near: float, far: float) -> tuple[float, float]:
        return (near, far) if side < 0 else (1.0 - far, 1.0 - near)

    if kind == "pole":
        centre, width = float(rng.uniform(0.05, 0.35)), float(rng.uniform(0.06, 0.12)) * size
        x0, x1 = from_side(centre - width / 2, centre + width / 2)
        box = (x0, 0.0, x1, 1.0)
    elif kind == "car":
        width, height = min(1.0, float(rng.uniform(0.4, 0.7)) * size), min(0.75, float(rng.uniform(0.22, 0.38)) * size)
        x0, x1 = from_side(-0.05, width)
        box = (x0, 1.0 - height, x1, 1.05)
    elif kind == "sign":
        centre, width = float(rng.uniform(0.1, 0.3)), min(0.9, float(rng.uniform(0.3, 0.5)) * size)
        height, y = min(0.45, float(rng.uniform(0.12, 0.2)) * size), float(rng.uniform(0.25, 0.55))
        x0, x1 = from_side(centre - width / 2, centre + width / 2)
        box = (x0, y, x1, y + height)
    else:  # a passer-by, closer to the camera: the box is their body, their head to their feet
        height, feet = float(rng.uniform(1.0, 1.2)), float(rng.uniform(0.95, 1.1))
        centre = 0.5 + float(rng.uniform(0.72, 0.9)) / size
        half = 0.9 * height / 7.6 * aspect
        x0, x1 = from_side(1.0 - centre - half, 1.0 - centre + half)
        box = (x0, feet - height, x1, feet)
    return replace(scene, occluder_box=box)


def _parts(ident: Identity, view: str) -> dict[str, tuple[float, float, float, float]]:
    """Caption group -> (x0, x1, y0, y1) in head units from the figure's centre line and the top of its head."""
    side = view in ("left", "right")
    hand = 0.0 if side else (1.0 if view != "back" else -1.0)  # the carrying hand, as `Figure.hand_side`
    narrow = 0.6 if side else 1.0
    hem = {"coat": 5.7, "dress": 5.3}.get(ident.upper, 3.35 if "belt" in ident.accessory_names() else 3.85)
    end = {"shorts": 5.3, "skirt": 5.3, "long skirt": 6.9}.get(ident.lower, 7.0)
    held = (hand * 0.6 - 0.4 * (hand == 0), hand * 1.4 + 0.4 * (hand == 0))  # near the wrist
    bag = {"backpack": (-0.62, 0.62, 1.42, 3.55) if view == "back" else
           (-1.1, -0.3, 1.45, 3.45) if side else (-0.7, 0.7, 1.3, 2.9),
           "shoulder bag": (-0.5, 0.32, 3.35, 4.1) if side else (*sorted((hand * 0.4, hand * 1.2)), 3.35, 4.1),
           "suitcase": (-2.1, -0.95, 5.0, 7.3) if side else (*sorted((hand * 1.1, hand * 2.2)), 5.0, 7.3)
           }.get(ident.bag, (*sorted(held), 3.9, 4.9))
    umbrella = (-1.7, 1.7, -0.95, 0.45)  # open overhead; a closed one hangs by the hand
    return {
        "hair": (-0.45, 0.45, -0.05, 0.9), "headwear": (-0.5, 0.5, -0.35, 0.5), "glasses": (-0.3, 0.3, 0.4, 0.6),
        "face mask": (-0.3, 0.3, 0.55, 0.95), "scarf": (-0.5, 0.5, 0.9, 1.5),
        "upper": (-0.95 * narrow, 0.95 * narrow, 1.15, hem), "belt": (-0.7 * narrow, 0.7 * narrow, 3.2, 3.5),
        "lower": (-0.6 * narrow, 0.6 * narrow, 3.1, end), "shoes": (-0.6 * narrow, 0.6 * narrow, 6.95, 7.5),
        "bag": bag, "umbrella": umbrella, "closed umbrella": (*sorted(held), 4.0, 7.3),
        "build": (-0.9 * narrow, 0.9 * narrow, 1.15, 4.0), "height": (-0.6, 0.6, -0.05, 7.5),
    }


def _shown(part: tuple[float, float, float, float], x_of, y_of, occluder) -> float:
    """Share of `part` (head units) inside the image and not behind `occluder` (an image box or None)."""
    x0, x1, y0, y1 = x_of(part[0]), x_of(part[1]), y_of(part[2]), y_of(part[3])
    area = max(1e-9, (x1 - x0) * (y1 - y0))
    inside = max(0.0, min(x1, 1.0) - max(x0, 0.0)) * max(0.0, min(y1, 1.0) - max(y0, 0.0))
    if occluder is not None:
        ox0, oy0, ox1, oy1 = occluder
        cx0, cx1, cy0, cy1 = max(x0, ox0, 0.0), min(x1, ox1, 1.0), max(y0, oy0, 0.0), min(y1, oy1, 1.0)
        inside -= max(0.0, cx1 - cx0) * max(0.0, cy1 - cy0)
    return inside / area


def hidden_groups(ident: Identity, scene: Scene, aspect: float) -> frozenset[str]:
    """Caption groups (and "pattern") that this image hides: parts outside the frame or mostly behind the
    occluder, and small details of a small, low-res or blurred figure. `aspect` is the image's height / width."""
    top, unit = _head_unit(scene, ident)
    centre = 0.5 + scene.offset_x
    x_of = lambda k: centre + k * unit * aspect  # noqa: E731 (head units across, as shares of the width)
    y_of = lambda k: top + k * unit  # noqa: E731
    parts = _parts(ident, scene.view)
    if "umbrella" in ident.accessory_names() and not scene.umbrella_open:
        parts["umbrella"] = parts.pop("closed umbrella")
    hidden = {key for key, part in parts.items() if _shown(part, x_of, y_of, scene.occluder_box) < SHOWN}
    detail = scene.scale * scene.low_res * (0.6 if scene.blur > 0.5 else 1.0)
    if detail < DETAIL_FLOOR:
        hidden |= set(SMALL_DETAILS)
    return frozenset(hidden - {"closed umbrella"})
