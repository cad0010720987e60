"""Captions written from the image: what the annotators of one image see, and who they are.

With the observation switches of `SynthConfig` (colour_constancy, scene_visibility, shared_salience,
annotator_pool), every image gets one `ImageAnnotation`, shared by all its captions:
- colours named from the rendered colour after the image's camera, the camera partly discounted
  (`perceived_name`), the same names for both captions;
- the caption groups the scene hides (`visibility.hidden_groups`): neither caption names them;
- a per-image prominence of each group, so the captions of an image name the same things;
- two different annotators from a pool with lasting habits (`Annotator`): colours they call by a
  neighbour's name, details they always or never give, garment types they mix up, and a rare item
  they invent.
`shown_slots` is what the image shows of each slot (the diagnostics match captions against it) and
`identity_slots` what the person is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from cpcl.synth.attributes import COLOURS, HAIR_COLOURS, Identity
from cpcl.synth.config import SynthConfig
from cpcl.synth.figure import palette
from cpcl.synth.phrases import true_colours
from cpcl.synth.scene import Scene
from cpcl.synth.streams import ANNOTATOR_CODE, POOL_CODE, SALIENCE_CODE, stream
from cpcl.synth.visibility import hidden_groups

GROUPS = ("build", "height", "hair", "headwear", "glasses", "face mask", "scarf", "upper", "belt", "lower",
          "shoes", "bag", "umbrella")  # caption groups (captions.PROMINENCE's keys, in captions.ORDER)
ACCESSORY_SLOTS = ("glasses", "face mask", "scarf", "belt", "umbrella")
SLOTS = ("sex", "build", "height", "hair_style", "hair_colour", "headwear", "headwear_colour", "upper",
         "upper_colour", "upper_pattern", "pattern_colour", "inner_colour", "back_print", "lower", "lower_colour",
         "shoes", "shoes_colour", "bag", "bag_colour", *ACCESSORY_SLOTS,
         *(f"{name}_colour" for name in ACCESSORY_SLOTS if name != "glasses"))
# the slots each caption group (and "pattern", "inner", "back_print") covers, for what an image hides
GROUP_SLOTS = {"hair": ("hair_style", "hair_colour"), "headwear": ("headwear", "headwear_colour"),
               "upper": ("upper", "upper_colour", "upper_pattern", "pattern_colour", "inner_colour", "back_print"),
               "pattern": ("upper_pattern", "pattern_colour"), "inner": ("inner_colour",),
               "back_print": ("back_print",), "lower": ("lower", "lower_colour"), "shoes": ("shoes", "shoes_colour"),
               "bag": ("bag", "bag_colour"), "build": ("build",), "height": ("height",),
               **{name: (name, f"{name}_colour") if name != "glasses" else (name,) for name in ACCESSORY_SLOTS}}
HIDDEN = "hidden"  # an image's value of a slot it does not show
IMAGE_MEAN = 118.0  # grey level the camera's contrast pivots around (a typical SynthPedes image mean)
# Colours annotators habitually call by a neighbour's name (navy called black, beige called white)
COLOUR_HABITS = (("dark blue", "black"), ("black", "dark blue"), ("beige", "white"), ("white", "grey"),
                 ("grey", "white"), ("purple", "dark blue"), ("dark red", "red"), ("light blue", "blue"),
                 ("brown", "dark red"), ("orange", "red"), ("pink", "purple"), ("yellow", "orange"),
                 ("grey", "black"), ("beige", "brown"))
# Garment types annotators mix up (the type they name instead)
TYPE_MIXUPS = {"jacket": "coat", "coat": "jacket", "t-shirt": "shirt", "shirt": "t-shirt", "sweater": "hoodie",
               "hoodie": "sweater", "trousers": "jeans", "jeans": "trousers", "sneakers": "leather shoes",
               "leather shoes": "sneakers", "boots": "sneakers", "sandals": "sneakers", "heels": "leather shoes",
               "handbag": "shoulder bag", "shoulder bag": "handbag", "plastic bag": "handbag", "backpack": "shoulder bag",
               "cap": "hat", "hat": "cap", "beanie": "cap", "skirt": "shorts", "long skirt": "skirt"}
HABIT_RATE = 0.8  # how often a colour habit wins over the colour seen


@dataclass(frozen=True)
class Annotator:
    """One annotator of the pool, with habits that last across every image they caption."""

    index: int  # position in the pool
    colour_habits: tuple[tuple[str, str], ...]  # (colour seen, the name this annotator says instead)
    prominence: tuple[float, ...]  # per caption group (GROUPS order): how much more often they name it
    type_mixup: float  # chance of naming a garment by the type it is mixed up with (TYPE_MIXUPS)
    invention: float  # chance of adding an item the image does not show


@dataclass(frozen=True)
class ImageAnnotation:
    """What every caption of one image shares."""

    colours: dict[str, str]  # colour group -> the name to say (perceived, or the identity's)
    hidden: frozenset[str]  # caption groups (and "pattern") the image hides
    prominence: dict[str, float]  # caption group -> this image's salience, shared by its captions
    annotators: tuple[Annotator | None, ...]  # who writes each caption (None: no habits)
    slips: np.random.Generator | None  # the annotators' slips (type mix-ups, inventions); None without a pool


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0..255, [..., 3]) to CIELAB (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.9505, 1.0, 1.089])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


@cache
def _references(hair: bool) -> tuple[tuple[str, ...], np.ndarray]:
    table = HAIR_COLOURS if hair else COLOURS
    return tuple(table), _lab(np.array(list(table.values())))


def seen_rgb(rgb: tuple[int, int, int], scene: Scene, constancy: float) -> np.ndarray:
    """`rgb` as the annotator sees it in `scene`: the camera's saturation, contrast, exposure and cast
    (`scene.finish_photo`), each with a share `constancy` of its effect discounted."""
    keep = 1.0 - constancy
    colour = np.asarray(rgb, dtype=np.float64)
    grey = colour.mean()
    colour = grey + (colour - grey) * scene.saturation ** keep
    colour = (colour - IMAGE_MEAN) * scene.contrast ** keep + IMAGE_MEAN
    return np.clip(colour * scene.brightness ** keep * np.asarray(scene.cast) ** keep, 0, 255)


def perceived_name(rgb: tuple[int, int, int], scene: Scene, constancy: float, hair: bool = False) -> str:
    """The colour name (COLOURS, or HAIR_COLOURS for hair) nearest in CIELAB to `rgb` as seen in `scene`."""
    names, refs = _references(hair)
    return names[int(np.argmin(((refs - _lab(seen_rgb(rgb, scene, constancy))) ** 2).sum(-1)))]


def image_colours(ident: Identity, scene: Scene, constancy: float | None) -> dict[str, str]:
    """Colour group -> the name the image's annotators say: the identity's (`constancy` None) or the
    perceived one, for every coloured group the person has, their pattern, hair, inner top and back print."""
    colours = true_colours(ident)
    extra = {"pattern": ident.pattern_colour, "hair": ident.hair_colour, "inner": ident.inner_colour,
             "back_print": ident.back_print}
    colours.update({group: colour for group, colour in extra.items() if colour})
    if constancy is None:
        return colours
    shades = palette(ident)
    slot = {"back_print": "back print", "headwear": "headwear"}
    return {group: perceived_name(shades[slot.get(group, group)], scene, constancy, hair=group == "hair")
            for group in colours}


def annotator_pool(cfg: SynthConfig) -> tuple[Annotator, ...]:
    """The `cfg.annotator_pool` annotators of the dataset of `cfg.seed` (its own stream)."""
    rng = stream([cfg.seed], POOL_CODE)
    pool = []
    for index in range(cfg.annotator_pool):
        habits = rng.choice(len(COLOUR_HABITS), size=int(rng.integers(0, 4)), replace=False)
        chosen: dict[str, str] = {}
        for h in habits:
            chosen.setdefault(*COLOUR_HABITS[int(h)])
        prominence = np.exp(rng.normal(0.0, 0.5, size=len(GROUPS)))
        if rng.random() < 0.3:  # a detail they never give
            prominence[int(rng.integers(len(GROUPS)))] = 0.05
        if rng.random() < 0.4:  # one they always give
            prominence[int(rng.integers(len(GROUPS)))] = 3.0
        pool.append(Annotator(index, tuple(chosen.items()), tuple(float(p) for p in prominence),
                              type_mixup=float(rng.uniform(0.0, 0.15)), invention=float(rng.uniform(0.0, 0.03))))
    return tuple(pool)


def annotate_image(ident: Identity, scene: Scene, cfg: SynthConfig, entropy: tuple[int, ...],
                   pool: tuple[Annotator, ...]) -> ImageAnnotation:
    """The annotation every caption of this image shares (see the module docstring), from the image's streams."""
    colours = image_colours(ident, scene, cfg.colour_constancy)
    hidden = hidden_groups(ident, scene, cfg.height / cfg.width) if cfg.scene_visibility else frozenset()
    prominence = dict.fromkeys(GROUPS, 1.0)
    if cfg.shared_salience > 0:
        draws = stream(entropy, SALIENCE_CODE).normal(0.0, cfg.shared_salience, size=len(GROUPS))
        prominence = {group: float(np.exp(d)) for group, d in zip(GROUPS, draws)}
    if cfg.view_details and scene.view == "back" and ident.bag == "backpack":
        prominence["upper"] *= 0.4  # the backpack covers most of the back
        hidden |= {"back_print"}
    if not pool:
        return ImageAnnotation(colours, hidden, prominence, (None,) * cfg.captions_per_image, None)
    rng = stream(entropy, ANNOTATOR_CODE)
    n = cfg.captions_per_image
    chosen = rng.choice(len(pool), size=n, replace=n > len(pool))
    return ImageAnnotation(colours, hidden, prominence, tuple(pool[int(i)] for i in chosen), rng)


