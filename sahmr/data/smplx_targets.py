"""SMPL-format training targets from SMPL-X ground truth (RICH, PROX), and the scans' points.

RICH and PROX give SMPL-X parameters (10,475-vertex mesh); every model here trains and is
scored on the SMPL topology of the loaded body (6,890 vertices). `SmplTargets` bridges them:

1. pose the SMPL-X body in its fit frame (`SmplxPoser`: ``smplx.SMPLX`` on the user's own
   licensed ``SMPLX_<GENDER>.npz`` (or ``.pkl`` with ``allow_pickle``), handed to smplx as
   plain arrays by `sahmr.body.smplx_files.plain_smplx_model_file`; any callable
   ``(params, gender) -> (V_x, 3)`` works, e.g. precomputed vertices),
2. map the vertices to the SMPL topology with the fixed deformation-transfer matrix
   (`sahmr.body.smplx_to_smpl.VertexTransfer`),
3. move them to the world frame (``T_fit2world``) and regress the 24 SMPL joints with the
   body's ``J_regressor`` from the mapped vertices (as SA-HMR / METRO regress joints from
   meshes).

The body whose topology and regressor are used is a `sahmr.body.BodyModel`; its
``content_hash`` travels with every sample (``extra["body_hash"]``) and the dataset
(``body_hash``), so a trainer can refuse data built for another body (`check_body_hash`).

`ScanPoints` serves ``scene_id -> (N, 3)`` world-frame scan points (2 cm voxels, the
generator's spacing), cached as ``.npz`` files, for `sahmr.engine.data.build_scene_bank`.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sahmr.atomic_write import atomic_save_npz
from sahmr.scene.contact import CONTACT_THRESHOLD_M
from sahmr.scene.points import SCENE_VOXEL_SIZE_M

logger = logging.getLogger(__name__)

SmplxVerticesFn = Callable[[Mapping[str, np.ndarray], str], np.ndarray]
"""``(smplx_params_fit, gender) -> (V_x, 3)`` SMPL-X vertices in the fit frame, metres."""


class BodyMismatchError(ValueError):
    """Data built for one body model used with a model of another body."""


def check_body_hash(dataset: Any, body_hash: str, *, what: str = "the model's body") -> None:
    """Refuse a dataset whose targets were built on a different body than ``body_hash``.

    Datasets without a ``body_hash`` attribute (the generator's: its targets are the body the
    config names) pass.

    Raises:
        BodyMismatchError: Naming both hashes and what to change.
    """
    data_hash = getattr(dataset, "body_hash", None)
    if data_hash is None or data_hash == body_hash:
        return
    name = type(dataset).__name__
    raise BodyMismatchError(
        f"{name} targets were built on body {data_hash[:12]} but {what} is {body_hash[:12]}: "
        "vertices, joints and contact labels would not match; use the same body file for "
        "data.targets.body_model_path and body.model_path"
    )


_SMPLX_POSE_KEYS = (
    "betas", "global_orient", "body_pose", "transl", "left_hand_pose", "right_hand_pose",
    "jaw_pose", "leye_pose", "reye_pose", "expression",
)  # fmt: skip


class SmplxPoser:
    """SMPL-X vertices from parameters with ``smplx.SMPLX`` (the user's licensed model files).

    smplx is given each gender's model as plain arrays only
    (`sahmr.body.smplx_files.plain_smplx_model_file`): the user's ``.npz`` when it holds
    nothing else, else a plain copy in ``cache_dir`` (the official ``.npz`` files hold pickled
    dicts; a ``.pkl`` is read only with ``allow_pickle``, through the restricted unpickler).

    Args:
        model_dir: Folder with ``SMPLX_NEUTRAL/MALE/FEMALE.npz`` (smplx's layout, also
            ``<model_dir>/smplx/``; ``.pkl`` with ``allow_pickle``), or one model file used
            for every gender.
        num_pca_comps: Hand pose PCA components of the parameters (RICH and PROXD: 12).
        flat_hand_mean: smplx's option (False for RICH / PROXD).
        default_gender: Used when a sample has no gender.
        allow_pickle: Opt in to ``SMPLX_<GENDER>.pkl`` models (restricted unpickler).
        cache_dir: Folder of plain copies (default `sahmr.body.smplx_files.default_cache_dir`).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        num_pca_comps: int = 12,
        flat_hand_mean: bool = False,
        default_gender: str = "neutral",
        allow_pickle: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        if not self.model_dir.exists():
            raise FileNotFoundError(f"SMPL-X model folder or file not found: {self.model_dir}")
        self.num_pca_comps = num_pca_comps
        self.flat_hand_mean = flat_hand_mean
        self.default_gender = default_gender
        self.allow_pickle = allow_pickle
        self.cache_dir = cache_dir
        self._models: dict[str, Any] = {}

    def _model(self, gender: str) -> Any:
        if gender not in self._models:
            import smplx

            from sahmr.body.smplx_files import plain_smplx_model_file

            path = plain_smplx_model_file(
                self.model_dir, gender, allow_pickle=self.allow_pickle, cache_dir=self.cache_dir
            )
            # smplx prints a warning for models with 10 shape / 10 expression components
            # (SMPL-X v1.0 files); the numbers it then uses are the ones asked for here.
            with contextlib.redirect_stdout(io.StringIO()):
                self._models[gender] = smplx.SMPLX(
                    str(path),
                    gender=gender,
                    ext="npz",
                    use_pca=True,
                    num_pca_comps=self.num_pca_comps,
                    flat_hand_mean=self.flat_hand_mean,
                    num_betas=10,
                    num_expression_coeffs=10,
                )
            logger.info("SMPL-X %s model: %s", gender, path)
        return self._models[gender]

    def __call__(self, params: Mapping[str, np.ndarray], gender: str | None = None) -> np.ndarray:
        """(V_x, 3) float64 vertices, fit frame, metres."""
        model = self._model(gender or self.default_gender)
        kwargs = {}
        for key in _SMPLX_POSE_KEYS:
            if key in params:
                kwargs[key] = torch.as_tensor(np.asarray(params[key]), dtype=torch.float32)
                kwargs[key] = kwargs[key].reshape(1, -1)
        with torch.no_grad():
            out = model(**kwargs)
        return out.vertices[0].double().numpy()


class SmplTargets:
    """SMPL-topology vertices and joints (world frame) for SMPL-X ground truth.

    Args:
        transfer: Path of the SMPL-X -> SMPL transfer matrix (``.npz``; ``.pkl`` only with
            ``allow_pickle``), or a built `VertexTransfer`.
        smplx_model_dir: Folder of the user's SMPL-X model files, or one model file
            (`SmplxPoser`).
        smplx_vertices_fn: Instead of ``smplx_model_dir``: any ``(params, gender) -> (V_x, 3)``.
        body_model_path: SMPL-format body whose topology / regressor / contact regions the
            targets use (None: the shipped license-free body). Must be the training body.
        allow_pickle: Opt in to reading a ``.pkl`` transfer matrix and ``.pkl`` SMPL-X models
            (restricted unpickler).
    """

    def __init__(
        self,
        transfer: Any,
        *,
        smplx_model_dir: str | Path | None = None,
        smplx_vertices_fn: SmplxVerticesFn | None = None,
        body_model_path: str | Path | None = None,
        allow_pickle: bool = False,
    ) -> None:
        from sahmr.body import BodyModel
        from sahmr.body.smplx_to_smpl import VertexTransfer

        if (smplx_model_dir is None) == (smplx_vertices_fn is None):
            raise ValueError("give exactly one of smplx_model_dir and smplx_vertices_fn")
        self.vertices_fn: SmplxVerticesFn = (
            smplx_vertices_fn
            if smplx_vertices_fn is not None
            else SmplxPoser(smplx_model_dir, allow_pickle=allow_pickle)
        )
        body = BodyModel(model_path=body_model_path)
        self.body_hash: str = body.content_hash
        self.num_vertices = body.num_vertices
        self.J_regressor = body.J_regressor.double().numpy()  # (24, V)
        self.vertex_region = np.asarray(body.topology.contact_labels[0], np.int64)  # (V,)
        self.faces = body.faces
        if isinstance(transfer, VertexTransfer):
            self.transfer = transfer
        else:
            self.transfer = VertexTransfer.from_file(
                transfer, allow_pickle=allow_pickle, num_target_vertices=self.num_vertices
            )
        if self.transfer.num_target_vertices != self.num_vertices:
            raise ValueError(
                f"the transfer matrix gives {self.transfer.num_target_vertices} vertices; the "
                f"body has {self.num_vertices}"
            )

    def __call__(
        self, params: Mapping[str, np.ndarray], T_fit2world: np.ndarray, gender: str | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """SMPL vertices (V, 3) and joints (24, 3), float64, world frame, metres."""
        verts_fit = np.asarray(self.vertices_fn(params, gender), np.float64)
        verts_fit = self.transfer(verts_fit[None])[0]
        T = np.asarray(T_fit2world, np.float64)
        vertices_world = verts_fit @ T[:3, :3].T + T[:3, 3]
        joints_world = self.J_regressor @ vertices_world
        return vertices_world, joints_world


def scan_distance(
    vertices_world: np.ndarray,
    scene_points: np.ndarray,
    mesh: Any | None = None,
    vertex_mask: np.ndarray | None = None,
    spacing: float = SCENE_VOXEL_SIZE_M,
    tree: Any | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each vertex to the scan and the closest scan point.

    The nearest 2 cm scan point settles vertices far from the scan; vertices in
    ``vertex_mask`` within ``CONTACT_THRESHOLD_M + spacing`` of a point get the exact
    distance and closest point on the mesh (trimesh) when ``mesh`` is given.

    Args:
        vertices_world: (V, 3) body vertices, world frame, metres.
        scene_points: (N, 3) scan points, world frame.
        mesh: Optional ``trimesh.Trimesh`` of the scan, world frame.
        vertex_mask: (V,) bool, vertices that may get exact distances (default all).
        spacing: Spacing of ``scene_points``, metres.
        tree: Optional prebuilt ``scipy.spatial.cKDTree`` of ``scene_points``
            (`ScanPoints.tree`).

    Returns:
        ``(distance, closest)``: (V,) float64 metres and (V, 3) float64 world points.
    """
    from scipy.spatial import cKDTree

    vertices_world = np.asarray(vertices_world, np.float64)
    tree = tree if tree is not None else cKDTree(scene_points)
    dist, idx = tree.query(vertices_world)
    closest = np.asarray(scene_points, np.float64)[idx]
    if mesh is not None:
        mask = np.ones(len(vertices_world), bool) if vertex_mask is None else vertex_mask
        near = np.nonzero(mask & (dist < CONTACT_THRESHOLD_M + spacing))[0]
        if near.size:
            import trimesh

            pts, exact, _ = trimesh.proximity.closest_point(mesh, vertices_world[near])
            dist[near], closest[near] = exact, pts
    return dist, closest


def contact_targets(
    labels: np.ndarray, closest: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample contact fields from per-vertex labels, as the generator writes them.

    Args:
        labels: (V,) int64 contact labels 0..7.
        closest: (V, 3) closest scan point of each vertex, world frame.

    Returns:
        ``(vertex_contact, contact_points_world, contact_point_region)``: (V,) int64,
        (P, 3) float32 (the closest scan point of each contact vertex), (P,) int64.
    """
    on = labels > 0
    return labels.astype(np.int64), closest[on].astype(np.float32), labels[on].astype(np.int64)


def distance_contact(distance: np.ndarray, vertex_region: np.ndarray) -> np.ndarray:
    """(V,) int64 labels by `sahmr.scene.contact.vertex_contact` (the one definition)."""
    from sahmr.scene.contact import vertex_contact

    out = vertex_contact(torch.from_numpy(np.asarray(distance, np.float64)),
                         torch.from_numpy(np.asarray(vertex_region, np.int64)))  # fmt: skip
    return out.numpy().astype(np.int64)


def project_bbox(
    vertices_world: np.ndarray, K: np.ndarray, T_w2c: np.ndarray, image_size: tuple[int, int]
) -> np.ndarray | None:
    """Box ``[x0, y0, x1, y1]`` of the body's pinhole projection, clipped to the image.

    Args:
        vertices_world: (V, 3) vertices, world frame.
        K: (3, 3) intrinsics (of the undistorted image).
        T_w2c: (4, 4) world -> camera.
        image_size: ``(W, H)`` pixels.

    Returns:
        (4,) float64 box, or None when the body is behind the camera or outside the image.
    """
    cam = vertices_world @ T_w2c[:3, :3].T + T_w2c[:3, 3]
    front = cam[:, 2] > 1e-3
    if not front.any():
        return None
    uv = cam[front] @ np.asarray(K, np.float64).T
    uv = uv[:, :2] / uv[:, 2:3]
    w, h = image_size
    x0, y0 = np.clip(uv.min(axis=0), 0, [w, h])
    x1, y1 = np.clip(uv.max(axis=0), 0, [w, h])
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return np.array([x0, y0, x1, y1], np.float64)


class ScanPoints(Mapping[str, np.ndarray]):
    """Lazy ``scene_id -> (N, 3) float32`` world-frame scan points at 2 cm, cached on disk.

    Args:
        mesh_fn: ``scene_id -> trimesh.Trimesh`` in the dataset's world frame.
        scene_ids: The scenes served.
        cache_dir: Folder for ``<scene_id>_points.npz`` (None: memory only).
    """

    def __init__(
        self,
        mesh_fn: Callable[[str], Any],
        scene_ids: list[str],
        cache_dir: str | Path | None = None,
    ) -> None:
        self._mesh_fn = mesh_fn
        self._ids = list(dict.fromkeys(scene_ids))
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache: dict[str, np.ndarray] = {}
        self._trees: dict[str, Any] = {}

    def tree(self, scene_id: str) -> Any:
        """A ``scipy.spatial.cKDTree`` of the scene's points (built once per process)."""
        if scene_id not in self._trees:
            from scipy.spatial import cKDTree

            self._trees[scene_id] = cKDTree(self[scene_id])
        return self._trees[scene_id]

    def __getitem__(self, scene_id: str) -> np.ndarray:
        if scene_id not in self._ids:
            raise KeyError(scene_id)
        if scene_id not in self._cache:
            path = None if self.cache_dir is None else self.cache_dir / f"{scene_id}_points.npz"
            if path is not None and path.is_file():
                with np.load(path, allow_pickle=False) as z:
                    pts = z["points"].astype(np.float32)
            else:
                from sahmr.scene.points import sample_scene_points

                pts = sample_scene_points(self._mesh_fn(scene_id))
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_save_npz(path, {"points": pts})
                logger.info("scan points of %s: %d", scene_id, len(pts))
            self._cache[scene_id] = pts
        return self._cache[scene_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)
