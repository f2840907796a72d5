"""Reading photographs for the models: 8-bit RGB, 16-bit scaled down, the rest refused.

Pillow's plain ``convert("RGB")`` clips 16-bit grayscale samples (mode ``I;16``) to 255, so a
16-bit PNG would be read as an all-white picture; float and 32-bit integer images have no fixed
range. Here 16-bit grayscale is scaled to 8 bits the way Pillow itself reads 16-bit RGB PNGs
(the high byte), float / 32-bit images are refused with one line naming the file, and an image
larger than `MAX_IMAGE_PIXELS` is refused from its header, before any pixel is decoded.

A photograph whose EXIF orientation tag says it is stored turned or mirrored (phones store the
sensor's rows and tag how to show them) is read the way viewers show it and OpenCV's
``imread`` returns it: calibrations, boxes and keypoints made on the shown picture then fit.
`image_size` gives that shown size from the header.
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
    "exif_orientation",
    "image_file_problem",
    "image_size",
    "orient",
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


EXIF_ORIENTATION_TAG = 0x0112
"""The EXIF tag of how a stored picture is to be shown (1: as stored; 2-8: mirrored and/or
turned by 90, 180 or 270 degrees)."""
TURNED_ORIENTATIONS = frozenset({5, 6, 7, 8})
"""EXIF orientations that turn the picture by 90 or 270 degrees: width and height swap."""


def exif_orientation(im) -> int:
    """The EXIF orientation (1-8) of an open Pillow image; 1 when absent or unreadable."""
    try:
        value = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except (AttributeError, OSError, SyntaxError, TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


class ImageFileError(InputError):
    """An image file that cannot be used: unreadable, too large, or samples of no fixed range."""


def _header(path: Path) -> tuple[int, int, str, str | None]:
    """``(width, height, mode, format)`` from the file's header, the size as shown (after the
    EXIF orientation); nothing is decoded.

    Raises:
        ImageFileError: Not an image Pillow reads, or beyond Pillow's own bomb limit.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow warns above 89 MP; the limit here is ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if exif_orientation(im) in TURNED_ORIENTATIONS:
                    width, height = height, width
                return width, height, im.mode, im.format
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


def image_size(path: str | Path) -> tuple[int, int]:
    """``(W, H)`` of an image as `read_image` returns it (after its EXIF orientation), from
    the header alone.

    Raises:
        MissingFileError: Missing or not a file.
        ImageFileError: Not an image Pillow reads.
    """
    width, height, _, _ = _header(require_file(path, "image"))
    return width, height


def read_image(
    path: str | Path, *, mirrored: bool = False, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, as shown: turned and mirrored as its EXIF
    orientation tag says.

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
                orientation = exif_orientation(im)
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt pixel data
        if isinstance(exc, ImageFileError):
            raise
        reason = " ".join(str(exc).split())
        raise MissingFileError(f"image cannot be read: {p} ({reason})") from exc
    if orientation != 1:
        image = orient(image, orientation)
        logger.info("image %s: EXIF orientation %d: read as shown, %dx%d", p, orientation,
                    image.shape[1], image.shape[0])  # fmt: skip
    return np.ascontiguousarray(image[:, ::-1]) if mirrored else np.ascontiguousarray(image)


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """A stored picture as shown under EXIF ``orientation`` (1-8, the tag `EXIF_ORIENTATION_TAG`).

    The tag names where the stored picture's first row and column go: 2 mirrors left-right,
    3 turns by 180 degrees, 4 mirrors top-bottom, 5 transposes (mirror about the main diagonal),
    6 turns by 90 degrees clockwise, 7 transverses (mirror about the other diagonal), 8 turns by
    90 degrees counter-clockwise.

    Args:
        image: (H, W, ...) as stored.
        orientation: The EXIF value; 1 (or anything outside 2-8) returns ``image``.

    Returns:
        (H, W, ...) or, for 5-8, (W, H, ...), as shown (a view where numpy allows one).
    """
    swap = (1, 0, *range(2, image.ndim))
    return {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(swap),
        6: lambda a: a.transpose(swap)[:, ::-1],
        7: lambda a: a.transpose(swap)[::-1, ::-1],
        8: lambda a: a.transpose(swap)[::-1],
    }.get(orientation, lambda a: a)(image)
