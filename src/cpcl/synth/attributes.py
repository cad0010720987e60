"""Identity attributes of SynthPedes: the vocabulary, sampling, and near-duplicate identities.

An `Identity` is what an annotator could say about a person: sex, build, height, skin, hair,
headwear, upper and lower garments, shoes, bag and accessories. Images and captions are both
derived from it. A near-duplicate copies another identity with one or two attribute groups
changed, so the benchmark has hard negatives (two people in the same clothes but a different bag).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, replace

import numpy as np

# Garment colour names and their RGB; the renderer jitters them per identity.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 32), "white": (236, 236, 232), "grey": (128, 128, 132),
    "red": (192, 32, 38), "dark red": (112, 22, 34), "blue": (40, 84, 196),
    "dark blue": (26, 36, 82), "light blue": (132, 182, 228), "green": (42, 142, 64),
    "yellow": (232, 202, 40), "orange": (236, 122, 32), "pink": (236, 142, 182),
    "purple": (112, 52, 142), "brown": (112, 72, 42), "beige": (216, 196, 160),
}
# How often each colour is worn (street clothes are mostly dark and neutral).
GARMENT_COLOUR_WEIGHTS: dict[str, float] = {
    "black": 0.2, "white": 0.1, "grey": 0.09, "red": 0.06, "dark red": 0.04, "blue": 0.06,
    "dark blue": 0.09, "light blue": 0.05, "green": 0.05, "yellow": 0.04, "orange": 0.03,
    "pink": 0.05, "purple": 0.04, "brown": 0.05, "beige": 0.05,
}
JEANS_COLOURS = {"blue": 0.35, "dark blue": 0.3, "light blue": 0.15, "black": 0.15, "grey": 0.05}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (24, 20, 18), "brown": (92, 58, 32), "blonde": (214, 180, 108),
    "grey": (168, 166, 160), "red": (150, 62, 30),
}
HAIR_COLOUR_WEIGHTS = {"black": 0.5, "brown": 0.3, "blonde": 0.1, "grey": 0.05, "red": 0.05}
SKIN_TONES: dict[str, tuple[int, int, int]] = {
    "light": (240, 208, 182), "medium": (214, 170, 132), "tan": (176, 124, 86), "dark": (104, 70, 48),
}
HAIR_STYLES = {
    "male": {"short": 0.55, "buzz": 0.15, "medium": 0.12, "bald": 0.06, "long": 0.06, "ponytail": 0.06},
    "female": {"long": 0.42, "ponytail": 0.2, "short": 0.14, "bun": 0.12, "medium": 0.12},
}
HEADWEAR = {"none": 0.68, "cap": 0.1, "hat": 0.06, "beanie": 0.07, "hood": 0.09}
UPPER = {
    "male": {"t-shirt": 0.3, "shirt": 0.18, "jacket": 0.18, "coat": 0.1, "sweater": 0.12, "hoodie": 0.12},
    "female": {"t-shirt": 0.22, "shirt": 0.14, "jacket": 0.14, "coat": 0.12, "sweater": 0.12,
               "hoodie": 0.08, "dress": 0.18},
}
HOOD_GARMENTS = ("hoodie", "jacket", "coat")
# Patterns each upper garment may carry (plain is always allowed and most common).
PATTERNS: dict[str, tuple[str, ...]] = {
    "t-shirt": ("striped", "logo"), "shirt": ("striped", "checked"), "jacket": ("checked",),
    "coat": ("checked",), "sweater": ("striped", "logo"), "hoodie": ("logo", "striped"),
    "dress": ("striped", "dotted"),
}
LOWER = {
    "male": {"trousers": 0.45, "jeans": 0.4, "shorts": 0.15},
    "female": {"trousers": 0.28, "jeans": 0.3, "shorts": 0.12, "skirt": 0.18, "long skirt": 0.12},
}
SHOES = {
    "male": {"sneakers": 0.5, "leather shoes": 0.25, "boots": 0.17, "sandals": 0.08},
    "female": {"sneakers": 0.42, "leather shoes": 0.15, "boots": 0.18, "sandals": 0.1, "heels": 0.15},
}
BAGS = {"none": 0.38, "backpack": 0.26, "handbag": 0.12, "shoulder bag": 0.14, "suitcase": 0.04,
        "plastic bag": 0.06}
ACCESSORIES = {"glasses": 0.2, "scarf": 0.1, "belt": 0.12, "umbrella": 0.06, "face mask": 0.08}
BELTED_LOWER = ("trousers", "jeans", "shorts", "skirt")
UNBELTED_UPPER = ("coat", "dress")

# Attribute groups: the unit a caption mentions and a near-duplicate changes.
ATTRIBUTE_GROUPS: dict[str, tuple[str, ...]] = {
    "sex": ("sex",), "build": ("build",), "height": ("height",), "skin": ("skin",),
    "hair": ("hair_style", "hair_colour"), "headwear": ("headwear", "headwear_colour"),
    "upper": ("upper",), "upper_colour": ("upper_colour",),
    "upper_pattern": ("upper_pattern", "pattern_colour"), "lower": ("lower",),
    "lower_colour": ("lower_colour",), "shoes": ("shoes", "shoes_colour"),
    "bag": ("bag", "bag_colour"), "accessories": ("accessories",),
}


@dataclass(frozen=True)
class Identity:
    """One synthetic person. Colour fields hold names from `COLOURS` ("" where not applicable)."""

    sex: str  # male | female
    build: str  # thin | medium | heavy
    height: str  # short | average | tall
    skin: str  # key of SKIN_TONES
    hair_style: str  # key of HAIR_STYLES[sex]
    hair_colour: str  # key of HAIR_COLOURS ("" when bald)
    headwear: str  # key of HEADWEAR
    headwear_colour: str  # colour name; "" for none, and for a hood (it takes the upper colour)
    upper: str  # upper garment type
    upper_colour: str  # colour name
    upper_pattern: str  # plain | striped | checked | logo | dotted
    pattern_colour: str  # colour of stripes / checks / logo / dots ("" when plain)
    lower: str  # lower garment type, "none" under a dress
    lower_colour: str  # colour name ("" under a dress)
    shoes: str  # shoe type
    shoes_colour: str  # colour name
    bag: str  # key of BAGS
    bag_colour: str  # colour name ("" when no bag)
    accessories: tuple[tuple[str, str], ...]  # (name, colour) pairs in ACCESSORIES order
    shade_seed: int  # fixes this person's exact shades and proportions; not part of the signature
    inner_colour: str = ""  # colour of the top under an open jacket or coat, seen from the front ("": closed)
    back_print: str = ""  # colour of a print on the back of the upper garment, seen from behind ("": none)

    def signature(self) -> tuple:
        """Every attribute except `shade_seed`: two identities with equal signatures look alike."""
        return astuple(replace(self, shade_seed=0))

    def accessory_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.accessories)


def _pick(rng: np.random.Generator, weights: dict[str, float], exclude: tuple[str, ...] = ()) -> str:
    """Draw one key of `weights` in proportion to its weight, never one of `exclude`."""
    keys = [k for k in weights if k not in exclude]
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _garment_colour(rng: np.random.Generator, exclude: tuple[str, ...] = ()) -> str:
    return _pick(rng, GARMENT_COLOUR_WEIGHTS, exclude)


def _pattern(rng: np.random.Generator, upper: str, colour: str) -> tuple[str, str]:
    """A pattern for `upper` (plain two times in three) and its contrasting colour."""
    if rng.random() < 0.66:
        return "plain", ""
    options = PATTERNS[upper]
    pattern = options[int(rng.integers(len(options)))]
    return pattern, _garment_colour(rng, exclude=(colour,))


def _lower(rng: np.random.Generator, sex: str, upper: str) -> tuple[str, str]:
    if upper == "dress":
        return "none", ""
    lower = _pick(rng, LOWER[sex])
    colour = _pick(rng, JEANS_COLOURS) if lower == "jeans" else _garment_colour(rng)
    return lower, colour


def _accessories(rng: np.random.Generator, upper: str, lower: str) -> tuple[tuple[str, str], ...]:
    chosen = []
    for name, p in ACCESSORIES.items():
        if name == "belt" and (lower not in BELTED_LOWER or upper in UNBELTED_UPPER):
            continue
        if rng.random() < p:
            chosen.append((name, _accessory_colour(rng, name)))
    return tuple(chosen)


def _accessory_colour(rng: np.random.Generator, name: str) -> str:
    if name == "glasses":
        return "black"
    if name == "belt":
        return _pick(rng, {"black": 0.6, "brown": 0.35, "white": 0.05})
    if name == "face mask":
        return _pick(rng, {"white": 0.5, "light blue": 0.3, "black": 0.2})
    return _garment_colour(rng)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one person; deterministic given `rng`'s state."""
    sex = "female" if rng.random() < 0.5 else "male"
    hair_style = _pick(rng, HAIR_STYLES[sex])
    headwear = _pick(rng, HEADWEAR)
    upper = _pick(rng, UPPER[sex])
    if headwear == "hood" and upper not in HOOD_GARMENTS:
        upper = "hoodie"
    upper_colour = _garment_colour(rng)
    pattern, pattern_colour = _pattern(rng, upper, upper_colour)
    lower, lower_colour = _lower(rng, sex, upper)
    bag = _pick(rng, BAGS)
    return Identity(
        sex=sex,
        build=_pick(rng, {"thin": 0.3, "medium": 0.5, "heavy": 0.2}),
        height=_pick(rng, {"short": 0.25, "average": 0.5, "tall": 0.25}),
        skin=_pick(rng, {"light": 0.4, "medium": 0.3, "tan": 0.15, "dark": 0.15}),
        hair_style=hair_style,
        hair_colour="" if hair_style == "bald" else _pick(rng, HAIR_COLOUR_WEIGHTS),
        headwear=headwear,
        headwear_colour="" if headwear in ("none", "hood") else _garment_colour(rng),
        upper=upper, upper_colour=upper_colour, upper_pattern=pattern, pattern_colour=pattern_colour,
        lower=lower, lower_colour=lower_colour,
        shoes=_pick(rng, SHOES[sex]), shoes_colour=_garment_colour(rng),
        bag=bag, bag_colour="" if bag == "none" else _garment_colour(rng),
        accessories=_accessories(rng, upper, lower),
        shade_seed=int(rng.integers(2**31)),
    )


