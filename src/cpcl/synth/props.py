"""Hair, headwear, bags and accessories of a `Figure`, each drawn only where its view shows it.

`render.paint_person` calls the four stages in order: `behind_body` (before the body),
`behind_head` (after the body, before the head), `on_head` and `in_hand`.
"""

from __future__ import annotations

from cpcl.synth.figure import Figure, limb, mix, shade

WHITE = (240, 240, 236)


def behind_body(fig: Figure) -> None:
    """A suitcase trailing behind a person seen from the side."""
    if fig.ident.bag == "suitcase" and fig.view == "side":
        _suitcase(fig, fig.X(-2.1), fig.X(-0.95), fig.arms[0][2])


def behind_head(fig: Figure) -> None:
    """Things between the torso and the head: belt, bags worn on the body, long hair, hood."""
    names = fig.ident.accessory_names()
    if "belt" in names:
        _belt(fig)
    if fig.ident.bag == "backpack":
        _backpack(fig)
    elif fig.ident.bag == "shoulder bag":
        _shoulder_bag(fig)
    hw, d = fig.head_w, fig.draw
    if fig.ident.headwear == "hood" and fig.view != "back":
        left = -hw * (1.75 if fig.view == "side" else 1.45)
        right = hw * (0.9 if fig.view == "side" else 1.45)
        d.ellipse([fig.X(left), fig.Y(-0.16), fig.X(right), fig.Y(1.3)], fill=shade(fig.colours["upper"], 0.8))
    elif fig.ident.hair_style == "long" and fig.view == "front":
        for outer, inner in ((-1.35, -0.55), (0.55, 1.35)):
            d.rounded_rectangle([fig.X(outer * hw), fig.Y(0.25), fig.X(inner * hw), fig.Y(2.1)], radius=0.15 * fig.u,
                                fill=fig.colours["hair"])


def on_head(fig: Figure) -> None:
    """Hair, headwear, glasses, face mask and scarf, after the head is drawn."""
    if fig.ident.headwear != "hood":
        _hair(fig)
    _headwear(fig)
    names = fig.ident.accessory_names()
    if "glasses" in names and fig.view != "back":
        _glasses(fig)
    if "face mask" in names and fig.view != "back":
        _mask(fig)
    if "scarf" in names:
        _scarf(fig)


def in_hand(fig: Figure) -> None:
    """Handbag, plastic bag, suitcase (front and back views) and umbrella."""
    wx, wy = fig.wrist()
    u, d, bag = fig.u, fig.draw, fig.ident.bag
    colour = fig.colours["bag"]
    if bag == "handbag":
        d.arc([wx - 0.22 * u, wy - 0.05 * u, wx + 0.22 * u, wy + 0.6 * u], 180, 360, fill=shade(colour, 0.7),
              width=max(1, int(0.07 * u)))
        d.polygon([(wx - 0.32 * u, wy + 0.3 * u), (wx + 0.32 * u, wy + 0.3 * u), (wx + 0.4 * u, wy + 0.9 * u),
                   (wx - 0.4 * u, wy + 0.9 * u)], fill=colour)
    elif bag == "plastic bag":
        d.ellipse([wx - 0.32 * u, wy + 0.1 * u, wx + 0.32 * u, wy + 1.05 * u], fill=mix(colour, WHITE, 0.45))
    elif bag == "suitcase" and fig.view != "side":
        near = wx + fig.hand_side * 0.12 * u
        far = near + fig.hand_side * 1.05 * u
        _suitcase(fig, min(near, far), max(near, far), (wx, wy))
    if "umbrella" in fig.ident.accessory_names():
        _umbrella(fig, wx, wy)


