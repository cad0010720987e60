"""Caption writer: what an annotator says about one image of an identity.

Each caption names a random subset of the attributes visible in that image's view, in its
own order and words: subject, clauses "wearing ... / carrying ... / has ...", follow-up
sentences with pronouns, sometimes the view, and a little noise (typos, a wrong colour).
With the observation switches (`annotation`), the captions of an image are written from that
image: its colours as seen, what it hides, what stands out in it, and who its annotators are.
Every caption carries the facts it states (`phrases`). `write_alt_text` writes the coarse web
alt-text of the pretraining corpus instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from cpcl.synth import wording as W
from cpcl.synth.annotation import GROUPS, TYPE_MIXUPS, Annotator, ImageAnnotation, habitual
from cpcl.synth.attributes import GARMENT_COLOUR_WEIGHTS, Identity
from cpcl.synth.config import SynthConfig
from cpcl.synth.phrases import KIND, Fact, Look, Phrase, realise, true_colours
from cpcl.synth.scene import Scene

# How likely an annotator is to mention each attribute group (scaled by caption_coverage).
PROMINENCE = {"upper": 1.45, "lower": 1.3, "bag": 1.35, "headwear": 1.25, "hair": 1.0, "shoes": 0.95,
              "umbrella": 1.0, "face mask": 0.9, "scarf": 0.85, "glasses": 0.8, "belt": 0.55,
              "build": 0.45, "height": 0.3}
# Top-to-bottom order most annotators follow.
ORDER = ("build", "height", "hair", "headwear", "glasses", "face mask", "scarf", "upper", "belt", "lower",
         "shoes", "bag", "umbrella")
MIN_WORDS = 14


GENDERED = frozenset({"man", "guy", "male", "gentleman", "boy", "he", "his", "woman", "lady", "female", "girl",
                      "she", "her"})  # words that state the person's sex
TYPE_FIELDS = {"upper": "upper", "lower": "lower", "shoes": "shoes", "bag": "bag", "headwear": "headwear"}
INVENTIONS = ("glasses", "scarf", "bag", "headwear", "umbrella")  # items an annotator may add that are not there


@dataclass(frozen=True)
class Caption:
    text: str  # the caption as written
    mentioned: tuple[str, ...]  # attribute groups it names (keys of PROMINENCE)
    facts: tuple[Fact, ...] = ()  # what it states: (slot, the values its words allow)


def visible_attributes(ident: Identity, view: str, hidden: frozenset[str] = frozenset()) -> list[str]:
    """Attribute groups an annotator can see in `view`, in top-to-bottom order, but those in `hidden`."""
    names = ident.accessory_names()
    present = {
        "build": ident.build != "medium", "height": ident.height != "average",
        "hair": ident.headwear != "hood", "headwear": ident.headwear != "none",
        "glasses": "glasses" in names and view != "back", "face mask": "face mask" in names and view != "back",
        "scarf": "scarf" in names, "upper": True, "belt": "belt" in names, "lower": ident.lower != "none",
        "shoes": True, "bag": ident.bag != "none", "umbrella": "umbrella" in names,
    }
    return [key for key in ORDER if present[key] and key not in hidden]


def _choose_subset(rng: np.random.Generator, visible: list[str], coverage: float,
                   weight: dict[str, float] | None = None) -> list[str]:
    """Each visible group kept with probability coverage x prominence (x `weight`, the image's salience and
    the annotator's habits); at least two non-body groups."""
    prominence = PROMINENCE if weight is None else {k: p * weight[k] for k, p in PROMINENCE.items()}
    keep = [key for key in visible if rng.random() < min(0.97, coverage * prominence[key])]
    content = [k for k in keep if KIND.get(k) != "body"]
    rest = sorted((k for k in visible if k not in keep and KIND.get(k) != "body"), key=lambda k: -prominence[k])
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


def _weights(annotation: ImageAnnotation | None, annotator: Annotator | None) -> dict[str, float] | None:
    """Group -> the image's shared salience times the annotator's own taste (None: neither)."""
    if annotation is None:
        return None
    taste = annotator.prominence if annotator is not None else (1.0,) * len(GROUPS)
    return {group: annotation.prominence[group] * t for group, t in zip(GROUPS, taste)}


def _slips(ident: Identity, keys: list[str], colours: dict[str, str], annotator: Annotator,
           rng: np.random.Generator) -> tuple[Identity, list[str]]:
    """The person as `annotator` describes them: a garment type mixed up now and then (TYPE_MIXUPS), and
    rarely an item that is not there (INVENTIONS, its colour added to `colours`); the groups to name."""
    said = ident
    for key in keys:
        kind = getattr(ident, TYPE_FIELDS[key]) if key in TYPE_FIELDS else ""
        if kind in TYPE_MIXUPS and rng.random() < annotator.type_mixup:
            said = replace(said, **{TYPE_FIELDS[key]: TYPE_MIXUPS[kind]})
    if rng.random() >= annotator.invention:
        return said, keys
    absent = [item for item in INVENTIONS if not _has(ident, item)]
    if not absent:
        return said, keys
    item = absent[int(rng.integers(len(absent)))]
    names = list(GARMENT_COLOUR_WEIGHTS)
    colour = names[int(rng.integers(len(names)))]
    if item == "bag":
        said = replace(said, bag="handbag", bag_colour=colour)
    elif item == "headwear":
        said = replace(said, headwear="cap", headwear_colour=colour)
    else:
        said = replace(said, accessories=(*said.accessories, (item, "black" if item == "glasses" else colour)))
    if item != "glasses":
        colours[item] = colour
    return said, [k for k in ORDER if k in keys or k == item]


def _has(ident: Identity, item: str) -> bool:
    if item == "bag":
        return ident.bag != "none"
    if item == "headwear":
        return ident.headwear != "none"
    return item in ident.accessory_names()


def write_caption(ident: Identity, scene: Scene, rng: np.random.Generator, cfg: SynthConfig,
                  annotation: ImageAnnotation | None = None, writer: int = 0) -> Caption:
    """One annotator's caption of `ident` in `scene`; deterministic given `rng`. With `annotation` (the
    image's, `annotation.annotate_image`), written from the image by its `writer`-th annotator."""
    annotator = annotation.annotators[writer] if annotation is not None else None
    hidden = annotation.hidden if annotation is not None else frozenset()
    visible = visible_attributes(ident, scene.view, hidden)
    keys = _choose_subset(rng, visible, cfg.caption_coverage, _weights(annotation, annotator))
    colours = dict(annotation.colours) if annotation is not None else true_colours(ident)
    said = ident
    if annotator is not None:
        colours = habitual(colours, annotator, annotation.slips)
        said, keys = _slips(ident, keys, colours, annotator, annotation.slips)
    if rng.random() < cfg.wrong_adjective_rate:
        coloured = [k for k in keys if k in colours and k != "hair" and not (k == "bag" and scene.view == "front")]
        if coloured:
            key = coloured[int(rng.integers(len(coloured)))]
            options = W.CONFUSABLE[colours[key]]
            colours[key] = options[int(rng.integers(len(options)))]
    look = Look(scene.view, colours, scene, hidden, cfg.view_details)
    while True:
        phrases = [realise(rng, said, key, look) for key in _order(rng, keys)]
        compose = _compose_shifted if cfg.shifted_look else _compose
        text = compose(rng, said, phrases, scene, cfg)
        spare = [k for k in visible if k not in keys]
        if len(text.split()) >= MIN_WORDS or not spare:
            return Caption(text, tuple(keys), _stated(phrases, text, said))
        spare.sort(key=lambda k: -PROMINENCE[k])
        keys = [k for k in visible if k in keys or k == spare[0]]


def _stated(phrases: list[Phrase], text: str, said: Identity) -> tuple[Fact, ...]:
    """The caption's facts: its phrases', and the person's sex where a word of the text gives it."""
    sex: tuple[Fact, ...] = (("sex", (said.sex,)),) if GENDERED & set(re.findall(r"[a-z]+", text.lower())) else ()
    return sex + tuple(fact for phrase in phrases for fact in phrase.facts)


def write_captions(ident: Identity, scene: Scene, rng: np.random.Generator, cfg: SynthConfig,
                   annotation: ImageAnnotation | None = None) -> list[Caption]:
    """`cfg.captions_per_image` captions, each drawing its own subset, order and words (each by its own
    annotator of `annotation`, when given)."""
    return [write_caption(ident, scene, rng, cfg, annotation, i) for i in range(cfg.captions_per_image)]


def write_alt_text(ident: Identity, scene: Scene, rng: np.random.Generator) -> str:
    """Short web alt-text naming the person and one to three attributes: "man in red jacket with backpack"."""
    visible = [k for k in visible_attributes(ident, scene.view) if KIND.get(k) != "body"]
    weights = np.array([PROMINENCE[k] ** 2 for k in visible])
    count = min(len(visible), int(rng.integers(1, 4)))
    picked = rng.choice(len(visible), size=count, replace=False, p=weights / weights.sum())
    keys = [visible[int(i)] for i in sorted(picked)]
    phrases = [realise(rng, ident, k, Look(scene.view, true_colours(ident), scene)) for k in keys]
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
