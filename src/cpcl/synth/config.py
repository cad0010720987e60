"""`SynthConfig`: every knob of the SynthPedes generator, validated once, frozen."""

from __future__ import annotations

from dataclasses import dataclass, replace

from cpcl.utils.errors import ConfigError

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetShape:
    """How many images a person has and how many captions an image has, as in a real dataset."""

    images_per_id: tuple[int, int]  # inclusive range of images per identity
    images_per_id_mean: float  # mean images per identity: MIN + Poisson(mean - MIN), capped at MAX
    captions_per_image: int  # captions written per image


# Train-split statistics of the real datasets (docs/data.md, SynthPedes; their published sizes): CUHK-PEDES
# 34,054 images of 11,003 ids (3.1 a person), 2 captions each; ICFG-PEDES 34,674 of 3,102 (11.2),
# 1 caption each; RSTPReid 18,505 of 3,701 (5 each), 2 captions each.
SHAPES = {
    "cuhk-pedes": DatasetShape((1, 10), 3.1, 2),
    "icfg-pedes": DatasetShape((2, 30), 11.2, 1),
    "rstpreid": DatasetShape((5, 5), 5.0, 2),
}
DEFAULT_SHAPE = "cuhk-pedes"
# How the benchmark splits are drawn and worded. "standard": the cameras and annotators of the
# pretraining corpus. "shifted": another camera network (strong per-camera colour casts, washed-out
# colour, low resolution, persons framed smaller) and another annotation team (its own sentence
# frames and words): the start has a domain gap to close, as a web-pretrained CLIP has on a real
# benchmark. "observed": the shifted cameras and team, with captions written from each image as its
# annotators see it (STYLE_SETTINGS): the style where a person's identity is worth something.
STYLES = ("standard", "shifted", "observed")
# What a style sets besides its cameras and wording (`SynthConfig.styled`); fields given explicitly win.
STYLE_SETTINGS: dict[str, dict] = {
    "standard": {},
    "shifted": {},
    "observed": {"colour_constancy": 0.6, "scene_visibility": True, "shared_salience": 1.0, "annotator_pool": 12,
                 "detector_box_prob": 0.25, "occluder_scale": 1.5, "view_details": True, "cameras": 8,
                 "figure_scale": (0.72, 0.9), "low_res_range": (0.6, 0.85), "wrong_adjective_rate": 0.02},
}


