"""Atomic file writes: a file appears under its final name only when it is complete.

Every writer goes through :func:`atomic_open`: a hidden temporary file in the target's
folder (``.<name>.<random>.tmp``), given the mode a plain ``open`` would give (0666 less the
umask, not the 0600 of ``mkstemp``), optionally fsynced, then renamed over the target with
`os.replace` (atomic on POSIX). On any exception the temporary file is removed and the target
is left as it was. The helpers below serve the formats the package writes: bytes, text,
JSON, ``.npz``; checkpoints use :func:`atomic_open` through
`sahmr.engine.checkpoint.atomic_torch_save`.

A leaf module (standard library and numpy only) so that every layer can use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "atomic_open",
    "atomic_save_npz",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "current_umask",
]


def current_umask() -> int:
    """The process umask (read without changing it where Linux allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, brief)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(
    path: str | os.PathLike,
    *,
    prefix: str | None = None,
    fsync: bool = False,
    make_parents: bool = False,
) -> Iterator[IO[bytes]]:
    """Open a binary temporary file that replaces ``path`` when the block ends cleanly.

    Args:
        path: Final file path.
        prefix: Temporary file name prefix (default ``.<name>.``); the name ends ``.tmp``.
        fsync: Flush and fsync the file before the rename (durable across a power loss).
        make_parents: Create the folder first.

    Yields:
        The open binary file object.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}." if prefix is None else prefix, suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())  # mkstemp makes 0600
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_open`); returns the path."""
    with atomic_open(path, fsync=fsync) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """Write ``json.dumps(obj, **dumps_kwargs)`` and a newline to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def atomic_save_npz(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    *,
    compressed: bool = False,
    fsync: bool = False,
    make_parents: bool = False,
    prefix: str | None = None,
) -> Path:
    """``np.savez`` (or ``savez_compressed``) of ``arrays`` to ``path`` atomically.

    The file is written through a file object, so no ``.npz`` suffix is appended: ``path`` is
    the exact name written. ``fsync``, ``make_parents`` and ``prefix`` as in :func:`atomic_open`.
    """
    save = np.savez_compressed if compressed else np.savez
    with atomic_open(path, prefix=prefix, fsync=fsync, make_parents=make_parents) as fh:
        save(fh, **arrays)
    return Path(path)
