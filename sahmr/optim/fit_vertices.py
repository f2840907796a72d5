"""Batched fit of SMPL-format parameters to vertices of the body model's topology.

Any method's meshes (vertex regressors such as METRO or SA-HMR, another fit, a file) become
SMPL-format parameters (``betas``, ``global_orient``, ``body_pose``, ``transl``; smplx names)
whose mesh matches them. The mesh of the parameters is an affine function of ``betas`` and
``transl`` for fixed joint rotations, and moves rigidly per kinematic sub-tree under a rotation
increment, which gives an exact analytic Jacobian and a fast Levenberg-Marquardt fit:

1. Start (`VertexFitter.initial_params`): each joint's world rotation by Kabsch alignment of
   the rest template's vertices that the joint dominates (largest skinning weight) with the
   same target vertices; local rotations ``L_k = G_parent^T G_k`` along the tree; then
   ``betas`` and ``transl`` by linear least squares (exact for the rotations held fixed).
2. Levenberg-Marquardt on ``E = mean_v |v(theta, beta, t) - v*|^2 + w_beta |beta|^2`` with
   rotation increments ``omega_k`` (axis-angle, world frame) that rotate joint k's sub-tree
   about the posed joint ``p_k``: ``dv/domega_k = -[u_k]_x`` with
   ``u_k = sum_{m in subtree(k)} w_vm (A_m x_v) - (sum_{m in subtree(k)} w_vm) p_k``,
   ``dv/dbeta`` from the shape blend shapes through the chain of joint positions, and
   ``dv/dt = I``. The step ``(H + lambda diag(H)) delta = -g`` is taken per frame; a frame
   keeps a step only when its energy drops (``lambda`` / 3), otherwise ``lambda`` * 3.
   Pose blend shapes (real SMPL files) are in the energy but left out of the Jacobian.
   Shape coefficients are kept in ``[-max_abs_beta, max_abs_beta]`` (projected steps).

Frames are independent (per-frame damping and acceptance), the iteration count is fixed, and
nothing is random, so a frame's result depends only on its own vertices. Computation is
float32 on the device of the input vertices. Units: metres; the parameters live in the frame
of the given vertices (camera or world).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sahmr.body.constants import NUM_SMPL_JOINTS
from sahmr.body.kinematics import KinematicTree
from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from sahmr.optim.smplify import SMPLParams

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FIT_ITERATIONS",
    "VertexFitResult",
    "VertexFitter",
    "fit_body_to_vertices",
    "sample_body_params",
]

DEFAULT_FIT_ITERATIONS = 15
"""Levenberg-Marquardt iterations of `VertexFitter` (noise-free bodies converge in ~5-10)."""

DEFAULT_MAX_ABS_BETA = 3.0
"""Default bound of the fitted shape coefficients, in standard deviations. SMPL's shape space
is a unit Gaussian (99.7 % of people within 3 std per coefficient; the generator clips at
2.5); unbounded fits to crumpled network outputs reached 20 std (thin limbs, huge feet) and
a worse PA-MPVE than bounded ones (the demo frames: 97-102 mm at 5 std, 87-95 mm at 3)."""

_MIN_PART_VERTICES = 4
"""A joint dominating fewer vertices takes its parent's world rotation at the start."""


@dataclass
class VertexFitResult:
    """Outcome of a vertex fit, in the frame of the target vertices.

    Attributes:
        params: Fitted `SMPLParams`: ``global_orient`` (N, 3), ``body_pose`` (N, 69)
            axis-angle radians, ``betas`` (N, NB), ``transl`` (N, 3) metres.
        vertices: Tensor (N, V, 3), the fitted parameters' mesh, metres.
        vertex_error: Tensor (N,), mean Euclidean distance of the fitted mesh to the target
            vertices, metres.
        iterations: Levenberg-Marquardt iterations run.
        seconds: Wall time of the fit (device synchronised), seconds.
    """

    params: SMPLParams
    vertices: Tensor
    vertex_error: Tensor
    iterations: int
    seconds: float

    @property
    def seconds_per_frame(self) -> float:
        """Wall time divided by the batch size."""
        return self.seconds / max(self.params.batch_size, 1)