@dataclass(frozen=True)
class SynthConfig:
    ids_train: int = 500  # identities in the train split
    ids_val: int = 100  # identities in the val split
    ids_test: int = 100  # identities in the test split
    images_per_id: tuple[int, int] = SHAPES[DEFAULT_SHAPE].images_per_id  # inclusive range, images per identity
    images_per_id_mean: float | None = SHAPES[DEFAULT_SHAPE].images_per_id_mean  # MIN + Poisson(mean - MIN),
    # capped at MAX; None: uniform over MIN..MAX
    pretrain_images_per_id: tuple[int, int] = (1, 2)  # inclusive range of images per pretraining identity
    pretrain_pairs: int = 256000  # image-caption pairs of the pretraining corpus
    height: int = 128  # image height in pixels (CUHK-PEDES crops are tall and narrow)
    width: int = 48  # image width in pixels
    render_scale: int = 2  # supersampling factor: draw at this multiple, then downsample with antialiasing
    near_duplicate_fraction: float = 0.25  # share of identities copying an earlier one, 1-2 attributes changed
    captions_per_image: int = SHAPES[DEFAULT_SHAPE].captions_per_image  # independent captions per benchmark image
    caption_coverage: float = 0.6  # mean share of an image's mentionable attributes that one caption names
    view_mention_rate: float = 0.3  # probability that a caption says the viewpoint ("seen from behind")
    typo_rate: float = 0.008  # per-word probability of a typo (swapped, dropped or doubled letter)
    wrong_adjective_rate: float = 0.06  # per-caption chance that one colour is named wrongly
    outfit_change_prob: float = 0.0  # per benchmark image, probability that each removable item of the person
    # (headwear but a hood, the bag, each accessory) is left off in it; captions describe the image as drawn
    occlusion_prob: float = 0.2  # probability that an image has an occluder (pole, car, passer-by, sign)
    # How each benchmark image is observed and annotated; each switch draws from a stream of its own, and the
    # defaults leave the output as it was (captions written from the identity)
    colour_constancy: float | None = None  # None: captions name the identity's colours; in [0, 1]: the colour
    # as this image's camera renders it, with that share of the camera's effect discounted by the annotators
    scene_visibility: bool = False  # captions leave out what the image hides (occluder, box cut, blur, low res)
    shared_salience: float = 0.0  # sd of a per-image log-prominence that the image's captions share (0: none)
    annotator_pool: int = 0  # annotators with lasting habits, two different ones an image (0: no habits)
    detector_box_prob: float = 0.0  # share of images boxed as a detector would: cut at the knees or the neck,
    # loose with a second person, or off-centre
    occluder_scale: float = 1.0  # size of the occluders (1: as drawn before; 1.5: a car up to the waist)
    view_details: bool = False  # fronts and backs differ: open jackets over a top, back prints, a backpack
    # covering the back, ponytails and buns seen only from behind or the side
    cameras: int = 0  # a fixed network of this many cameras, a person's images taken by different ones (0: each
    # image draws its own camera)
    figure_scale: tuple[float, float] | None = None  # person height range, share of the image (None: the style's:
    # standard 0.80-0.95, shifted 0.62-0.80)
    low_res_range: tuple[float, float] | None = None  # resolution factor range of low-res images (None: the
    # style's: standard 0.45-0.80 in a quarter of the images, shifted 0.40-0.65 in all)
    blur_prob: float = 0.3  # probability that an image is blurred (motion / focus)
    jpeg_quality: int = 92  # JPEG quality of written images
    style: str = "standard"  # one of STYLES: how the benchmark splits are drawn and worded
    seed: int = 0  # master seed: same seed, same bytes
    workers: int = 2  # rendering processes (output does not depend on it)

    def __post_init__(self) -> None:
        for name in ("ids_train", "ids_val", "ids_test"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("images_per_id", "pretrain_images_per_id"):
            lo, hi = getattr(self, name)
            if lo < 1 or hi < lo:
                raise ConfigError(f"{name} must be MIN MAX with 1 <= MIN <= MAX, got {lo} {hi}")
        lo, hi = self.images_per_id
        if self.images_per_id_mean is not None and not lo <= self.images_per_id_mean <= hi:
            raise ConfigError(f"images_per_id_mean must lie in images_per_id {lo}..{hi}, got {self.images_per_id_mean}")
        if self.pretrain_pairs < 1:
            raise ConfigError(f"pretrain_pairs must be >= 1, got {self.pretrain_pairs}")
        if self.height < 32 or self.width < 16:
            raise ConfigError(f"image size must be at least 32x16 (H x W), got {self.height}x{self.width}")
        if self.render_scale < 1:
            raise ConfigError(f"render_scale must be >= 1, got {self.render_scale}")
        if self.captions_per_image < 1:
            raise ConfigError(f"captions_per_image must be >= 1, got {self.captions_per_image}")
        if not 0.0 < self.caption_coverage <= 1.0:
            raise ConfigError(f"caption_coverage must be in (0, 1], got {self.caption_coverage}")
        for name in ("near_duplicate_fraction", "view_mention_rate", "typo_rate",
                     "wrong_adjective_rate", "outfit_change_prob", "occlusion_prob", "blur_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.colour_constancy is not None and not 0.0 <= self.colour_constancy <= 1.0:
            raise ConfigError(f"colour_constancy must be in [0, 1] (or None), got {self.colour_constancy}")
        for name in ("shared_salience", "annotator_pool", "cameras"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.annotator_pool == 1:
            raise ConfigError("annotator_pool must be 0 (no habits) or >= 2 (two different annotators an image)")
        if not 0.0 <= self.detector_box_prob <= 1.0:
            raise ConfigError(f"detector_box_prob must be a probability in [0, 1], got {self.detector_box_prob}")
        if not 0.25 <= self.occluder_scale <= 3.0:
            raise ConfigError(f"occluder_scale must be in [0.25, 3], got {self.occluder_scale}")
        for name, (low, high) in (("figure_scale", (0.3, 1.0)), ("low_res_range", (0.1, 1.0))):
            value = getattr(self, name)
            if value is not None and not (len(value) == 2 and low <= value[0] <= value[1] <= high):
                raise ConfigError(f"{name} must be MIN MAX with {low} <= MIN <= MAX <= {high}, got {value}")
        if self.style not in STYLES:
            raise ConfigError(f"style must be one of {', '.join(STYLES)}, got {self.style!r}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")

    @classmethod
    def shaped(cls, shape: str, **fields) -> SynthConfig:
        """The config with a real dataset's images per person and captions per image (`fields` override)."""
        if shape not in SHAPES:
            raise ConfigError(f"unknown dataset shape {shape!r}; choose one of {', '.join(SHAPES)}")
        like = SHAPES[shape]
        base = {"images_per_id": like.images_per_id, "images_per_id_mean": like.images_per_id_mean,
                "captions_per_image": like.captions_per_image}
        return cls(**{**base, **fields})

    @classmethod
    def styled(cls, style: str, shape: str = DEFAULT_SHAPE, **fields) -> SynthConfig:
        """The config of `style` (its STYLE_SETTINGS) in `shape` (`SynthConfig.shaped`); `fields` override both."""
        if style not in STYLES:
            raise ConfigError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
        return cls.shaped(shape, **{**STYLE_SETTINGS[style], "style": style, **fields})

    def web(self) -> SynthConfig:
        """The config of the web-style pretraining corpus that goes with this benchmark: its sizes and seed (so
        its identities stay disjoint from the benchmark's), drawn in the standard style with none of the
        observation switches."""
        plain = {name: getattr(SynthConfig, name) for name in STYLE_SETTINGS["observed"]}
        return replace(self, style="standard", **plain)

    @property
    def shifted_look(self) -> bool:
        """Whether the shifted camera network and annotation team draw and word the benchmark."""
        return self.style in ("shifted", "observed")

    @property
    def annotates_images(self) -> bool:
        """Whether any switch makes an image's captions depend on that image (`annotation.annotate_image`)."""
        return (self.colour_constancy is not None or self.scene_visibility or self.shared_salience > 0
                or self.annotator_pool > 0 or self.view_details)

    def ids_per_split(self) -> dict[str, int]:
        """Identities asked for, per split name."""
        return {"train": self.ids_train, "val": self.ids_val, "test": self.ids_test}


@dataclass(frozen=True)
class FootageConfig:
    """SynthPedes scene mode: camera footage of several walking persons at known boxes."""

    scenes: int = 4  # scenes written, each a frames folder, a video and its boxes
    frames: int = 48  # frames per scene
    persons: int = 4  # persons walking through each scene
    width: int = 640  # frame width in pixels
    height: int = 360  # frame height in pixels
    fps: float = 12.0  # frame rate of the video (and of the timestamps)
    person_height: tuple[float, float] = (0.4, 0.75)  # person height range, share of the frame height
    render_scale: int = 2  # supersampling factor, as for the crops
    jpeg_quality: int = 92  # JPEG quality of the frame files
    seed: int = 0  # master seed: same seed, same frames

    def __post_init__(self) -> None:
        for name in ("scenes", "frames", "persons", "render_scale"):
            if getattr(self, name) < 1:
                raise ConfigError(f"footage {name} must be >= 1, got {getattr(self, name)}")
        if self.width < 64 or self.height < 64:
            raise ConfigError(f"footage frame size must be at least 64x64 (W x H), got {self.width}x{self.height}")
        if not 0 < self.fps <= 240:
            raise ConfigError(f"footage fps must be in (0, 240], got {self.fps}")
        lo, hi = self.person_height
        if not 0.05 <= lo <= hi <= 0.95:
            raise ConfigError(f"footage person_height must be MIN MAX with 0.05 <= MIN <= MAX <= 0.95, got {lo} {hi}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"footage jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.seed < 0:
            raise ConfigError(f"footage seed must be >= 0, got {self.seed}")
