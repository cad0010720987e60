"""Words annotators use for SynthPedes attribute values: synonyms, nouns, confusable colours.

Each tuple lists the realisations of one value, most common first; `choose_word` favours the
front of the tuple, as people do.
"""

from __future__ import annotations

import re

import numpy as np

COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black", "black", "dark"), "white": ("white",), "grey": ("grey", "gray", "dark grey"),
    "red": ("red", "bright red"), "dark red": ("dark red", "maroon", "burgundy", "wine red"),
    "blue": ("blue", "royal blue"), "dark blue": ("dark blue", "navy", "navy blue"),
    "light blue": ("light blue", "pale blue", "sky blue"), "green": ("green",),
    "yellow": ("yellow",), "orange": ("orange",), "pink": ("pink", "light pink"),
    "purple": ("purple", "violet"), "brown": ("brown",), "beige": ("beige", "tan", "khaki", "cream"),
}
HAIR_COLOUR_WORDS = {"black": ("black", "dark"), "brown": ("brown",), "blonde": ("blonde", "blond", "light"),
                     "grey": ("grey", "gray", "white"), "red": ("red", "auburn", "ginger")}
# Colours an annotator plausibly names instead of the true one (the caption noise).
CONFUSABLE: dict[str, tuple[str, ...]] = {
    "black": ("dark blue", "grey"), "white": ("grey", "beige"), "grey": ("white", "black", "beige"),
    "red": ("dark red", "orange", "pink"), "dark red": ("red", "brown", "purple"),
    "blue": ("dark blue", "light blue", "purple"), "dark blue": ("black", "blue"),
    "light blue": ("blue", "white", "grey"), "green": ("grey", "blue"), "yellow": ("orange", "beige"),
    "orange": ("red", "yellow"), "pink": ("red", "purple", "white"), "purple": ("dark blue", "pink"),
    "brown": ("dark red", "black", "beige"), "beige": ("white", "brown", "yellow"),
}
GARMENT_WORDS: dict[str, tuple[str, ...]] = {
    "t-shirt": ("t-shirt", "shirt", "tee shirt", "short sleeved shirt", "top"),
    "shirt": ("shirt", "long sleeved shirt", "button up shirt", "button down shirt"),
    "jacket": ("jacket", "jacket", "zip up jacket", "coat"),
    "coat": ("coat", "long coat", "overcoat", "trench coat"),
    "sweater": ("sweater", "jumper", "pullover", "sweatshirt"),
    "hoodie": ("hoodie", "hooded sweatshirt", "hooded jacket"),
    "dress": ("dress", "knee length dress", "dress"),
    "trousers": ("pants", "trousers", "slacks", "long pants"),
    "jeans": ("jeans", "jeans", "denim jeans", "jean pants"),
    "shorts": ("shorts", "short pants", "knee length shorts"),
    "skirt": ("skirt", "short skirt", "knee length skirt"),
    "long skirt": ("long skirt", "maxi skirt", "ankle length skirt"),
    "sneakers": ("sneakers", "shoes", "tennis shoes", "trainers", "running shoes"),
    "leather shoes": ("shoes", "leather shoes", "dress shoes"),
    "boots": ("boots", "ankle boots", "boots"),
    "sandals": ("sandals", "open toed sandals"),
    "heels": ("heels", "high heels", "high heeled shoes"),
    "cap": ("cap", "baseball cap", "ball cap"),
    "hat": ("hat", "wide brimmed hat", "sun hat"),
    "beanie": ("beanie", "knit hat", "wool hat", "knit cap"),
    "backpack": ("backpack", "backpack", "rucksack", "book bag"),
    "handbag": ("handbag", "purse", "hand bag", "bag"),
    "shoulder bag": ("shoulder bag", "bag", "messenger bag", "cross body bag"),
    "suitcase": ("suitcase", "rolling suitcase", "luggage bag"),
    "plastic bag": ("plastic bag", "shopping bag", "bag"),
    "glasses": ("glasses", "eyeglasses", "spectacles"),
    "face mask": ("face mask", "mask", "surgical mask"),
    "scarf": ("scarf",), "belt": ("belt",), "umbrella": ("umbrella",),
}
PLURAL_GARMENTS = frozenset({"pants", "trousers", "slacks", "long pants", "jeans", "denim jeans", "jean pants",
                             "shorts", "short pants", "knee length shorts", "sneakers", "shoes", "tennis shoes",
                             "trainers", "running shoes", "leather shoes", "dress shoes", "boots", "ankle boots",
                             "sandals", "open toed sandals", "heels", "high heels", "high heeled shoes", "glasses",
                             "eyeglasses", "spectacles"})
PATTERN_ADJECTIVES = {"striped": ("striped", "stripy"), "checked": ("plaid", "checkered", "checked"),
                      "dotted": ("polka dot", "spotted")}
