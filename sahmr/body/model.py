"""`BodyModel`: smplx's SMPL layer built from plain arrays, with derived topology.

The model is any SMPL-format file (`sahmr.body.io`), by default the package's license-free
neutral body. It subclasses `smplx.SMPL` and builds it from ``data_struct`` so smplx never
unpickles anything, and adds what the rest of sahmr needs: rotation-matrix inputs, a typed
`BodyOutput` with H36M/14-joint regressions and smplx's 21 landmark joints, the content hash,
and the lazily derived, disk-cached `BodyTopology` (mesh hierarchy, H36M regressor, contact
regions).

Frames and units: SMPL's body frame (x = the body's left, y up, z forward at rest), metres.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import smplx
import torch
from smplx.lbs import batch_rodrigues
from smplx.utils import Struct
from smplx.vertex_ids import vertex_ids as SMPLX_VERTEX_IDS

from sahmr.body.constants import (
    H36M_TO_J14,
    LANDMARK_NAMES,
    NUM_SMPL_JOINTS,
    SMPL_JOINT_INDEX,
)
from sahmr.body.io import content_hash, load_body_model_data
from sahmr.body.kinematics import KinematicTree
from sahmr.body.topology import BodyTopology, body_axes, rest_joints

logger = logging.getLogger(__name__)

#: Vertex count of SMPL's own mesh, the topology smplx's landmark vertex ids refer to.
SMPL_NUM_VERTICES = 6890
#: File name of the shipped license-free body inside ``sahmr/body/assets``.
LICENSE_FREE_ASSET = "license_free_neutral.npz"

_J = SMPL_JOINT_INDEX


def license_free_model_path() -> Path:
    """Path of the shipped license-free SMPL-format body, found relative to the package.

    Returns:
        The ``.npz`` path (independent of the working directory).

    Raises:
        FileNotFoundError: If the asset has not been built / installed.
    """
    path = Path(__file__).resolve().parent / "assets" / LICENSE_FREE_ASSET
    if not path.is_file():
        raise FileNotFoundError(
            f"license-free body asset missing at {path}; build it with the body builder tool "
            "in tools/ or reinstall the package"
        )
    return path


@dataclass
class BodyOutput:
    """Posed body, all tensors in the model frame plus ``transl``, metres.

    Attributes:
        vertices: Tensor of shape (B, V, 3).
        joints: Tensor of shape (B, 24, 3), SMPL joints.
        joints_h36m: Tensor of shape (B, 17, 3), `H36M_JOINT_NAMES` order.
        joints14: Tensor of shape (B, 14, 3), the LSP-order subset `H36M_TO_J14`.
        landmarks: Tensor of shape (B, 21, 3), smplx's extra joints (`LANDMARK_NAMES`).
        full_pose: Tensor of shape (B, 72) axis-angle or (B, 24, 3, 3) rotation matrices
            (as given), only when requested.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    joints_h36m: torch.Tensor
    joints14: torch.Tensor
    landmarks: torch.Tensor
    full_pose: torch.Tensor | None = None