def _hair(fig: Figure) -> None:
    style, hw, d = fig.ident.hair_style, fig.head_w, fig.draw
    if style == "bald":
        return
    hair = mix(fig.colours["hair"], fig.colours["skin"], 0.35) if style == "buzz" else fig.colours["hair"]
    X, Y = fig.X, fig.Y
    if fig.view == "back":
        d.ellipse([X(-hw * 1.04), Y(-0.04), X(hw * 1.04), Y(0.92 if style != "buzz" else 0.8)], fill=hair)
        shapes = {"medium": [X(-hw * 1.08), Y(0.4), X(hw * 1.08), Y(1.2)],
                  "long": [X(-hw * 1.3), Y(0.4), X(hw * 1.3), Y(2.4)],
                  "ponytail": [X(-0.1), Y(0.6), X(0.1), Y(2.0)]}
        if style in shapes:
            d.rounded_rectangle(shapes[style], radius=0.15 * fig.u, fill=hair)
        elif style == "bun":
            d.ellipse([X(-0.2), Y(0.05), X(0.2), Y(0.45)], fill=shade(hair, 0.85))
        return
    if fig.view == "side":
        d.chord([X(-hw * 1.22), Y(-0.07), X(hw * 1.12), Y(0.8)], 180, 360, fill=hair)
        bottom = {"buzz": 0.7, "short": 0.85, "medium": 1.15, "long": 2.3, "ponytail": 0.8, "bun": 0.8}[style]
        d.polygon([fig.P(-hw * 1.22, 0.33), fig.P(0.02, 0.33), fig.P(-0.08, min(bottom, 0.95)),
                   fig.P(-hw * 1.1, min(bottom, 0.95))], fill=hair)
        if style == "long":
            d.rounded_rectangle([X(-hw * 1.25), Y(0.4), X(-hw * 0.15), Y(2.3)], radius=0.15 * fig.u, fill=hair)
        elif style == "ponytail":
            d.ellipse([X(-hw * 1.75), Y(0.3), X(-hw * 0.9), Y(1.7)], fill=hair)
        elif style == "bun":
            d.ellipse([X(-hw * 1.5), Y(0.0), X(-hw * 0.7), Y(0.5)], fill=hair)
        return
    top = 0.6 if style == "buzz" else 0.78
    d.chord([X(-hw * 1.08), Y(-0.07), X(hw * 1.08), Y(top)], 180, 360, fill=hair)
    sides = {"short": 0.55, "medium": 1.05, "long": 1.15, "bun": 0.5, "ponytail": 0.5}.get(style)
    if sides:
        for outer, inner in ((-1.1, -0.8), (0.8, 1.1)):
            d.rectangle([X(outer * hw), Y(0.28), X(inner * hw), Y(sides)], fill=hair)
    if style == "bun":
        d.ellipse([X(-0.18), Y(-0.3), X(0.18), Y(0.05)], fill=hair)


def _headwear(fig: Figure) -> None:
    kind, hw, d, X, Y = fig.ident.headwear, fig.head_w, fig.draw, fig.X, fig.Y
    if kind == "none":
        return
    colour = fig.colours["headwear"]
    if kind == "cap":
        d.chord([X(-hw * 1.12), Y(-0.1), X(hw * 1.12), Y(0.75)], 180, 360, fill=colour)
        if fig.view == "front":
            d.ellipse([X(-hw * 1.12), Y(0.24), X(hw * 1.12), Y(0.44)], fill=shade(colour, 0.75))
        elif fig.view == "side":
            d.polygon([fig.P(hw * 0.5, 0.24), fig.P(hw * 2.0, 0.3), fig.P(hw * 1.9, 0.4), fig.P(hw * 0.5, 0.36)],
                      fill=shade(colour, 0.75))
    elif kind == "hat":
        d.ellipse([X(-hw * 1.8), Y(0.1), X(hw * 1.8), Y(0.38)], fill=shade(colour, 0.85))
        d.rounded_rectangle([X(-hw * 0.95), Y(-0.34), X(hw * 0.95), Y(0.26)], radius=0.12 * fig.u, fill=colour)
        d.rectangle([X(-hw * 0.95), Y(0.1), X(hw * 0.95), Y(0.2)], fill=shade(colour, 0.55))
    elif kind == "beanie":
        d.chord([X(-hw * 1.12), Y(-0.16), X(hw * 1.12), Y(0.95)], 180, 360, fill=colour)
        d.rectangle([X(-hw * 1.12), Y(0.28), X(hw * 1.12), Y(0.46)], fill=shade(colour, 0.82))
    elif kind == "hood":
        hood = fig.colours["upper"]
        if fig.view == "back":
            d.ellipse([X(-hw * 1.42), Y(-0.16), X(hw * 1.42), Y(1.3)], fill=hood)
        else:
            right = hw * (1.2 if fig.view == "side" else 1.3)
            d.chord([X(-hw * (1.5 if fig.view == "side" else 1.3)), Y(-0.16), X(right), Y(0.75)], 180, 360, fill=hood)