@dataclass
class _Posed:
    """A posed body and what its Jacobian needs (all float32, frame of the targets)."""

    vertices: Tensor  # (N, V, 3)
    rot_world: Tensor  # (N, 24, 3, 3) G_m
    joints: Tensor  # (N, 24, 3) posed joints p_m, without transl
    per_joint: Tensor  # (N, V, 24, 3) A_m x_v, without transl


class VertexFitter(nn.Module):
    """Fits SMPL-format parameters to batches of vertices of one body model's topology.

    The model's arrays are copied into float32 buffers; move the fitter with ``.to(device)``
    or let `fit` do it (the fitter follows the device of the vertices it is given).

    Args:
        body_model: A `sahmr.body.BodyModel` (or any smplx SMPL layer): ``v_template``,
            ``shapedirs``, ``posedirs``, ``J_regressor``, ``lbs_weights``, ``parents``.
        iterations: Levenberg-Marquardt iterations.
        beta_weight: Weight of ``|betas|^2`` (m^2 per unit): a tie-breaker that keeps the shape
            finite where the vertices do not determine it; negligible on bodies.
        initial_damping: Starting ``lambda`` (relative to ``diag(H)``).
        max_abs_beta: Bound of every shape coefficient (standard deviations; None: none).
            Steps are projected onto the box, so bodies inside it are fitted exactly while
            meshes no body matches (crumpled or torn method outputs) cannot push the shape
            to inhuman extremes to soak up the residual.
    """

    def __init__(
        self,
        *,
        body_model: nn.Module,
        iterations: int = DEFAULT_FIT_ITERATIONS,
        beta_weight: float = 1e-10,
        initial_damping: float = 1e-3,
        max_abs_beta: float | None = DEFAULT_MAX_ABS_BETA,
    ) -> None:
        super().__init__()
        if iterations < 0:
            raise ValueError("iterations must be >= 0")
        f32 = torch.float32
        reg = body_model.J_regressor
        reg = (reg.to_dense() if reg.is_sparse else reg).to(f32)
        weights = body_model.lbs_weights.to(f32)
        parents = [int(p) for p in body_model.parents.tolist()]
        if len(parents) != NUM_SMPL_JOINTS:
            raise ValueError(f"expected an SMPL-format model with {NUM_SMPL_JOINTS} joints, "
                             f"got {len(parents)}")
        J = NUM_SMPL_JOINTS
        self.iterations = int(iterations)
        self.beta_weight = float(beta_weight)
        self.initial_damping = float(initial_damping)
        self.max_abs_beta = None if max_abs_beta is None else float(max_abs_beta)
        self.parents_list = parents
        self.kinematic_tree = KinematicTree(parents)  # device indices: no host copies
        v_template = body_model.v_template.to(f32)
        shapedirs = body_model.shapedirs.to(f32)
        self.register_buffer("v_template", v_template.clone())
        self.register_buffer("shapedirs", shapedirs.clone())  # (V, 3, NB)
        self.register_buffer("posedirs", body_model.posedirs.to(f32).clone())  # (207, 3V)
        self.register_buffer("lbs_weights", weights.clone())  # (V, 24)
        self.register_buffer("parents", torch.tensor(parents, dtype=torch.long))
        self.register_buffer("j_template", reg @ v_template)  # (24, 3)
        self.register_buffer("j_shapedirs", torch.einsum("jv,vcn->jcn", reg, shapedirs))
        # subtree[m, k] = 1 when joint m lies in the sub-tree rooted at joint k (k itself too).
        subtree = torch.zeros(J, J, dtype=f32)
        for m in range(J):
            k = m
            while k >= 0:
                subtree[m, k] = 1.0
                k = parents[k]
        self.register_buffer("subtree", subtree)
        self.register_buffer("subtree_weights", torch.einsum("vm,mk->vmk", weights, subtree))
        self.has_pose_blend = bool(self.posedirs.abs().max() > 0)
        dominant = weights.argmax(dim=1)
        part = torch.nn.functional.one_hot(dominant, J).to(f32)  # (V, 24)
        self.register_buffer("part_mask", part)
        self.part_ok = [int(n) >= _MIN_PART_VERTICES for n in part.sum(0).tolist()]

    @property
    def num_vertices(self) -> int:
        """V."""
        return int(self.v_template.shape[0])

    @property
    def num_betas(self) -> int:
        """NB."""
        return int(self.shapedirs.shape[-1])

    # ------------------------------------------------------------------ body

    def rest_joints(self, betas: Tensor) -> Tensor:
        """Rest joints ``J(beta)`` (N, 24, 3) (the regressor is linear in the shape)."""
        return self.j_template + torch.einsum("jcn,bn->bjc", self.j_shapedirs, betas)

    def chain(self, rot_local: Tensor, rest_joints: Tensor) -> tuple[Tensor, Tensor]:
        """World rotations and posed joints along the tree.

        Args:
            rot_local: Tensor (N, 24, 3, 3), root orientation then each joint relative to its
                parent.
            rest_joints: Tensor (N, 24, 3).

        Returns:
            ``(rot_world (N, 24, 3, 3), joints (N, 24, 3))``, without translation.
        """
        joints, transforms = self.kinematic_tree(rot_local, rest_joints)
        return transforms[..., :3, :3], joints

    def pose_body(self, rot_local: Tensor, betas: Tensor, transl: Tensor) -> _Posed:
        """The mesh of the parameters (smplx's linear blend skinning) plus Jacobian parts.

        Args:
            rot_local: Tensor (N, 24, 3, 3).
            betas: Tensor (N, NB).
            transl: Tensor (N, 3), metres.

        Returns:
            `_Posed`.
        """
        N = betas.shape[0]
        v_shaped = self.v_template + torch.einsum("vcn,bn->bvc", self.shapedirs, betas)
        rest = self.rest_joints(betas)
        if self.has_pose_blend:
            eye = torch.eye(3, dtype=rot_local.dtype, device=rot_local.device)
            feat = (rot_local[:, 1:] - eye).reshape(N, -1)
            v_shaped = v_shaped + (feat @ self.posedirs).reshape(N, -1, 3)
        rot_world, joints = self.chain(rot_local, rest)
        offset = joints - (rot_world @ rest[..., None])[..., 0]  # (N, 24, 3)
        per_joint = torch.einsum("bmij,bvj->bvmi", rot_world, v_shaped) + offset[:, None]
        vertices = torch.einsum("vm,bvmi->bvi", self.lbs_weights, per_joint) + transl[:, None]
        return _Posed(vertices, rot_world, joints, per_joint)

    def vertices(self, params: SMPLParams) -> Tensor:
        """Mesh (N, V, 3) of axis-angle parameters, metres (equal to the body model's)."""
        rot = self._rot_local(params.global_orient, params.body_pose)
        betas = self._pad_betas(params.betas)
        return self.pose_body(rot, betas, params.transl).vertices

    def _pad_betas(self, betas: Tensor) -> Tensor:
        nb = self.num_betas
        if betas.shape[-1] > nb:
            raise ValueError(f"got {betas.shape[-1]} betas, the model has {nb}")
        return torch.nn.functional.pad(betas.float(), (0, nb - betas.shape[-1]))

    @staticmethod
    def _rot_local(global_orient: Tensor, body_pose: Tensor) -> Tensor:
        N = global_orient.shape[0]
        aa = torch.cat([global_orient.reshape(N, 1, 3), body_pose.reshape(N, -1, 3)], dim=1)
        return axis_angle_to_matrix(aa.float())

    # ------------------------------------------------------------------ Jacobian

    def lever_arms(self, posed: _Posed) -> Tensor:
        """``u_k(v) = sum_{m in subtree(k)} w_vm (A_m x_v) - (sum_{m in subtree(k)} w_vm) p_k``.

        Args:
            posed: `pose_body` output.

        Returns:
            Tensor (N, V, 24, 3): ``d v / d omega_k = -[u_k]_x``.
        """
        u = torch.einsum("vmk,bvmi->bvki", self.subtree_weights, posed.per_joint)
        return u - (self.lbs_weights @ self.subtree)[None, :, :, None] * posed.joints[:, None]

    def shape_jacobian(self, rot_world: Tensor) -> Tensor:
        """``d v / d beta`` for fixed rotations (pose blend shapes held fixed).

        Args:
            rot_world: Tensor (N, 24, 3, 3), world rotations ``G_m``.

        Returns:
            Tensor (N, V, 3, NB).
        """
        # d p_m / d beta: SJ_0 at the root, + G_parent (SJ_m - SJ_parent) per bone.
        sj = self.j_shapedirs  # (24, 3, NB)
        par = self.parents.clamp_min(0)
        edge = torch.einsum("bmij,mjn->bmin", rot_world[:, par], sj - sj[par])
        edge[:, 0] = sj[0]
        dp = torch.einsum("mk,bkin->bmin", self.subtree, edge)  # ancestors-or-self sums
        per_joint = dp - torch.einsum("bmij,mjn->bmin", rot_world, sj)  # (N, 24, 3, NB)
        blended = torch.einsum("vm,bmij->bvij", self.lbs_weights, rot_world)  # (N, V, 3, 3)
        j_beta = torch.einsum("bvij,vjn->bvin", blended, self.shapedirs)
        return j_beta + torch.einsum("vm,bmin->bvin", self.lbs_weights, per_joint)

    def jacobian(self, posed: _Posed) -> Tensor:
        """Full Jacobian of the vertices (the obvious reference of `normal_equations`).

        Columns: 24 x 3 world-frame rotation increments (joint k's sub-tree about ``p_k``),
        then NB shape coefficients, then 3 translation components.

        Args:
            posed: `pose_body` output.

        Returns:
            Tensor (N, 3V, 72 + NB + 3).
        """
        u = self.lever_arms(posed)
        N, V, J, _ = u.shape
        x, y, z = u.unbind(-1)  # (N, V, 24) each
        j_rot = u.new_zeros(N, V, 3, J, 3)  # [b, v, i, k, j] = d v_i / d omega_kj = -[u_k]_x
        j_rot[:, :, 0, :, 1] = z
        j_rot[:, :, 0, :, 2] = -y
        j_rot[:, :, 1, :, 0] = -z
        j_rot[:, :, 1, :, 2] = x
        j_rot[:, :, 2, :, 0] = y
        j_rot[:, :, 2, :, 1] = -x
        j_beta = self.shape_jacobian(posed.rot_world)
        eye = torch.eye(3, dtype=u.dtype, device=u.device).expand(N, V, 3, 3)
        return torch.cat([j_rot.reshape(N, V, 3, J * 3), j_beta, eye], dim=-1).reshape(
            N, V * 3, -1)

    def normal_equations(self, posed: _Posed, target: Tensor) -> tuple[Tensor, Tensor]:
        """``H = J^T J / V`` and ``g = J^T r / V`` from blocks, without forming ``J``.

        With ``M_kl = sum_v u_k u_l^T``: ``H_rot,rot[k, l] = tr(M_kl) I - M_kl^T``,
        ``g_rot[k] = sum_v u_k x r``, ``H_rot,beta[k] = sum_v u_k x (d v / d beta)``,
        ``H_rot,t[k] = [sum_v u_k]_x``; the shape and translation blocks are plain sums.

        Args:
            posed: `pose_body` output.
            target: Tensor (N, V, 3).

        Returns:
            ``(H (N, P, P), g (N, P))`` with P = 72 + NB + 3 (the columns of `jacobian`).
        """
        u = self.lever_arms(posed)
        N, V, J, _ = u.shape
        nb = self.num_betas
        resid = posed.vertices - target  # (N, V, 3)
        j_beta = self.shape_jacobian(posed.rot_world)  # (N, V, 3, NB)
        uf = u.reshape(N, V, J * 3).transpose(1, 2)  # (N, 3J, V)
        M = (uf @ uf.transpose(1, 2)).reshape(N, J, 3, J, 3)
        trace = torch.diagonal(M, dim1=2, dim2=4).sum(-1)  # (N, J, J)
        eye3 = torch.eye(3, dtype=u.dtype, device=u.device)
        h_rr = trace[:, :, None, :, None] * eye3[None, None, :, None, :] - M.transpose(2, 4)
        columns = torch.cat([resid[..., None], j_beta], dim=-1)  # (N, V, 3, 1 + NB)
        rhs = columns.transpose(2, 3).reshape(N, V, (1 + nb) * 3)
        P = (uf @ rhs).reshape(N, J, 3, 1 + nb, 3)  # [k, j, column, l] = sum_v u_kj c_l
        P = P.permute(0, 1, 3, 2, 4)  # (N, J, 1 + NB, j, l)
        crossed = torch.stack(
            [P[..., 1, 2] - P[..., 2, 1], P[..., 2, 0] - P[..., 0, 2],
             P[..., 0, 1] - P[..., 1, 0]], dim=-1)  # (N, J, 1 + NB, 3) = sum u_k x c
        g_rot = crossed[:, :, 0].reshape(N, J * 3)
        h_rb = crossed[:, :, 1:].permute(0, 1, 3, 2).reshape(N, J * 3, nb)
        u_sum = u.sum(1)  # (N, J, 3)
        sx, sy, sz = u_sum.unbind(-1)
        zero = torch.zeros_like(sx)
        h_rt = torch.stack(
            [torch.stack([zero, -sz, sy], -1), torch.stack([sz, zero, -sx], -1),
             torch.stack([-sy, sx, zero], -1)], dim=-2).reshape(N, J * 3, 3)
        jb = j_beta.reshape(N, V * 3, nb)
        h_bb = jb.transpose(1, 2) @ jb
        h_bt = j_beta.sum(1).transpose(1, 2)  # (N, NB, 3)
        h_tt = V * eye3.expand(N, 3, 3)
        g_b = (jb.transpose(1, 2) @ resid.reshape(N, V * 3, 1))[..., 0]
        g_t = resid.sum(1)
        H = torch.cat([
            torch.cat([h_rr.reshape(N, J * 3, J * 3), h_rb, h_rt], dim=2),
            torch.cat([h_rb.transpose(1, 2), h_bb, h_bt], dim=2),
            torch.cat([h_rt.transpose(1, 2), h_bt.transpose(1, 2), h_tt], dim=2),
        ], dim=1)
        g = torch.cat([g_rot, g_b, g_t], dim=1)
        return H / V, g / V

    # ------------------------------------------------------------------ start

    @torch.no_grad()
    def initial_params(self, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Start of the fit: per-part Kabsch rotations, then linear ``betas`` / ``transl``.

        Args:
            target: Tensor (N, V, 3) float32.

        Returns:
            ``(rot_local (N, 24, 3, 3), betas (N, NB), transl (N, 3))``.
        """
        N = target.shape[0]
        mask = self.part_mask  # (V, 24)
        count = mask.sum(0).clamp_min(1.0)  # (24,)
        src = self.v_template
        src_mean = (mask.T @ src) / count[:, None]  # (24, 3)
        dst_mean = torch.einsum("vk,bvi->bki", mask, target) / count[:, None]
        # C_k = sum_v y_v x_v^T - n_k ybar xbar^T
        cov = torch.einsum("vk,bvi,vj->bkij", mask, target, src)
        cov = cov - count[:, None, None] * dst_mean[..., None] * src_mean[None, :, None, :]
        U, _, Vh = torch.linalg.svd(cov.double())
        d = torch.sign(torch.linalg.det(U @ Vh))
        d = torch.where(d == 0, torch.ones_like(d), d)
        diag = torch.ones(*d.shape, 3, dtype=d.dtype, device=d.device)
        diag[..., 2] = d
        rot_world = (U @ (diag[..., None] * Vh)).float()  # (N, 24, 3, 3)
        for k in range(1, NUM_SMPL_JOINTS):  # parents come first in SMPL order
            if not self.part_ok[k]:
                rot_world[:, k] = rot_world[:, self.parents_list[k]]
        rot_local = rot_world.clone()
        par = self.parents[1:]
        rot_local[:, 1:] = rot_world[:, par].transpose(-1, -2) @ rot_world[:, 1:]
        betas = target.new_zeros(N, self.num_betas)
        transl = target.new_zeros(N, 3)
        # Vertices are affine in (betas, transl) for fixed rotations: one exact linear solve.
        posed = self.pose_body(rot_local, betas, transl)
        H, g = self.normal_equations(posed, target)
        k = 3 * NUM_SMPL_JOINTS
        H = H[:, k:, k:] + torch.diag(self._beta_reg(target.device)[k:])
        step = torch.linalg.solve(H.double(), -g[:, k:, None].double()).float()[..., 0]
        return rot_local, self._bound_betas(step[:, : self.num_betas]), step[:, self.num_betas:]

    def _bound_betas(self, betas: Tensor) -> Tensor:
        if self.max_abs_beta is None:
            return betas
        return betas.clamp(-self.max_abs_beta, self.max_abs_beta)

    # ------------------------------------------------------------------ fit

    def _beta_reg(self, device: torch.device) -> Tensor:
        """Diagonal (P,) of the shape regulariser's Hessian."""
        J, nb = NUM_SMPL_JOINTS, self.num_betas
        reg = torch.zeros(J * 3 + nb + 3, device=device)
        reg[J * 3 : J * 3 + nb] = self.beta_weight
        return reg

    def _energy(self, vertices: Tensor, target: Tensor, betas: Tensor) -> Tensor:
        data = ((vertices - target) ** 2).sum(-1).mean(-1)
        return data + self.beta_weight * (betas**2).sum(-1)

    def fit(
        self,
        vertices: Tensor,
        init: SMPLParams | None = None,
        *,
        iterations: int | None = None,
    ) -> VertexFitResult:
        """Fit parameters to target vertices.

        Args:
            vertices: Tensor (N, V, 3), metres, any frame (the parameters come out in it); V
                must be the body model's vertex count (same topology, same vertex order).
            init: Optional start (e.g. the truth, or a previous frame); default
                `initial_params`.
            iterations: Levenberg-Marquardt iterations (default: the fitter's).

        Returns:
            `VertexFitResult` on the device of ``vertices``, float32, detached.

        Raises:
            ValueError: ``vertices`` is not (N, V, 3) with the model's V, or not finite.
        """
        if vertices.ndim != 3 or vertices.shape[-1] != 3:
            raise ValueError(f"vertices must be (N, V, 3), got {tuple(vertices.shape)}")
        if vertices.shape[1] != self.num_vertices:
            raise ValueError(
                f"vertices have {vertices.shape[1]} points per mesh; the body model has "
                f"{self.num_vertices} (the fit needs its topology)"
            )
        if not bool(torch.isfinite(vertices).all()):
            raise ValueError("vertices hold NaN or infinite values")
        device = vertices.device
        if self.v_template.device != device:
            self.to(device)
        iters = self.iterations if iterations is None else int(iterations)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            result = self._fit(vertices.detach().float(), init, iters)
        sync()
        result.seconds = time.perf_counter() - start
        return result

    def _fit(self, target: Tensor, init: SMPLParams | None, iters: int) -> VertexFitResult:
        N = target.shape[0]
        J = NUM_SMPL_JOINTS
        nb = self.num_betas
        if init is None:
            rot, betas, transl = self.initial_params(target)
        else:
            if init.batch_size != N:
                raise ValueError(f"init has {init.batch_size} frames, vertices {N}")
            rot = self._rot_local(init.global_orient.to(target), init.body_pose.to(target))
            betas = self._pad_betas(init.betas.to(target))
            transl = init.transl.to(target).float()
        posed = self.pose_body(rot, betas, transl)
        energy = self._energy(posed.vertices, target, betas)
        damping = torch.full((N,), self.initial_damping, device=target.device)
        eye = torch.eye(J * 3 + nb + 3, device=target.device)
        beta_reg = self._beta_reg(target.device)
        for _ in range(iters):
            H, g = self.normal_equations(posed, target)
            H = H + torch.diag(beta_reg)
            g[:, J * 3 : J * 3 + nb] += self.beta_weight * betas
            scale = torch.diagonal(H, dim1=-2, dim2=-1).clamp_min(1e-9)
            A = H + damping[:, None, None] * torch.diag_embed(scale) + 1e-9 * eye
            L, info = torch.linalg.cholesky_ex(A)
            step = torch.cholesky_solve(-g[..., None], L)[..., 0]
            step = torch.where((info == 0)[:, None] & torch.isfinite(step), step, 0.0)
            omega = step[:, : J * 3].reshape(N, J, 3)
            # world-frame increment at joint k -> its parent's frame, left-multiplied locally
            par_rot = torch.cat(
                [torch.eye(3, device=target.device).expand(N, 1, 3, 3),
                 posed.rot_world[:, self.parents[1:]]], dim=1)
            omega_local = (par_rot.transpose(-1, -2) @ omega[..., None])[..., 0]
            rot_new = axis_angle_to_matrix(omega_local) @ rot
            betas_new = self._bound_betas(betas + step[:, J * 3 : J * 3 + nb])
            transl_new = transl + step[:, J * 3 + nb :]
            posed_new = self.pose_body(rot_new, betas_new, transl_new)
            energy_new = self._energy(posed_new.vertices, target, betas_new)
            better = (energy_new < energy) & (info == 0)
            damping = torch.where(better, damping / 3.0, damping * 3.0).clamp(1e-9, 1e9)
            b4 = better[:, None, None, None]
            rot = torch.where(b4, rot_new, rot)
            betas = torch.where(better[:, None], betas_new, betas)
            transl = torch.where(better[:, None], transl_new, transl)
            energy = torch.where(better, energy_new, energy)
            posed = _Posed(
                torch.where(b4[..., 0], posed_new.vertices, posed.vertices),
                torch.where(b4, posed_new.rot_world, posed.rot_world),
                torch.where(b4[..., 0], posed_new.joints, posed.joints),
                torch.where(better[:, None, None, None], posed_new.per_joint, posed.per_joint),
            )
        aa = matrix_to_axis_angle(rot)
        params = SMPLParams(
            global_orient=aa[:, 0].contiguous(),
            body_pose=aa[:, 1:].reshape(N, -1).contiguous(),
            betas=betas,
            transl=transl,
        )
        error = (posed.vertices - target).norm(dim=-1).mean(-1)
        return VertexFitResult(params, posed.vertices, error, iters, 0.0)


def fit_body_to_vertices(
    vertices: Tensor,
    body_model: nn.Module,
    *,
    iterations: int = DEFAULT_FIT_ITERATIONS,
    batch_size: int | None = None,
) -> VertexFitResult:
    """Fit SMPL-format parameters to meshes of ``body_model``'s topology (one call).

    Args:
        vertices: Tensor (N, V, 3), metres; the fit runs on its device.
        body_model: `sahmr.body.BodyModel` (any SMPL-format model).
        iterations: Levenberg-Marquardt iterations.
        batch_size: Frames per pass (None: all at once), to bound memory.

    Returns:
        `VertexFitResult` for all N frames.
    """
    fitter = VertexFitter(body_model=body_model, iterations=iterations).to(vertices.device)
    N = vertices.shape[0]
    step = N if not batch_size else int(batch_size)
    if step >= N:
        return fitter.fit(vertices)
    parts = [fitter.fit(vertices[i : i + step]) for i in range(0, N, step)]
    return VertexFitResult(
        params=SMPLParams(**{
            k: torch.cat([p.params.as_dict()[k] for p in parts])
            for k in ("global_orient", "body_pose", "betas", "transl")
        }),
        vertices=torch.cat([p.vertices for p in parts]),
        vertex_error=torch.cat([p.vertex_error for p in parts]),
        iterations=iterations,
        seconds=sum(p.seconds for p in parts),
    )


def sample_body_params(
    num: int,
    *,
    seed: int = 0,
    betas_range: float = 3.0,
    transl_std_m: float = 2.0,
    num_betas: int = 10,
) -> SMPLParams:
    """Random bodies for tests and benchmarks of the fit, deterministic in ``seed``.

    Poses from the generator's pose library (`sahmr.optim.priors.sample_pose_library`, every
    action), betas uniform in ``[-betas_range, betas_range]``, a uniformly random global
    orientation and a Gaussian translation.

    Args:
        num: N.
        seed: Seed of every draw.
        betas_range: Bound of the shape coefficients (standard deviations).
        transl_std_m: Standard deviation of each translation component, metres.
        num_betas: NB.

    Returns:
        `SMPLParams` with float32 CPU tensors.
    """
    from sahmr.geometry.rotations import quaternion_to_matrix
    from sahmr.optim.priors import sample_pose_library

    lib = sample_pose_library(num, seed=seed, num_betas=num_betas)
    g = torch.Generator().manual_seed(seed)
    orient = matrix_to_axis_angle(quaternion_to_matrix(torch.randn(num, 4, generator=g)))
    return SMPLParams(
        global_orient=orient.float(),
        body_pose=torch.as_tensor(lib.body_pose, dtype=torch.float32),
        betas=(torch.rand(num, num_betas, generator=g) * 2 - 1) * betas_range,
        transl=torch.randn(num, 3, generator=g) * transl_std_m,
    )