HAIR_LENGTHS = {"short": ("short",), "buzz": ("very short", "buzzed", "cropped"),
                "medium": ("medium length", "shoulder length", "chin length"), "long": ("long",),
                "ponytail": ("long",), "bun": ("long",)}
BUILD_WORDS = {"thin": ("thin", "slim", "skinny", "slender"), "heavy": ("heavy", "heavyset", "chubby", "large"),
               "tall": ("tall",), "short": ("short",)}
NOUNS = {"male": ("man", "man", "man", "guy", "young man", "male", "person", "gentleman", "boy"),
         "female": ("woman", "woman", "woman", "lady", "young woman", "female", "person", "girl")}
PRONOUNS = {"male": ("he", "his"), "female": ("she", "her")}
VIEW_PHRASES = {
    "front": ("facing the camera", "walking towards the camera", "seen from the front"),
    "back": ("seen from behind", "walking away from the camera", "facing away from the camera"),
    "left": ("walking to the left", "seen from the side", "shown in profile"),
    "right": ("walking to the right", "seen from the side", "shown in profile"),
}
SCENE_TAGS = {"street": ("street", "city street", "road"), "pavement": ("sidewalk", "pavement", "plaza"),
              "grass": ("park", "lawn", "garden"), "indoor": ("indoors", "hallway", "lobby"),
              "shopfront": ("shop window", "storefront", "mall")}
SCENE_PLACES = {"street": ("on the street", "on a city street", "by the road"),
                "pavement": ("on the sidewalk", "on the pavement", "across a plaza"),
                "grass": ("in the park", "across a lawn", "in a garden"),
                "indoor": ("indoors", "in a hallway", "through a lobby"),
                "shopfront": ("past a shop window", "outside a store", "in a mall")}


def choose_index(rng: np.random.Generator, n: int) -> int:
    """An index of `n` options, the first ones more likely (weights 1, 1/2, 1/3, ...)."""
    weights = 1.0 / np.arange(1, n + 1)
    return int(rng.choice(n, p=weights / weights.sum()))


def choose_word(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    """One of `options`, the first ones more likely (`choose_index`)."""
    return options[choose_index(rng, len(options))]


def article(phrase: str) -> str:
    """`phrase` with "a" or "an" in front."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def colour_word(rng: np.random.Generator, colour: str) -> str:
    return choose_word(rng, COLOUR_WORDS[colour])


def typo(rng: np.random.Generator, word: str) -> str:
    """`word` with one letter swapped, dropped or doubled (words shorter than 4 letters kept)."""
    if len(word) < 4 or not word.isalpha():
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


# The "shifted" style's annotation team (SynthConfig.style): its own nouns, verbs, view phrases,
# and the words it says instead of the standard team's (whole words, longest first).
SHIFTED_NOUNS = {"male": ("male pedestrian", "pedestrian", "gentleman", "male", "adult male", "young guy"),
                 "female": ("female pedestrian", "pedestrian", "lady", "female", "adult female", "young lady")}
SHIFTED_VERBS = {"wear": ("has on", "is in", "is clad in", "sports"), "carry": ("has got", "is toting", "carries"),
                 "hair": ("has got", "sports", "has")}
SHIFTED_VIEWS = {"front": ("facing us", "coming towards us"), "back": ("back to the camera", "going away from us"),
                 "left": ("side-on", "in side view"), "right": ("side-on", "in side view")}
SHIFTED_WORDS = {
    "t-shirt": "tee", "tee shirt": "tee", "short sleeved shirt": "short-sleeve tee", "sneakers": "trainers",
    "tennis shoes": "trainers", "running shoes": "trainers", "long pants": "trousers", "pants": "trousers",
    "slacks": "trousers", "jean pants": "denims", "denim jeans": "denims", "jeans": "denims",
    "backpack": "rucksack", "book bag": "rucksack", "handbag": "purse", "hand bag": "purse",
    "hoodie": "hooded top", "hooded sweatshirt": "hooded top", "sweater": "jumper", "pullover": "jumper",
    "baseball cap": "peaked cap", "ball cap": "peaked cap", "beanie": "woolly hat", "knit hat": "woolly hat",
    "knit cap": "woolly hat", "glasses": "specs", "eyeglasses": "specs", "spectacles": "specs",
    "grey": "gray", "dark blue": "navy", "navy blue": "navy", "beige": "khaki", "tan": "khaki",
    "purple": "violet", "shoes": "footwear", "trench coat": "mac", "overcoat": "long coat",
}
_SHIFTED_PATTERN = re.compile(r"\b(" + "|".join(map(re.escape, sorted(SHIFTED_WORDS, key=len, reverse=True)))
                               + r")\b")


def shift_words(text: str) -> str:
    """`text` in the shifted team's words (SHIFTED_WORDS, whole words, longest match first)."""
    return _SHIFTED_PATTERN.sub(lambda m: SHIFTED_WORDS[m.group(1)], text)