def habitual(colours: dict[str, str], annotator: Annotator, rng: np.random.Generator) -> dict[str, str]:
    """`colours` as `annotator` names them: each habit wins with probability HABIT_RATE (hair keeps its own names)."""
    habits = dict(annotator.colour_habits)
    return {group: habits[c] if group != "hair" and c in habits and rng.random() < HABIT_RATE else c
            for group, c in colours.items()}


def identity_slots(ident: Identity) -> dict[str, str]:
    """Slot (SLOTS) -> the person's value: types, colour names, "yes" / "no" for accessories ("" where none)."""
    values = {slot: str(getattr(ident, slot)) for slot in SLOTS if hasattr(ident, slot)}
    worn = dict(ident.accessories)
    for name in ACCESSORY_SLOTS:
        values[name] = "yes" if name in worn else "no"
        if name != "glasses":
            values[f"{name}_colour"] = worn.get(name, "")
    return {slot: values[slot] for slot in SLOTS}


def shown_slots(ident: Identity, view: str, annotation: ImageAnnotation | None, view_details: bool) -> dict[str, str]:
    """Slot -> what this image shows of it: the perceived colour names, HIDDEN where the view, the scene or
    a view detail hides it (glasses and mask from behind, a logo but from the front, hair under a hood)."""
    values = identity_slots(ident)
    hidden = set(annotation.hidden) if annotation is not None else set()
    if annotation is not None:
        slot_of = {"pattern": "pattern_colour", "hair": "hair_colour", **{g: f"{g}_colour" for g in GROUP_SLOTS}}
        slot_of["back_print"], slot_of["inner"] = "back_print", "inner_colour"
        for group, colour in annotation.colours.items():
            if group == "headwear" and ident.headwear == "hood":
                continue
            values[slot_of[group]] = colour
    if view == "back":
        hidden |= {"glasses", "face mask"}
    if ident.upper_pattern == "logo" and view != "front":
        hidden.add("pattern")
    if ident.headwear == "hood":
        hidden.add("hair")
    if ident.bag == "backpack" and view == "front":
        values["bag_colour"] = HIDDEN
    if view_details:
        hidden |= {"inner"} if view != "front" else set()
        hidden |= {"back_print"} if view != "back" else set()
        if view == "front" and ident.hair_style in ("ponytail", "bun"):
            values["hair_style"] = HIDDEN
    for group in hidden:
        for slot in GROUP_SLOTS[group]:
            values[slot] = HIDDEN
    return values
