"""The one record model every dataset reader produces.

A dataset is split into train / val / test. Within a split, images and captions are numbered
from 0 in annotation-file order: `CaptionRecord.image_id` indexes `SplitData.images`.
Person ids are kept for evaluation and the oracle baseline only; training code must never
read `ImageRecord.person_id` (weak supervision).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    image_id: int  # index of this image within its split
    path: Path  # absolute path of the image file
    person_id: int | None  # identity label (evaluation / oracle only); None when the data has none


@dataclass(frozen=True)
class CaptionRecord:
    caption_id: int  # index of this caption within its split
    image_id: int  # the image it describes (index into SplitData.images)
    text: str  # the raw caption as annotated


@dataclass
class SplitData:
    images: list[ImageRecord] = field(default_factory=list)
    captions: list[CaptionRecord] = field(default_factory=list)

    def add(self, path: Path, person_id: int | None, texts: list[str]) -> None:
        """Append one image and its captions, numbering both in order."""
        image_id = len(self.images)
        self.images.append(ImageRecord(image_id, path, person_id))
        for text in texts:
            self.captions.append(CaptionRecord(len(self.captions), image_id, text))

    def num_ids(self) -> int | None:
        """Distinct person ids, or None when the split carries no ids."""
        ids = {img.person_id for img in self.images}
        if not self.images or None in ids:
            return None
        return len(ids)

    def counts(self) -> dict[str, int | None]:
        return {"ids": self.num_ids(), "images": len(self.images), "captions": len(self.captions)}


@dataclass
class PersonSearchData:
    """A whole dataset: its name, the annotation file it came from, its three splits and its image folder."""

    name: str
    annotation_file: Path
    splits: dict[str, SplitData] = field(default_factory=lambda: {s: SplitData() for s in SPLITS})
    image_root: Path | None = None  # the folder every image must lie in (None: the annotation file's folder)

    def __post_init__(self) -> None:
        if self.image_root is None:
            self.image_root = Path(self.annotation_file).parent

    def counts(self) -> dict[str, dict[str, int | None]]:
        return {name: split.counts() for name, split in self.splits.items()}
