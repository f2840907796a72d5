"""Test-time mirroring: a frame seen as itself and as its left-right mirror image.

Mirroring the camera frame through its y-z plane (``x_cam -> -x_cam``, the matrix
``MIRROR = diag(-1, 1, 1)``) and flipping the crop left-right give another valid frame: a
mirrored room seen by the same kind of camera, holding the mirrored person. With the crop's
pixel convention (OpenCV, `sahmr.geometry.crops`: pixel ``j`` at ``u = j``), column ``j`` of an
``S``-pixel crop goes to ``S - 1 - j``, so the crop intrinsics keep ``fx`` and take
``cx' = S - 1 - cx``: ``u' = fx (-x) / z + cx' = S - 1 - u``.

A body seen in the mirrored frame is mapped back by the same reflection. For a body model
symmetric about its own sagittal plane (the license-free body's skeleton is, its shape blend
shapes to about 0.5 mm of joint position; SMPL is nearly so), the reflected body is the body
model posed with

- global orientation ``MIRROR @ R0 @ MIRROR`` (the reflection on both sides of the root's
  rotation: the camera frame's and the body frame's, both ``x -> -x``);
- each joint's rotation taken from its left/right partner and conjugated the same way
  (in axis-angle ``(rx, ry, rz) -> (rx, -ry, -rz)``, as `sahmr.optim.priors.mirror_body_pose`);
- the same shape coefficients, and the root at ``MIRROR @ root``.

`unmirror_output` maps an estimate made on the mirror image back to the frame; `merge_views`
averages the two estimates: rotations by their chordal mean (the nearest rotation to the mean
matrix), shapes and roots by their means.

``select`` keeps one of the two instead, per frame, by what the scene says. RCNet runs once,
on the frame; its root and contacts (reflected, left and right regions swapped) also serve
the mirror image's mesh network. Each view's body is scored by `contact_distance`: how far
each of RCNet's contact points lies from the nearest vertex of its body region (the left hand's
point from the left hand). A body drawn on the wrong side puts the wrong hand or knee there,
so the view whose body meets RCNet's contacts more closely is kept (`pick_views`); a frame
without contact points keeps the frame's own view.

The mirror image also probes a model: trained only on the generator's one-sided pose library
(before 2026-12-07), the shipped SA-HMR recovered mirror-image frames far worse
(docs/results.md, section (ae)).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from sahmr.body.constants import CONTACT_REGION_NAMES, SMPL_MIRROR_INDEX
from sahmr.body.pose_library import MIRRORED_REGION
from sahmr.models.param_head import BodyHead, BodyParams
from sahmr.records import FrameInputs, RootContacts

TEST_VIEWS = ("frame", "mirror", "both", "select")
"""What SA-HMR's ``predict`` may run (`sahmr.models.sahmr.SAHMR`, ``test_views``)."""

MIRROR = (-1.0, 1.0, 1.0)
"""Diagonal of the reflection ``x_cam -> -x_cam`` (camera frame and body frame alike)."""


def _mirror_diag(ref: Tensor) -> Tensor:
    return torch.tensor(MIRROR, dtype=ref.dtype, device=ref.device)


def mirror_points(points: Tensor) -> Tensor:
    """Tensor (..., 3) with ``x`` negated: camera-frame points in the mirrored frame."""
    return points * _mirror_diag(points)


def mirror_crop_intrinsics(K_crop: Tensor, crop_size: int) -> Tensor:
    """Tensor (B, 3, 3) intrinsics of the left-right flipped crop in the mirrored camera frame
    (``cx -> S - 1 - cx``; see the module docstring)."""
    K = K_crop.clone()
    K[..., 0, 2] = (crop_size - 1) - K_crop[..., 0, 2]
    return K


