"""Per-image variation of SynthPedes: viewpoint, pose, framing, background, occluder, camera.

`sample_scene` draws a `Scene` (every discrete and continuous choice of one photo); the
functions below draw a background, a non-person occluder, and apply the camera's lighting,
blur and noise. All randomness comes from the numpy Generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cpcl.synth.config import SynthConfig

VIEWS = {"front": 0.34, "back": 0.3, "left": 0.18, "right": 0.18}
BACKGROUNDS = ("street", "pavement", "grass", "indoor", "shopfront")
OCCLUDERS = ("pole", "car", "passer-by", "sign")
# White balance of the "shifted" style's cameras (per-channel gains): sodium street light, a cold
# LED-lit hall, a green-tinted old sensor, a magenta-tinted one.
SHIFTED_CAMERAS = ((1.22, 1.0, 0.72), (0.84, 1.0, 1.24), (0.9, 1.16, 0.86), (1.14, 0.86, 1.1))
# Person height (share of the image) and resolution factor of low-res images, per style, unless the config sets them
STANDARD_SCALE, SHIFTED_SCALE = (0.8, 0.95), (0.62, 0.8)
STANDARD_LOW_RES, SHIFTED_LOW_RES = (0.45, 0.8), (0.4, 0.65)

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """Everything about one photo of a person except the person's own attributes."""

    view: str  # front | back | left | right (left/right: side views, walking that way)
    stride: float  # leg phase in [-1, 1]: 0 = feet together, +-1 = longest step
    arm_swing: float  # arm phase in [-1, 1]
    scale: float  # person height as a share of the image height
    offset_x: float  # horizontal shift of the person, share of the image width
    offset_y: float  # vertical shift of the person, share of the image height
    background: str  # one of BACKGROUNDS
    occluder: str  # "none" or one of OCCLUDERS
    occluder_side: int  # -1: occluder on the left edge, +1: on the right
    brightness: float  # global gain
    contrast: float  # contrast around the mean
    cast: tuple[float, float, float]  # per-channel gain (colour cast of the light / white balance)
    blur: float  # Gaussian blur radius in output pixels (0 = sharp)
    low_res: float  # 1 = full detail; below 1 the image is shrunk by this factor and enlarged back
    noise: float  # sensor noise standard deviation (0..255 scale)
    umbrella_open: bool  # an umbrella, if carried, is open overhead (else closed, in hand)
    saturation: float = 1.0  # colour saturation (1 = as painted, 0 = grey)
    camera: int = -1  # index of the camera of a fixed network that took it (SynthConfig.cameras; -1: none)
    box: str = "none"  # how a detector boxed the person: none (centred) | knees | neck | loose | offcentre
    occluder_box: tuple[float, float, float, float] | None = None  # (x0, y0, x1, y1), shares of the image, of
    # the occluder where the scene fixes it (SynthConfig.scene_visibility); None: the renderer draws its place

    @property
    def side(self) -> bool:
        return self.view in ("left", "right")


def sample_scene(rng: np.random.Generator, cfg: SynthConfig) -> Scene:
    """Draw the photo conditions of one image; deterministic given `rng`."""
    views = list(VIEWS)
    view = views[int(rng.choice(len(views), p=np.array(list(VIEWS.values())) / sum(VIEWS.values())))]
    occluded = rng.random() < cfg.occlusion_prob
    blurred = rng.random() < cfg.blur_prob
    scale_range = cfg.figure_scale or STANDARD_SCALE
    scene = Scene(
        view=view,
        stride=float(rng.uniform(-1.0, 1.0)),
        arm_swing=float(rng.uniform(-1.0, 1.0)),
        scale=float(rng.uniform(*scale_range)),
        offset_x=float(rng.normal(0.0, 0.05)),
        offset_y=float(rng.uniform(-0.03, 0.03)),
        background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        occluder=OCCLUDERS[int(rng.integers(len(OCCLUDERS)))] if occluded else "none",
        occluder_side=1 if rng.random() < 0.5 else -1,
        brightness=float(np.clip(rng.normal(1.0, 0.14), 0.65, 1.3)),
        contrast=float(rng.uniform(0.75, 1.12)),
        cast=tuple(float(c) for c in np.clip(rng.normal(1.0, 0.05, size=3), 0.88, 1.12)),
        blur=float(rng.uniform(0.3, 0.8)) if blurred else 0.0,
        low_res=float(rng.uniform(*(cfg.low_res_range or STANDARD_LOW_RES))) if rng.random() < 0.25 else 1.0,
        noise=float(rng.uniform(1.0, 5.0)),
        umbrella_open=bool(rng.random() < 0.5),
    )
    return _shifted_camera(scene, rng, cfg) if cfg.shifted_look else scene


