"""A contact sheet of SynthPedes: a few identities, a few of their images, captions beside them.

The crops and captions are exactly those `write_synthpedes` would write for the same config.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from cpcl.synth.attributes import diff_groups
from cpcl.synth.config import SynthConfig
from cpcl.synth.writer import SPLIT_CODES, Person, draw_image, plan_benchmark

PAD = 8  # pixels between cells
HEADER = 18  # height of a row's title line
TEXT_W = 170  # width of the caption column beside each crop
LINE_H = 12  # caption line height


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines


def _pick_people(people: list[Person], n_ids: int) -> list[Person]:
    """The first train identities, with one near-duplicate pair among them when there is one."""
    train = [p for p in people if p.split == "train"] or people
    dup = next((p for p in train if p.source is not None), None)
    chosen = [train[dup.source], dup] if dup is not None else []
    chosen += [p for p in train if p not in chosen][: max(0, n_ids - len(chosen))]
    return chosen[:n_ids]


def _crop_and_captions(cfg: SynthConfig, person: Person, k: int) -> tuple[Image.Image, list[str]]:
    """Image `k` of `person` and its captions, as the writer makes them."""
    drawn = draw_image(person.identity, (cfg.seed, SPLIT_CODES[person.split], person.index, k), cfg)
    return drawn.image, [caption.text for caption in drawn.captions]


def render_preview_grid(cfg: SynthConfig, n_ids: int = 4, per_id: int = 3, zoom: int = 2) -> Image.Image:
    """A sheet of `n_ids` rows x `per_id` crops (magnified `zoom` times), each with its captions beside it.

    A near-duplicate pair is shown in the first two rows when the config produces one; a person
    with fewer than `per_id` images shows all of them.
    """
    plan = plan_benchmark(cfg)
    by_index = {(p.split, p.index): p for p in plan}
    people = _pick_people(plan, n_ids)
    crop_w, crop_h = cfg.width * zoom, cfg.height * zoom
    cell_w = crop_w + PAD + TEXT_W
    size = (per_id * (cell_w + PAD) + PAD, len(people) * (crop_h + HEADER + PAD) + PAD)
    sheet = Image.new("RGB", size, "white")
    draw, font = ImageDraw.Draw(sheet), _font(10)
    for row, person in enumerate(people):
        y0 = PAD + row * (crop_h + HEADER + PAD)
        title = f"id {person.person_id} ({person.split})"
        if person.source is not None:
            source = by_index[(person.split, person.source)]
            changed = ", ".join(diff_groups(source.identity, person.identity))
            title += f": near-duplicate of id {source.person_id}, differs in {changed}"
        draw.text((PAD, y0), title, fill=(0, 0, 0), font=_font(12))
        for k in range(min(per_id, person.n_images)):
            crop, captions = _crop_and_captions(cfg, person, k)
            x0 = PAD + k * (cell_w + PAD)
            sheet.paste(crop.resize((crop_w, crop_h), Image.Resampling.NEAREST), (x0, y0 + HEADER))
            lines: list[str] = []
            for i, caption in enumerate(captions):
                lines += _wrap(draw, f"{i + 1}. {caption}", font, TEXT_W) + [""]
            for j, line in enumerate(lines[: crop_h // LINE_H]):
                draw.text((x0 + crop_w + PAD, y0 + HEADER + j * LINE_H), line, fill=(40, 40, 40), font=font)
    return sheet
