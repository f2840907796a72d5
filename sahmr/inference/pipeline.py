"""One-image inference in a scanned scene: scan + image + camera + bbox -> body in the scan.

Steps (DESIGN.md data flow, the same preprocessing as training):

1. `sahmr.inference.scene.load_scene_data`: the scan (`sahmr.scene.io.load_scene`), checked
   for plausible units, voxel-down-sampled to 2 cm (`sahmr.scene.points.voxel_downsample`, the
   data generator's sampler), packed in a `SceneBank`.
2. `sahmr.inference.frames.prepare_frame` / `frame_inputs_from_image`: the image checked
   against its camera and the scan, the square crop around the bbox (`square_bbox` scale
   `CROP_BBOX_SCALE`, `crop_image`), ImageNet normalisation, the crop camera and the bbox
   frustum's scene points in the camera frame: exactly what `prepare_inputs` makes of a
   dataset `Batch`.
3. `InferencePipeline.run` (this module): ``method.predict(inputs)`` -> `BodyPrediction`
   (camera frame) -> world frame through ``T_w2c``; SMPL-format parameters moved to the world
   frame when the method has them; penetration (PenE, `sahmr.evaluation.metrics.penetration`)
   and body contact from the scene SDF (`sahmr.scene.sdf.load_or_build_sdf`); errors against
   a ground-truth body when one is given. Every stage is timed (`sahmr.inference.timing`).

The method comes from `sahmr.inference.method` (shipped or given checkpoint); the optional scene
fit after it from `sahmr.inference.refine`.

Frames: world = the scan's frame, camera = OpenCV, metres; ``T_w2c`` world -> camera.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sahmr.inference.camera_io import CameraSpec
from sahmr.inference.errors import InputError
from sahmr.inference.frames import FrameSpec, PreparedFrame, prepare_frame
from sahmr.inference.method import LoadedMethod
from sahmr.inference.refine import SceneFitRefiner
from sahmr.inference.scene import SceneData
from sahmr.inference.timing import StageTimer
from sahmr.records import BodyPrediction
from sahmr.scene.contact import CONTACT_THRESHOLD_M, vertex_contact
from sahmr.scene.sdf import SDF_VOXEL_SIZE_M

logger = logging.getLogger(__name__)

__all__ = ["FramePrediction", "InferencePipeline", "params_cam_to_world"]


@dataclass
class FramePrediction:
    """Everything the demo writes for one frame (numpy, world frame unless named).

    Attributes:
        name: Frame name.
        image: (H, W, 3) uint8 image as used.
        camera: The camera.
        bbox: (4,) person box.
        prediction: The method's `BodyPrediction` (B = 1, camera frame, CPU).
        verts_cam: (V, 3) body vertices, camera frame.
        vertices_world: (V, 3) body vertices, world frame.
        joints_world: (J, 3) the method's joints, world frame.
        root_world: (3,) root, world frame.
        contact_points_world: (P, 3) predicted contact scene points, world frame.
        contact_point_region: (P,) int regions 1..7.
        params_cam: SMPL-format parameters in the camera frame, or None.
        params_world: The same parameters for the world frame, or None.
        body_contact: (V,) int region of each vertex within 7 cm of the scan (SDF), or None.
        penetration: PenE figures (mm, counts), or None without an SDF.
        gt_errors: Errors against the ground truth (mm), or None.
        frustum_points: Scene points in the bbox frustum.
        timings: Seconds per stage.
        params_source: ``"regressed"`` (the method's parameters), ``"fitted"`` (a body fitted
            to the method's vertices, `sahmr.optim.fit_vertices`), either with
            ``"+scene_fit"`` after a `SceneFitRefiner`, or None without parameters.
        method_mesh_distance_mm: Mean distance of the parameters' mesh (``vertices_world``) to
            the method's own vertices, mm (the fit's vertex error when fitted), or None.
        verts_method_world: (V, 3) the method's own vertices, world frame, when the body
            written is the parameters' mesh; None otherwise.
        ground_shift_m: How far the body was slid back onto the scan's solid ground along
            the camera ray (`sahmr.scene.ground`; 0 when its centre was above the ground or
            the scan declares none), metres.
        scene_slide_m: How far the body was slid along its camera ray out of the scan
            (`sahmr.scene.ray_slide`; 0 when it was left where predicted, or the slide is
            off), metres.
        depenetrated: Whether the body's joints were bent out of the scan
            (`sahmr.scene.depenetrate`; only with ``depenetrate``).
    """

    name: str
    image: np.ndarray
    camera: CameraSpec
    bbox: np.ndarray
    prediction: BodyPrediction
    verts_cam: np.ndarray
    vertices_world: np.ndarray
    joints_world: np.ndarray
    root_world: np.ndarray
    contact_points_world: np.ndarray
    contact_point_region: np.ndarray
    params_cam: dict[str, np.ndarray] | None
    params_world: dict[str, np.ndarray] | None
    body_contact: np.ndarray | None
    penetration: dict[str, float] | None
    gt_errors: dict[str, float] | None
    frustum_points: int
    timings: dict[str, float]
    params_source: str | None = None
    method_mesh_distance_mm: float | None = None
    verts_method_world: np.ndarray | None = None
    ground_shift_m: float = 0.0
    scene_slide_m: float = 0.0
    depenetrated: bool = False


_PARAM_KEYS = ("betas", "global_orient", "body_pose", "transl")


def _has_params(params: dict[str, Tensor] | None) -> bool:
    return params is not None and all(k in params for k in _PARAM_KEYS)


def params_cam_to_world(
    params_cam: dict[str, Tensor], T_w2c: Tensor, body: nn.Module
) -> dict[str, Tensor]:
    """SMPL-format parameters of a camera-frame body, re-expressed for the world frame.

    SMPL rotates about the rest pelvis ``J0(betas)`` before translating, so with
    ``T_c2w = [R | t]``: ``global_orient_w = R @ global_orient_c`` and
    ``transl_w = R (J0 + transl_c) + t - J0``.

    Args:
        params_cam: ``betas`` (B, NB), ``global_orient`` (B, 3), ``body_pose`` (B, 69),
            ``transl`` (B, 3) (camera frame).
        T_w2c: (B, 4, 4) world -> camera.
        body: `sahmr.body.BodyModel` (gives ``J0``).

    Returns:
        The parameters with world-frame ``global_orient`` and ``transl``.
    """
    from sahmr.geometry.cameras import invert_rigid
    from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    betas = params_cam["betas"]
    B = betas.shape[0]
    dtype = body.shapedirs.dtype
    with torch.no_grad():
        rest = body(
            betas=betas.to(dtype),
            global_orient=torch.zeros(B, 3, dtype=dtype),
            body_pose=torch.zeros(B, 69, dtype=dtype),
        )
    J0 = rest.joints[:, 0].to(params_cam["transl"].dtype)
    T_c2w = invert_rigid(T_w2c.to(J0.dtype))
    R, t = T_c2w[:, :3, :3], T_c2w[:, :3, 3]
    orient = matrix_to_axis_angle(R @ axis_angle_to_matrix(params_cam["global_orient"].to(R)))
    transl = (R @ (J0 + params_cam["transl"])[..., None])[..., 0] + t - J0
    out = dict(params_cam)
    out["global_orient"] = orient
    out["transl"] = transl
    return out


def _np(t: Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy()


def _load_gt(path: Path, body: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth ``(vertices_world (V, 3), root_world (3,))`` from a params/vertices npz.

    Raises:
        InputError: Unreadable, pickled, or arrays of the wrong shape / not finite.
    """
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable ground-truth .npz ({exc})") from None
    num_v = int(body.v_template.shape[0])
    try:
        if "vertices" in data:
            v = np.asarray(data["vertices"], np.float64)
            if v.shape != (num_v, 3):
                raise ValueError(f"vertices {v.shape}, not ({num_v}, 3)")
            reg = np.asarray(body.J_regressor.detach().cpu().numpy(), np.float64)
            root = np.asarray(data["root"], np.float64) if "root" in data else (reg @ v)[0]
            if root.size != 3:
                raise ValueError(f"root {root.shape}, not (3,)")
            root = root.reshape(3)
        else:
            keys = ("betas", "global_orient", "body_pose", "transl")
            if not all(k in data for k in keys):
                raise ValueError(f"needs 'vertices' or {keys}; has {sorted(data)}")
            dtype = body.shapedirs.dtype
            with torch.no_grad():
                out = body(**{k: torch.as_tensor(np.asarray(data[k], np.float64),
                                                 dtype=dtype).reshape(1, -1) for k in keys})
            v, root = out.vertices[0].double().numpy(), out.joints[0, 0].double().numpy()
    except (ValueError, TypeError, RuntimeError, IndexError) as exc:
        raise InputError(f"{path}: not a usable ground-truth file ({' '.join(str(exc).split())})"
                         ) from None
    if not (np.isfinite(v).all() and np.isfinite(root).all()):
        raise InputError(f"{path}: the ground truth holds NaN or infinite values")
    return v, root


