"""Versioned shard files of the synthetic dataset: format, atomic writer, random-access reader.

A shard is one uncompressed ``.npz`` (a zip of ``.npy`` members, readable with
``np.load(path, allow_pickle=False)``) holding N samples:

* fixed-size labels stacked along a leading N axis (`FIXED_FIELDS`, and the later
  `OPTIONAL_FIELDS` that older shards lack);
* ragged contact points concatenated, with ``contact_offsets`` (N + 1,) int64;
* encoded images (JPEG / PNG bytes) concatenated into one uint8 array per kind, with
  ``<kind>_offsets`` (N + 1,) int64 (`BYTES_FIELDS`);
* ``header``: uint8 UTF-8 JSON (format name, version, shard index, split, per-row strings
  ``scene_id`` / ``sequence_id`` / ``action``, statistics).

Files are written to a temporary name in the same folder, fsync'ed and renamed with
`os.replace`, so a shard under its final name is always complete. Members are stored (not
deflated), so the reader memory-maps each array and decodes one row without reading the
rest. docs/dataset_format.md documents every field.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sahmr.atomic_write import atomic_save_npz

logger = logging.getLogger(__name__)

DATASET_FORMAT = "sahmr.synth_dataset"
"""``format`` of a generated dataset folder's ``dataset.json`` (docs/dataset_format.md)."""
DATASET_VERSION = 1
"""``version`` of ``dataset.json`` that this reader and the generator write."""
SHARD_FORMAT = "sahmr.synth_shard"
SHARD_VERSION = 1
SHARD_SUFFIX = ".npz"

FIXED_FIELDS: dict[str, tuple[str, tuple[int | None, ...]]] = {
    "bbox": ("float32", (4,)),
    "K": ("float32", (3, 3)),
    "K_crop": ("float32", (3, 3)),
    "T_w2c": ("float32", (4, 4)),
    "image_size": ("int64", (2,)),
    "betas": ("float32", (10,)),
    "global_orient": ("float32", (3,)),
    "body_pose": ("float32", (69,)),
    "transl": ("float32", (3,)),
    "vertices_world": ("float32", (None, 3)),
    "joints_world": ("float32", (24, 3)),
    "vertex_contact": ("uint8", (None,)),
    "occlusion": ("float32", ()),
    "frame_index": ("int64", ()),
    "object_id": ("int64", ()),
    "image_scale": ("float32", ()),
}
"""Per-row arrays: name -> (dtype, row shape; None = the body model's V)."""

MIRRORED_UNKNOWN = 255
"""``mirrored`` of a row whose shard does not record it. Every set made with
``mirror_fraction=0`` (all sets before 2026-12-07) holds no mirrored body."""

OPTIONAL_FIELDS: dict[str, tuple[str, float]] = {
    "height": ("float32", float("nan")),
    "occluder": ("uint8", 0),
    "mirrored": ("uint8", MIRRORED_UNKNOWN),
}
"""Per-row scalars added after format v1 shipped: name -> (dtype, value of a shard written
before them). Written whenever the rows carry them; readers fill the default when a shard
lacks the member (``height``: rest-pose stature, m; ``occluder``: synthetic occluder kind,
`sahmr.synth.occluders.OCCLUDER_KINDS`; ``mirrored``: 1 when the body was drawn as its
action's left/right mirror image, 0 when as the pose library holds it, `MIRRORED_UNKNOWN`
when the shard predates the member)."""

RAGGED_FIELDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "contact_points_world": ("float32", (3,)),
    "contact_point_region": ("uint8", ()),
}
"""Variable-length per-row arrays, concatenated; row i is ``[off[i]:off[i+1]]``."""

BYTES_FIELDS: tuple[str, ...] = ("crop", "mask", "depth", "image")
"""Encoded images: crop RGB, crop person mask (PNG), crop depth (16-bit PNG, mm), frame."""

STRING_FIELDS: tuple[str, ...] = ("scene_id", "sequence_id", "action")
"""Per-row strings, kept in the JSON header."""


# ----------------------------------------------------------------------------------------
# image codecs


def encode_image(array: np.ndarray, fmt: str = "png", quality: int = 92) -> bytes:
    """Encodes an image.

    Args:
        array: (H, W, 3) uint8 RGB, (H, W) uint8 or (H, W) uint16 (PNG only).
        fmt: ``"png"`` (lossless) or ``"jpeg"``.
        quality: JPEG quality.

    Returns:
        The encoded bytes.
    """
    buf = io.BytesIO()
    img = Image.fromarray(np.ascontiguousarray(array))
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality)
    elif fmt == "png":
        img.save(buf, format="PNG", compress_level=1)
    else:
        raise ValueError(f"unknown image format {fmt!r} (png or jpeg)")
    return buf.getvalue()


