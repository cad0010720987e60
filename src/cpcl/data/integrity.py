"""Checks that a dataset is what it says: every image inside its folder, no image in two splits (test
leakage), no image under two person ids.

An image is known by its resolved path (symlinks followed), so two names of one file count as one
image. An image that resolves outside its dataset's image folder (`..`, an absolute path, a
symlink leading out) is refused unless allowed; leakage is a loud warning with counts, or an
error under `strict`.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cpcl.data.records import PersonSearchData, SplitData
from cpcl.utils.errors import DataError

log = logging.getLogger(__name__)

ALLOW_HINT = "pass --allow-outside-root (config: data.allow_outside_root=true) to read them anyway"
STRICT_HINT = "--strict (config: data.strict=true) refuses such data"


def resolved(path: Path) -> Path:
    """`path` with symlinks and `..` resolved; lexically normalised where the file system refuses (a name too long)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on older Pythons
        return Path(os.path.normpath(path.absolute()))


def images_outside(data: PersonSearchData) -> list[tuple[Path, Path]]:
    """(image path, where it resolves) of every image outside `data.image_root` once resolved."""
    root = resolved(data.image_root)
    outside = []
    for split in data.splits.values():
        for image in split.images:
            target = resolved(image.path)
            if not target.is_relative_to(root):
                outside.append((image.path, target))
    return outside


def check_inside_root(data: PersonSearchData, allow: bool) -> int:
    """DataError (or, when `allow`, a warning) for images that resolve outside the image folder; returns how many."""
    outside = images_outside(data)
    if not outside:
        return 0
    total = sum(len(split.images) for split in data.splits.values())
    path, target = outside[0]
    message = (f"{len(outside)} of {total} images of {data.annotation_file} resolve outside {data.image_root} "
               f"(`..`, an absolute path or a symlink out), first: {path} -> {target}")
    if not allow:
        raise DataError(f"{message}; {ALLOW_HINT}")
    log.warning("%s; read anyway (allow_outside_root)", message)
    return len(outside)


@dataclass
class Leakage:
    """Images shared between splits, and images listed under several person ids."""

    shared: dict[tuple[str, str], list[Path]] = field(default_factory=dict)  # (split, split) -> images in both
    multi_id: dict[Path, set[int]] = field(default_factory=dict)  # image -> its person ids (two or more)

    def __bool__(self) -> bool:
        return bool(self.shared) or bool(self.multi_id)

    def describe(self) -> str:
        """One line: counts per pair of splits and of images under several ids, with the first of each."""
        parts = [f"{len(paths)} images are in both {a} and {b}" + (" (test leakage)" if "test" in (a, b) else "")
                 + f", first: {paths[0]}" for (a, b), paths in self.shared.items()]
        if self.multi_id:
            image, ids = next(iter(self.multi_id.items()))
            parts.append(f"{len(self.multi_id)} images are listed under more than one person id, first: {image} "
                         f"(ids {', '.join(map(str, sorted(ids)))})")
        return "; ".join(parts)


def find_leakage(splits: dict[str, SplitData]) -> Leakage:
    """Images of `splits` (name -> split, in order) found in more than one split, or under more than one id."""
    where: dict[Path, list[str]] = defaultdict(list)
    ids: dict[Path, set[int]] = defaultdict(set)
    for name, split in splits.items():
        for image in split.images:
            key = resolved(image.path)
            if name not in where[key]:
                where[key].append(name)
            if image.person_id is not None:
                ids[key].add(image.person_id)
    leakage = Leakage(multi_id={image: found for image, found in ids.items() if len(found) > 1})
    names = list(splits)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            both = [image for image, found in where.items() if first in found and second in found]
            if both:
                leakage.shared[(first, second)] = both
    return leakage


def check_leakage(splits: dict[str, SplitData], source: Path, strict: bool) -> Leakage:
    """Warn loudly (or, when `strict`, raise DataError) when `splits` leak; returns what was found."""
    leakage = find_leakage(splits)
    if leakage:
        message = f"{source}: {leakage.describe()}"
        if strict:
            raise DataError(f"{message}; fix the annotations (--strict)")
        log.warning("%s; %s", message, STRICT_HINT)
    return leakage


def check_dataset(data: PersonSearchData, allow_outside_root: bool = False, strict: bool = False) -> Leakage:
    """Both checks on one dataset: images inside its folder, no leakage between its splits."""
    check_inside_root(data, allow_outside_root)
    return check_leakage(data.splits, data.annotation_file, strict)
