"""What an image goes through before a CLIP sees it at inference: resized to (H, W) with a filter,
scaled to [0, 1], normalised by a per-channel mean and std.

Every cpcl checkpoint records it (`cpcl.model.checkpoints.save_clip`, the shipped format), the eval
transform applies it (`cpcl.data.transforms.eval_transform`), and an index manifest copies it. It is
here because the data and model layers, siblings, both need it (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from cpcl.utils.config import Range, build, check_ranges
from cpcl.utils.errors import CheckpointError, ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's per-channel pixel mean
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # OpenAI CLIP's per-channel pixel std
Resize = Literal["bicubic", "bilinear", "lanczos", "nearest"]  # PIL resize filters by name
RESIZE_FILTERS: tuple[str, ...] = get_args(Resize)


@dataclass(frozen=True)
class Preprocessing:
    """The eval transform of a model; the defaults are OpenAI CLIP's, which cpcl trains with unless told."""

    image_size: tuple[int, int]  # (H, W) every image is resized to: the model's input size
    resize: Resize = "bicubic"  # filter of that resize
    mean: tuple[float, float, float] = CLIP_MEAN  # per channel, subtracted from pixels in [0, 1]
    std: tuple[float, float, float] = CLIP_STD  # per channel, what the result is divided by

    def __post_init__(self) -> None:
        check_ranges(self, "preprocessing", {"image_size": Range(1), "mean": Range(),
                                             "std": Range(0, low_open=True)})
        if self.resize not in RESIZE_FILTERS:
            raise ConfigError(f"preprocessing resize must be one of {', '.join(RESIZE_FILTERS)}; got {self.resize!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain types, as checkpoints and index manifests store it: {"image_size": [H, W], "resize", "mean", "std"}."""
        return {"image_size": list(self.image_size), "resize": self.resize, "mean": list(self.mean),
                "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Any, where: str, image_size: tuple[int, int] | None = None) -> Preprocessing:
        """What `to_dict` wrote, read back from `where` (a file), for a model at `image_size` (H, W) when given;
        CheckpointError naming the file otherwise."""
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{where}: its preprocessing is a {type(data).__name__}, not a mapping; the file "
                                  f"is damaged or was not written by cpcl")
        try:
            read = build(cls, dict(data), "preprocessing")
        except ConfigError as err:
            raise CheckpointError(f"{where}: invalid recorded preprocessing: {err}") from None
        if image_size is not None and read.image_size != tuple(image_size):
            raise CheckpointError(f"{where}: its preprocessing is for {read.image_size} images, its model for "
                                  f"{tuple(image_size)}; the file was not written by cpcl as it is")
        return read
