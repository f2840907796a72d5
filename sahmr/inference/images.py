"""Reading photographs for the models: 8-bit RGB, 16-bit scaled down, the rest refused.

Pillow's plain ``convert("RGB")`` clips 16-bit grayscale samples (mode ``I;16``) to 255, so a
16-bit PNG would be read as an all-white picture; float and 32-bit integer images have no fixed
range. Here 16-bit grayscale is scaled to 8 bits the way Pillow itself reads 16-bit RGB PNGs
(the high byte), float / 32-bit images are refused with one line naming the file, and an image
larger than `MAX_IMAGE_PIXELS` is refused from its header, before any pixel is decoded.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from sahmr.inference.errors import InputError, MissingFileError, require_file

logger = logging.getLogger(__name__)

__all__ = [
    "EIGHT_BIT_MODES",
    "MAX_IMAGE_PIXELS",
    "SIXTEEN_BIT_GRAY_MODES",
    "ImageFileError",
    "image_file_problem",
    "read_image",
]

MAX_IMAGE_PIXELS = 100_000_000
"""Largest image read (100 MP, e.g. 12000 x 8000): more is a mistake or an attack (a
14000 x 14000 RGB image is 588 MB decoded), and no model here needs it."""
EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX",
                             "CMYK", "YCbCr", "LAB", "HSV"})  # fmt: skip
"""Pillow modes whose conversion to 8-bit RGB keeps the picture."""
SIXTEEN_BIT_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
"""Pillow modes of 16-bit unsigned grayscale samples (scaled to 8 bits by the high byte)."""


class ImageFileError(InputError):
    """An image file that cannot be used: unreadable, too large, or samples of no fixed range."""


def _header(path: Path) -> tuple[int, int, str, str | None]:
    """``(width, height, mode, format)`` from the file's header; nothing is decoded.

    Raises:
        ImageFileError: Not an image Pillow reads, or beyond Pillow's own bomb limit.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow warns above 89 MP; the limit here is ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size[0], im.size[1], im.mode, im.format
    except Image.DecompressionBombError as exc:
        raise ImageFileError(f"image {path} is more than the {MAX_IMAGE_PIXELS / 1e6:.0f} MP "
                             f"limit ({' '.join(str(exc).split())}): downscale it (and pass "
                             "--camera-scale)") from None  # fmt: skip
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = " ".join(str(exc).split())
        raise ImageFileError(f"image cannot be read: {path} ({reason})") from None


def _is_sixteen_bit_gray(mode: str, fmt: str | None) -> bool:
    """16-bit grayscale: the ``I;16`` modes, or mode ``I`` of a PNG (PNG holds at most 16 bits;
    older Pillow opens 16-bit grayscale PNGs as ``I``)."""
    return mode in SIXTEEN_BIT_GRAY_MODES or (mode == "I" and fmt == "PNG")


def _check_header(path: Path, max_pixels: int) -> tuple[int, int, str, str | None]:
    """The header, checked: size within ``max_pixels``, a mode read as 8-bit RGB.

    Raises:
        ImageFileError: Unreadable, empty, too large, or float / 32-bit samples.
    """
    width, height, mode, fmt = _header(path)
    if width < 1 or height < 1:
        raise ImageFileError(f"image {path} is empty ({width}x{height})")
    if width * height > max_pixels:
        raise ImageFileError(
            f"image {path} is {width}x{height} ({width * height / 1e6:.0f} MP), more than the "
            f"{max_pixels / 1e6:.0f} MP limit: downscale it (and pass --camera-scale)"
        )
    if mode not in EIGHT_BIT_MODES and not _is_sixteen_bit_gray(mode, fmt):
        raise ImageFileError(
            f"image {path} has mode {mode} samples (float or 32-bit, no fixed range): convert "
            "it to 8-bit or 16-bit RGB / grayscale first"
        )
    return width, height, mode, fmt


def image_file_problem(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """What `read_image` would refuse in an image file, from its header only.

    Returns:
        None when the file is a readable image of at most ``max_pixels`` pixels whose samples
        read as 8-bit RGB (8-bit modes, 16-bit grayscale); otherwise one line naming the file.
    """
    try:
        _check_header(Path(path), max_pixels)
    except ImageFileError as exc:
        return str(exc)
    return None


def read_image(
    path: str | Path, *, mirrored: bool = False, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB.

    8-bit images are converted to RGB; 16-bit grayscale is scaled to 8 bits by its high byte
    (``v >> 8``, as Pillow reads 16-bit RGB); float and 32-bit integer images are refused.

    Args:
        path: The file (any format Pillow reads).
        mirrored: The file is stored mirrored (PROX colour frames): flip it back.
        max_pixels: Largest ``W * H`` read; checked from the header, before decoding.

    Returns:
        Array of shape (H, W, 3), uint8 RGB.

    Raises:
        MissingFileError: Missing or not a file.
        ImageFileError: Unreadable, too large, or samples of no fixed range.
    """
    from PIL import Image

    p = require_file(path, "image")
    _, _, mode, fmt = _check_header(p, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                if _is_sixteen_bit_gray(mode, fmt):
                    gray = np.asarray(im).astype(np.int64)
                    if gray.min() < 0 or gray.max() > 0xFFFF:
                        raise ImageFileError(f"image {p} has samples outside 16 bits "
                                             f"({gray.min()}..{gray.max()})")  # fmt: skip
                    image = np.repeat((gray >> 8).astype(np.uint8)[..., None], 3, axis=2)
                else:
                    image = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
        if isinstance(exc, ImageFileError):
            raise
        reason = " ".join(str(exc).split())
        raise MissingFileError(f"image cannot be read: {p} ({reason})") from exc
    return np.ascontiguousarray(image[:, ::-1]) if mirrored else image
