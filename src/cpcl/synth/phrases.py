"""The words for one attribute group of a caption, and the facts those words state.

`realise` turns a caption group ("upper", "bag", "hair", ...) into a `Phrase`: its text ("a red t-shirt
with white stripes") and its facts, (slot, values the words allow) pairs such as ("upper",
("t-shirt",)), ("upper_colour", ("red",)): a word that several types share ("shoes", "bag", "coat")
allows each of them. The facts are what `cpcl synth --stats` matches images against. Recording them
draws nothing, so the words are those the writer drew before facts existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np

from cpcl.synth import wording as W
from cpcl.synth.attributes import BAGS, HEADWEAR, LOWER, SHOES, UPPER, Identity
from cpcl.synth.scene import Scene

KIND = {"build": "body", "height": "body", "hair": "hair", "bag": "carry", "umbrella": "carry"}
TYPE_SLOTS = ("upper", "lower", "shoes", "bag", "headwear")  # groups whose garment word names a type
Fact = tuple[str, tuple[str, ...]]  # (slot, the values the words allow)


@dataclass(frozen=True)
class Phrase:
    key: str  # attribute group
    kind: str  # wear | carry | hair | body
    text: str  # noun phrase with article ("a red t-shirt"), or an adjective for body
    noun: str  # head noun, for "his jeans are blue" sentences ("" when not applicable)
    colour: str  # colour word of that sentence ("" when not applicable)
    facts: tuple[Fact, ...] = ()  # what the words state


@dataclass(frozen=True)
class Look:
    """What an annotator sees of one image: its view, the colour to name for each coloured group, the
    groups it hides, and whether fronts and backs differ (SynthConfig.view_details)."""

    view: str  # front | back | left | right
    colours: dict[str, str]  # group -> colour name to say (maybe a wrong one)
    scene: Scene | None = None  # the photo (an umbrella open or closed)
    hidden: frozenset[str] = field(default_factory=frozenset)  # groups (and "pattern") the image hides
    view_details: bool = False  # jackets open over a top, back prints, ponytails seen from behind


@cache
def _types_by_word(slot: str) -> dict[str, tuple[str, ...]]:
    """Garment word -> the types of `slot` it can name ("shoes": sneakers and leather shoes)."""
    types = {"upper": set(UPPER["male"]) | set(UPPER["female"]), "lower": set(LOWER["male"]) | set(LOWER["female"]),
             "shoes": set(SHOES["male"]) | set(SHOES["female"]), "bag": set(BAGS) - {"none"},
             "headwear": set(HEADWEAR) - {"none", "hood"}}[slot]
    out: dict[str, set[str]] = {}
    for kind in types:
        for word in W.GARMENT_WORDS[kind]:
            out.setdefault(word, set()).add(kind)
    return {word: tuple(sorted(kinds)) for word, kinds in out.items()}


def word_facts(key: str, word: str, colour: str) -> tuple[Fact, ...]:
    """The facts of a garment or item named `word` in colour name `colour` ("" when unnamed)."""
    facts: list[Fact] = [(key, _types_by_word(key)[word]) if key in TYPE_SLOTS else (key, ("yes",))]
    if colour:
        facts.append((f"{key}_colour", (colour,)))
    return tuple(facts)


def _np(rng: np.random.Generator, colour: str, garment: str, key: str) -> Phrase:
    """A coloured garment or item: "a red t-shirt", "blue jeans"."""
    word = W.choose_word(rng, W.GARMENT_WORDS[garment])
    colour_text = W.colour_word(rng, colour) if colour else ""
    plural = word in W.PLURAL_GARMENTS
    if colour_text and rng.random() < 0.08:
        text = f"{word} in {colour_text}" if plural else f"{W.article(word)} in {colour_text}"
    else:
        core = f"{colour_text} {word}".strip()
        text = core if plural else W.article(core)
    kind = KIND.get(key, "wear")
    return Phrase(key, kind, text, word if colour_text else "", colour_text, word_facts(key, word, colour))


def _upper(rng: np.random.Generator, ident: Identity, look: Look) -> Phrase:
    """The upper garment, its pattern named sometimes (a logo only when seen from the front), and with
    view details what only one side shows (the top under an open jacket, a print on the back)."""
    return _with_view_details(rng, _patterned(rng, ident, look), ident, look)


def _patterned(rng: np.random.Generator, ident: Identity, look: Look) -> Phrase:
    """The upper garment in its colour, with its pattern when the annotator names it."""
    base = _np(rng, look.colours["upper"], ident.upper, "upper")
    ink_colour = look.colours.get("pattern", ident.pattern_colour)
    pattern, ink = ident.upper_pattern, W.colour_word(rng, ink_colour) if ink_colour else ""
    if pattern == "plain" or (pattern == "logo" and look.view != "front") or "pattern" in look.hidden \
            or rng.random() < 0.3:
        return base
    word, colour_text = base.noun or ident.upper, base.colour
    inked = base.facts + (("upper_pattern", (pattern,)), ("pattern_colour", (ink_colour,)))
    if pattern == "logo":
        tails = ("with a logo on the front", f"with a {ink} logo", f"with a {ink} print on the chest")
        tail = W.choose_word(rng, tails)
        facts = base.facts + (("upper_pattern", (pattern,)),) if tail == tails[0] else inked
        return Phrase("upper", "wear", f"{W.article(colour_text + ' ' + word)} {tail}", word, colour_text, facts)
    adjective = W.choose_word(rng, W.PATTERN_ADJECTIVES[pattern])
    if rng.random() < 0.5:
        text = W.article(f"{colour_text} and {ink} {adjective} {word}")
    else:
        marks = {"striped": "stripes", "checked": "checks", "dotted": "dots"}[pattern]
        text = f"{W.article(colour_text + ' ' + word)} with {ink} {marks}"
    return Phrase("upper", "wear", text, word, colour_text, inked)


def _with_view_details(rng: np.random.Generator, base: Phrase, ident: Identity, look: Look) -> Phrase:
    """`base` with the top under an open jacket (front) or the print on the back (back), where shown."""
    if not look.view_details:
        return base
    if ident.inner_colour and look.view == "front" and "inner" not in look.hidden and rng.random() < 0.8:
        inner = W.colour_word(rng, look.colours.get("inner", ident.inner_colour))
        top = W.choose_word(rng, ("top", "shirt", "t-shirt"))
        text = W.choose_word(rng, (f"{base.text} over {W.article(inner + ' ' + top)}",
                                   f"{base.text} open over {W.article(inner + ' ' + top)}"))
        facts = base.facts + (("inner_colour", (look.colours.get("inner", ident.inner_colour),)),)
        return replace(base, text=text, facts=facts)
    if ident.back_print and look.view == "back" and "back_print" not in look.hidden and rng.random() < 0.8:
        ink = W.colour_word(rng, look.colours.get("back_print", ident.back_print))
        facts = base.facts + (("back_print", (look.colours.get("back_print", ident.back_print),)),)
        return replace(base, text=f"{base.text} with {W.article(ink)} print on the back", facts=facts)
    return base


def _hair(rng: np.random.Generator, ident: Identity, look: Look) -> Phrase:
    """Hair style and colour; with view details a ponytail or bun seen from the front is hair pulled back."""
    if ident.hair_style == "bald":
        text = W.choose_word(rng, ("a bald head", "a shaved head"))
        return Phrase("hair", "hair", text, "", "", (("hair_style", ("bald",)),))
    named = look.colours.get("hair", ident.hair_colour)
    colour = W.choose_word(rng, W.HAIR_COLOUR_WORDS[named])
    length = W.choose_word(rng, W.HAIR_LENGTHS[ident.hair_style])
    coloured: Fact = ("hair_colour", (named,))
    styled: Fact = ("hair_style", tuple(s for s, words in W.HAIR_LENGTHS.items() if length in words))
    if look.view_details and look.view == "front" and ident.hair_style in ("ponytail", "bun"):
        text = W.choose_word(rng, (f"{colour} hair pulled back", f"{colour} hair tied back"))
        return Phrase("hair", "hair", text, "hair", colour, (coloured,))
    if ident.hair_style in ("ponytail", "bun"):
        style: Fact = ("hair_style", (ident.hair_style,))
        if ident.hair_style == "ponytail":
            plain, tied = "a ponytail", f"{colour} hair in a ponytail"
        else:
            plain, tied = "a bun", f"{colour} hair {W.choose_word(rng, ('in a bun', 'tied up in a bun'))}"
        if rng.random() < 0.7:
            return Phrase("hair", "hair", tied, "hair", colour, (style, coloured))
        return Phrase("hair", "hair", plain, "hair", colour, (style,))
    options = ((f"{length} {colour} hair", (styled, coloured)), (f"{colour} {length} hair", (styled, coloured)),
               (f"{length} hair", (styled,)), (f"{colour} hair", (coloured,)))
    text, facts = options[W.choose_index(rng, len(options))]
    return Phrase("hair", "hair", text, "hair", colour, facts)


def realise(rng: np.random.Generator, ident: Identity, key: str, look: Look) -> Phrase:
    """Words for one attribute group, as `look` says it (colours, view, what is hidden), with their facts."""
    poss = W.PRONOUNS[ident.sex][1]
    colours = look.colours
    if key in ("build", "height"):
        value = getattr(ident, key)
        return Phrase(key, "body", W.choose_word(rng, W.BUILD_WORDS[value]), "", "", ((key, (value,)),))
    if key == "hair":
        return _hair(rng, ident, look)
    if key == "upper":
        return _upper(rng, ident, look)
    if key == "headwear" and ident.headwear == "hood":
        hood = (f"a hood over {poss} head", f"a {W.colour_word(rng, colours['upper'])} hood")
        index = W.choose_index(rng, len(hood))
        facts = (("headwear", ("hood",)),) + ((("upper_colour", (colours["upper"],)),) if index else ())
        return Phrase(key, "wear", hood[index], "", "", facts)
    if key == "bag" and ident.bag == "backpack" and look.view == "front":
        return _np(rng, "", "backpack", key)
    if key == "umbrella" and look.scene is not None and rng.random() < 0.5:
        state = "an open" if look.scene.umbrella_open else "a closed"
        text = f"{state} {W.colour_word(rng, colours[key])} umbrella"
        return Phrase(key, "carry", text, "umbrella", "", word_facts(key, "umbrella", colours[key]))
    types = {"headwear": ident.headwear, "lower": ident.lower, "shoes": ident.shoes, "bag": ident.bag}
    garment = types.get(key, key)
    return _np(rng, colours.get(key, ""), garment, key)


def true_colours(ident: Identity) -> dict[str, str]:
    """Group -> the identity's colour name, for every coloured group it has (glasses are always black)."""
    colours = {"upper": ident.upper_colour, "lower": ident.lower_colour, "shoes": ident.shoes_colour,
               "bag": ident.bag_colour, "headwear": ident.headwear_colour}
    colours.update({name: colour for name, colour in ident.accessories if name != "glasses"})
    return {k: v for k, v in colours.items() if v}