def _glasses(fig: Figure) -> None:
    u, d = fig.u, fig.draw
    ink, width = (20, 20, 24), max(1, int(0.05 * u))
    if fig.view == "side":
        x, y = fig.X(0.27), fig.Y(0.5)
        d.ellipse([x - 0.09 * u, y - 0.07 * u, x + 0.09 * u, y + 0.07 * u], outline=ink, width=width)
        d.line([x - 0.09 * u, y, fig.X(-0.12), fig.Y(0.46)], fill=ink, width=width)
        return
    for s in (-1, 1):
        x, y = fig.X(s * 0.14), fig.Y(0.5)
        d.ellipse([x - 0.11 * u, y - 0.08 * u, x + 0.11 * u, y + 0.08 * u], outline=ink, width=width)
    d.line([fig.P(-0.04, 0.5), fig.P(0.04, 0.5)], fill=ink, width=width)


def _mask(fig: Figure) -> None:
    colour, hw, d = fig.colours["face mask"], fig.head_w, fig.draw
    if fig.view == "side":
        d.polygon([fig.P(0.0, 0.56), fig.P(hw * 1.3, 0.58), fig.P(hw * 1.15, 0.93), fig.P(0.0, 0.95)], fill=colour)
    else:
        d.rounded_rectangle([fig.X(-hw * 0.82), fig.Y(0.56), fig.X(hw * 0.82), fig.Y(0.93)], radius=0.1 * fig.u,
                            fill=colour)


def _scarf(fig: Figure) -> None:
    colour, d = fig.colours["scarf"], fig.draw
    d.rounded_rectangle([fig.X(-0.36), fig.Y(0.98), fig.X(0.36), fig.Y(1.42)], radius=0.12 * fig.u, fill=colour)
    if fig.view == "front":
        d.rectangle([fig.X(0.04), fig.Y(1.3), fig.X(0.3), fig.Y(2.6)], fill=shade(colour, 0.88))
    elif fig.view == "side":
        d.rectangle([fig.X(0.12), fig.Y(1.3), fig.X(0.36), fig.Y(2.4)], fill=shade(colour, 0.88))


def _belt(fig: Figure) -> None:
    if fig.view == "side":
        left, right = -0.42 * fig.b, 0.44 * fig.b
    else:
        left, right = -fig.waist_w - 0.03, fig.waist_w + 0.03
    fig.draw.rectangle([fig.X(left), fig.Y(3.27), fig.X(right), fig.Y(3.45)], fill=fig.colours["belt"])
    if fig.view == "front":
        fig.draw.rectangle([fig.X(-0.09), fig.Y(3.25), fig.X(0.09), fig.Y(3.47)], fill=(184, 172, 120))


def _backpack(fig: Figure) -> None:
    colour, u, d = fig.colours["bag"], fig.u, fig.draw
    strap = shade(colour, 0.8)
    if fig.view == "front":
        for s in (-1, 1):
            limb(d, fig.P(s * fig.sw * 0.55, 1.28), fig.P(s * fig.sw * 0.5, 2.9), 0.14 * u, 0.12 * u, strap)
        return
    if fig.view == "side":
        back = -0.44 * fig.b
        d.rounded_rectangle([fig.X(back - 0.68), fig.Y(1.45), fig.X(back + 0.12), fig.Y(3.45)], radius=0.22 * u,
                            fill=colour)
        d.rounded_rectangle([fig.X(back - 0.8), fig.Y(2.4), fig.X(back - 0.5), fig.Y(3.3)], radius=0.1 * u, fill=strap)
        limb(d, fig.P(0.12, 1.3), fig.P(0.24, 2.8), 0.12 * u, 0.1 * u, strap)
        return
    half = 0.62 * min(fig.b, 1.08)
    d.rounded_rectangle([fig.X(-half), fig.Y(1.42), fig.X(half), fig.Y(3.55)], radius=0.25 * u, fill=colour)
    d.rounded_rectangle([fig.X(-half * 0.72), fig.Y(2.55), fig.X(half * 0.72), fig.Y(3.4)], radius=0.15 * u, fill=strap)
    d.arc([fig.X(-0.2), fig.Y(1.2), fig.X(0.2), fig.Y(1.6)], 180, 360, fill=strap, width=max(1, int(0.08 * u)))