def mirror_inputs(inputs: FrameInputs) -> FrameInputs:
    """The frames of ``inputs`` seen in the mirrored camera frame.

    The crop is flipped left-right, its intrinsics follow (`mirror_crop_intrinsics`), the
    frustum's scene points are reflected. The full-image ``K`` and ``bbox`` describe the
    mirror image about the principal point (``cx`` kept, box columns ``u -> 2 cx - u``);
    ``T_w2c`` gets the reflection after it (a world -> mirrored-camera map with determinant
    -1). Applying it twice gives the inputs back.

    Raises:
        ValueError: With stored RCNet outputs (``rcnet_given``): mirror the frames before
            computing them instead.
    """
    if inputs.rcnet_given is not None:
        raise ValueError("mirror_inputs: inputs carry stored RCNet outputs; mirror the frames "
                         "before computing them")  # fmt: skip
    cx = inputs.K[:, 0, 2]
    bbox = inputs.bbox.clone()
    bbox[:, 0] = 2 * cx - inputs.bbox[:, 2]
    bbox[:, 2] = 2 * cx - inputs.bbox[:, 0]
    reflect = torch.diag(
        torch.tensor((*MIRROR, 1.0), dtype=inputs.T_w2c.dtype, device=inputs.T_w2c.device)
    )
    points = inputs.scene_points_cam
    return replace(
        inputs,
        image=torch.flip(inputs.image, dims=(-1,)),
        K_crop=mirror_crop_intrinsics(inputs.K_crop, inputs.crop_size),
        bbox=bbox,
        T_w2c=reflect @ inputs.T_w2c,
        scene_points_cam=None if points is None else mirror_points(points),
    )


def mirror_rotmats(rotmats: Tensor) -> Tensor:
    """Tensor (B, 24, 3, 3): the rotations of the mirrored body (global orientation in camera
    axes first, then the joints relative to their parents; see the module docstring). Its own
    inverse."""
    m = _mirror_diag(rotmats)
    swapped = rotmats[:, list(SMPL_MIRROR_INDEX)]
    return swapped * m[:, None] * m[None, :]


def chordal_mean(R1: Tensor, R2: Tensor) -> Tensor:
    """Tensor (..., 3, 3) rotation nearest (Frobenius) to ``(R1 + R2) / 2``, computed in
    float64 and returned in ``R1``'s dtype; for rotations apart by less than 180 degrees it is
    the midpoint of the geodesic between them."""
    mean = (R1.double() + R2.double()) / 2
    U, _, Vh = torch.linalg.svd(mean)
    d = torch.sign(torch.det(U @ Vh))
    U = torch.cat([U[..., :2], U[..., 2:] * d[..., None, None]], dim=-1)
    return (U @ Vh).to(R1.dtype)


def merge_views(
    head: BodyHead, body: BodyParams, root_cam: Tensor, other: BodyParams, other_root_cam: Tensor
) -> tuple[BodyParams, Tensor]:
    """The mean of two estimates of the same bodies, both in the frame's camera axes (the
    second typically `unmirror_output` of the mirror image).

    Args:
        head: The parametric head that poses the merged parameters (`BodyHead.pose_body`).
        body, other: The two estimates (rotations (B, 24, 3, 3), betas (B, NB)).
        root_cam, other_root_cam: Tensor (B, 3) their roots, camera frame, metres.

    Returns:
        ``(body, root_cam)``: the posed mean body (rotations by `chordal_mean`, shapes
        averaged; ``root_offset`` None: the root is already corrected) and the mean root.
    """
    rotmats = chordal_mean(body.rotmats, other.rotmats)
    betas = (body.betas + other.betas) / 2
    return head.pose_body(rotmats, betas), (root_cam + other_root_cam) / 2


def mirror_regions(region: Tensor) -> Tensor:
    """Tensor (P,) int64 contact region labels with left and right swapped (feet, hands)."""
    lookup = torch.arange(len(CONTACT_REGION_NAMES), device=region.device)
    for r, partner in MIRRORED_REGION.items():
        lookup[r] = partner
    return lookup[region.long()]


