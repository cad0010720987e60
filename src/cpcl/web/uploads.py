"""Decoding uploaded example images with bounded memory.

A small file can declare a huge image (a 80 KB PNG of 5000 x 5000 pixels decodes to 100 MB), so
`UploadDecoder` decodes at most `slots` uploads at once (the others wait, or get 503 after
`wait_s`), asks the decoder for a reduced image where the format allows it (JPEG's DCT scaling
through `Image.draft`), shrinks every image at once by whole factors to no more than
`REDUCE_MARGIN` times the model's input on each axis (`Image.reduce`, a box filter), drops the
full-size pixels, and hands the freed memory back to the operating system (glibc's
`malloc_trim`), so a burst of uploads neither multiplies nor keeps the peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import threading
from functools import lru_cache

from fastapi import HTTPException, UploadFile
from PIL import Image, UnidentifiedImageError

from cpcl.web.limits import MAX_IMAGE_PIXELS, MAX_UPLOAD_BYTES

REDUCE_MARGIN = 2  # keep at least this many source pixels per model input pixel on each axis
TRIM_PIXELS = 4_000_000  # after decoding an image this large, return freed heap memory to the OS
M_ARENA_MAX = -8  # glibc mallopt parameter: the most malloc arenas (malloc.h)


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """The C library when it is glibc (has malloc_trim), else None (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def release_memory() -> None:
    """Return freed heap pages to the OS where the C library can (glibc); otherwise nothing."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def limit_malloc_arenas(arenas: int) -> None:
    """Let glibc keep at most `arenas` malloc arenas (for a server process: otherwise each request thread
    gets one, and the pages freed in the others after a decode stay resident). Nothing elsewhere."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, arenas)


def reduction(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """Whole factors (x, y) that shrink `size` (W, H) to no less than REDUCE_MARGIN x `target` (W, H)."""
    (width, height), (want_w, want_h) = size, target
    return max(1, width // (REDUCE_MARGIN * want_w)), max(1, height // (REDUCE_MARGIN * want_h))


class UploadDecoder:
    """Decodes uploads for a model whose input is `image_size` (H, W); at most `slots` at once."""

    def __init__(self, image_size: tuple[int, int], slots: int, wait_s: float):
        self.target = (int(image_size[1]), int(image_size[0]))  # (W, H), as PIL counts
        self.wait_s = wait_s
        self._slots = threading.BoundedSemaphore(slots)

    def decode(self, upload: UploadFile) -> Image.Image:
        """The upload as a small RGB image; 413 / 415 / 400 / 503 for too large, not an image, broken, busy."""
        if not self._slots.acquire(timeout=self.wait_s):
            raise HTTPException(status_code=503, detail="the server is decoding other uploads; try again shortly",
                                headers={"Retry-After": "5"})
        try:
            image, pixels = _shrink(_read(upload), self.target)  # the full-size pixels are gone on return
            if pixels >= TRIM_PIXELS:
                release_memory()
            return image
        finally:
            self._slots.release()


def _shrink(data: bytes, target: tuple[int, int]) -> tuple[Image.Image, int]:
    """(the image in `data` as RGB, reduced towards `target` (W, H), its declared pixel count); HTTP errors."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            pixels = picture.width * picture.height
            if pixels > MAX_IMAGE_PIXELS:
                raise HTTPException(status_code=413, detail=f"image larger than {MAX_IMAGE_PIXELS:,} pixels")
            picture.draft("RGB", (REDUCE_MARGIN * target[0], REDUCE_MARGIN * target[1]))  # JPEG: decode scaled
            picture.load()
            full = picture if picture.mode in ("RGB", "L") else picture.convert("RGB")  # as eval: alpha dropped
            factors = reduction(full.size, target)
            return (full.reduce(factors) if factors != (1, 1) else full).convert("RGB"), pixels
    except UnidentifiedImageError:
        raise HTTPException(status_code=415, detail="the upload is not an image PIL can read "
                                                    "(use JPEG, PNG, WebP, BMP, GIF or TIFF)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise HTTPException(status_code=400, detail=f"the uploaded image is broken: {err}") from None


def _read(upload: UploadFile) -> bytes:
    """The upload's bytes; 413 past MAX_UPLOAD_BYTES, 400 when empty."""
    data = upload.file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(status_code=413, detail=f"image larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
    if not data:
        raise HTTPException(status_code=400, detail="the uploaded image is empty")
    return data
