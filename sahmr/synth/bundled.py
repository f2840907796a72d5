"""Find the demo rooms bundled in ``scenes/``.

Looked up without relying on the working directory (like trimesh's ``resources``): first the
``sahmr._scenes`` package, which non-editable installs map ``scenes/`` to; else the
``scenes/`` folder next to the ``sahmr`` package in a source checkout.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import sahmr

if TYPE_CHECKING:
    from sahmr.synth.rooms import Room

logger = logging.getLogger(__name__)

BUNDLED_SCENES: dict[str, tuple[str, int]] = {
    "living_room": ("living_room", 1),
    "office": ("office", 2),
    "bedroom": ("bedroom", 2),
    "lecture_hall": ("lecture_hall", 1),
    "gym": ("gym", 3),
    "outdoor_platform": ("outdoor_platform", 2),
}
"""Bundled scene name -> (room kind, seed) that ``tools/make_rooms.py`` generates it from."""

DEFAULT_SCENE = "living_room"


def scenes_root() -> Path:
    """Folder holding the bundled scenes.

    Returns:
        ``sahmr._scenes``'s folder when that package is installed, else ``<checkout>/scenes``.
    """
    spec = importlib.util.find_spec("sahmr._scenes")
    if spec is not None and spec.submodule_search_locations:
        # A folder without __init__.py installs as a namespace package: take its one folder.
        for location in spec.submodule_search_locations:
            if Path(location).is_dir():
                return Path(location)
    return Path(sahmr.__file__).resolve().parent.parent / "scenes"


def list_bundled_scenes() -> list[str]:
    """Names of the bundled scenes present on disk (folders with a ``meta.json``), sorted."""
    root = scenes_root()
    if not root.is_dir():
        logger.warning("no bundled scenes folder at %s", root)
        return []
    return sorted(p.name for p in root.iterdir() if (p / "meta.json").is_file())


def bundled_scene_dir(name: str) -> Path:
    """Folder of one bundled scene.

    Args:
        name: scene name, e.g. ``"living_room"``.

    Returns:
        The folder holding ``mesh.ply``, ``meta.json``, ``face_object_id.npy``...

    Raises:
        KeyError: no bundled scene of that name; the message lists the available names.
    """
    names = list_bundled_scenes()
    if name not in names:
        raise KeyError(f"no bundled scene {name!r} in {scenes_root()}; available: "
                       f"{', '.join(names) or '(none)'}")
    return scenes_root() / name


def default_scene_name() -> str:
    """Name of the scene demos use when none is given (``"living_room"``)."""
    return DEFAULT_SCENE


def load_bundled_room(name: str | None = None) -> Room:
    """Load a bundled scene as a :class:`sahmr.synth.rooms.Room`.

    Args:
        name: scene name; None for :func:`default_scene_name`.

    Returns:
        The Room.
    """
    from sahmr.synth.rooms import Room

    return Room.load(bundled_scene_dir(name or default_scene_name()))
