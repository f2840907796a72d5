"""Readers of body frames (predictions or ground truth) for the evaluator.

A reader lists frame names and loads one frame at a time as a :class:`BodyFrame`; the
evaluator matches prediction and ground-truth frames by name. :class:`FolderReader` reads a
folder of ``<name>.ply`` / ``<name>.obj`` meshes or ``<name>.npz`` files (``<name>.gt.npz``,
the demo frames' ground truth, is frame ``<name>``), or a folder of per-frame sub-folders as
the demo writes them (``<name>/body_params.npz``, else ``<name>/body_world.ply|obj``); a
dataset reader only has to implement the two methods of :class:`FrameReader`.

``.npz`` keys (all world frame, metres, radians):
    * ``vertices`` (V, 3): a mesh given directly, or SMPL-format parameters ``betas`` (10,)
      or (1, 10), ``global_orient`` (3,), ``body_pose`` (69,), ``transl`` (3,);
    * optional ``contact`` (V,) bool/0-1: ground-truth contact labels per vertex;
    * optional ``scene`` (str): the scene name, resolved in the evaluator's scene folder;
    * optional ``scene_contact_labels`` (N,) int 0..7 with ``scene_points`` (N, 3): per scene
      point contact class (RCNet-style output or its ground truth).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

MESH_SUFFIXES = (".ply", ".obj")
PARAM_SUFFIXES = (".npz",)
GT_TAG = ".gt"
"""``<name>.gt.npz`` holds frame ``<name>``'s ground truth (the demo frames' convention)."""
FRAME_FOLDER_FILES = ("body_params.npz", "body_world.ply", "body_world.obj")
"""Files read from a per-frame sub-folder, first found wins (the demo's outputs)."""
SMPL_PARAM_KEYS = ("betas", "global_orient", "body_pose", "transl")


class FrameError(Exception):
    """A frame that exists but cannot be read (malformed file, wrong shapes)."""


@dataclass
class BodyFrame:
    """One body, either as vertices or as SMPL-format parameters (world frame, metres).

    Attributes:
        name: Frame name (file stem).
        vertices: Array of shape (V, 3) or None when ``params`` is given.
        params: SMPL-format parameters ``betas`` (NB,), ``global_orient`` (3,),
            ``body_pose`` (69,), ``transl`` (3,), or None.
        contact: Optional bool array of shape (V,), contact labels (ground truth).
        scene: Optional scene name.
        scene_contact_labels: Optional int array (N,), contact class 0..7 per scene point.
        extras: Further per-frame arrays a writer keeps beside the body (e.g. a method's
            predicted ``contact_points_world`` (P, 3) and ``contact_point_region`` (P,)).
    """

    name: str
    vertices: np.ndarray | None = None
    params: dict[str, np.ndarray] | None = None
    contact: np.ndarray | None = None
    scene: str | None = None
    scene_contact_labels: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class FrameReader(Protocol):
    """What the evaluator needs from a source of frames."""

    def names(self) -> list[str]:
        """Frame names, sorted."""
        ...

    def load(self, name: str) -> BodyFrame:
        """One frame; raises :class:`FrameError` (or KeyError when absent)."""
        ...


class FolderReader:
    """Frames stored as one file per frame in a folder, or one sub-folder per frame.

    A file ``<name>.<ext>`` (``<name>.gt.npz`` too) is frame ``<name>``; a sub-folder
    ``<name>/`` holding one of :data:`FRAME_FOLDER_FILES` (a demo output) is frame
    ``<name>``. A folder that itself holds ``body_params.npz`` is one frame (the demo's
    single-image output), named by its ``summary.json``'s ``frame`` (else the folder's name).
    Deeper folders are not searched.

    Args:
        root: The folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"not a folder: {self.root}")
        self._files: dict[str, Path] = {}
        if (self.root / FRAME_FOLDER_FILES[0]).is_file():
            self._files[_single_frame_name(self.root)] = self.root / FRAME_FOLDER_FILES[0]
            return
        for path in sorted(self.root.iterdir()):
            name = None
            if path.is_dir():
                found = [path / f for f in FRAME_FOLDER_FILES if (path / f).is_file()]
                if found:
                    name, path = path.name, found[0]
            elif path.suffix.lower() in MESH_SUFFIXES + PARAM_SUFFIXES and path.is_file():
                name = path.stem
                if name.endswith(GT_TAG) and len(name) > len(GT_TAG):
                    name = name[: -len(GT_TAG)]
            if name is None:
                continue
            if name in self._files:
                logger.warning(
                    "%s: several files for frame %r; using %s",
                    self.root,
                    name,
                    self._files[name].relative_to(self.root),
                )
                continue
            self._files[name] = path

    def names(self) -> list[str]:
        """Frame names (file stems), sorted."""
        return sorted(self._files)

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def path(self, name: str) -> Path:
        """The file holding a frame."""
        return self._files[name]

    def load(self, name: str) -> BodyFrame:
        """Read one frame.

        Raises:
            KeyError: No file for ``name``.
            FrameError: The file is malformed.
        """
        path = self._files[name]
        try:
            if path.suffix.lower() in MESH_SUFFIXES:
                return BodyFrame(name=name, vertices=_read_mesh_vertices(path))
            return _read_npz(name, path)
        except FrameError:
            raise
        except Exception as exc:  # any parser failure is a malformed frame
            raise FrameError(f"{path.name}: {type(exc).__name__}: {exc}") from exc


def _single_frame_name(folder: Path) -> str:
    """The frame name of a single-frame demo output folder."""
    import json

    try:
        frame = json.loads((folder / "summary.json").read_text(encoding="utf-8")).get("frame")
    except (OSError, ValueError, AttributeError):
        frame = None
    return frame if isinstance(frame, str) and frame else folder.resolve().name


def _read_mesh_vertices(path: Path) -> np.ndarray:
    import trimesh

    mesh = trimesh.load(path, process=False, force="mesh")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise FrameError(f"{path.name}: no vertices")
    return vertices


def _read_npz(name: str, path: Path) -> BodyFrame:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    frame = BodyFrame(name=name)
    if "vertices" in arrays:
        v = np.asarray(arrays["vertices"], dtype=np.float64)
        v = v[0] if v.ndim == 3 and v.shape[0] == 1 else v
        if v.ndim != 2 or v.shape[1] != 3:
            raise FrameError(f"{path.name}: vertices must be (V, 3); got {v.shape}")
        frame.vertices = v
    elif all(k in arrays for k in SMPL_PARAM_KEYS):
        expected = {"global_orient": 3, "body_pose": 69, "transl": 3}
        params = {}
        for key in SMPL_PARAM_KEYS:
            value = np.asarray(arrays[key], dtype=np.float64).reshape(-1)
            if key in expected and value.size != expected[key]:
                raise FrameError(f"{path.name}: {key} has {value.size} values, not {expected[key]}")
            params[key] = value
        frame.params = params
    else:
        raise FrameError(
            f"{path.name}: needs 'vertices' or all of {', '.join(SMPL_PARAM_KEYS)}; "
            f"has {sorted(arrays)}"
        )
    if "contact" in arrays:
        frame.contact = np.asarray(arrays["contact"]).reshape(-1).astype(bool)
    if "scene" in arrays:
        frame.scene = str(np.asarray(arrays["scene"]).reshape(-1)[0])
    if "scene_contact_labels" in arrays:
        frame.scene_contact_labels = np.asarray(arrays["scene_contact_labels"]).astype(np.int64)
    return frame


class SyntheticSplitReader:
    """Ground truth from one split of a dataset written by ``tools/make_dataset.py``.

    Frame names are ``<split>-<index:06d>`` with the index into
    `sahmr.data.synthetic.SyntheticDataset` (so predictions are saved under the same names);
    each frame carries its world-frame vertices, its per-vertex contact labels (region > 0)
    and its scene id, which resolves as ``<dataset>/rooms/<scene_id>/mesh.ply``
    (:meth:`scene_dir`).

    Args:
        root: The dataset folder.
        split: Split name (``test`` holds the held-out rooms).
    """

    def __init__(self, root: str | Path, split: str = "test") -> None:
        from sahmr.data.synthetic import SyntheticDataset
        from sahmr.records import frame_name

        self.root = Path(root)
        self.split = split
        self._dataset = SyntheticDataset(self.root, split)
        self._names = [frame_name(split, i) for i in range(len(self._dataset))]
        self._index = {n: i for i, n in enumerate(self._names)}

    def scene_dir(self) -> Path:
        """Folder where this dataset's scene ids resolve to meshes."""
        return self.root / "rooms"

    def names(self) -> list[str]:
        """Frame names, sorted."""
        return list(self._names)

    def load(self, name: str) -> BodyFrame:
        """One ground-truth frame (KeyError when the name is not in the split)."""
        sample = self._dataset[self._index[name]]
        if sample.vertices_world is None:
            raise FrameError(f"{name}: the dataset row holds no vertices")
        return BodyFrame(
            name=name,
            vertices=np.asarray(sample.vertices_world, dtype=np.float64),
            contact=np.asarray(sample.vertex_contact) > 0,
            scene=sample.scene_id,
        )
