"""Image checks: every image referenced by the annotations must exist and decode.

Bad images are an error that names how many and the first few paths; `skip_bad=True` (the
CLI's `--skip-bad-images`) drops them together with their captions and says how many.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from cpcl.data.records import PersonSearchData, SplitData
from cpcl.utils.errors import DataError
from cpcl.utils.progress import Progress

log = logging.getLogger(__name__)

MAX_LISTED = 5  # bad paths named in an error message


def image_problem(path: Path, decode: bool = True) -> str | None:
    """Why `path` is not a usable image (None when it is): missing, the OS's or the decoder's complaint."""
    try:
        if not path.is_file():
            return "missing"
    except OSError as err:  # a name part over 255 bytes, a permission problem on the way
        return f"cannot be looked up: {err.strerror or err}"
    if not decode:
        return None
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # PIL raises many types for broken files; report, do not crash
        return f"unreadable: {type(err).__name__}: {err}"
    return None


def find_bad_images(paths: list[Path], decode: bool = True, workers: int = 4,
                    show_progress: bool = True) -> dict[Path, str]:
    """Map each unusable path to its problem, checking `paths` in parallel (with progress unless told not to)."""
    bad: dict[Path, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            Progress(len(paths), "checking images", "img", enabled=show_progress) as bar:
        for path, problem in zip(paths, pool.map(lambda p: image_problem(p, decode), paths)):
            if problem is not None:
                bad[path] = problem
            bar.update()
    return bad


def _without(split: SplitData, bad: dict[Path, str]) -> SplitData:
    """A copy of `split` without the bad images and their captions, renumbered in order."""
    kept = SplitData()
    texts: dict[int, list[str]] = {}
    for caption in split.captions:
        texts.setdefault(caption.image_id, []).append(caption.text)
    for image in split.images:
        if image.path not in bad:
            kept.add(image.path, image.person_id, texts.get(image.image_id, []))
    return kept


def check_images(data: PersonSearchData, decode: bool = True, skip_bad: bool = False) -> int:
    """Verify every image of `data`; returns how many were skipped (always 0 unless `skip_bad`).

    Raises DataError naming the count and the first paths when images are bad and `skip_bad`
    is False; otherwise removes them (and their captions) from `data` in place.
    """
    paths = [image.path for split in data.splits.values() for image in split.images]
    bad = find_bad_images(paths, decode=decode)
    if not bad:
        return 0
    if not skip_bad:
        listed = "; ".join(f"{path} ({problem})" for path, problem in list(bad.items())[:MAX_LISTED])
        raise DataError(
            f"{len(bad)} of {len(paths)} images of {data.annotation_file} are missing or unreadable, "
            f"first: {listed}; fix them or pass --skip-bad-images to drop them with their captions"
        )
    for name, split in data.splits.items():
        data.splits[name] = _without(split, bad)
    log.warning("skipped %d of %d images (missing or unreadable) and their captions", len(bad), len(paths))
    return len(bad)