def derive_landmark_vertex_ids(data: dict[str, np.ndarray]) -> dict[str, int]:
    """Landmark vertices for a model without stored ids: nearest vertex to geometric targets.

    Body axes (`body_axes`), rest joints ``J`` and the height ``H`` come from the model.
    Targets: nose = the most forward head-dominated vertex within 0.03 H of J[head]'s height;
    eyes = nose + 0.025 H up, 0.03 H back, +-0.03 H sideways; ears = J[head] +- the head's
    half-width sideways; big/small toe = the most forward vertex of the foot (ankle/foot
    dominated) offset -+0.02 H sideways (medial/lateral); heel = the foot vertex that is
    lowest-and-most-backward (min of height + backward extent); finger tips = the hand end
    (max along elbow -> wrist) spread from thumb (most forward) to pinky (most backward) over
    the hand's forward extent. Each target snaps to the nearest vertex of the same region, so
    every id is a valid vertex index.

    Args:
        data: SMPL-format arrays.

    Returns:
        Mapping landmark name (`LANDMARK_NAMES`) -> vertex index.
    """
    v = np.asarray(data["v_template"], dtype=np.float64)
    joints = rest_joints(data)
    up, left, forward = body_axes(joints)
    height = np.ptp(v @ up)
    dom = np.argmax(data["weights"], axis=1)

    def region(joint_names: list[str]) -> np.ndarray:
        idx = np.flatnonzero(np.isin(dom, [_J[n] for n in joint_names]))
        return idx if len(idx) else np.arange(len(v))

    def nearest(idx: np.ndarray, target: np.ndarray) -> int:
        return int(idx[np.argmin(np.linalg.norm(v[idx] - target, axis=1))])

    ids: dict[str, int] = {}
    head_idx = region(["head"])
    head = joints[_J["head"]]
    rel = v[head_idx] - head
    slab = np.abs(rel @ up) < 0.03 * height
    pool = head_idx[slab] if np.any(slab) else head_idx
    nose = int(pool[np.argmax((v[pool] - head) @ forward)])
    ids["nose"] = nose
    half_width = np.max(np.abs(rel @ left))
    for name, sign in (("leye", 1.0), ("reye", -1.0)):
        target = v[nose] + 0.025 * height * up - 0.03 * height * forward
        ids[name] = nearest(head_idx, target + sign * 0.03 * height * left)
    for name, sign in (("lear", 1.0), ("rear", -1.0)):
        ids[name] = nearest(head_idx, head + sign * half_width * left)
    for prefix, side, sign in (("L", "left", 1.0), ("R", "right", -1.0)):
        foot_idx = region([f"{side}_ankle", f"{side}_foot"])
        fv = v[foot_idx]
        toe = fv[np.argmax(fv @ forward)]
        ids[f"{prefix}BigToe"] = nearest(foot_idx, toe - sign * 0.02 * height * left)
        ids[f"{prefix}SmallToe"] = nearest(foot_idx, toe + sign * 0.02 * height * left)
        ids[f"{prefix}Heel"] = int(foot_idx[np.argmin(fv @ up + fv @ forward)])
    for prefix, side in (("l", "left"), ("r", "right")):
        hand_idx = region([f"{side}_wrist", f"{side}_hand"])
        wrist, elbow = joints[_J[f"{side}_wrist"]], joints[_J[f"{side}_elbow"]]
        axis = (wrist - elbow) / np.linalg.norm(wrist - elbow)
        hv = v[hand_idx]
        end = hv[np.argmax(hv @ axis)]
        fwd = (hv - wrist) @ forward
        for k, finger in enumerate(("thumb", "index", "middle", "ring", "pinky")):
            shift = fwd.max() + (fwd.min() - fwd.max()) * k / 4.0
            target = end + (shift - (end - wrist) @ forward) * forward
            ids[f"{prefix}{finger}"] = nearest(hand_idx, target)
    return ids


def landmark_vertex_ids(data: dict[str, np.ndarray]) -> dict[str, int]:
    """Landmark vertex ids that fit the model: stored, smplx's (real SMPL) or derived.

    Args:
        data: SMPL-format arrays.

    Returns:
        Mapping of all `LANDMARK_NAMES` -> vertex index in ``[0, V)``.
    """
    num_v = int(data["v_template"].shape[0])
    if "landmark_vertex_ids" in data:
        ids = data["landmark_vertex_ids"]
        names = data.get("landmark_names")
        names = [str(n) for n in names] if names is not None else list(LANDMARK_NAMES)
        mapping = {n: int(i) for n, i in zip(names, ids)}
        missing = set(LANDMARK_NAMES) - set(mapping)
        if missing:
            raise ValueError(f"landmark_vertex_ids lacks {sorted(missing)}")
        return mapping
    if num_v == SMPL_NUM_VERTICES:
        return {n: int(SMPLX_VERTEX_IDS["smplh"][n]) for n in LANDMARK_NAMES}
    logger.info("model has no landmark ids and V=%d: deriving them by geometry", num_v)
    return derive_landmark_vertex_ids(data)