def _shifted_camera(scene: Scene, rng: np.random.Generator, cfg: SynthConfig) -> Scene:
    """`scene` seen by one of the "shifted" style's cameras: its colour cast, washed-out colour,
    lower contrast and resolution, more noise, the person framed smaller (draws after the
    standard ones, so the standard style's images stay byte-identical)."""
    camera = SHIFTED_CAMERAS[int(rng.integers(len(SHIFTED_CAMERAS)))]
    cast = tuple(float(g * c) for g, c in zip(camera, rng.normal(1.0, 0.03, size=3)))
    return replace(scene, cast=cast, saturation=float(rng.uniform(0.45, 0.75)),
                   contrast=float(rng.uniform(0.6, 0.9)), scale=float(rng.uniform(*(cfg.figure_scale or SHIFTED_SCALE))),
                   offset_x=float(rng.normal(0.0, 0.1)),
                   low_res=float(rng.uniform(*(cfg.low_res_range or SHIFTED_LOW_RES))),
                   noise=float(rng.uniform(4.0, 9.0)))


def _muted(rng: np.random.Generator, lo: int = 70, hi: int = 200, sat: float = 0.35) -> RGB:
    """A random, mostly desaturated colour (backgrounds should not outshine the person)."""
    grey = rng.uniform(lo, hi)
    tint = rng.uniform(-1.0, 1.0, size=3) * sat * grey
    return tuple(int(v) for v in np.clip(grey + tint, 0, 255))


def _shade(colour: RGB, factor: float) -> RGB:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


