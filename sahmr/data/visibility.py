"""Visibility of real-dataset samples (RICH, PROX), measured as the generator measures it.

The generator's samples carry ``Sample.occlusion`` (1 - visible / person pixels of the crop)
and, on request, the crop's person mask (``extra["mask"]``, (S, S) uint8, 0 none / 1 visible
/ 2 hidden; `sahmr.data.synthetic.SyntheticDataset` with ``load_mask_depth``). A RICH / PROX
sample gets the same two from its ground-truth body and the scan, cast with the
generator's ray caster through the crop camera (`sahmr.scene.visibility.person_view`), plus
per-vertex visibility ``extra["vertex_visible"]`` ((V,) bool, SMPL topology: in the image,
not behind the scan, not behind the body itself; `sahmr.scene.visibility.vertex_visibility`).

The scan's caster is built once per scene and process (`SceneCasters`), the body's once per
frame; a frame costs a few tens of milliseconds with Embree, so nothing is cached on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sahmr.geometry.raycast import MeshRaycaster
from sahmr.scene.visibility import person_view, vertex_visibility


class SceneCasters:
    """Lazy ``scene_id -> MeshRaycaster`` of a dataset's scans (world frame).

    Args:
        mesh_fn: ``scene_id -> trimesh.Trimesh`` in the dataset's world frame.

    The casters (Embree scenes) are built on first use in each process and are not
    pickled: a DataLoader worker started by spawning builds its own.
    """

    def __init__(self, mesh_fn: Callable[[str], Any]) -> None:
        self._mesh_fn = mesh_fn
        self._casters: dict[str, MeshRaycaster] = {}

    def __getitem__(self, scene_id: str) -> MeshRaycaster:
        if scene_id not in self._casters:
            mesh = self._mesh_fn(scene_id)
            self._casters[scene_id] = MeshRaycaster(mesh.vertices, mesh.faces)
        return self._casters[scene_id]

    def __getstate__(self) -> dict[str, Any]:
        return {"_mesh_fn": self._mesh_fn, "_casters": {}}


@dataclass
class FrameVisibility:
    """Visibility of one frame's body.

    Attributes:
        occlusion: Occlusion ratio of the crop in [0, 1], NaN when the body covers no crop
            pixel (`Sample.occlusion`).
        mask: (S, S) uint8 person mask of the crop (``extra["mask"]``).
        vertex_visible: (V,) bool, vertices seen by the camera (``extra["vertex_visible"]``).
    """

    occlusion: float
    mask: np.ndarray
    vertex_visible: np.ndarray

    def extras(self) -> dict[str, np.ndarray]:
        """The ``Sample.extra`` entries: ``mask`` and ``vertex_visible``."""
        return {"mask": self.mask, "vertex_visible": self.vertex_visible}


def frame_visibility(
    vertices_world: np.ndarray,
    faces: np.ndarray,
    scene: MeshRaycaster,
    K: np.ndarray,
    T_w2c: np.ndarray,
    image_size: tuple[int, int],
    bbox: np.ndarray,
    crop_size: int,
    *,
    dist_coeffs: np.ndarray | None = None,
) -> FrameVisibility:
    """Occlusion, crop person mask and visible vertices of a body seen in a scan.

    Args:
        vertices_world: (V, 3) body vertices, world frame, metres.
        faces: (F, 3) body faces.
        scene: The scan's caster (world frame, `SceneCasters`).
        K: (3, 3) pinhole intrinsics of the full image (``Sample.K``), pixels.
        T_w2c: (4, 4) world -> camera.
        image_size: ``(W, H)`` of the stored image, pixels.
        bbox: (4,) person box ``[x0, y0, x1, y1]`` the crop is cut around (``Sample.bbox``).
        crop_size: Crop side S, pixels.
        dist_coeffs: OpenCV distortion of the stored image (vertices inside the image are
            tested where the lens puts them); None for a pinhole image.

    Returns:
        `FrameVisibility`.
    """
    from sahmr.scene.frontend import crop_intrinsics

    body = MeshRaycaster(vertices_world, faces)
    K_crop = crop_intrinsics(
        torch.as_tensor(np.asarray(K, np.float64))[None],
        torch.as_tensor(np.asarray(bbox, np.float64).reshape(1, 4)),
        crop_size,
    )[0].numpy()
    view = person_view(scene, body, K_crop, T_w2c, crop_size, crop_size)
    vertices = vertex_visibility(
        vertices_world, K, T_w2c, image_size, scene=scene, body=body, dist_coeffs=dist_coeffs
    )
    return FrameVisibility(
        occlusion=view.occlusion,
        mask=view.mask,
        vertex_visible=vertices.visible,
    )