class BodyModel(smplx.SMPL):
    """SMPL-format body (smplx's SMPL layer) built from arrays, never from a pickle.

    Attributes:
        faces: Int64 array (F, 3).
        num_vertices: V.
        parents: Int64 buffer (24,), parent of each joint (-1 for the root).
        content_hash: SHA-256 of the model arrays (topology cache key).
        model_path: The file the model was read from.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        num_betas: int = 10,
        dtype: torch.dtype = torch.float32,
        allow_pickle: bool = False,
        topology_cache_dir: str | Path | None = None,
        mesh_downsampling: str | Path | None = None,
        j_regressor_h36m: str | Path | None = None,
    ) -> None:
        """Loads a model file.

        Args:
            model_path: SMPL-format ``.npz`` (or ``.pkl`` with ``allow_pickle``); None loads
                the shipped license-free body (`license_free_model_path`).
            num_betas: Shape components to use (at most those the file has).
            dtype: Floating dtype of the buffers.
            allow_pickle: Opt-in for pickle-based files given to this model (a ``.pkl``
                model, METRO's ``mesh_downsampling``); read with a restricted unpickler.
            topology_cache_dir: Folder of the topology cache (default: `default_cache_dir`).
            mesh_downsampling: Optional METRO ``mesh_downsampling.npz`` replacing the derived
                mesh hierarchy.
            j_regressor_h36m: Optional SPIN ``J_regressor_h36m.npy`` replacing the derived
                H36M regressor.
        """
        path = Path(model_path) if model_path is not None else license_free_model_path()
        data = load_body_model_data(path, allow_pickle=allow_pickle)
        available = int(data["shapedirs"].shape[-1])
        if num_betas > available:
            logger.warning("%s has %d shape components; using %d", path, available, available)
        use_betas = min(num_betas, available)
        # smplx prints a warning and caps betas at 10 for < 300 components; silence the print
        # and register the requested columns ourselves below.
        with contextlib.redirect_stdout(io.StringIO()):
            super().__init__(
                model_path=str(path),
                data_struct=Struct(**data),
                num_betas=use_betas,
                dtype=dtype,
                vertex_ids=landmark_vertex_ids(data),
                create_betas=False,
                create_global_orient=False,
                create_body_pose=False,
                create_transl=False,
            )
        if self._num_betas != use_betas:
            self._num_betas = use_betas
            self.register_buffer(
                "shapedirs", torch.as_tensor(data["shapedirs"][:, :, :use_betas], dtype=dtype)
            )
        self.faces = np.asarray(data["f"], dtype=np.int64)
        self.model_path = path
        self.content_hash = content_hash(data)
        self._data = data
        self._topology: BodyTopology | None = None
        self._topology_cache_dir = topology_cache_dir
        self._topology_files = {
            "mesh_downsampling": mesh_downsampling,
            "j_regressor_h36m": j_regressor_h36m,
        }
        self._allow_pickle = allow_pickle
        # the chain walked by tree level on device indices: no host reads (smplx's reads
        # ``parents[i]`` once per joint)
        self.kinematic_tree = KinematicTree(self.parents.tolist())

    @property
    def num_vertices(self) -> int:
        """Number of mesh vertices V."""
        return int(self.v_template.shape[0])

    @property
    def topology(self) -> BodyTopology:
        """The model's `BodyTopology`, derived (or read from the cache) on first access."""
        if self._topology is None:
            files = {k: v for k, v in self._topology_files.items() if v is not None}
            if files:
                self._topology = BodyTopology.from_files(
                    self._data,
                    allow_pickle=self._allow_pickle,
                    cache_dir=self._topology_cache_dir,
                    **files,
                )
            else:
                self._topology = BodyTopology.from_model(
                    self._data, cache_dir=self._topology_cache_dir, model_hash=self.content_hash
                )
        return self._topology

    def _h36m_regressor(self) -> torch.Tensor:
        """Dense (17, V) buffer registered on first use so that it follows ``.to()``."""
        if "j_regressor_h36m" not in self._buffers:
            reg = torch.as_tensor(
                self.topology.j_regressor_h36m,
                dtype=self.v_template.dtype,
                device=self.v_template.device,
            )
            self.register_buffer("j_regressor_h36m", reg, persistent=False)
        return self._buffers["j_regressor_h36m"]

    def _as_rotmats(self, pose: torch.Tensor, batch: int, num: int) -> torch.Tensor:
        if pose.shape[-2:] == (3, 3) and pose.dim() >= 3 and pose.numel() == batch * num * 9:
            return pose.reshape(batch, num, 3, 3)
        return batch_rodrigues(pose.reshape(-1, 3)).reshape(batch, num, 3, 3)

    @staticmethod
    def _is_rotmat(pose: torch.Tensor | None, num: int) -> bool:
        if pose is None:
            return False
        if num == 1:
            return pose.dim() in (3, 4) and pose.shape[-2:] == (3, 3)
        return pose.dim() == 4 and pose.shape[-2:] == (3, 3)

    def forward(  # type: ignore[override]
        self,
        betas: torch.Tensor | None = None,
        global_orient: torch.Tensor | None = None,
        body_pose: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        *,
        return_full_pose: bool = False,
    ) -> BodyOutput:
        """Poses the body; missing inputs are zeros with the batch size of the given ones.

        Args:
            betas: Tensor of shape (B, NB) with NB <= `num_betas` (fewer are zero-padded).
            global_orient: Root rotation, axis-angle (B, 3) or rotation matrices (B, 3, 3) /
                (B, 1, 3, 3), model frame.
            body_pose: Joint rotations relative to their parents, axis-angle (B, 69) /
                (B, 23, 3) or rotation matrices (B, 23, 3, 3).
            transl: Tensor of shape (B, 3), metres, added to every output point.
            return_full_pose: Also return the concatenated pose.

        Returns:
            `BodyOutput`; differentiable w.r.t. every input; inputs are not modified.
        """
        num_body = NUM_SMPL_JOINTS - 1
        given = [t for t in (betas, global_orient, body_pose, transl) if t is not None]
        batch = int(given[0].shape[0]) if given else 1
        if any(int(t.shape[0]) != batch for t in given):
            raise ValueError(f"inputs disagree on the batch size: {[t.shape for t in given]}")
        ref = self.v_template
        if betas is None:
            betas = ref.new_zeros(batch, self.num_betas)
        elif betas.shape[-1] < self.num_betas:
            betas = torch.nn.functional.pad(betas, (0, self.num_betas - betas.shape[-1]))
        elif betas.shape[-1] > self.num_betas:
            raise ValueError(f"got {betas.shape[-1]} betas, model uses {self.num_betas}")
        if transl is None:
            transl = ref.new_zeros(batch, 3)
        rotmat = self._is_rotmat(global_orient, 1) or self._is_rotmat(body_pose, num_body)
        if rotmat:
            eye = torch.eye(3, dtype=ref.dtype, device=ref.device)
            go = (
                eye.expand(batch, 1, 3, 3)
                if global_orient is None
                else self._as_rotmats(global_orient, batch, 1)
            )
            bp = (
                eye.expand(batch, num_body, 3, 3)
                if body_pose is None
                else self._as_rotmats(body_pose, batch, num_body)
            )
            full_pose = torch.cat([go, bp], dim=1)  # (B, 24, 3, 3)
            rot_mats = full_pose
        else:
            go = (
                ref.new_zeros(batch, 3)
                if global_orient is None
                else global_orient.reshape(batch, 3)
            )
            bp = (
                ref.new_zeros(batch, num_body * 3)
                if body_pose is None
                else body_pose.reshape(batch, num_body * 3)
            )
            full_pose = torch.cat([go, bp], dim=1)  # (B, 72)
            rot_mats = batch_rodrigues(full_pose.reshape(-1, 3)).reshape(batch, -1, 3, 3)
        vertices, joints = self._skin(betas, rot_mats)
        joints = self.vertex_joint_selector(vertices, joints)  # + smplx's landmark vertices
        vertices = vertices + transl[:, None]
        joints = joints + transl[:, None]
        joints_h36m = torch.einsum("jv,bvc->bjc", self._h36m_regressor(), vertices)
        return BodyOutput(
            vertices=vertices,
            joints=joints[:, :NUM_SMPL_JOINTS],
            joints_h36m=joints_h36m,
            joints14=joints_h36m[:, list(H36M_TO_J14)],
            landmarks=joints[:, NUM_SMPL_JOINTS:],
            full_pose=full_pose if return_full_pose else None,
        )

    def _skin(self, betas: torch.Tensor, rot_mats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`smplx.lbs.lbs` from rotation matrices, its kinematic chain walked by
        `sahmr.body.kinematics.KinematicTree` (no host synchronisation on a GPU).

        Args:
            betas: Tensor of shape (B, num_betas).
            rot_mats: Tensor of shape (B, 24, 3, 3), root then joints relative to parents.

        Returns:
            ``(vertices (B, V, 3), joints (B, 24, 3))``, model frame, no translation.
        """
        batch = rot_mats.shape[0]
        v_shaped = self.v_template + torch.einsum("bl,mkl->bmk", betas, self.shapedirs)
        rest = torch.einsum("bik,ji->bjk", v_shaped, self.J_regressor)
        eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
        pose_feature = (rot_mats[:, 1:] - eye).reshape(batch, -1)
        v_posed = v_shaped + torch.matmul(pose_feature, self.posedirs).view(batch, -1, 3)
        joints, transforms = self.kinematic_tree(rot_mats, rest)
        per_vertex = torch.matmul(self.lbs_weights, transforms.reshape(batch, -1, 16))
        per_vertex = per_vertex.view(batch, -1, 4, 4)  # (B, V, 4, 4)
        ones = v_posed.new_ones((*v_posed.shape[:-1], 1))
        homogeneous = torch.cat([v_posed, ones], dim=-1)[..., None]
        return torch.matmul(per_vertex, homogeneous)[:, :, :3, 0], joints