def diff_groups(a: Identity, b: Identity) -> list[str]:
    """Names of the attribute groups (`ATTRIBUTE_GROUPS`) in which `a` and `b` differ."""
    return [group for group, names in ATTRIBUTE_GROUPS.items()
            if any(getattr(a, n) != getattr(b, n) for n in names)]


def _mutate(ident: Identity, group: str, rng: np.random.Generator) -> Identity:
    """Change one attribute group of `ident` to another valid value (may return it unchanged)."""
    if group == "upper_colour":
        return replace(ident, upper_colour=_garment_colour(rng, exclude=(ident.upper_colour, ident.pattern_colour)))
    if group == "lower_colour" and ident.lower != "none":
        return replace(ident, lower_colour=_garment_colour(rng, exclude=(ident.lower_colour,)))
    if group == "shoes":
        return replace(ident, shoes_colour=_garment_colour(rng, exclude=(ident.shoes_colour,)))
    if group == "hair" and ident.hair_style != "bald":
        return replace(ident, hair_colour=_pick(rng, HAIR_COLOUR_WEIGHTS, exclude=(ident.hair_colour,)))
    if group == "bag":
        bag = _pick(rng, BAGS, exclude=(ident.bag,))
        return replace(ident, bag=bag, bag_colour="" if bag == "none" else _garment_colour(rng))
    if group == "headwear" and ident.headwear != "hood":
        hat = _pick(rng, HEADWEAR, exclude=(ident.headwear, "hood"))
        return replace(ident, headwear=hat, headwear_colour="" if hat == "none" else _garment_colour(rng))
    if group == "upper_pattern":
        pattern, colour = _pattern(rng, ident.upper, ident.upper_colour)
        return replace(ident, upper_pattern=pattern, pattern_colour=colour)
    if group == "accessories":
        base = _accessories(rng, ident.upper, ident.lower)
        return replace(ident, accessories=base)
    if group == "lower" and ident.lower in ("trousers", "jeans", "shorts"):
        lower = _pick(rng, {"trousers": 1.0, "jeans": 1.0, "shorts": 0.5}, exclude=(ident.lower,))
        return replace(ident, lower=lower)
    return ident