def _street(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    horizon = h * rng.uniform(0.45, 0.7)
    wall = _muted(rng)
    draw.rectangle([0, 0, w, horizon], fill=wall)
    win = _shade(_muted(rng, 40, 110, 0.2), 0.8)
    cols, step_y = int(rng.integers(2, 4)), h * rng.uniform(0.12, 0.2)
    x0 = rng.uniform(-w / cols / 2, 0)
    for row in range(6):
        y = horizon - (row + 1) * step_y
        for col in range(cols + 1):
            x = x0 + col * w / cols
            draw.rectangle([x + 3, y + 3, x + w / cols * 0.6, y + step_y * 0.7], fill=win)
    road = _muted(rng, 70, 120, 0.05)
    draw.rectangle([0, horizon, w, h], fill=road)
    draw.rectangle([0, horizon, w, horizon + h * 0.03], fill=_shade(road, 1.3))
    lane_y = horizon + (h - horizon) * rng.uniform(0.5, 0.85)
    for x in np.arange(rng.uniform(-30, 0), w, 40.0):
        draw.rectangle([x, lane_y, x + 22, lane_y + 4], fill=(220, 220, 210))


def _pavement(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    horizon = h * rng.uniform(0.3, 0.55)
    draw.rectangle([0, 0, w, horizon], fill=_muted(rng, 60, 170))
    tile, line = _muted(rng, 130, 200, 0.12), _muted(rng, 90, 130, 0.05)
    draw.rectangle([0, horizon, w, h], fill=tile)
    y, gap = horizon, 8.0
    while y < h:
        draw.line([0, y, w, y], fill=line, width=2)
        y, gap = y + gap, gap * 1.25
    for x in np.linspace(-w, 2 * w, 9):
        draw.line([w / 2 + (x - w / 2) * 0.35, horizon, x, h], fill=line, width=2)
    for _ in range(int(rng.integers(0, 3))):
        x = rng.uniform(0, w)
        draw.rectangle([x, horizon * rng.uniform(0.2, 0.6), x + rng.uniform(4, 14), horizon],
                       fill=_muted(rng, 30, 120))


def _grass(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    horizon = h * rng.uniform(0.35, 0.6)
    draw.rectangle([0, 0, w, horizon], fill=_muted(rng, 150, 220, 0.1))
    for _ in range(int(rng.integers(2, 5))):
        x, r = rng.uniform(0, w), rng.uniform(12, 30)
        draw.rectangle([x - 3, horizon - r, x + 3, horizon], fill=(80, 60, 40))
        draw.ellipse([x - r, horizon - 2.6 * r, x + r, horizon - 0.6 * r],
                     fill=(int(rng.uniform(40, 80)), int(rng.uniform(90, 140)), int(rng.uniform(40, 70))))
    green = (int(rng.uniform(60, 110)), int(rng.uniform(120, 170)), int(rng.uniform(50, 90)))
    draw.rectangle([0, horizon, w, h], fill=green)
    for _ in range(120):
        x, y = rng.uniform(0, w), rng.uniform(horizon, h)
        draw.line([x, y, x + rng.uniform(-2, 2), y - rng.uniform(2, 5)], fill=_shade(green, rng.uniform(0.7, 1.2)))
    if rng.random() < 0.5:
        path = _muted(rng, 150, 200, 0.15)
        x = rng.uniform(0, w)
        draw.polygon([(x - 6, horizon), (x + 6, horizon), (x + 40, h), (x - 40, h)], fill=path)


def _indoor(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    floor_y = h * rng.uniform(0.55, 0.75)
    wall = _muted(rng, 120, 230, 0.4)
    draw.rectangle([0, 0, w, floor_y], fill=wall)
    for _ in range(int(rng.integers(1, 4))):
        x, y = rng.uniform(-10, w), rng.uniform(0, floor_y * 0.6)
        bw, bh = rng.uniform(12, 40), rng.uniform(20, 70)
        draw.rectangle([x, y, x + bw, y + bh], fill=_muted(rng, 40, 220, 0.6))
    if rng.random() < 0.5:
        x = rng.uniform(0, w - 30)
        draw.rectangle([x, floor_y * 0.25, x + 34, floor_y], fill=_shade(wall, 0.7))
    floor = _muted(rng, 80, 190, 0.25)
    draw.rectangle([0, floor_y, w, h], fill=floor)
    draw.rectangle([0, floor_y - 4, w, floor_y], fill=_shade(wall, 0.6))
    y = floor_y
    while y < h:
        draw.line([0, y, w, y], fill=_shade(floor, 0.85), width=1)
        y += rng.uniform(8, 16)


def _shopfront(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator) -> None:
    base = h * rng.uniform(0.6, 0.8)
    glass = _muted(rng, 110, 170, 0.15)
    draw.rectangle([0, 0, w, base], fill=glass)
    for _ in range(3):
        x = rng.uniform(-w, w)
        draw.polygon([(x, 0), (x + 14, 0), (x + 54, base), (x + 40, base)], fill=_shade(glass, 1.15))
    for _ in range(int(rng.integers(2, 6))):
        x, y = rng.uniform(0, w), rng.uniform(base * 0.3, base)
        draw.rectangle([x, y, x + rng.uniform(6, 18), base], fill=_muted(rng, 40, 220, 0.7))
    frame = _muted(rng, 20, 90, 0.1)
    for x in np.arange(rng.uniform(-w / 2, 0), w, w * rng.uniform(0.6, 1.0)):
        draw.rectangle([x, 0, x + 5, base], fill=frame)
    draw.rectangle([0, base - 5, w, base + 2], fill=frame)
    draw.rectangle([0, base + 2, w, h], fill=_muted(rng, 90, 170, 0.1))


BACKGROUND_PAINTERS = {"street": _street, "pavement": _pavement, "grass": _grass,
                       "indoor": _indoor, "shopfront": _shopfront}


def draw_background(style: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A background of the given style, `size` = (width, height), RGB."""
    w, h = size
    img = Image.new("RGB", size)
    BACKGROUND_PAINTERS[style](ImageDraw.Draw(img), w, h, rng)
    return img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 1.8))))


def draw_static_occluder(img: Image.Image, kind: str, side: int, rng: np.random.Generator,
                         box: tuple[float, float, float, float] | None = None) -> None:
    """Draw a pole, car or sign in front of the person, near the `side` edge, or filling `box` (x0, y0, x1,
    y1, shares of the image) when the scene fixed its place (in place)."""
    draw = ImageDraw.Draw(img)
    w, h = img.size
    if kind == "pole":
        if box is None:
            x = rng.uniform(0.05, 0.35) * w
            x = x if side < 0 else w - x
            pw = w * rng.uniform(0.06, 0.12)
        else:
            x, pw = (box[0] + box[2]) / 2 * w, (box[2] - box[0]) * w
        metal = _muted(rng, 40, 150, 0.15)
        draw.rectangle([x - pw / 2, 0, x + pw / 2, h], fill=metal)
        draw.rectangle([x - pw / 4, 0, x - pw / 8, h], fill=_shade(metal, 1.35))
    elif kind == "car":
        if box is None:
            cw, ch = w * rng.uniform(0.4, 0.7), h * rng.uniform(0.22, 0.38)
            x0, x1 = (w - cw, w + 20.0) if side > 0 else (-20.0, cw)
        else:
            x0, x1, ch = box[0] * w, box[2] * w, (1.0 - box[1]) * h
            cw = x1 - x0
        body = tuple(int(v) for v in rng.integers(20, 235, size=3))
        top = h - ch
        draw.rounded_rectangle([x0, top, x1, h + 20], radius=ch * 0.3, fill=body)
        draw.rectangle([x0, top + ch * 0.12, x1, top + ch * 0.2], fill=_shade(body, 1.3))
        wheel_x = x0 + cw * 0.5
        draw.ellipse([wheel_x - ch * 0.35, h - ch * 0.35, wheel_x + ch * 0.35, h + ch * 0.35], fill=(25, 25, 25))
    elif kind == "sign":
        if box is None:
            x = w * rng.uniform(0.1, 0.3)
            x = x if side < 0 else w - x
        else:
            x = (box[0] + box[2]) / 2 * w
        draw.rectangle([x - 2, h * 0.3, x + 2, h], fill=(110, 110, 110))
        if box is None:
            sw, sh = w * rng.uniform(0.3, 0.5), h * rng.uniform(0.12, 0.2)
            y = h * rng.uniform(0.25, 0.55)
        else:
            sw, sh, y = (box[2] - box[0]) * w, (box[3] - box[1]) * h, box[1] * h
        panel = [(200, 30, 30), (30, 70, 170), (240, 240, 240), (230, 200, 30), (30, 120, 60)][int(rng.integers(5))]
        draw.rectangle([x - sw / 2, y, x + sw / 2, y + sh], fill=panel)
        ink = (255, 255, 255) if sum(panel) < 450 else (20, 20, 20)
        for k in range(int(rng.integers(1, 4))):
            ly = y + sh * (0.25 + 0.25 * k)
            draw.line([x - sw * 0.35, ly, x + sw * rng.uniform(0.0, 0.35), ly], fill=ink, width=3)


def finish_photo(img: Image.Image, scene: Scene, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Downsample to `size` (W, H) with antialiasing, then apply low resolution, blur, lighting, noise."""
    out = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=None)
    if scene.low_res < 1.0:
        small = (max(8, round(size[0] * scene.low_res)), max(16, round(size[1] * scene.low_res)))
        out = out.resize(small, Image.Resampling.BILINEAR).resize(size, Image.Resampling.BILINEAR)
    if scene.blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(radius=scene.blur))
    arr = np.asarray(out, dtype=np.float32)
    if scene.saturation != 1.0:
        grey = arr.mean(axis=2, keepdims=True)
        arr = grey + (arr - grey) * scene.saturation
    mean = arr.mean(axis=(0, 1), keepdims=True)
    arr = (arr - mean) * scene.contrast + mean
    arr = arr * scene.brightness * np.asarray(scene.cast, dtype=np.float32)
    arr = arr + rng.normal(0.0, scene.noise, size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
