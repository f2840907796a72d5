"""SA-HMR (Shen et al., CVPR 2023): scene-aware human mesh recovery, the whole method.

`SAHMR` joins the root/contact network (RCNet, `sahmr.models.rcnet`) and the scene-aware mesh
network (`sahmr.models.scene_mesh_net.SceneAwareMeshNet`): the root and contacts come from
RCNet, or - in training with teacher forcing - from the ground truth (root plus Gaussian noise,
contact points jittered, randomly dropped and capped per frame), so both networks can train at
once. RCNet outputs enter the mesh network detached. A parametric head built with ``root_offset``
corrects the root the body is placed at (the mesh network has seen the contact points relative
to it); ``root_cam`` of the output is then the corrected root and ``root_given_cam`` the one
fed in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from sahmr.geometry.crops import crop_side_m
from sahmr.models.flip_test import (
    TEST_VIEWS,
    contact_distance,
    merge_views,
    mirror_inputs,
    mirror_root_contacts,
    pick_views,
    unmirror_output,
)
from sahmr.models.modes import eval_mode
from sahmr.models.param_head import BodyParams
from sahmr.models.scene_mesh_net import SceneAwareMeshNet, cap_per_frame
from sahmr.models.transformer import SceneAwareAttention
from sahmr.records import BodyPrediction, FrameInputs, FrameTargets, RootContacts

# ------------------------------------------------------------------------------------------
# Full method


@dataclass
class SAHMROutput:
    """What `SAHMR.forward` returns (camera frame, metres).

    Attributes:
        joints14_rel: Tensor (B, 14, 3) root-relative LSP joints.
        verts_rel_levels: Per mesh level, coarse -> fine, Tensor (B, V_l, 3), root-relative.
        joints14_from_verts_rel: Tensor (B, 14, 3) joints regressed from the full mesh.
        scene_recon: Tensor (P, 3) regressed contact points minus the root.
        root_cam: Tensor (B, 3) root the mesh was placed at: the given root (RCNet's or noisy
            ground truth) plus the head's root offset when it predicts one.
        verts_cam: Tensor (B, V, 3) absolute full mesh = ``verts_rel_levels[-1] + root_cam``.
        contact_points_cam: Tensor (P, 3) contact points fed to the mesh network.
        contact_point_region: Tensor (P,) int64 region 1..7 of each.
        contact_batch_idx: Tensor (P,) int64 frame of each.
        contact_gt_index: Tensor (P,) int64 index of each point in the targets' packed
            contact points (teacher forcing), or None (points from RCNet).
        attention: None, or the mesh network's per-block `SceneAwareAttention`.
        rc: Whatever the RCNet returned, or None when it did not run.
        body: The parametric body (root-relative, camera axes; placed at ``root_cam``), or
            None without a parametric head.
        faces: Tensor (F, 3) int64 faces of the full-resolution mesh.
        root_given_cam: Tensor (B, 3) the root fed to the mesh network (before the head's
            offset), or None when it equals ``root_cam``.
    """

    joints14_rel: Tensor
    verts_rel_levels: list[Tensor]
    joints14_from_verts_rel: Tensor
    scene_recon: Tensor
    root_cam: Tensor
    verts_cam: Tensor
    contact_points_cam: Tensor
    contact_point_region: Tensor
    contact_batch_idx: Tensor
    contact_gt_index: Tensor | None = None
    attention: list[SceneAwareAttention] | None = None
    rc: Any = None
    body: BodyParams | None = None
    faces: Tensor | None = None
    root_given_cam: Tensor | None = None

    @property
    def verts_rel(self) -> Tensor:
        """Tensor (B, V, 3) full-resolution root-relative vertices."""
        return self.verts_rel_levels[-1]


class SAHMR(nn.Module):
    """RCNet (root + contacts) followed by the scene-aware mesh network.

    Which root and contacts feed the mesh network:

    * training, ``teacher_forcing`` and targets given: ground truth - ``targets.root_cam`` plus
      N(0, ``root_noise_m``^2) per axis, ``targets.contact_points_cam`` each kept with
      probability ``1 - contact_drop``, at most ``mesh_net.max_contacts`` per frame (random
      subset), jittered by N(0, ``contact_jitter_m``^2) per axis;
    * ``rcnet`` None and targets given (e.g. validating a mesh network trained alone): the
      ground truth, without noise outside training;
    * ``inputs.rcnet_given`` set (a frozen RCNet's output stored beforehand,
      `rcnet_root_contacts`): that, without running RCNet;
    * otherwise: ``rcnet(inputs)`` (detached), at most ``max_contacts`` per frame (the first).

    In training, each frame also loses all of its contacts with probability
    ``frame_contact_drop`` (either source), so the mesh network learns to place and pose a
    body when RCNet finds no contact at test time.

    RCNet runs whenever its output feeds the mesh network, and also under teacher forcing when
    it is trainable (``freeze_rcnet=False``) so its own loss can be computed from ``rc``.

    Args:
        rcnet: Module mapping ``FrameInputs`` (and optionally targets) to an object with
            ``root_cam`` (B, 3), ``contact_points_cam`` (P, 3), ``contact_point_region`` (P,)
            int64 1..7 and ``contact_batch_idx`` (P,); None to train the mesh network alone.
        mesh_net: The scene-aware mesh network.
        teacher_forcing: Feed ground truth in training (when targets are given).
        root_noise_m: Std of the Gaussian added to the ground-truth root, metres.
        contact_jitter_m: Std of the Gaussian added to ground-truth contact points, metres.
        contact_drop: Probability of dropping each ground-truth contact point.
        frame_contact_drop: Probability, in training, of removing every contact of a frame
            (ground truth or RCNet's).
        freeze_rcnet: Keep RCNet in eval mode without gradients (``requires_grad`` off).
        scene_contacts: False: the scene-less ablation - the mesh network never gets a contact
            point (training or test; it attends to its null token only) while the root still
            comes from RCNet (or the ground truth), so it differs from SA-HMR by the scene
            alone (issue 18, "what the scene gives").
        test_views: What ``predict`` runs (`sahmr.models.flip_test`): ``"frame"`` the frames
            as they are; ``"mirror"`` their left-right mirror images (RCNet and the mesh
            network), the bodies mapped back (a probe of how the model serves mirror-image
            poses); ``"both"`` both, the mean body returned (twice the cost); ``"select"``
            RCNet once, the mesh network on both views with its root and contacts, and per
            frame the body that meets the contacts more closely (`flip_test.pick_views`).
            The last three need a parametric head, ``"select"`` a frozen RCNet.
    """

    def __init__(
        self,
        *,
        rcnet: nn.Module | None,
        mesh_net: SceneAwareMeshNet,
        teacher_forcing: bool = True,
        root_noise_m: float = 0.05,
        contact_jitter_m: float = 0.02,
        contact_drop: float = 0.2,
        frame_contact_drop: float = 0.0,
        freeze_rcnet: bool = True,
        scene_contacts: bool = True,
        test_views: str = "frame",
    ) -> None:
        super().__init__()
        for name, p in (("contact_drop", contact_drop), ("frame_contact_drop", frame_contact_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.rcnet = rcnet
        self.mesh_net = mesh_net
        self.teacher_forcing = bool(teacher_forcing)
        self.root_noise_m = float(root_noise_m)
        self.contact_jitter_m = float(contact_jitter_m)
        self.contact_drop = float(contact_drop)
        self.frame_contact_drop = float(frame_contact_drop)
        self.freeze_rcnet = bool(freeze_rcnet)
        self.scene_contacts = bool(scene_contacts)
        if test_views not in TEST_VIEWS:
            raise ValueError(f"test_views={test_views!r}: one of {', '.join(TEST_VIEWS)}")
        if test_views != "frame" and mesh_net.param_head is None:
            raise ValueError(f"test_views={test_views!r} maps body-model parameters back from "
                             "the mirror image: it needs a parametric head")  # fmt: skip
        if test_views == "select" and not self.freeze_rcnet:
            raise ValueError("test_views='select' hands RCNet's outputs to both views: it "
                             "needs a frozen RCNet (freeze_rcnet=true)")  # fmt: skip
        self.test_views = test_views
        if rcnet is not None and self.freeze_rcnet:
            rcnet.requires_grad_(False)
            rcnet.eval()

    def train(self, mode: bool = True) -> SAHMR:
        """Sets the mode; a frozen RCNet stays in eval mode."""
        super().train(mode)
        if self.rcnet is not None and self.freeze_rcnet:
            self.rcnet.eval()
        return self

    # ---------------------------------------------------------------- sources of root/contacts

    def _run_rcnet(self, inputs: FrameInputs, targets: FrameTargets | None) -> Any:
        if self.freeze_rcnet:
            with torch.no_grad():
                return self.rcnet(inputs)
        return self.rcnet(inputs, targets)

    def _ground_truth(self, targets: FrameTargets) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Root (B, 3), points (P, 3), region (P,), frame (P,), index into the targets' points
        (P,); noisy in training."""
        root = targets.root_cam
        idx = torch.arange(targets.contact_batch_idx.numel(), device=root.device)
        noisy = self.training
        if noisy and self.contact_drop > 0:
            idx = idx[torch.rand(idx.numel(), device=root.device) >= self.contact_drop]
        idx = idx[cap_per_frame(targets.contact_batch_idx[idx], self.mesh_net.max_contacts,
                                shuffle=noisy)]  # fmt: skip
        points = targets.contact_points_cam[idx]
        if noisy and self.root_noise_m > 0:
            root = root + torch.randn_like(root) * self.root_noise_m
        if noisy and self.contact_jitter_m > 0:
            points = points + torch.randn_like(points) * self.contact_jitter_m
        return (
            root,
            points,
            targets.contact_point_region[idx],
            targets.contact_batch_idx[idx],
            idx,
        )

    def _from_rcnet(self, rc: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(root (B, 3), points (P, 3), region (P,), frame (P,)) from an RCNet output."""
        bidx = rc.contact_batch_idx.long()
        keep = cap_per_frame(bidx, self.mesh_net.max_contacts, shuffle=False)
        return (
            rc.root_cam.detach(),
            rc.contact_points_cam.detach()[keep],
            rc.contact_point_region.long()[keep],
            bidx[keep],
        )

    def rcnet_root_contacts(self, inputs: FrameInputs) -> RootContacts:
        """What the frozen RCNet gives the mesh network for ``inputs`` (no gradients): its
        root and its contacts, capped at the mesh network's ``max_contacts`` per frame, as
        ``forward`` uses them without teacher forcing.

        Computed once per training sample, they stand in for RCNet in later steps
        (``FrameInputs.rcnet_given``; `sahmr.engine.rcnet_store`).

        Raises:
            ValueError: Without an RCNet, or with one that trains (its output would change).
        """
        if self.rcnet is None or not self.freeze_rcnet:
            raise ValueError("stored RCNet outputs need a frozen RCNet (model.freeze_rcnet=true)")
        with torch.no_grad():
            rc = self.rcnet(replace(inputs, rcnet_given=None))
        return RootContacts(*self._from_rcnet(rc))

    # ---------------------------------------------------------------- API

    def forward(
        self,
        inputs: FrameInputs,
        targets: FrameTargets | None = None,
        *,
        return_attention: bool = False,
    ) -> SAHMROutput:
        """Root, contacts and the scene-aware mesh of each frame.

        Args:
            inputs: Frames (crops, cameras, frustum scene points for RCNet).
            targets: Ground truth, used for teacher forcing (see the class docstring).
            return_attention: Also return the mesh network's attention maps.

        Returns:
            `SAHMROutput`.

        Raises:
            ValueError: Without targets and without an RCNet.
        """
        use_gt = targets is not None and (
            self.rcnet is None or (self.training and self.teacher_forcing)
        )
        given = inputs.rcnet_given
        if given is not None and not self.freeze_rcnet:
            raise ValueError("inputs.rcnet_given stands in for a frozen RCNet only: this "
                             "model trains its RCNet (freeze_rcnet=False)")  # fmt: skip
        rc = None
        if self.rcnet is not None and given is None and (not use_gt or not self.freeze_rcnet):
            rc = self._run_rcnet(inputs, targets)
        gt_index = None
        if use_gt:
            root, points, region, bidx, gt_index = self._ground_truth(targets)
        elif given is not None:
            root, points = given.root_cam, given.contact_points_cam
            region, bidx = given.contact_point_region, given.contact_batch_idx
        elif rc is not None:
            root, points, region, bidx = self._from_rcnet(rc)
        else:
            raise ValueError("SA-HMR needs an RCNet (rcnet=None) or targets for its root/contacts")
        if not self.scene_contacts:  # the scene-less ablation: no contact reaches the mesh net
            points, region, bidx = points[:0], region[:0], bidx[:0]
            gt_index = None if gt_index is None else gt_index[:0]
        elif self.training and self.frame_contact_drop > 0:
            kept = torch.rand(root.shape[0], device=root.device) >= self.frame_contact_drop
            keep = kept[bidx]
            points, region, bidx = points[keep], region[keep], bidx[keep]
            gt_index = None if gt_index is None else gt_index[keep]
        mesh = self.mesh_net(
            inputs.image, root, points, region, bidx,
            crop_side_m=crop_side_m(inputs.K_crop, root[:, 2], inputs.crop_size),
            return_attention=return_attention,
        )  # fmt: skip
        given = None
        if mesh.body is not None and mesh.body.root_offset is not None:
            given, root = root, root + mesh.body.root_offset.to(root.dtype)
        return SAHMROutput(
            joints14_rel=mesh.joints14_rel,
            verts_rel_levels=mesh.verts_rel_levels,
            joints14_from_verts_rel=mesh.joints14_from_verts_rel,
            scene_recon=mesh.scene_recon,
            root_cam=root,
            verts_cam=mesh.verts_rel_levels[-1] + root[:, None].to(mesh.verts_rel_levels[-1]),
            contact_points_cam=points,
            contact_point_region=region,
            contact_batch_idx=bidx,
            contact_gt_index=gt_index,
            attention=mesh.attention,
            rc=rc,
            body=mesh.body,
            faces=self.mesh_net.faces,
            root_given_cam=given,
        )

    def _select_view(self, inputs: FrameInputs) -> SAHMROutput:
        """``test_views="select"``: RCNet once, the mesh network on the frame and on its mirror
        image with RCNet's root and contacts, per frame the body nearer to the contacts
        (`sahmr.models.flip_test`); the frame's output with that body and root."""
        head = self.mesh_net.param_head
        rc = RootContacts(*self._from_rcnet(self._run_rcnet(replace(inputs, rcnet_given=None),
                                                            None)))  # fmt: skip
        as_is = self.forward(replace(inputs, rcnet_given=rc))
        mirrored = replace(mirror_inputs(replace(inputs, rcnet_given=None)),
                           rcnet_given=mirror_root_contacts(rc))  # fmt: skip
        other = unmirror_output(self.forward(mirrored), head)
        labels = self.mesh_net.vertex_region

        def distance(out: SAHMROutput) -> Tensor:
            verts = out.body.verts_rel + out.root_cam[:, None].to(out.body.verts_rel)
            return contact_distance(verts, labels, rc.contact_points_cam,
                                    rc.contact_point_region, rc.contact_batch_idx)  # fmt: skip

        take_other = distance(other) < distance(as_is)  # NaN (no contacts): the frame's view
        body, root = pick_views(head, as_is.body, as_is.root_cam, other.body, other.root_cam,
                                take_other)  # fmt: skip
        return replace(as_is, body=body, root_cam=root,
                       verts_cam=body.verts_rel + root[:, None].to(body.verts_rel))  # fmt: skip

    def predict(self, inputs: FrameInputs) -> BodyPrediction:
        """Body in the camera frame from RCNet's root and contacts (eval mode, no gradients).

        With a parametric head (the default output) the body is the body model posed by the
        regressed parameters with its root joint at RCNet's root, and ``params`` holds its
        camera-frame SMPL parameters.

        Returns:
            `BodyPrediction` with ``joints_cam`` (B, 14, 3) the J14 LSP joints, RCNet's
            (capped) contact points and ``params``.

        Raises:
            ValueError: If the model has no RCNet.
        """
        if self.rcnet is None:
            raise ValueError("SA-HMR.predict needs an RCNet; this model was built with rcnet=None")
        with eval_mode(self), torch.no_grad():
            if self.test_views == "frame":
                out = self.forward(inputs)
            elif self.test_views == "select":
                out = self._select_view(inputs)
            else:  # the mirror image, mapped back to the frame (`sahmr.models.flip_test`)
                out = unmirror_output(self.forward(mirror_inputs(inputs)), self.mesh_net.param_head)
            root = out.root_cam
            body = out.body if self.mesh_net.parametric else None
            if self.test_views == "both":
                as_is = self.forward(inputs)
                body, root = merge_views(self.mesh_net.param_head, as_is.body, as_is.root_cam,
                                         out.body, out.root_cam)  # fmt: skip
                out = as_is
        if body is None:
            verts, joints, params = out.verts_cam, out.joints14_rel + root[:, None], None
        else:
            verts = body.verts_rel + root[:, None].to(body.verts_rel)
            joints = body.joints14_rel + root[:, None].to(body.joints14_rel)
            params = body.smpl_params(root.float())
        return BodyPrediction(
            verts_cam=verts,
            joints_cam=joints.to(verts.dtype),
            root_cam=root,
            contact_points_cam=out.contact_points_cam,
            contact_point_region=out.contact_point_region,
            contact_batch_idx=out.contact_batch_idx,
            params=params,
        )
