"""One training/evaluation frame as a typed record, plus rigid moves of body parameters.

A `Sample` is what every dataset here (synthetic generator, RICH, PROX) returns and what
`sahmr.data.collate.collate_samples` stacks into a `Batch`. All arrays are numpy; floats are
float32, integer labels int64. Frames follow DESIGN.md: world = the scan's frame, camera =
OpenCV (x right, y down, z forward), ``T_w2c`` maps world to camera, metres, pixels with the
OpenCV centre convention (pixel ``(i, j)`` centred at ``(u, v) = (j, i)``).

Body parameters in the SMPL-format fields (``betas`` (10,), ``global_orient`` (3,),
``body_pose`` (69,), ``transl`` (3,)) are *SMPL* parameters in the world frame. Datasets whose
ground truth is SMPL-X (PROX, RICH) leave them ``None`` and keep the SMPL-X parameters in
``extra`` (see their modules); with `sahmr.data.smplx_targets.SmplTargets` they fill
``vertices_world`` / ``joints_world`` / ``vertex_contact`` on the SMPL topology.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sahmr.body.constants import NUM_SMPL_JOINTS
from sahmr.scene.contact import NUM_CONTACT_CLASSES

NUM_BETAS = 10
"""Shape coefficients stored per sample."""
SMPL_BODY_POSE_DIM = (NUM_SMPL_JOINTS - 1) * 3
"""SMPL body pose size: 23 non-root joints x 3 axis-angle components (69)."""

RootJointFn = Callable[[np.ndarray], np.ndarray]
"""Maps betas (NB,) to the rest-pose root joint (3,), metres, body-model frame."""


@dataclass(kw_only=True)
class Sample:
    """One frame: image crop, camera, scene id and ground-truth body in the world frame.

    Attributes:
        crop: (S, S, 3) uint8 RGB crop (S = 224) of the square box around ``bbox``
            (`sahmr.geometry.crops.square_bbox`, scale 1.2), resampled consistently with
            `sahmr.geometry.crops.crop_camera`.
        bbox: (4,) float32 person box ``[x0, y0, x1, y1]``, pixels of the full image.
        K: (3, 3) float32 intrinsics of the full image (OpenCV, pixels).
        T_w2c: (4, 4) float32 rigid world -> camera transform, metres.
        image_size: (2,) int64 full image ``(W, H)``, pixels.
        scene_id: Scene name (key of the scan / scene point cloud).
        source: Dataset name (``"synth"``, ``"rich"``, ``"prox"``...).
        sequence_id: Sequence / recording name.
        frame_index: Frame number within the sequence.
        image: Optional (H, W, 3) uint8 RGB full frame.
        betas: Optional (10,) float32 SMPL shape coefficients.
        global_orient: Optional (3,) float32 SMPL root rotation, axis-angle (rad), world frame.
        body_pose: Optional (69,) float32 SMPL body pose, axis-angle (rad), 23 joints.
        transl: Optional (3,) float32 SMPL translation, world frame, metres.
        vertices_world: Optional (V, 3) float32 body vertices, world frame, metres.
        joints_world: Optional (24, 3) float32 SMPL joints, world frame, metres.
        vertex_contact: Optional (V,) int64 per-vertex contact region label 0..7 (0 = none).
        contact_points_world: (P, 3) float32 scene points in contact, world frame (P may be 0).
        contact_point_region: (P,) int64 region label 0..7 of each contact point.
        occlusion: Fraction of the person hidden, in [0, 1]; NaN when unknown.
        action: Action label (free text; ``""`` when unknown).
        extra: Dataset-specific extras (not collated into tensors; kept per sample).
    """

    crop: np.ndarray
    bbox: np.ndarray
    K: np.ndarray
    T_w2c: np.ndarray
    image_size: np.ndarray
    scene_id: str
    source: str
    sequence_id: str
    frame_index: int
    image: np.ndarray | None = None
    betas: np.ndarray | None = None
    global_orient: np.ndarray | None = None
    body_pose: np.ndarray | None = None
    transl: np.ndarray | None = None
    vertices_world: np.ndarray | None = None
    joints_world: np.ndarray | None = None
    vertex_contact: np.ndarray | None = None
    contact_points_world: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 3), dtype=np.float32)
    )
    contact_point_region: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    occlusion: float = math.nan
    action: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._coerce()
        self.validate()

    @property
    def has_body_params(self) -> bool:
        """Whether all four SMPL-format parameter arrays are present."""
        return all(
            getattr(self, n) is not None for n in ("betas", "global_orient", "body_pose", "transl")
        )

    def _coerce(self) -> None:
        """Casts array fields to their documented dtypes (copies only when needed)."""
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(_to_numpy(value), dtype=np.float32))
        for name in ("vertex_contact", "contact_point_region", "image_size"):
            value = getattr(self, name)
            if value is not None:
                arr = np.asarray(_to_numpy(value))
                if arr.size and not np.issubdtype(arr.dtype, np.integer):
                    raise TypeError(f"Sample.{name} must hold integers, got dtype {arr.dtype}")
                setattr(self, name, arr.astype(np.int64, copy=False))
        for name in ("crop", "image"):
            value = getattr(self, name)
            if value is not None:
                arr = np.asarray(_to_numpy(value))
                if arr.dtype != np.uint8:
                    raise TypeError(f"Sample.{name} must be uint8, got dtype {arr.dtype}")
                setattr(self, name, arr)
        self.frame_index = int(self.frame_index)
        self.occlusion = float(self.occlusion)

    def validate(self) -> None:
        """Checks shapes, value ranges and cross-field consistency.

        Raises:
            ValueError: Naming the first offending field and the expected shape.
        """
        _check_shape("crop", self.crop, (None, None, 3))
        if self.crop.shape[0] != self.crop.shape[1]:
            raise ValueError(f"Sample.crop must be square (S, S, 3), got {self.crop.shape}")
        _check_shape("bbox", self.bbox, (4,))
        _check_shape("K", self.K, (3, 3))
        _check_shape("T_w2c", self.T_w2c, (4, 4))
        _check_shape("image_size", self.image_size, (2,))
        if self.image is not None:
            _check_shape("image", self.image, (None, None, 3))
            h, w = self.image.shape[:2]
            if (w, h) != tuple(int(x) for x in self.image_size):
                raise ValueError(
                    f"Sample.image is {w}x{h} (WxH) but image_size says {tuple(self.image_size)}"
                )
        for name, shape in (
            ("betas", (NUM_BETAS,)),
            ("global_orient", (3,)),
            ("body_pose", (SMPL_BODY_POSE_DIM,)),
            ("transl", (3,)),
            ("vertices_world", (None, 3)),
            ("joints_world", (NUM_SMPL_JOINTS, 3)),
            ("vertex_contact", (None,)),
        ):
            value = getattr(self, name)
            if value is not None:
                _check_shape(name, value, shape)
        present = [
            n
            for n in ("betas", "global_orient", "body_pose", "transl")
            if getattr(self, n) is not None
        ]
        if present and len(present) != 4:
            raise ValueError(
                f"Sample body params must be all present or all None; only {present} given"
            )
        if self.vertex_contact is not None:
            _check_labels("vertex_contact", self.vertex_contact)
            if (
                self.vertices_world is not None
                and self.vertex_contact.shape[0] != self.vertices_world.shape[0]
            ):
                raise ValueError(
                    f"Sample.vertex_contact has {self.vertex_contact.shape[0]} entries but "
                    f"vertices_world has {self.vertices_world.shape[0]} vertices"
                )
        _check_shape("contact_points_world", self.contact_points_world, (None, 3))
        _check_shape("contact_point_region", self.contact_point_region, (None,))
        if self.contact_point_region.shape[0] != self.contact_points_world.shape[0]:
            raise ValueError(
                f"Sample.contact_point_region has {self.contact_point_region.shape[0]} labels "
                f"for {self.contact_points_world.shape[0]} contact points"
            )
        _check_labels("contact_point_region", self.contact_point_region)
        if not (math.isnan(self.occlusion) or 0.0 <= self.occlusion <= 1.0):
            raise ValueError(f"Sample.occlusion must be in [0, 1] or NaN, got {self.occlusion}")

    def replace(self, **changes: Any) -> Sample:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)


_FLOAT_FIELDS = (
    "bbox", "K", "T_w2c", "betas", "global_orient", "body_pose", "transl", "vertices_world",
    "joints_world", "contact_points_world",
)  # fmt: skip


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def _check_shape(name: str, arr: np.ndarray, shape: tuple[int | None, ...]) -> None:
    ok = arr.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, arr.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"Sample.{name} must have shape {want}, got {tuple(arr.shape)}")


def _check_labels(name: str, labels: np.ndarray) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CONTACT_CLASSES):
        raise ValueError(
            f"Sample.{name} labels must lie in [0, {NUM_CONTACT_CLASSES - 1}], got "
            f"[{labels.min()}, {labels.max()}]"
        )


def rest_root_joint(
    v_template: np.ndarray, shapedirs: np.ndarray, J_regressor: Any, betas: np.ndarray
) -> np.ndarray:
    """Rest-pose root joint of an SMPL-family model for given shape coefficients.

    ``J_0 = J_regressor[0] @ (v_template + shapedirs[..., :NB] @ betas)``. Works for SMPL and
    SMPL-X arrays alike (SMPL-X ``shapedirs`` may hold more columns, e.g. expressions; only
    the first ``NB = len(betas)`` are used).

    Args:
        v_template: (V, 3) rest template, metres.
        shapedirs: (V, 3, NBmax) shape blend shapes.
        J_regressor: (J, V) joint regressor (dense array or scipy sparse matrix).
        betas: (NB,) shape coefficients, NB <= NBmax.

    Returns:
        (3,) float64 root joint position in the model frame, metres.
    """
    betas = np.asarray(betas, dtype=np.float64).reshape(-1)
    if betas.shape[0] > shapedirs.shape[2]:
        raise ValueError(f"{betas.shape[0]} betas but the model has {shapedirs.shape[2]} shapes")
    verts = v_template + np.einsum("vck,k->vc", shapedirs[..., : betas.shape[0]], betas)
    row = J_regressor[0]
    row = np.asarray(row.toarray() if hasattr(row, "toarray") else row, dtype=np.float64)
    return row.reshape(-1) @ verts


def rigid_transform_body_params(
    T: np.ndarray, global_orient: np.ndarray, transl: np.ndarray, root_rest: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Moves an SMPL-family body by a rigid transform, by rewriting its root parameters.

    SMPL rotates the body about its rest-pose root joint ``J_0`` and then adds ``transl``:
    ``x = R_g (x_rest - J_0) + J_0 + transl`` (rest coordinates already shape/pose-blended).
    Applying ``T = [R | t]`` afterwards gives the same form with
    ``R_g' = R @ R_g`` and ``transl' = R @ (J_0 + transl) + t - J_0``.

    Args:
        T: (4, 4) rigid transform from the parameters' frame to the target frame.
        global_orient: (3,) root rotation, axis-angle (rad), source frame.
        transl: (3,) translation, metres, source frame.
        root_rest: (3,) rest-pose root joint ``J_0`` for the body's betas (`rest_root_joint`).

    Returns:
        ``(global_orient', transl')``, float64 (3,) each, target frame.
    """
    from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    T = np.asarray(T, dtype=np.float64)
    R, t = T[:3, :3], T[:3, 3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
        raise ValueError("T must be a rigid transform (rotation + translation, no scale)")
    root = np.asarray(root_rest, dtype=np.float64).reshape(3)
    Rg = axis_angle_to_matrix(torch.as_tensor(np.asarray(global_orient, np.float64).reshape(3)))
    new_orient = matrix_to_axis_angle(torch.as_tensor(R) @ Rg).numpy()
    new_transl = R @ (root + np.asarray(transl, np.float64).reshape(3)) + t - root
    return new_orient, new_transl


def crop_around_bbox(
    image: np.ndarray, bbox_xyxy: np.ndarray, *, size: int | None = None, scale: float = 1.2
) -> np.ndarray:
    """The square network crop around a person box, as stored in `Sample.crop`.

    Uses `sahmr.geometry.crops.square_bbox` (longer side x ``scale``) and
    `sahmr.geometry.crops.crop_image`, so `sahmr.geometry.crops.crop_camera` with the same
    box gives the crop's intrinsics.

    Args:
        image: (H, W, 3) uint8 full frame.
        bbox_xyxy: (4,) box ``[x0, y0, x1, y1]``, pixels.
        size: Crop side S in pixels (default `sahmr.geometry.crops.DEFAULT_CROP_SIZE`).
        scale: Enlargement of the box's longer side.

    Returns:
        (S, S, 3) uint8 crop; pixels outside the image are black.
    """
    from sahmr.geometry.crops import DEFAULT_CROP_SIZE, crop_image, square_bbox

    box = torch.as_tensor(np.asarray(bbox_xyxy, dtype=np.float32).reshape(4))
    cx, cy, side = square_bbox(box, scale=scale)
    side = torch.clamp(side, min=1.0)
    out = crop_image(image, (cx, cy, side), size or DEFAULT_CROP_SIZE)
    return np.ascontiguousarray(out)