class InferencePipeline:
    """Runs one method on images of one scan.

    Args:
        method: The loaded method.
        scene: The scan.
        body: `sahmr.body.BodyModel` matching the method's mesh (faces, contact regions,
            SMPL parameters -> vertices).
        sdf: Optional scene SDF (`sahmr.scene.sdf.SDFGrid`) for penetration and contact; None
            builds it on first use when ``penetration`` is on and the scan is a mesh.
        penetration: Compute penetration / SDF contact figures.
        sdf_voxel_size: SDF pitch, metres, when built here.
        sdf_cache_dir: SDF cache folder (default `sahmr.scene.sdf.default_cache_dir`).
        contact_threshold: Vertex-scene distance counted as contact, metres.
        refiner: Optional `SceneFitRefiner` run on every prediction (needs the SDF).
        fit_body: When the method gives no SMPL-format parameters (vertex regressors), fit a
            body to its vertices (`sahmr.optim.fit_vertices.VertexFitter`, camera frame, on
            the method's device). Whenever parameters exist, the body written is their mesh,
            so the saved parameters reproduce it.
        fit_iterations: Iterations of that fit (default: the fitter's).
        check_camera: Check each frame's camera against the scan before predicting
            (`check_frame_camera`); false when the caller has checked (or goes on anyway).
        scene_slide_cost: Not None: after the ground settle, slide each body along its
            camera ray to where it penetrates the scan least at this price (mm of PenE per mm
            of slide; `sahmr.scene.ray_slide`); needs the SDF (a mesh scan, ``penetration``).
        depenetrate: Last, bend the joints of a body still deeper than 1 cm in the scan out
            of it (pose only: `sahmr.scene.depenetrate`); needs the SDF and body-model
            parameters.
    """

    def __init__(
        self,
        *,
        method: LoadedMethod,
        scene: SceneData,
        body: nn.Module,
        sdf: Any = None,
        penetration: bool = True,
        sdf_voxel_size: float = SDF_VOXEL_SIZE_M,
        sdf_cache_dir: str | Path | None = None,
        contact_threshold: float | None = None,
        refiner: SceneFitRefiner | None = None,
        fit_body: bool = True,
        fit_iterations: int | None = None,
        check_camera: bool = True,
        scene_slide_cost: float | None = None,
        depenetrate: bool = False,
    ) -> None:
        self.method = method
        self.scene = scene
        self.body = body
        self.penetration = penetration
        self.sdf_voxel_size = sdf_voxel_size
        self.sdf_cache_dir = sdf_cache_dir
        self.contact_threshold = (
            CONTACT_THRESHOLD_M if contact_threshold is None else contact_threshold
        )
        self._sdf = sdf
        self._exact_sdf: Any = None  # the grid + the scan's mesh, for exact vertex distances
        self.refiner = refiner
        self.fit_body = fit_body
        self.fit_iterations = fit_iterations
        self.check_camera = check_camera
        self.scene_slide_cost = scene_slide_cost
        self.depenetrate = depenetrate
        self._fitter: nn.Module | None = None
        self.sdf_seconds = 0.0
        self.sdf_note = ""

    @property
    def device(self) -> torch.device:
        return self.method.device

    def sdf(self) -> Any:
        """The scene SDF (built or loaded from the cache on first call), or None."""
        wanted = self.penetration or self.refiner is not None
        if self._sdf is None and wanted and not self.sdf_note:
            if self.scene.mesh is None:
                self.sdf_note = "the scan is a point cloud: no SDF, no penetration figures"
                return None
            from sahmr.scene.sdf import load_or_build_sdf

            start = time.perf_counter()
            self._sdf = load_or_build_sdf(
                self.scene.path,
                voxel_size=self.sdf_voxel_size,
                cache_dir=self.sdf_cache_dir,
                up_axis=self.scene.up_axis,
                scale=self.scene.scale,
            )
            self.sdf_seconds = time.perf_counter() - start
        return self._sdf

    @cached_property
    def ground(self) -> Any:
        """The solid ground the scan's metadata declares (`sahmr.scene.sdf.declared_ground`),
        or None; read once."""
        if self.scene.path is None:
            return None
        from sahmr.scene.sdf import resolve_ground

        return resolve_ground(self.scene.path, "auto", up_axis=self.scene.up_axis,
                              scale=self.scene.scale)  # fmt: skip

    def run(self, frame: FrameSpec, prepared: PreparedFrame | None = None) -> FramePrediction:
        """Predict the body of one frame and everything derived from it.

        Args:
            frame: The frame.
            prepared: Its `prepare_frame` result when already made (else made here).

        Raises:
            InputError: Bad input (the frame is skipped in batch mode).
        """
        if prepared is None:
            prepared = prepare_frame(frame, self.scene, self.device,
                                     check_camera=self.check_camera)
        timer = StageTimer(self.device)
        timer.seconds.update(prepared.timings)
        image, inputs = prepared.image, prepared.inputs.to(self.device)
        with timer("predict"), torch.no_grad():
            pred = self.method.module.predict(inputs)
        params_source = "regressed" if _has_params(pred.params) else None
        if params_source is None and self.fit_body:
            with timer("fit_body"):
                pred = self._fit_params(pred)
            params_source = "fitted"
        if self.refiner is not None:
            with timer("sdf_load"):
                sdf = self.sdf()
            with timer("scene_fit"):
                kp = kw = None
                if frame.keypoints2d is not None:
                    kp = torch.as_tensor(frame.keypoints2d, dtype=torch.float32)[None]
                    if frame.keypoint_confidence is not None:
                        kw = torch.as_tensor(frame.keypoint_confidence,
                                             dtype=torch.float32)[None]
                pred = self.refiner.refine(pred, inputs, sdf, kp, kw)
            params_source = f"{params_source}+scene_fit"
        pred = pred.to("cpu")
        ground_shift_m = 0.0
        ground = self.ground
        if ground is not None:
            from sahmr.scene.ground import settle_on_ground

            pred, shift = settle_on_ground(pred, inputs.T_w2c.cpu(), [ground])
            ground_shift_m = float(shift[0].norm())
        scene_slide_m = 0.0
        if self.scene_slide_cost is not None:
            with timer("sdf_load"):
                sdf = self.sdf()
            if sdf is not None:
                from sahmr.scene.ray_slide import sampler_sdf, slide_out_of_scene

                with timer("scene_slide"):
                    pred, shift = slide_out_of_scene(pred, inputs.T_w2c.cpu(),
                                                     [sampler_sdf(sdf)],
                                                     slide_cost=self.scene_slide_cost)  # fmt: skip
                scene_slide_m = float(shift[0].norm())
        depenetrated = False
        if self.depenetrate and _has_params(pred.params):
            with timer("sdf_load"):
                sdf = self.sdf()
            if sdf is not None:
                from sahmr.scene.depenetrate import depenetrate, grid_sdf

                on = next(self.body.buffers()).device
                with timer("depenetrate"):
                    pred, changed = depenetrate(pred.to(on), inputs.T_w2c.to(on),
                                                [grid_sdf(sdf)], self.body)  # fmt: skip
                depenetrated = bool(changed[0])
        with timer("to_world"):
            T = inputs.T_w2c.cpu().double()
            verts_cam = pred.verts_cam.double()
            vertices_world = pred.vertices_world(T)[0].numpy()
            from sahmr.geometry.cameras import camera_to_world, transform_points

            joints_world = camera_to_world(T, pred.joints_cam.double())[0].numpy()
            root_world = camera_to_world(T, pred.root_cam.double()[:, None])[0, 0].numpy()
            cpts = np.zeros((0, 3))
            cregion = np.zeros(0, np.int64)
            if pred.contact_points_cam is not None and pred.contact_points_cam.shape[0]:
                cpts = camera_to_world(T[0], pred.contact_points_cam.double()).numpy()
                cregion = _np(pred.contact_point_region).astype(np.int64)
            params_cam = params_world = None
            verts_method_world = distance_mm = None
            if _has_params(pred.params):
                params_cam = {k: v.detach().double() for k, v in pred.params.items()}
                params_world = params_cam_to_world(params_cam, T, self.body)
                # The body written is the parameters' mesh (world frame), so that the saved
                # parameters reproduce body_world.ply; the method's vertices are kept beside.
                body_out = self._param_body(params_world)
                verts_method_world = vertices_world
                vertices_world = body_out.vertices[0].double().numpy()
                distance_mm = float(np.linalg.norm(vertices_world - verts_method_world,
                                                   axis=1).mean() * 1000.0)
                verts_cam = transform_points(T, torch.from_numpy(vertices_world)[None])
                joints_world = self._param_joints(body_out, pred.joints_cam.shape[1],
                                                  joints_world)
                params_cam = {k: v.numpy()[0] for k, v in params_cam.items()}
                params_world = {k: v.numpy()[0] for k, v in params_world.items()}
        body_contact, pen = self._scene_figures(vertices_world, timer)
        gt_errors = None
        if frame.gt_path is not None:
            with timer("gt_errors"):
                gt_errors = self._gt_errors(frame.gt_path, vertices_world, root_world)
        return FramePrediction(
            name=frame.name,
            image=image,
            camera=frame.camera,
            bbox=np.asarray(frame.bbox, np.float64),
            prediction=pred,
            verts_cam=verts_cam[0].numpy(),
            vertices_world=vertices_world,
            joints_world=joints_world,
            root_world=root_world,
            contact_points_world=cpts,
            contact_point_region=cregion,
            params_cam=params_cam,
            params_world=params_world,
            body_contact=body_contact,
            penetration=pen,
            gt_errors=gt_errors,
            frustum_points=int(inputs.scene_points_cam.shape[0]),
            timings=dict(timer.seconds),
            params_source=params_source if params_cam is not None else None,
            method_mesh_distance_mm=distance_mm,
            ground_shift_m=ground_shift_m,
            scene_slide_m=scene_slide_m,
            depenetrated=depenetrated,
            verts_method_world=verts_method_world,
        )

    def _fit_params(self, pred: BodyPrediction) -> BodyPrediction:
        """``pred`` with camera-frame parameters fitted to its vertices (vertices kept)."""
        from dataclasses import replace

        from sahmr.optim.fit_vertices import VertexFitter

        verts = pred.verts_cam.detach().float()
        if self._fitter is None:
            kwargs = {} if self.fit_iterations is None else {"iterations": self.fit_iterations}
            self._fitter = VertexFitter(body_model=self.body, **kwargs)
        if verts.shape[1] != self._fitter.num_vertices:
            raise InputError(
                f"the method predicts {verts.shape[1]} vertices, the body model has "
                f"{self._fitter.num_vertices}: the checkpoint's body does not match")
        res = self._fitter.fit(verts)
        logger.info("fitted a body to the method's vertices: %.2f mm mean vertex error",
                    float(res.vertex_error.mean()) * 1000.0)
        return replace(pred, params=res.params.as_dict())

    def _param_body(self, params_world: dict[str, Tensor]) -> Any:
        """`sahmr.body.BodyOutput` (B = 1) of world-frame parameters, on the body's device."""
        ref = self.body.shapedirs
        with torch.no_grad():
            return self.body(**{k: params_world[k].to(ref) for k in _PARAM_KEYS})

    @staticmethod
    def _param_joints(body_out: Any, num_joints: int, method_joints: np.ndarray) -> np.ndarray:
        """The parametric body's joints of the method's joint set (24 SMPL, 17 H36M or 14
        LSP), world frame; the method's own joints for any other set."""
        by_count = {t.shape[1]: t for t in (body_out.joints, body_out.joints_h36m,
                                             body_out.joints14)}
        if num_joints not in by_count:
            return method_joints
        return by_count[num_joints][0].double().cpu().numpy()

    def _scene_figures(
        self, vertices_world: np.ndarray, timer: StageTimer
    ) -> tuple[np.ndarray | None, dict[str, float] | None]:
        """Penetration figures and per-vertex contact regions from the scene SDF."""
        from sahmr.evaluation.metrics import MM_PER_M, penetration

        if not self.penetration:
            return None, None
        with timer("sdf_load"):
            sdf = self.sdf()
        if sdf is None:
            return None, None
        with timer("penetration"):
            d = self._vertex_sdf(sdf, vertices_world)
            figs = {k: float(v[0]) for k, v in penetration(d[None]).items()}
            figs["max_depth_mm"] = float(max(0.0, -float(d.min())) * MM_PER_M)
            labels = torch.as_tensor(np.asarray(self.body.topology.contact_labels[0], np.int64))
            contact = vertex_contact(d, labels, self.contact_threshold).numpy()
        return contact, {
            "pene_mm": figs["pene"],
            "pen_count": int(figs["pen_count"]),
            "pen_depth_mean_mm": figs["pen_depth_mean"],
            "pen_fraction_percent": figs["pen_fraction"],
            "max_depth_mm": figs["max_depth_mm"],
            "sdf_voxel_size_m": float(sdf.voxel_size),
        }

    def _vertex_sdf(self, sdf: Any, vertices_world: np.ndarray) -> Tensor:
        """Signed distances (V,) float64 of the body's vertices, as the evaluator takes them:
        exact point-to-mesh distances wherever the grid reads inside or near a surface."""
        from sahmr.scene.sdf import ExactSceneSDF, SDFGrid

        if isinstance(sdf, SDFGrid) and self.scene.mesh is not None:
            if self._exact_sdf is None or self._exact_sdf.grid is not sdf:
                self._exact_sdf = ExactSceneSDF(sdf, self.scene.mesh.vertices,
                                                self.scene.mesh.faces)
            sdf = self._exact_sdf
        points = torch.as_tensor(vertices_world, dtype=torch.float64)
        if hasattr(sdf, "sample_exact"):
            band = self.contact_threshold + 3 * float(sdf.voxel_size)
            return sdf.sample_exact(points, band).double()
        return sdf.sample(points.float()).double()

    def _gt_errors(self, path: Path, vertices_world: np.ndarray, root_world: np.ndarray
                   ) -> dict[str, float]:
        """Errors against the ground truth: the evaluator's `body_errors` (SMPL joints,
        pelvis = J_regressor row 0 of each mesh), plus the method's own root output."""
        from sahmr.evaluation.evaluator import body_errors
        from sahmr.evaluation.metrics import mesh_edges, root_error

        gt_v, _ = _load_gt(path, self.body)
        if gt_v.shape != vertices_world.shape:
            raise InputError(f"{path}: ground truth has {len(gt_v)} vertices, the prediction "
                             f"{len(vertices_world)}")
        pv = torch.as_tensor(vertices_world, dtype=torch.float64)[None]
        gv = torch.as_tensor(gt_v, dtype=torch.float64)[None]
        reg = self.body.J_regressor
        reg = (reg.to_dense() if reg.is_sparse else reg).detach().cpu().double()
        edges = mesh_edges(torch.as_tensor(np.asarray(self.body.faces, np.int64)))
        errs = body_errors(pv, gv, reg, pelvis=0, edges=edges)
        out = {f"{k}_mm": float(v[0]) for k, v in errs.items() if k != "edge_error"}
        out["edge_error_percent"] = float(errs["edge_error"][0])
        # the method's own root estimate (RCNet's for SA-HMR), which need not be its mesh's
        # pelvis: root_error_mm above is the mesh's, as the evaluator scores every method
        gt_pelvis = (reg @ gv[0])[0]
        out["method_root_error_mm"] = float(
            root_error(torch.as_tensor(root_world, dtype=torch.float64)[None], gt_pelvis[None])[0]
        )
        return out
