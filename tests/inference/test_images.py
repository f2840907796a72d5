"""Image reading: 8-bit as is, 16-bit scaled by the high byte, float / huge refused, EXIF
orientation applied.

16-bit PNGs are written by hand (Pillow cannot write 16-bit RGB), so the expected 8-bit
pixels come from the samples themselves, not from Pillow.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from sahmr.inference.errors import ImageSizeError, InputError, MissingFileError, check_image_size
from sahmr.inference.images import (
    EXIF_ORIENTATION_TAG,
    MAX_IMAGE_PIXELS,
    image_file_problem,
    image_size,
    orient,
    read_image,
)

PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
"""PNG colour type by channel count: gray, gray+alpha, RGB, RGBA."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF
    )


def write_png16(path: Path, samples: np.ndarray) -> Path:
    """A 16-bit PNG of ``samples`` (H, W) or (H, W, C), C in 1..4, written byte by byte."""
    arr = samples if samples.ndim == 3 else samples[..., None]
    h, w, c = arr.shape
    rows = b"".join(b"\x00" + arr[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, PNG_COLOUR_TYPE[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
                     + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))  # fmt: skip
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` RGB, with no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b""))
    return path


def _samples(shape: tuple[int, ...]) -> np.ndarray:
    s = np.random.default_rng(0).integers(0, 65536, shape).astype(np.uint16)
    pixels = s.reshape(shape[0] * shape[1], -1)
    pixels[0], pixels[1] = 0, 65535  # both ends of the range, every channel
    return s


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_sixteen_bit_png_is_scaled_by_the_high_byte(channels, tmp_path):
    shape = (6, 7) if channels == 1 else (6, 7, channels)
    samples = _samples(shape)
    path = write_png16(tmp_path / "deep.png", samples)
    image = read_image(path)
    colour = samples[..., None] if channels == 1 else samples[..., : 3 if channels >= 3 else 1]
    expected = np.broadcast_to(colour // 256, (6, 7, 3)).astype(np.uint8)  # 65535 -> 255
    assert image.dtype == np.uint8 and image.shape == (6, 7, 3)
    np.testing.assert_array_equal(image, expected)
    assert image_file_problem(path) is None
    assert image.max() == 255 and image.min() == 0  # not clipped to white


def test_eight_bit_images_read_unchanged_and_mirrored(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (5, 8, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    gray = rgb[..., 0].copy()
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "c.png", mirrored=True), rgb[:, ::-1])
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(gray[..., None], 3, 2))


def _float_tiff(t: Path) -> Path:
    Image.fromarray(np.random.default_rng(2).random((4, 5)).astype(np.float32)).save(t / "f.tif")
    return t / "f.tif"


def _int32_tiff(t: Path) -> Path:
    Image.fromarray(np.arange(20, dtype=np.int32).reshape(4, 5) * 70000).save(t / "i.tif")
    return t / "i.tif"


def _truncated_png(t: Path) -> Path:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 7).save(t / "cut.png")
    data = (t / "cut.png").read_bytes()
    (t / "cut.png").write_bytes(data[: len(data) // 2])
    return t / "cut.png"


REFUSED = {
    "float samples": (_float_tiff, None, "mode F samples"),
    "32-bit samples": (_int32_tiff, None, "mode I samples"),
    "14000 x 14000": (lambda t: png_header_only(t / "huge.png", 14000, 14000), None, "MP limit"),
    "just over the limit": (lambda t: png_header_only(t / "big.png", 12000, 9000), None,
                            "12000x9000 (108 MP)"),
    "not an image": (lambda t: (t / "x.png").write_bytes(b"nope" * 9) and t / "x.png", None,
                     "image cannot be read"),
    "a folder": (lambda t: (t / "d.png").mkdir() or t / "d.png", MissingFileError,
                 "image is not a file"),
    "missing": (lambda t: t / "none.png", MissingFileError, "image not found"),
    "truncated pixels": (_truncated_png, MissingFileError, "image cannot be read"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unusable_images_are_refused_with_the_file_named(case, tmp_path):
    make, error, message = REFUSED[case]
    path = make(tmp_path)
    with pytest.raises(error or InputError) as info:
        read_image(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text
    if case not in ("a folder", "missing", "truncated pixels"):  # the header tells
        assert image_file_problem(path) == text


def test_the_size_limit_is_checked_before_decoding(tmp_path):
    """A header-only file over the limit would fail to decode; the limit is named first."""
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    with pytest.raises(InputError, match="MP limit"):
        read_image(png_header_only(tmp_path / "edge.png", side, side))
    rgb = np.zeros((3, 4, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "small.png")
    with pytest.raises(InputError, match=r"4x3 \(0 MP\), more than the 0 MP limit"):
        read_image(tmp_path / "small.png", max_pixels=11)
    assert read_image(tmp_path / "small.png", max_pixels=12).shape == (3, 4, 3)


def _tagged(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    """``pixels`` stored as they are, with EXIF orientation ``orientation``."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_read_as_pillow_shows_it(orientation, tmp_path):
    """Against Pillow's own `ImageOps.exif_transpose` (the reference) on a lossless PNG whose
    sides differ, so a wrong turn changes the shape."""
    rgb = np.random.default_rng(orientation).integers(0, 256, (5, 8, 3)).astype(np.uint8)
    path = _tagged(tmp_path / "tagged.png", rgb, orientation)
    with Image.open(path) as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    image = read_image(path)
    np.testing.assert_array_equal(image, shown)
    np.testing.assert_array_equal(orient(rgb, orientation), shown)
    assert image_size(path) == (shown.shape[1], shown.shape[0])
    assert image.shape[:2] == ((8, 5) if orientation >= 5 else (5, 8))
    # PROX's mirrored frames: un-mirrored after the turn, as shown
    np.testing.assert_array_equal(read_image(path, mirrored=True), shown[:, ::-1])


def test_a_turned_photo_is_sized_from_its_header_and_checked_as_shown(tmp_path):
    """A phone photo stored 640x480 and tagged 'turn 90 degrees clockwise' is 480x640 as
    shown: the size check and the size limit see that, and an untagged copy of the shown
    picture is named as turned against a 480x640 calibration."""
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:10] = 255  # the stored top row ends up on the right
    path = _tagged(tmp_path / "phone.jpg", rgb, 6)
    assert image_size(path) == (480, 640)
    image = read_image(path)
    assert image.shape == (640, 480, 3) and image[:, -5].mean() > 200 and image[:, 5].mean() < 50
    K = np.array([[500.0, 0, 240], [0, 500, 320], [0, 0, 1]])
    check_image_size(image_size(path), (480, 640), K)  # calibrated on the shown picture
    with pytest.raises(ImageSizeError, match="turned by 90 degrees against the calibration"):
        check_image_size(image_size(path), (640, 480), K)
    assert image_file_problem(path) is None
    with pytest.raises(InputError, match="0 MP limit"):
        read_image(path, max_pixels=480 * 640 - 1)


@pytest.mark.parametrize("tag", [0, 9, 65535])
def test_an_invalid_orientation_tag_reads_the_picture_as_stored(tag, tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (4, 6, 3)).astype(np.uint8)
    path = _tagged(tmp_path / "odd.png", rgb, tag)
    np.testing.assert_array_equal(read_image(path), rgb)
    assert image_size(path) == (6, 4)
