"""Bend a predicted body's limbs out of the scan: `depenetrate`, `Depenetrator`.

The ray slide (`sahmr.scene.ray_slide`) moves a whole body along its camera ray and so takes
the placement part of its penetration. What it leaves is pose: a hand through the wall the
person touches, a knee through the floor, a heel through a step. `depenetrate` changes only
the joint rotations of such a body (``body_pose``; the root's rotation, the translation and
the shape stay, so the placement the method and the slide chose is kept), as little as it
can, by L-BFGS (strong Wolfe line search) on

    E(theta) = sum_v relu(-sdf(v))^2  +  anchor * mean_v |v - v0|^2
               + pose_anchor * |theta - theta0|^2

with ``v`` the posed vertices in the world frame, ``v0`` the prediction's, ``sdf`` the scan's
signed distance (negative inside) and ``theta`` axis-angle. Moving a hand 2 cm costs a 300th
of moving the whole body 2 cm in the anchor term, so the energy bends the penetrating limb and
leaves the rest. A vertex pushed out stops at the surface (sdf = 0): a contact stays a contact.
L-BFGS, not Adam: Adam moves every joint by about its step size whatever its gradient, so
joints far from the contact (the neck, the other arm) drift; L-BFGS follows the energy's
curvature and bends the elbow and wrist that touch the wall.

Only bodies with body-model parameters and at least ``min_depth_m`` of penetration are
touched; each keeps its own refinement offsets (a method's per-vertex refinement on top of
the parametric body is carried over unchanged). Units metres; the prediction's frame is the
camera's (OpenCV), the scan's the world's; ``T_w2c`` world -> camera.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from sahmr.geometry.cameras import invert_rigid, transform_points
from sahmr.records import BodyPrediction

__all__ = ["DepenetrateConfig", "Depenetrator", "depenetrate", "grid_sdf"]

SDF = Callable[[Tensor], Tensor]
"""Signed distance of world points (N, 3) -> (N,), metres, negative inside; differentiable."""


@dataclass(frozen=True)
class DepenetrateConfig:
    """Settings of `depenetrate`.

    Attributes:
        iterations: L-BFGS iterations (each evaluates the energy one or more times).
        anchor: Weight of the mean squared vertex displacement (m^2) against the squared
            penetration depths (m^2 summed over vertices).
        pose_anchor: Weight of the squared change of the joint rotations (rad^2).
        min_depth_m: A body is touched only if some vertex lies deeper than this.
    """

    iterations: int = 30
    anchor: float = 30.0
    pose_anchor: float = 1e-2
    min_depth_m: float = 0.01

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        for name in ("anchor", "pose_anchor", "min_depth_m"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def grid_sdf(sampler: Any) -> SDF | None:
    """A scene SDF object's ``sample`` (`sahmr.scene.sdf.SDFGrid`, the evaluator's
    `ExactSceneSDF`: its grid lookup) as a differentiable `SDF` in float32 on the points'
    device, or None for None (`sahmr.scene.ray_slide.sampler_sdf` is the detached twin).
    A grid (``device_values``) is uploaded to the points' device once, not on every lookup:
    the L-BFGS closure samples it dozens of times per body, and on a GPU each uncached lookup
    copied the whole room (run 39's lease: 5.3 minutes to score 960 frames, 1.2 without the
    bending)."""
    if sampler is None:
        return None
    if not hasattr(sampler, "device_values"):
        return lambda points: sampler.sample(points.float())

    def sdf(points: Tensor) -> Tensor:
        points = points.float()
        return sampler.sample(points, sampler.device_values(points.device))

    return sdf


def _posed(body_model: nn.Module, params: dict[str, Tensor], body_pose: Tensor):
    """(vertices (K, V, 3), the 24 SMPL joints (K, 24, 3)) of parameters with ``body_pose``."""
    out = body_model(
        betas=params["betas"],
        global_orient=params["global_orient"],
        body_pose=body_pose,
        transl=params["transl"],
    )
    return out.vertices, out.joints[:, :24]


def depenetrate(
    pred: BodyPrediction,
    T_w2c: Tensor,
    sdfs: Sequence[SDF | None],
    body_model: nn.Module,
    config: DepenetrateConfig | None = None,
) -> tuple[BodyPrediction, Tensor]:
    """Bends the joints of each penetrating body out of its scan.

    Args:
        pred: A prediction with ``params`` (camera frame; None: returned unchanged).
        T_w2c: Tensor (B, 4, 4), world -> camera of each frame.
        sdfs: One differentiable SDF (world points -> metres) or None (no scan) per frame.
        body_model: The body model the parameters belong to (`sahmr.body.BodyModel`).
        config: Settings (default `DepenetrateConfig()`).

    Returns:
        ``(prediction, changed (B,) bool)``: the prediction with the changed bodies' vertices,
        joints and ``body_pose`` replaced (root, translation, shape and contact points kept).
    """
    cfg = config or DepenetrateConfig()
    batch = pred.verts_cam.shape[0]
    if len(sdfs) != batch:
        raise ValueError(f"{len(sdfs)} SDFs for {batch} bodies")
    changed = torch.zeros(batch, dtype=torch.bool)
    if pred.params is None or all(s is None for s in sdfs):
        return pred, changed
    device = pred.verts_cam.device
    T_c2w = invert_rigid(T_w2c.to(device=device, dtype=torch.float32))
    verts_world = transform_points(T_c2w, pred.verts_cam.float())
    with torch.no_grad():
        for b, sdf in enumerate(sdfs):
            if sdf is not None:
                deepest = -float(sdf(verts_world[b]).min())
                changed[b] = deepest > cfg.min_depth_m
    idx = changed.nonzero().flatten().tolist()
    if not idx:
        return pred, changed
    sel = torch.tensor(idx, device=device)
    params = {k: v[sel].detach().float() for k, v in pred.params.items()}
    pose0 = params["body_pose"].reshape(len(idx), -1)
    to_world = T_c2w[sel]
    with torch.no_grad():
        v_start, j_start = _posed(body_model, params, pose0)
        v0_world = transform_points(to_world, v_start)
    pose = pose0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [pose], lr=1.0, max_iter=cfg.iterations, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        v, _ = _posed(body_model, params, pose)
        v_world = transform_points(to_world, v)
        depth = torch.stack(
            [(-sdfs[b](v_world[k])).clamp(min=0) for k, b in enumerate(idx)]
        )  # (K, V)
        energy = (
            depth.square().sum()
            + cfg.anchor * (v_world - v0_world).square().sum(-1).mean(-1).sum()
            + cfg.pose_anchor * (pose - pose0).square().sum()
        )
        energy.backward()
        return energy

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        v_end, j_end = _posed(body_model, params, pose)
        verts_cam = pred.verts_cam.clone()
        verts_cam[sel] = verts_cam[sel] + (v_end - v_start).to(verts_cam.dtype)
        joints_cam = pred.joints_cam.clone()
        if joints_cam.shape[1] == j_end.shape[1]:
            joints_cam[sel] = joints_cam[sel] + (j_end - j_start).to(joints_cam.dtype)
        new_params = {k: v.clone() for k, v in pred.params.items()}
        shape = new_params["body_pose"].shape
        body_pose = new_params["body_pose"].reshape(batch, -1)
        body_pose[sel] = pose.detach().to(body_pose.dtype)
        new_params["body_pose"] = body_pose.reshape(shape)
    return replace(pred, verts_cam=verts_cam, joints_cam=joints_cam, params=new_params), changed


class Depenetrator:
    """`depenetrate` bound to a body model and settings: ``(pred, T_w2c, sdfs) -> (pred,
    changed)``, the ``depenetrator`` of `sahmr.engine.validation.run_validation`."""

    def __init__(self, body_model: nn.Module, config: DepenetrateConfig | None = None) -> None:
        self.body_model = body_model
        self.config = config or DepenetrateConfig()

    def __call__(
        self, pred: BodyPrediction, T_w2c: Tensor, sdfs: Sequence[SDF | None]
    ) -> tuple[BodyPrediction, Tensor]:
        return depenetrate(pred, T_w2c, sdfs, self.body_model, self.config)
