"""Drawing a pedestrian: body, garments, hair and face, from an `Identity` and a `Scene`.

Lengths are in head units `u` (a person is about 7.6 heads tall), measured from the top of
the head; `X(k)` and `Y(k)` turn head units into canvas pixels. Side views are drawn facing
right (the caller mirrors the photo for people walking left). Bags, headwear and accessories
are drawn by `cpcl.synth.props` from the key points this module computes.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from cpcl.synth.attributes import COLOURS, HAIR_COLOURS, SKIN_TONES, Identity
from cpcl.synth.scene import Scene

RGB = tuple[int, int, int]
Point = tuple[float, float]
BUILD = {"thin": 0.84, "medium": 1.0, "heavy": 1.22}
HEIGHT = {"short": 0.93, "average": 0.98, "tall": 1.03}
SLEEVE_END = {"t-shirt": 0.45, "dress": 0.25}  # share of the upper arm covered; others: the whole arm
PALETTE_SLOTS = ("skin", "hair", "headwear", "upper", "pattern", "lower", "shoes", "bag",
                 "glasses", "scarf", "belt", "umbrella", "face mask", "inner", "back print")


def shade(colour: RGB, factor: float) -> RGB:
    """`colour` scaled by `factor` (darker below 1), clipped to 0..255."""
    return tuple(int(min(255, max(0, c * factor))) for c in colour)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """Linear blend: `a` at t=0, `b` at t=1."""
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b))


def palette(ident: Identity) -> dict[str, RGB]:
    """Exact RGB of every coloured part of `ident`, jittered by its shade seed.

    Jitter is drawn for every slot in a fixed order, so a near-duplicate (same shade seed)
    keeps the exact shades of the parts it did not change.
    """
    rng = np.random.default_rng(ident.shade_seed)
    jitter = {slot: (rng.normal(1.0, 0.07, size=3), rng.normal(0.0, 6.0, size=3)) for slot in PALETTE_SLOTS}

    def jit(slot: str, base: RGB) -> RGB:
        gain, offset = jitter[slot]
        return tuple(int(v) for v in np.clip(np.asarray(base) * gain + offset, 0, 255))

    named = {"headwear": ident.headwear_colour or ident.upper_colour, "upper": ident.upper_colour,
             "pattern": ident.pattern_colour or "white", "lower": ident.lower_colour or "black",
             "shoes": ident.shoes_colour, "bag": ident.bag_colour or "black"}
    named.update({name: colour for name, colour in ident.accessories})
    named["inner"] = ident.inner_colour or ("white", "grey", "black")[ident.shade_seed % 3]
    named["back print"] = ident.back_print or "white"
    out = {slot: jit(slot, COLOURS[name]) for slot, name in named.items()}
    out["skin"] = jit("skin", SKIN_TONES[ident.skin])
    out["hair"] = jit("hair", HAIR_COLOURS.get(ident.hair_colour, SKIN_TONES[ident.skin]))
    return out


def limb(draw: ImageDraw.ImageDraw, p0: Point, p1: Point, w0: float, w1: float, fill: RGB) -> None:
    """A tapered segment from `p0` (width `w0`) to `p1` (width `w1`) with round ends."""
    (x0, y0), (x1, y1) = p0, p1
    length = math.hypot(x1 - x0, y1 - y0) or 1e-6
    nx, ny = -(y1 - y0) / length / 2, (x1 - x0) / length / 2
    draw.polygon([(x0 + nx * w0, y0 + ny * w0), (x1 + nx * w1, y1 + ny * w1),
                  (x1 - nx * w1, y1 - ny * w1), (x0 - nx * w0, y0 - ny * w0)], fill=fill)
    draw.ellipse([x0 - w0 / 2, y0 - w0 / 2, x0 + w0 / 2, y0 + w0 / 2], fill=fill)
    draw.ellipse([x1 - w1 / 2, y1 - w1 / 2, x1 + w1 / 2, y1 + w1 / 2], fill=fill)


def lerp(p0: Point, p1: Point, t: float) -> Point:
    return (p0[0] + (p1[0] - p0[0]) * t, p0[1] + (p1[1] - p0[1]) * t)


class Figure:
    """Key points of one person in one scene, and the painters for body and clothes."""

    def __init__(self, ident: Identity, scene: Scene, layer: Image.Image, cx: float, feet_y: float,
                 person_h: float):
        self.ident, self.scene, self.layer = ident, scene, layer
        self.draw = ImageDraw.Draw(layer)
        self.view = "side" if scene.side else scene.view
        self.colours = palette(ident)
        shape = np.random.default_rng(ident.shade_seed + 1).normal(1.0, 0.04, size=2)
        self.b = BUILD[ident.build] * float(shape[0])
        self.u = person_h * HEIGHT[ident.height] / 7.6
        self.cx, self.top = cx, feet_y - 7.5 * self.u
        female = ident.sex == "female"
        self.head_w = 0.35 if female else 0.37
        self.sw = (0.9 if female else 1.02) * self.b * float(shape[1])  # shoulder half-width
        self.hip_w = (0.78 if female else 0.7) * self.b
        self.waist_w = (0.6 if female else 0.64) * self.b * (1.15 if ident.build == "heavy" else 1.0)
        belted = any(name == "belt" for name in ident.accessory_names())
        self.hem = {"coat": 5.7, "dress": 5.3}.get(ident.upper, 3.35 if belted else 3.85)
        self.hand_side = 1 if self.view != "back" else -1
        self._pose()

    def X(self, k: float) -> float:
        return self.cx + k * self.u

    def Y(self, k: float) -> float:
        return self.top + k * self.u

    def P(self, kx: float, ky: float) -> Point:
        return (self.X(kx), self.Y(ky))

    def _pose(self) -> None:
        """Arm and leg key points: lists of (joint, middle, end), far limb first."""
        s, a = self.scene.stride, self.scene.arm_swing
        if self.view == "side":
            self.legs = [self._side_limb((0.0, 3.85), 1.78, 1.6, -0.3 * s, -0.5 * s),
                         self._side_limb((0.0, 3.85), 1.78, 1.6, 0.3 * s, 0.18 * s)]
            self.arms = [self._side_limb((0.0, 1.5), 1.4, 1.2, 0.45 * a, 0.75 * a + 0.25),
                         self._side_limb((0.0, 1.5), 1.4, 1.2, -0.45 * a, -0.2 * a + 0.25)]
            return
        self.legs, self.arms = [], []
        for side in (-1, 1):
            lift = 0.28 * max(0.0, side * s)
            self.legs.append((self.P(side * 0.3 * self.b, 3.85), self.P(side * 0.28 * self.b, 5.6 - lift / 2),
                              self.P(side * 0.27 * self.b, 7.1 - lift)))
            fore = 0.35 * max(0.0, side * a)
            self.arms.append((self.P(side * (self.sw - 0.14), 1.5), self.P(side * (self.sw + 0.02), 2.85),
                              self.P(side * (self.sw - 0.02), 4.0 - fore)))

    def _side_limb(self, joint: tuple[float, float], l1: float, l2: float, a1: float, a2: float
                   ) -> tuple[Point, Point, Point]:
        """A limb hanging from `joint` (head units) with upper/lower angles in radians from vertical."""
        j = self.P(*joint)
        m = (j[0] + l1 * self.u * math.sin(a1), j[1] + l1 * self.u * math.cos(a1))
        e = (m[0] + l2 * self.u * math.sin(a2), m[1] + l2 * self.u * math.cos(a2))
        return j, m, e

    def wrist(self) -> Point:
        """The wrist of the carrying hand (the near arm in side views)."""
        if self.view == "side":
            return self.arms[1][2]
        return self.arms[0 if self.hand_side < 0 else 1][2]

    def torso_polygon(self, hem: float) -> list[Point]:
        """Outline of the upper garment from the neck to `hem` (head units)."""
        b, sw, ww, hw = self.b, self.sw, self.waist_w, self.hip_w
        flare = hw * (1.0 + 0.09 * max(0.0, hem - 3.85))
        if self.view == "side":
            belly = 0.14 if self.ident.build == "heavy" else 0.0
            bust = 0.08 if self.ident.sex == "female" else 0.0
            pts = [(-0.18, 1.15), (-0.4 * b, 1.38), (-0.44 * b, 2.3), (-0.36 * b, 3.1),
                   (-0.46 * b - 0.05 * (hem - 3.85), hem), (0.46 * b + belly + 0.1 * (hem - 3.85), hem),
                   (0.4 * b + belly, 3.0), (0.44 * b + bust, 2.05), (0.3 * b, 1.4), (0.14, 1.15)]
        else:
            half = [(0.16, 1.15), (sw - 0.14, 1.3), (sw, 1.55), (sw * 0.9, 2.3), (ww, 3.1)]
            if hem > 3.2:
                half.append((hw if hem <= 3.9 else flare, hem))
            else:
                half.append((ww, hem))
            pts = [(-x, y) for x, y in half] + [(x, y) for x, y in reversed(half)]
        return [self.P(x, y) for x, y in pts]

    def paint_body(self) -> None:
        """Legs, lower garment, shoes, upper garment and arms, back to front (no head, no props)."""
        self._legs_skin()
        self._lower_garment()
        self._shoes()
        for arm in self.arms[:1] if self.view == "side" else []:
            self._arm(arm, far=True)
        self._upper_garment()
        arms = self.arms[1:] if self.view == "side" else self.arms
        for arm in arms:
            self._arm(arm, far=False)

    def _legs_skin(self) -> None:
        skin = self.colours["skin"]
        for i, (hip, knee, ankle) in enumerate(self.legs):
            colour = shade(skin, 0.85) if self.view == "side" and i == 0 else skin
            limb(self.draw, hip, knee, 0.5 * self.b * self.u, 0.34 * self.b * self.u, colour)
            limb(self.draw, knee, ankle, 0.34 * self.b * self.u, 0.24 * self.u, colour)

    def _lower_garment(self) -> None:
        lower, u, b = self.ident.lower, self.u, self.b
        if lower == "none":
            return
        colour = self.colours["lower"]
        if self.view == "side":
            pelvis = [(-0.4 * b, 3.1), (0.4 * b, 3.1), (0.46 * b, 4.0), (-0.5 * b, 4.1)]
        else:
            ww, hw = self.waist_w, self.hip_w
            pelvis = [(-ww, 3.1), (ww, 3.1), (hw, 3.85), (0.05, 4.2), (-0.05, 4.2), (-hw, 3.85)]
        self.draw.polygon([self.P(x, y) for x, y in pelvis], fill=colour)
        if lower in ("skirt", "long skirt"):
            end, spread = (5.3, 1.35) if lower == "skirt" else (6.9, 1.5)
            hw = self.hip_w if self.view != "side" else 0.55 * b
            skirt = [self.P(-hw, 3.2), self.P(hw, 3.2), self.P(hw * spread, end), self.P(-hw * spread, end)]
            self.draw.polygon(skirt, fill=colour)
            return
        for i, (hip, knee, ankle) in enumerate(self.legs):
            leg_colour = shade(colour, 0.85) if self.view == "side" and i == 0 else colour
            if lower == "shorts":
                limb(self.draw, hip, lerp(hip, knee, 0.75), 0.54 * b * u, 0.46 * b * u, leg_colour)
                continue
            limb(self.draw, hip, knee, 0.54 * b * u, 0.38 * b * u, leg_colour)
            limb(self.draw, knee, lerp(knee, ankle, 0.97), 0.38 * b * u, 0.3 * u, leg_colour)
            if lower == "jeans":
                seam = shade(leg_colour, 1.25)
                self.draw.line([lerp(hip, knee, 0.2), knee, lerp(knee, ankle, 0.95)], fill=seam, width=1)

    def _shoes(self) -> None:
        kind, colour, u = self.ident.shoes, self.colours["shoes"], self.u
        for i, (_, knee, ankle) in enumerate(self.legs):
            c = shade(colour, 0.85) if self.view == "side" and i == 0 else colour
            x, y = ankle
            if kind == "boots":
                limb(self.draw, lerp(knee, ankle, 0.45), ankle, 0.36 * self.b * u, 0.32 * u, c)
            if self.view == "side":
                box = [x - 0.18 * u, y - 0.14 * u, x + 0.52 * u, y + 0.3 * u]
            else:
                box = [x - 0.22 * u, y - 0.08 * u, x + 0.22 * u, y + 0.3 * u]
            if kind == "sandals":
                self.draw.ellipse(box, fill=self.colours["skin"])
                for t in (0.35, 0.65):
                    yy = box[1] + (box[3] - box[1]) * t
                    self.draw.line([box[0], yy, box[2], yy], fill=c, width=max(1, int(0.07 * u)))
                continue
            if kind == "heels":
                box[1] += 0.08 * u
            self.draw.ellipse(box, fill=c)
            if kind == "sneakers":
                sole = (235, 235, 230) if sum(colour) < 600 else (60, 60, 60)
                self.draw.line([box[0] + 1, box[3] - 0.06 * u, box[2] - 1, box[3] - 0.06 * u], fill=sole,
                               width=max(1, int(0.07 * u)))

    def _arm(self, arm: tuple[Point, Point, Point], far: bool) -> None:
        joint, elbow, wrist = arm
        u, b = self.u, self.b
        skin = self.colours["skin"]
        sleeve = self.colours["upper"]
        if far:
            skin, sleeve = shade(skin, 0.82), shade(sleeve, 0.82)
        limb(self.draw, joint, elbow, 0.32 * b * u, 0.26 * b * u, skin)
        limb(self.draw, elbow, wrist, 0.26 * b * u, 0.2 * u, skin)
        cover = SLEEVE_END.get(self.ident.upper, 2.0)
        mask = Image.new("L", self.layer.size, 0)
        md = ImageDraw.Draw(mask)
        if cover <= 1.0:
            limb(md, joint, lerp(joint, elbow, cover), 0.36 * b * u, 0.32 * b * u, 255)
        else:
            limb(md, joint, elbow, 0.34 * b * u, 0.3 * b * u, 255)
            limb(md, elbow, lerp(elbow, wrist, 0.9), 0.3 * b * u, 0.25 * u, 255)
        self._fill(mask, sleeve, pattern_ok=not far)
        hx, hy = wrist
        r = 0.15 * u
        self.draw.ellipse([hx - r, hy - r, hx + r, hy + r * 1.3], fill=skin)

    def _upper_garment(self) -> None:
        mask = Image.new("L", self.layer.size, 0)
        md = ImageDraw.Draw(mask)
        md.polygon(self.torso_polygon(self.hem), fill=255)
        if self.ident.upper == "dress":
            hw = self.hip_w if self.view != "side" else 0.55 * self.b
            md.polygon([self.P(-self.waist_w, 3.0), self.P(self.waist_w, 3.0), self.P(hw * 1.45, 5.3),
                        self.P(-hw * 1.45, 5.3)], fill=255)
        self._fill(mask, self.colours["upper"], pattern_ok=True)
        self._garment_details()

    def _fill(self, mask: Image.Image, colour: RGB, pattern_ok: bool) -> None:
        """Paint `colour` (and the identity's pattern) through `mask`."""
        cloth = Image.new("RGBA", self.layer.size, colour + (255,))
        pattern = self.ident.upper_pattern
        if pattern_ok and pattern in ("striped", "checked", "dotted"):
            self._pattern(ImageDraw.Draw(cloth), pattern)
        self.layer.paste(cloth, (0, 0), mask)

    def _pattern(self, d: ImageDraw.ImageDraw, pattern: str) -> None:
        w, h = self.layer.size
        ink, u = self.colours["pattern"], self.u
        step = 0.3 * u if pattern == "striped" else 0.36 * u
        width = max(1, round(0.11 * u if pattern == "striped" else 0.06 * u))
        for y in np.arange(self.Y(1.2), h, step):
            if pattern == "dotted":
                for x in np.arange(self.X(-3) + (y // step % 2) * step / 2, w, step):
                    d.ellipse([x - 0.06 * u, y - 0.06 * u, x + 0.06 * u, y + 0.06 * u], fill=ink)
            else:
                d.line([0, y, w, y], fill=ink, width=width)
        if pattern == "checked":
            for x in np.arange(self.X(-3), w, step):
                d.line([x, 0, x, h], fill=ink, width=width)

    def _garment_details(self) -> None:
        upper, d, u = self.ident.upper, self.draw, self.u
        dark = shade(self.colours["upper"], 0.7 if sum(self.colours["upper"]) > 120 else 1.8)
        front = self.view == "front"
        if upper == "shirt" and front:
            collar = mix(self.colours["upper"], (255, 255, 255), 0.4)
            d.polygon([self.P(-0.2, 1.15), self.P(0.0, 1.45), self.P(0.2, 1.15)], fill=collar)
            d.line([self.P(0, 1.45), self.P(0, self.hem)], fill=dark, width=1)
        elif upper in ("jacket", "coat") and front and self.ident.inner_colour:  # worn open over a top
            bottom = min(self.hem, 3.7)
            d.polygon([self.P(-0.3, 1.15), self.P(0.3, 1.15), self.P(0.34, bottom), self.P(-0.34, bottom)],
                      fill=self.colours["inner"])
        elif upper in ("jacket", "coat") and front:
            d.polygon([self.P(-0.22, 1.15), self.P(0.0, 2.0), self.P(0.22, 1.15)], fill=self.colours["inner"])
            d.line([self.P(0, 2.0), self.P(0, self.hem)], fill=dark, width=max(1, int(0.06 * u)))
        elif upper == "hoodie" and self.ident.headwear != "hood":
            if front:
                d.polygon([self.P(-0.4, 2.9), self.P(0.4, 2.9), self.P(0.5, 3.6), self.P(-0.5, 3.6)], fill=dark)
            elif self.view == "back":
                d.chord([self.X(-0.5), self.Y(1.0), self.X(0.5), self.Y(2.1)], 0, 180, fill=dark)
        elif upper == "sweater":
            band = self.hem - 0.18
            d.line([self.P(-self.hip_w, band + 0.08), self.P(self.hip_w, band + 0.08)], fill=dark,
                   width=max(1, int(0.15 * u)))
        if self.ident.upper_pattern == "logo" and front:
            self._logo()
        if self.ident.back_print and self.view == "back":
            d.rounded_rectangle([self.X(-0.42), self.Y(1.7), self.X(0.42), self.Y(2.7)], radius=0.12 * u,
                                fill=self.colours["back print"])

    def _logo(self) -> None:
        x, y, r = self.X(0.0), self.Y(2.05), 0.26 * self.u
        ink, kind = self.colours["pattern"], self.ident.shade_seed % 4
        if kind == 0:
            self.draw.ellipse([x - r, y - r, x + r, y + r], fill=ink)
        elif kind == 1:
            self.draw.rectangle([x - r * 1.3, y - r * 0.8, x + r * 1.3, y + r * 0.8], fill=ink)
        elif kind == 2:
            self.draw.polygon([(x, y - r * 1.2), (x + r * 1.2, y + r), (x - r * 1.2, y + r)], fill=ink)
        else:
            for k in (-1, 0, 1):
                yy = y + k * r * 0.6
                self.draw.line([x - r * 1.4, yy, x + r * 1.4, yy], fill=ink, width=max(1, int(r * 0.35)))

    def head_box(self) -> list[float]:
        hw = self.head_w * (1.12 if self.view == "side" else 1.0)
        return [self.X(-hw), self.Y(0.0), self.X(hw), self.Y(1.0)]

    def paint_head(self) -> None:
        """Neck, head and (front and side views) the face."""
        skin, u = self.colours["skin"], self.u
        limb(self.draw, self.P(0, 0.85), self.P(0, 1.25), 0.3 * u, 0.32 * u, shade(skin, 0.9))
        self.draw.ellipse(self.head_box(), fill=skin)
        if self.view == "front":
            for side in (-1, 1):
                ex, ey = self.X(side * 0.13), self.Y(0.5)
                self.draw.ellipse([ex - 0.04 * u, ey - 0.035 * u, ex + 0.04 * u, ey + 0.035 * u], fill=(35, 25, 20))
            self.draw.line([self.P(-0.08, 0.78), self.P(0.08, 0.78)], fill=shade(skin, 0.7), width=1)
        elif self.view == "side":
            self.draw.polygon([self.P(0.36, 0.45), self.P(0.48, 0.62), self.P(0.36, 0.66)], fill=skin)
            ex, ey = self.X(0.25), self.Y(0.5)
            self.draw.ellipse([ex - 0.04 * u, ey - 0.035 * u, ex + 0.04 * u, ey + 0.035 * u], fill=(35, 25, 20))