def _shoulder_bag(fig: Figure) -> None:
    colour, u, d = fig.colours["bag"], fig.u, fig.draw
    strap, width = shade(colour, 0.75), max(1, int(0.09 * u))
    if fig.view == "side":
        d.line([fig.P(0.08, 1.3), fig.P(-0.05, 3.4)], fill=strap, width=width)
        d.rounded_rectangle([fig.X(-0.5), fig.Y(3.35), fig.X(0.32), fig.Y(4.1)], radius=0.1 * u, fill=colour)
        return
    s = fig.hand_side
    d.line([fig.P(-s * fig.sw * 0.7, 1.3), fig.P(s * fig.hip_w * 0.9, 3.5)], fill=strap, width=width)
    x0 = fig.X(s * (fig.hip_w * 0.55))
    x1 = fig.X(s * (fig.hip_w * 0.55 + 0.78))
    d.rounded_rectangle([min(x0, x1), fig.Y(3.35), max(x0, x1), fig.Y(4.1)], radius=0.1 * u, fill=colour)


def _suitcase(fig: Figure, x0: float, x1: float, grip: tuple[float, float]) -> None:
    colour, u, d = fig.colours["bag"], fig.u, fig.draw
    top = fig.Y(5.0)
    mid = (x0 + x1) / 2
    d.line([(mid, top), grip], fill=(70, 70, 74), width=max(1, int(0.08 * u)))
    d.rounded_rectangle([x0, top, x1, fig.Y(7.3)], radius=0.12 * u, fill=colour)
    d.line([(x0 + 0.2 * u, top + 0.2 * u), (x0 + 0.2 * u, fig.Y(7.1))], fill=shade(colour, 0.75), width=1)
    for x in (x0 + 0.15 * u, x1 - 0.15 * u):
        d.ellipse([x - 0.09 * u, fig.Y(7.3), x + 0.09 * u, fig.Y(7.48)], fill=(30, 30, 30))


def _umbrella(fig: Figure, wx: float, wy: float) -> None:
    colour, u, d = fig.colours["umbrella"], fig.u, fig.draw
    shaft = (60, 60, 64)
    if fig.scene.umbrella_open:
        tx = (wx + fig.X(0.0)) / 2
        d.line([(wx, wy), (tx, fig.Y(-0.5))], fill=shaft, width=max(1, int(0.07 * u)))
        d.chord([tx - 1.7 * u, fig.Y(-0.95), tx + 1.7 * u, fig.Y(0.45)], 180, 360, fill=colour)
        for k in (-1, 0, 1):
            d.line([(tx, fig.Y(-0.95)), (tx + k * 1.1 * u, fig.Y(-0.26))], fill=shade(colour, 0.7), width=1)
        return
    tip = (wx + fig.hand_side * 0.35 * u, fig.Y(7.35))
    d.line([(wx, wy), tip], fill=shaft, width=max(1, int(0.07 * u)))
    mid = ((wx + tip[0]) / 2, (wy + tip[1]) / 2)
    limb(d, (wx + (tip[0] - wx) * 0.2, wy + (tip[1] - wy) * 0.2), mid, 0.12 * u, 0.3 * u, colour)
    limb(d, mid, (wx + (tip[0] - wx) * 0.85, wy + (tip[1] - wy) * 0.85), 0.3 * u, 0.08 * u, colour)