MUTABLE_GROUPS = ("upper_colour", "lower_colour", "shoes", "hair", "bag", "headwear",
                  "upper_pattern", "accessories", "lower")


def outfit_of_one_image(ident: Identity, rng: np.random.Generator, prob: float) -> Identity:
    """`ident` as one image shows them: each removable item (headwear other than a hood, the bag, each
    accessory) left off with probability `prob`, independently (a hat taken off, a bag put down)."""
    dropped = {}
    if ident.headwear not in ("none", "hood") and rng.random() < prob:
        dropped.update(headwear="none", headwear_colour="")
    if ident.bag != "none" and rng.random() < prob:
        dropped.update(bag="none", bag_colour="")
    kept = tuple(item for item in ident.accessories if rng.random() >= prob)
    return replace(ident, accessories=kept, **dropped)


OPEN_FRONT_UPPER = ("jacket", "coat")  # worn open over a top of another colour, with view_details
BACK_PRINT_UPPER = ("t-shirt", "hoodie", "sweater", "jacket")  # may carry a print on the back


def with_view_details(ident: Identity, rng: np.random.Generator) -> Identity:
    """`ident` with a front and a back that differ (SynthConfig.view_details): half of the jackets and coats
    worn open over a top of another colour, and a quarter of the t-shirts, hoodies, sweaters and jackets with a
    print on the back."""
    inner = ""
    if ident.upper in OPEN_FRONT_UPPER and rng.random() < 0.5:
        inner = _garment_colour(rng, exclude=(ident.upper_colour,))
    back = _garment_colour(rng, exclude=(ident.upper_colour,)) if ident.upper in BACK_PRINT_UPPER \
        and rng.random() < 0.25 else ""
    return replace(ident, inner_colour=inner, back_print=back)


def near_duplicate(source: Identity, rng: np.random.Generator) -> Identity:
    """A copy of `source` that differs in one or two attribute groups (a hard negative).

    The shade seed is kept, so the two people share body proportions and exact shades.
    """
    n_changes = 1 if rng.random() < 0.6 else 2
    for _ in range(100):
        order = rng.permutation(len(MUTABLE_GROUPS))
        ident = source
        for index in order[:n_changes]:
            ident = _mutate(ident, MUTABLE_GROUPS[int(index)], rng)
        if 1 <= len(diff_groups(source, ident)) <= 2:
            return ident
    raise RuntimeError("could not derive a near-duplicate identity")  # unreachable in practice
