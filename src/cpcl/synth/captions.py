"""Caption writer: what an annotator says about one image of an identity.

Each caption names a random subset of the attributes visible in that image's view, in its
own order and words: subject, clauses "wearing ... / carrying ... / has ...", follow-up
sentences with pronouns, sometimes the view, and a little noise (typos, a wrong colour).
`write_alt_text` writes the coarse web alt-text of the pretraining corpus instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpcl.synth.attributes import Identity
from cpcl.synth.config import SynthConfig
from cpcl.synth.scene import Scene
from cpcl.synth import wording as W

# How likely an annotator is to mention each attribute group (scaled by caption_coverage).
PROMINENCE = {"upper": 1.45, "lower": 1.3, "bag": 1.35, "headwear": 1.25, "hair": 1.0, "shoes": 0.95,
              "umbrella": 1.0, "face mask": 0.9, "scarf": 0.85, "glasses": 0.8, "belt": 0.55,
              "build": 0.45, "height": 0.3}
# Top-to-bottom order most annotators follow.
ORDER = ("build", "height", "hair", "headwear", "glasses", "face mask", "scarf", "upper", "belt", "lower",
         "shoes", "bag", "umbrella")
KIND = {"build": "body", "height": "body", "hair": "hair", "bag": "carry", "umbrella": "carry"}
MIN_WORDS = 14


@dataclass(frozen=True)
class Caption:
    text: str  # the caption as written
    mentioned: tuple[str, ...]  # attribute groups it names (keys of PROMINENCE)


@dataclass(frozen=True)
class Phrase:
    key: str  # attribute group
    kind: str  # wear | carry | hair | body
    text: str  # noun phrase with article ("a red t-shirt"), or an adjective for body
    noun: str  # head noun, for "his jeans are blue" sentences ("" when not applicable)
    colour: str  # colour word of that sentence ("" when not applicable)


def visible_attributes(ident: Identity, view: str) -> list[str]:
    """Attribute groups an annotator can see in `view`, in top-to-bottom order."""
    names = ident.accessory_names()
    present = {
        "build": ident.build != "medium", "height": ident.height != "average",
        "hair": ident.headwear != "hood", "headwear": ident.headwear != "none",
        "glasses": "glasses" in names and view != "back", "face mask": "face mask" in names and view != "back",
        "scarf": "scarf" in names, "upper": True, "belt": "belt" in names, "lower": ident.lower != "none",
        "shoes": True, "bag": ident.bag != "none", "umbrella": "umbrella" in names,
    }
    return [key for key in ORDER if present[key]]


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
    return Phrase(key, kind, text, word if colour_text else "", colour_text)


def _upper(rng: np.random.Generator, ident: Identity, colour: str, view: str) -> Phrase:
    """The upper garment, its pattern named sometimes (a logo only when seen from the front)."""
    base = _np(rng, colour, ident.upper, "upper")
    pattern, ink = ident.upper_pattern, W.colour_word(rng, ident.pattern_colour) if ident.pattern_colour else ""
    if pattern == "plain" or (pattern == "logo" and view != "front") or rng.random() < 0.3:
        return base
    word, colour_text = base.noun or ident.upper, base.colour
    if pattern == "logo":
        tails = ("with a logo on the front", f"with a {ink} logo", f"with a {ink} print on the chest")
        tail = W.choose_word(rng, tails)
        return Phrase("upper", "wear", f"{W.article(colour_text + ' ' + word)} {tail}", word, colour_text)
    adjective = W.choose_word(rng, W.PATTERN_ADJECTIVES[pattern])
    if rng.random() < 0.5:
        text = W.article(f"{colour_text} and {ink} {adjective} {word}")
    else:
        marks = {"striped": "stripes", "checked": "checks", "dotted": "dots"}[pattern]
        text = f"{W.article(colour_text + ' ' + word)} with {ink} {marks}"
    return Phrase("upper", "wear", text, word, colour_text)


def _hair(rng: np.random.Generator, ident: Identity) -> Phrase:
    if ident.hair_style == "bald":
        return Phrase("hair", "hair", W.choose_word(rng, ("a bald head", "a shaved head")), "", "")
    colour = W.choose_word(rng, W.HAIR_COLOUR_WORDS[ident.hair_colour])
    length = W.choose_word(rng, W.HAIR_LENGTHS[ident.hair_style])
    if ident.hair_style == "ponytail":
        text = f"{colour} hair in a ponytail" if rng.random() < 0.7 else "a ponytail"
    elif ident.hair_style == "bun":
        tie = W.choose_word(rng, ("in a bun", "tied up in a bun"))
        text = f"{colour} hair {tie}" if rng.random() < 0.7 else "a bun"
    else:
        options = (f"{length} {colour} hair", f"{colour} {length} hair", f"{length} hair", f"{colour} hair")
        text = W.choose_word(rng, options)
    return Phrase("hair", "hair", text, "hair", colour)


def realise(rng: np.random.Generator, ident: Identity, key: str, view: str, colours: dict[str, str],
            scene: Scene | None = None) -> Phrase:
    """Words for one attribute group; `colours` maps groups to the colour to name (maybe a wrong one)."""
    poss = W.PRONOUNS[ident.sex][1]
    if key in ("build", "height"):
        return Phrase(key, "body", W.choose_word(rng, W.BUILD_WORDS[getattr(ident, key)]), "", "")
    if key == "hair":
        return _hair(rng, ident)
    if key == "upper":
        return _upper(rng, ident, colours["upper"], view)
    if key == "headwear" and ident.headwear == "hood":
        hood = (f"a hood over {poss} head", f"a {W.colour_word(rng, colours['upper'])} hood")
        return Phrase(key, "wear", W.choose_word(rng, hood), "", "")
    if key == "bag" and ident.bag == "backpack" and view == "front":
        return _np(rng, "", "backpack", key)
    if key == "umbrella" and scene is not None and rng.random() < 0.5:
        state = "an open" if scene.umbrella_open else "a closed"
        return Phrase(key, "carry", f"{state} {W.colour_word(rng, colours[key])} umbrella", "umbrella", "")
    types = {"headwear": ident.headwear, "lower": ident.lower, "shoes": ident.shoes, "bag": ident.bag}
    garment = types.get(key, key)
    return _np(rng, colours.get(key, ""), garment, key)


def _true_colours(ident: Identity) -> dict[str, str]:
    colours = {"upper": ident.upper_colour, "lower": ident.lower_colour, "shoes": ident.shoes_colour,
               "bag": ident.bag_colour, "headwear": ident.headwear_colour}
    colours.update({name: colour for name, colour in ident.accessories if name != "glasses"})
    return {k: v for k, v in colours.items() if v}


def _choose_subset(rng: np.random.Generator, visible: list[str], coverage: float) -> list[str]:
    """Each visible group kept with probability coverage x prominence; at least two non-body groups."""
    keep = [key for key in visible if rng.random() < min(0.97, coverage * PROMINENCE[key])]
    content = [k for k in keep if KIND.get(k) != "body"]
    rest = sorted((k for k in visible if k not in keep and KIND.get(k) != "body"), key=lambda k: -PROMINENCE[k])
    while len(content) < 2 and rest:
        keep.append(rest[0])
        content.append(rest.pop(0))
    return [k for k in visible if k in keep]


def _order(rng: np.random.Generator, keys: list[str]) -> list[str]:
    """Mostly top to bottom; sometimes a few neighbours swapped or a bag named first."""
    keys = list(keys)
    if rng.random() < 0.35:
        for _ in range(int(rng.integers(1, 3))):
            i = int(rng.integers(max(1, len(keys) - 1)))
            keys[i:i + 2] = keys[i:i + 2][::-1]
    if "bag" in keys and rng.random() < 0.12:
        keys.remove("bag")
        keys.insert(0, "bag")
    return keys


def _join(rng: np.random.Generator, items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    comma = ", and " if len(items) > 2 and rng.random() < 0.25 else " and "
    return ", ".join(items[:-1]) + comma + items[-1]


def _vp(rng: np.random.Generator, run: list[Phrase], finite: bool, poss: str) -> str:
    """A verb phrase for consecutive phrases of one kind: "wearing a red coat and black boots"."""
    kind, nps = run[0].kind, _join(rng, [p.text for p in run])
    if kind == "hair":
        return ("has " if finite else "with ") + nps
    if kind == "wear":
        verbs = (("is wearing", "wears", "has on", "is dressed in") if finite
                 else ("wearing", "wearing", "dressed in", "in"))
        return f"{W.choose_word(rng, verbs)} {nps}"
    if len(run) == 1 and run[0].key == "bag" and "backpack" in run[0].text and rng.random() < 0.4:
        return f"{'has' if finite else 'with'} {nps} on {poss} back"
    verbs = ("is carrying", "carries", "has", "is holding") if finite else ("carrying", "with", "holding")
    return f"{W.choose_word(rng, verbs)} {nps}"


def _clause(rng: np.random.Generator, chunk: list[Phrase], finite: bool, poss: str) -> str:
    runs: list[list[Phrase]] = []
    for phrase in chunk:
        if runs and runs[-1][0].kind == phrase.kind:
            runs[-1].append(phrase)
        else:
            runs.append([phrase])
    vps = [_vp(rng, run, finite, poss) for run in runs]
    return _join(rng, vps)


def _chunks(rng: np.random.Generator, phrases: list[Phrase]) -> list[list[Phrase]]:
    out, i = [], 0
    while i < len(phrases):
        size = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))
        out.append(phrases[i:i + size])
        i += size
    return out


def _opening(rng: np.random.Generator, subject: str, chunk: list[Phrase], he: str, poss: str,
             bare_noun: bool) -> str:
    """The first sentence: the subject and the first chunk of attributes ("A man wearing ...")."""
    frame = int(rng.choice(6, p=[0.34, 0.22, 0.14, 0.1, 0.1, 0.1]))
    if frame == 5 and not bare_noun:
        frame = 0
    if frame == 0:
        return f"{W.article(subject)} {_clause(rng, chunk, False, poss)}"
    if frame == 1:
        return f"The {subject} {_clause(rng, chunk, True, poss)}"
    if frame == 2:
        return f"This {subject} {_clause(rng, chunk, True, poss)}"
    if frame == 3:
        return f"There is {W.article(subject)} {_clause(rng, chunk, False, poss)}"
    if frame == 4:
        return f"{W.article(subject)} who {_clause(rng, chunk, True, poss)}"
    return f"{he} {_clause(rng, chunk, True, poss)}"


def _follow_up(rng: np.random.Generator, chunk: list[Phrase], he: str, poss: str) -> str:
    single = chunk[0]
    if len(chunk) == 1 and single.noun and single.colour and rng.random() < 0.35:
        verb = "are" if single.noun in W.PLURAL_GARMENTS else "is"
        return f"{poss} {single.noun} {verb} {single.colour}"
    clause = _clause(rng, chunk, True, poss)
    if clause.startswith("is ") and rng.random() < 0.25:
        return f"{he} is also {clause[3:]}"
    return f"{he} {clause}"


def _noise(rng: np.random.Generator, text: str, typo_rate: float) -> str:
    words = text.split(" ")
    return " ".join(W.typo(rng, w) if rng.random() < typo_rate else w for w in words)


def _compose(rng: np.random.Generator, ident: Identity, phrases: list[Phrase], scene: Scene,
             cfg: SynthConfig) -> str:
    """Subject, sentences, optional view, capitals, periods and typos around `phrases` (in order)."""
    he, poss = W.PRONOUNS[ident.sex]
    noun = W.choose_word(rng, W.NOUNS[ident.sex])
    body = [p.text for p in phrases if p.kind == "body"]
    rest = [p for p in phrases if p.kind != "body"]
    subject = " ".join(body + [noun])
    if rest and rest[0].kind == "hair" and rng.random() < 0.35:
        subject = f"{subject} with {rest.pop(0).text}"
    chunks = _chunks(rng, rest) or [[]]
    bare = subject == noun
    sentences = [_opening(rng, subject, chunks[0], he, poss, bare) if chunks[0] else W.article(subject)]
    sentences += [_follow_up(rng, chunk, he, poss) for chunk in chunks[1:]]
    if rng.random() < cfg.view_mention_rate:
        view = W.choose_word(rng, W.VIEW_PHRASES[scene.view])
        where = int(rng.integers(3))
        if where == 0:
            sentences[0] += f", {view}"
        elif where == 1:
            sentences.append(f"{he} is {view}")
        else:
            sentences[0] = f"{view[0].upper()}{view[1:]}, {sentences[0][0].lower()}{sentences[0][1:]}"
    text = ". ".join(s[0].upper() + s[1:] for s in sentences) + ("." if rng.random() > 0.05 else "")
    text = _noise(rng, text, cfg.typo_rate)
    return text[0].lower() + text[1:] if rng.random() < 0.05 else text


def _compose_shifted(rng: np.random.Generator, ident: Identity, phrases: list[Phrase], scene: Scene,
                     cfg: SynthConfig) -> str:
    """The "shifted" style's annotators: their own frames (a colon list, "This image shows ...", one
    long sentence), nouns, verbs and words (`wording.shift_words`) around the same `phrases`."""
    he, _ = W.PRONOUNS[ident.sex]
    subject = " ".join([p.text for p in phrases if p.kind == "body"] + [W.choose_word(rng, W.SHIFTED_NOUNS[ident.sex])])
    rest = [Phrase(p.key, p.kind, W.shift_words(p.text), p.noun, p.colour) for p in phrases if p.kind != "body"]
    view = W.choose_word(rng, W.SHIFTED_VIEWS[scene.view]) if rng.random() < cfg.view_mention_rate else ""
    frame = int(rng.choice(3, p=[0.35, 0.35, 0.3]))
    if frame == 0:
        text = f"{subject}: " + ", ".join(_strip_article(p.text) for p in rest) + (f"; {view}" if view else "")
    elif frame == 1:
        sentences = [f"this image shows {W.article(subject)}" + (f", {view}" if view else "")]
        for kind in dict.fromkeys(p.kind for p in rest):
            verb = W.choose_word(rng, W.SHIFTED_VERBS[kind])
            sentences.append(f"{he} {verb} {_join(rng, [p.text for p in rest if p.kind == kind])}")
        text = ". ".join(s[0].upper() + s[1:] for s in sentences)
    else:
        wear = [p.text for p in rest if p.kind == "wear"]
        other = [p.text for p in rest if p.kind != "wear"]
        text = W.article(subject) + (f" {W.choose_word(rng, ('clad in', 'in', 'dressed in'))} {_join(rng, wear)}"
                                     if wear else "")
        text += (f"{',' if wear else ''} with {_join(rng, other)}" if other else "") + (f", {view}" if view else "")
    return _noise(rng, text[0].upper() + text[1:] + ".", cfg.typo_rate)


def write_caption(ident: Identity, scene: Scene, rng: np.random.Generator, cfg: SynthConfig) -> Caption:
    """One annotator's caption of `ident` in `scene`; deterministic given `rng`."""
    visible = visible_attributes(ident, scene.view)
    keys = _choose_subset(rng, visible, cfg.caption_coverage)
    colours = _true_colours(ident)
    if rng.random() < cfg.wrong_adjective_rate:
        coloured = [k for k in keys if k in colours and not (k == "bag" and scene.view == "front")]
        if coloured:
            key = coloured[int(rng.integers(len(coloured)))]
            options = W.CONFUSABLE[colours[key]]
            colours[key] = options[int(rng.integers(len(options)))]
    while True:
        phrases = [realise(rng, ident, key, scene.view, colours, scene) for key in _order(rng, keys)]
        compose = _compose_shifted if cfg.style == "shifted" else _compose
        text = compose(rng, ident, phrases, scene, cfg)
        spare = [k for k in visible if k not in keys]
        if len(text.split()) >= MIN_WORDS or not spare:
            return Caption(text, tuple(keys))
        spare.sort(key=lambda k: -PROMINENCE[k])
        keys = [k for k in visible if k in keys or k == spare[0]]