def decode_image(data: bytes | np.ndarray) -> np.ndarray:
    """Decodes JPEG / PNG bytes to (H, W, 3) uint8, (H, W) uint8 or (H, W) uint16."""
    img = Image.open(io.BytesIO(bytes(data)))
    if img.mode.startswith("I;16"):
        return np.asarray(img, dtype=np.uint16)
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    return np.asarray(img)


def encode_depth_mm(depth_m: np.ndarray) -> np.ndarray:
    """Depth in metres (inf = miss) -> uint16 millimetres (0 = miss, clipped at 65.535 m)."""
    d = np.where(np.isfinite(depth_m), np.round(depth_m * 1000.0), 0.0)
    return np.clip(d, 0, 65535).astype(np.uint16)


def decode_depth_mm(depth_mm: np.ndarray) -> np.ndarray:
    """uint16 millimetres -> float32 metres, inf where 0."""
    d = depth_mm.astype(np.float32) / 1000.0
    d[depth_mm == 0] = np.inf
    return d


# ----------------------------------------------------------------------------------------
# writing


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard-000042.npz``)."""
    return f"shard-{index:06d}{SHARD_SUFFIX}"


def _temp_prefix(path: Path) -> str:
    """Temporary file prefix of a shard writer: ``.<name>.tmp.<pid>.`` (`remove_stale_temps`)."""
    return f".{path.name}.tmp.{os.getpid()}."


def pack_rows(
    rows: Sequence[Mapping[str, Any]], header: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Stacks per-row records into the shard's arrays.

    Args:
        rows: N >= 1 records, each with every `FIXED_FIELDS` / `RAGGED_FIELDS` array (and
            `OPTIONAL_FIELDS` in all rows or none), every
            `BYTES_FIELDS` entry as bytes (``b""`` when absent) and every `STRING_FIELDS`
            string.
        header: Extra JSON-serialisable header entries (shard index, split, stats...).

    Returns:
        Arrays to save, including ``header``.
    """
    if not rows:
        raise ValueError("a shard needs at least one row")
    out: dict[str, np.ndarray] = {}
    for name, (dtype, shape) in FIXED_FIELDS.items():
        arr = np.stack([np.asarray(r[name]) for r in rows]).astype(dtype, copy=False)
        if arr.ndim != len(shape) + 1 or any(
            s is not None and s != d for s, d in zip(shape, arr.shape[1:])
        ):
            raise ValueError(f"field {name}: rows of shape {arr.shape[1:]}, expected {shape}")
        out[name] = arr
    for name, (dtype, _) in OPTIONAL_FIELDS.items():
        have = [name in r for r in rows]
        if any(have) and not all(have):
            raise ValueError(f"field {name}: present in some rows only")
        if all(have):
            out[name] = np.array([r[name] for r in rows]).astype(dtype, copy=False).reshape(-1)
    counts = np.array([len(r["contact_points_world"]) for r in rows], dtype=np.int64)
    out["contact_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    for name, (dtype, shape) in RAGGED_FIELDS.items():
        parts = [np.asarray(r[name], dtype=dtype).reshape((-1, *shape)) for r in rows]
        out[name] = np.concatenate(parts, axis=0)
    for name in BYTES_FIELDS:
        blobs = [bytes(r.get(name) or b"") for r in rows]
        sizes = np.array([len(b) for b in blobs], dtype=np.int64)
        out[name] = np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()
        out[f"{name}_offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    full_header = {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "num_samples": len(rows),
        **dict(header),
        "strings": {k: [str(r[k]) for r in rows] for k in STRING_FIELDS},
    }
    out["header"] = np.frombuffer(json.dumps(full_header).encode("utf-8"), dtype=np.uint8)
    return out


def write_shard_atomic(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Writes a shard so that it appears under its final name only when complete.

    Writes ``.<name>.tmp.<pid>.<random>.tmp`` in the same folder (`sahmr.atomic_write`),
    flushes and fsyncs it, renames it with `os.replace` (atomic on POSIX) and fsyncs the
    folder. On an exception the temporary file
    is removed and nothing appears under ``path``.

    Args:
        path: Final shard path.
        arrays: Arrays from `pack_rows`.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    atomic_save_npz(path, arrays, fsync=True, make_parents=True, prefix=_temp_prefix(path))
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some file systems cannot fsync folders
        pass
    return path


def remove_stale_temps(path: str | Path) -> int:
    """Removes temporary files a killed writer left for one shard path; returns how many."""
    path = Path(path)
    n = 0
    for p in path.parent.glob(f".{path.name}.tmp.*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


# ----------------------------------------------------------------------------------------
# reading


def _member_memmap(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """Memory-maps a stored ``.npy`` member of a zip (falls back to reading it)."""
    info = zf.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        with zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: bad local header for {name}")
        n_name = int.from_bytes(local[26:28], "little")
        n_extra = int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + n_name + n_extra)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if dtype.hasobject:
            raise ValueError(f"{path}: member {name} holds Python objects")
        offset = f.tell()
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


class ShardReader:
    """Random access to one shard (arrays memory-mapped on first use).

    Attributes:
        path: Shard path.
        header: The decoded JSON header.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._zip = zipfile.ZipFile(self.path)
        self._arrays: dict[str, np.ndarray] = {}
        self._members = {n.removesuffix(".npy") for n in self._zip.namelist()}
        self.header = read_header(self.path, self._zip)

    def __len__(self) -> int:
        return int(self.header["num_samples"])

    def close(self) -> None:
        """Closes the zip and drops the memory maps."""
        self._arrays.clear()
        self._zip.close()

    def array(self, name: str) -> np.ndarray:
        """A whole member array (memory-mapped)."""
        if name not in self._arrays:
            self._arrays[name] = _member_memmap(self.path, self._zip, name)
        return self._arrays[name]

    def has(self, name: str) -> bool:
        """Whether the shard holds a member (`OPTIONAL_FIELDS` may be absent)."""
        return name in self._members

    def bytes_of(self, name: str, i: int) -> bytes:
        """Encoded bytes of row ``i`` of a `BYTES_FIELDS` member (``b""`` when absent)."""
        off = self.array(f"{name}_offsets")
        return bytes(self.array(name)[int(off[i]) : int(off[i + 1])])

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` with arrays copied out, images still encoded, strings from the header.

        Args:
            i: Row index in [0, N).

        Returns:
            Dict with every field of `FIXED_FIELDS`, `OPTIONAL_FIELDS` (their default when
            the shard predates them), `RAGGED_FIELDS`, `BYTES_FIELDS` (bytes) and
            `STRING_FIELDS`.
        """
        n = len(self)
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range for {n} rows in {self.path}")
        out: dict[str, Any] = {k: np.array(self.array(k)[i]) for k in FIXED_FIELDS}
        for k, (dtype, default) in OPTIONAL_FIELDS.items():
            out[k] = np.array(self.array(k)[i] if self.has(k) else default, dtype=dtype)
        off = self.array("contact_offsets")
        a, b = int(off[i]), int(off[i + 1])
        for k in RAGGED_FIELDS:
            out[k] = np.array(self.array(k)[a:b])
        for k in BYTES_FIELDS:
            out[k] = self.bytes_of(k, i)
        for k in STRING_FIELDS:
            out[k] = self.header["strings"][k][i]
        return out


def read_header(path: str | Path, zf: zipfile.ZipFile | None = None) -> dict[str, Any]:
    """Reads and checks a shard's JSON header.

    Args:
        path: Shard path.
        zf: An already open zip of it (optional).

    Returns:
        The header dict.

    Raises:
        ValueError: Not a shard of this format, or a newer version than this code reads.
    """
    own = zf is None
    zf = zf or zipfile.ZipFile(path)
    try:
        with zf.open("header.npy") as f:
            raw = np.lib.format.read_array(f, allow_pickle=False)
    finally:
        if own:
            zf.close()
    header = json.loads(raw.tobytes().decode("utf-8"))
    if header.get("format") != SHARD_FORMAT:
        raise ValueError(f"{path}: not a {SHARD_FORMAT} file")
    if int(header.get("version", -1)) > SHARD_VERSION:
        raise ValueError(f"{path}: shard version {header['version']} is newer than {SHARD_VERSION}")
    return header


def validate_shard(path: str | Path, expect: Mapping[str, Any] | None = None) -> bool:
    """Whether a shard is complete, uncorrupted and matches expected header entries.

    Checks the header, every member's presence and every member's zip CRC.

    Args:
        path: Shard path.
        expect: Header entries that must be equal (e.g. shard index, config hash).

    Returns:
        True when valid; False (logged) otherwise.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            header = read_header(path, zf)
            for k, v in (expect or {}).items():
                if header.get(k) != v:
                    logger.info("%s: header %s=%r, expected %r", path, k, header.get(k), v)
                    return False
            names = {n.removesuffix(".npy") for n in zf.namelist()}
            needed = set(FIXED_FIELDS) | set(RAGGED_FIELDS) | {"contact_offsets"}
            needed |= set(BYTES_FIELDS) | {f"{b}_offsets" for b in BYTES_FIELDS}
            if not needed <= names:
                logger.info("%s: missing members %s", path, sorted(needed - names))
                return False
            bad = zf.testzip()
            if bad is not None:
                logger.info("%s: CRC error in %s", path, bad)
                return False
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        logger.info("%s: invalid shard (%s)", path, err)
        return False
    return True