def unmirror_output(out: Any, head: BodyHead) -> Any:
    """An SA-HMR output computed on mirrored inputs, mapped back to the frame: the body
    re-posed from `mirror_rotmats` (``root_offset`` None: ``root_cam`` is already corrected),
    the root and contact points reflected, left and right contact regions swapped. Fields
    only ``predict`` reads are mapped; the free-form vertices are not (their indices have no
    left/right map), so this needs a parametric body.

    Args:
        out: `sahmr.models.sahmr.SAHMROutput` of ``mirror_inputs(inputs)``.
        head: The head that poses parameters (`BodyHead.pose_body`).
    """
    if out.body is None:
        raise ValueError("unmirror_output maps body-model parameters back: no parametric body")
    body = head.pose_body(mirror_rotmats(out.body.rotmats), out.body.betas)
    root = mirror_points(out.root_cam)
    return replace(
        out,
        body=body,
        root_cam=root,
        verts_cam=body.verts_rel + root[:, None].to(body.verts_rel),
        contact_points_cam=mirror_points(out.contact_points_cam),
        contact_point_region=mirror_regions(out.contact_point_region),
        root_given_cam=None if out.root_given_cam is None else mirror_points(out.root_given_cam),
    )


def mirror_root_contacts(rc: RootContacts) -> RootContacts:
    """RCNet's root and contacts seen in the mirrored frame: points reflected, left and right
    regions swapped (its own inverse)."""
    return RootContacts(
        root_cam=mirror_points(rc.root_cam),
        contact_points_cam=mirror_points(rc.contact_points_cam),
        contact_point_region=mirror_regions(rc.contact_point_region),
        contact_batch_idx=rc.contact_batch_idx,
    )


def contact_distance(
    verts_cam: Tensor,
    vertex_region: Tensor,
    points_cam: Tensor,
    point_region: Tensor,
    point_frame: Tensor,
) -> Tensor:
    """Mean distance from each frame's contact points to its body's region surface.

    Args:
        verts_cam: Tensor (B, V, 3) bodies, camera frame, metres.
        vertex_region: Tensor (V,) int contact region of each vertex (`CONTACT_REGION_NAMES`).
        points_cam: Tensor (P, 3) contact points, camera frame.
        point_region: Tensor (P,) int their regions.
        point_frame: Tensor (P,) int their frames.

    Returns:
        Tensor (B,) float: per frame, the mean over its points of the distance to the nearest
        vertex of the point's region on the frame's body (metres); NaN for a frame without
        points (a point whose region has no vertex counts as infinitely far).
    """
    B = verts_cam.shape[0]
    out = torch.full((B,), float("nan"), dtype=verts_cam.dtype, device=verts_cam.device)
    if points_cam.shape[0] == 0:
        return out
    frame = point_frame.long()
    region = point_region.long().to(verts_cam.device)
    d = torch.cdist(points_cam[:, None].to(verts_cam), verts_cam[frame])[:, 0]  # (P, V)
    same = vertex_region.to(verts_cam.device).long()[None] == region[:, None]
    nearest = d.masked_fill(~same, float("inf")).amin(dim=1)  # (P,)
    total = torch.zeros(B, dtype=verts_cam.dtype, device=verts_cam.device)
    total = total.index_add(0, frame, nearest)
    count = torch.bincount(frame, minlength=B).to(total)
    return torch.where(count > 0, total / count.clamp(min=1), out)


def pick_views(
    head: BodyHead,
    body: BodyParams,
    root_cam: Tensor,
    other: BodyParams,
    other_root_cam: Tensor,
    take_other: Tensor,
) -> tuple[BodyParams, Tensor]:
    """Per frame, one of two estimates (both in the frame's camera axes).

    Args:
        head: The parametric head that poses the kept parameters.
        body, other: The two estimates; root_cam, other_root_cam: Tensor (B, 3) their roots.
        take_other: Tensor (B,) bool, True where ``other`` is kept.

    Returns:
        ``(body, root_cam)``: the kept bodies posed (``root_offset`` None) and their roots.
    """
    t = take_other.to(body.rotmats.device)
    rotmats = torch.where(t[:, None, None, None], other.rotmats, body.rotmats)
    betas = torch.where(t[:, None], other.betas, body.betas)
    root = torch.where(t[:, None].to(root_cam.device), other_root_cam, root_cam)
    return head.pose_body(rotmats, betas), root