def write_captions(ident: Identity, scene: Scene, rng: np.random.Generator, cfg: SynthConfig) -> list[str]:
    """`cfg.captions_per_image` captions, each drawing its own subset, order and words."""
    return [write_caption(ident, scene, rng, cfg).text for _ in range(cfg.captions_per_image)]


def write_alt_text(ident: Identity, scene: Scene, rng: np.random.Generator) -> str:
    """Short web alt-text naming the person and one to three attributes: "man in red jacket with backpack"."""
    visible = [k for k in visible_attributes(ident, scene.view) if KIND.get(k) != "body"]
    weights = np.array([PROMINENCE[k] ** 2 for k in visible])
    count = min(len(visible), int(rng.integers(1, 4)))
    picked = rng.choice(len(visible), size=count, replace=False, p=weights / weights.sum())
    keys = [visible[int(i)] for i in sorted(picked)]
    phrases = [realise(rng, ident, k, scene.view, _true_colours(ident), scene) for k in keys]
    bare = rng.random() < 0.6
    texts = [_strip_article(p.text) if bare else p.text for p in phrases]
    noun = W.choose_word(rng, ("man", "guy", "person", "pedestrian") if ident.sex == "male" else
                         ("woman", "girl", "lady", "person", "pedestrian"))
    tag = W.choose_word(rng, W.SCENE_TAGS[scene.background])
    place = W.choose_word(rng, W.SCENE_PLACES[scene.background])
    wear = [t for t, p in zip(texts, phrases) if p.kind == "wear"]
    other = [t for t, p in zip(texts, phrases) if p.kind != "wear"]
    templates = [
        f"{noun} in {_join(rng, wear)}" + (f" with {_join(rng, other)}" if other else "") if wear else "",
        f"photo of {W.article(noun)} wearing {_join(rng, texts)}, {tag}" if not other else "",
        f"{W.article(noun)} with {_join(rng, texts)}",
        f"{noun}, " + ", ".join(texts) + f", {tag}",
        f"{noun} walking {place} with {_join(rng, texts)}",
    ]
    templates = [t for t in templates if t]
    return templates[int(rng.integers(len(templates)))]


def _strip_article(text: str) -> str:
    for head in ("a ", "an "):
        if text.startswith(head):
            return text[len(head):]
    return text
