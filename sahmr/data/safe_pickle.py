"""Opt-in, restricted reading of the pickled files some datasets ship (PROXD fits, RICH params).

Dataset pickles here are plain dicts of numpy arrays. They are never unpickled unless the
caller passes ``allow_pickle=True``; even then `DataUnpickler` can build only numpy arrays,
numpy dtypes/scalars and builtin containers/scalars. It narrows the body-file unpickler
`sahmr.body.io.RestrictedUnpickler` (which additionally admits scipy sparse matrices and
chumpy stand-ins for SMPL files) by refusing those two families as well.
"""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_REFUSED_PREFIXES = ("chumpy", "scipy")


def _unpickler_class() -> type[pickle.Unpickler]:
    """Builds `DataUnpickler` on first use (keeps ``import sahmr.data`` free of sahmr.body)."""
    from sahmr.body.io import RestrictedUnpickler

    class DataUnpickler(RestrictedUnpickler):
        """`RestrictedUnpickler` limited to numpy arrays/dtypes/scalars and builtins."""

        def find_class(self, module: str, name: str) -> Any:
            if module.split(".")[0] in _REFUSED_PREFIXES:
                raise pickle.UnpicklingError(
                    f"refusing to unpickle global {module}.{name}: dataset pickles may hold "
                    "only numpy arrays, numpy dtypes/scalars and builtin containers"
                )
            return super().find_class(module, name)

    return DataUnpickler


def load_data_pickle(path: str | Path, *, allow_pickle: bool = False, what: str = "file") -> Any:
    """Reads a dataset pickle with the restricted unpickler, only after an explicit opt-in.

    Args:
        path: The ``.pkl`` file.
        allow_pickle: Must be True; pickles can run code when read with `pickle.load`.
        what: Human-readable name of the file kind, used in error messages.

    Returns:
        The unpickled object (dicts / lists / numpy arrays / scalars only).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        PermissionError: If ``allow_pickle`` is False (the message says how to opt in).
        pickle.UnpicklingError: If the pickle names anything outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not allow_pickle:
        raise PermissionError(
            f"refusing to unpickle {what} {path}: pickles can run code. Pass "
            "allow_pickle=True to the dataset/loader to read it with a restricted unpickler "
            "that builds only numpy arrays, dtypes, scalars and builtin containers."
        )
    data = path.read_bytes()
    return _unpickler_class()(io.BytesIO(data), encoding="latin1").load()
