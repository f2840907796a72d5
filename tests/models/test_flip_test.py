"""Test-time mirroring (sahmr.models.flip_test) and SA-HMR's ``test_views`` in predict."""

from dataclasses import replace

import pytest
import torch
from _mesh_net_cases import IMAGE, FakeRCOutput, body, make_batch, tiny_head, tiny_mesh_net
from torch import nn

from sahmr.body.constants import SMPL_JOINT_NAMES, SMPL_MIRROR_INDEX
from sahmr.geometry.cameras import project
from sahmr.geometry.rotations import axis_angle_to_matrix, geodesic_angle
from sahmr.models.flip_test import (
    chordal_mean,
    contact_distance,
    mirror_inputs,
    mirror_points,
    mirror_root_contacts,
    mirror_rotmats,
    pick_views,
    unmirror_output,
)
from sahmr.models.sahmr import SAHMR
from sahmr.optim.priors import mirror_body_pose
from sahmr.records import FrameInputs, RootContacts

MIRROR = torch.tensor([-1.0, 1.0, 1.0])


def _random_rotmats(B: int, seed: int, scale: float = 0.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return axis_angle_to_matrix((torch.rand(B, 24, 3, generator=g) - 0.5) * 2 * scale)


def _with_scene(inputs: FrameInputs, seed: int = 3) -> FrameInputs:
    g = torch.Generator().manual_seed(seed)
    B = inputs.batch_size
    counts = [40, 25][:B]
    bidx = torch.cat([torch.full((n,), b, dtype=torch.int64) for b, n in enumerate(counts)])
    points = torch.randn(bidx.numel(), 3, generator=g) * 0.5 + torch.tensor([0.2, 0.3, 3.5])
    return replace(inputs, scene_points_cam=points, scene_batch_idx=bidx)


def test_partner_index_swaps_left_and_right():
    names = [SMPL_JOINT_NAMES[i] for i in SMPL_MIRROR_INDEX]
    assert names[SMPL_JOINT_NAMES.index("left_wrist")] == "right_wrist"
    assert names[SMPL_JOINT_NAMES.index("right_hip")] == "left_hip"
    assert names[SMPL_JOINT_NAMES.index("spine2")] == "spine2"
    assert sorted(SMPL_MIRROR_INDEX) == list(range(24))
    assert all(SMPL_MIRROR_INDEX[j] == i for i, j in enumerate(SMPL_MIRROR_INDEX))


def test_mirrored_inputs_project_to_the_flipped_pixel_and_mirror_twice_is_identity():
    inputs = _with_scene(make_batch()[0])
    mirrored = mirror_inputs(inputs)
    x_cam = torch.tensor([[[0.31, -0.12, 3.2], [-0.4, 0.25, 2.6]]]).repeat(2, 1, 1)
    uv = project(inputs.K_crop, x_cam)
    uv_m = project(mirrored.K_crop, mirror_points(x_cam))
    torch.testing.assert_close(uv_m[..., 0], (IMAGE - 1) - uv[..., 0])
    torch.testing.assert_close(uv_m[..., 1], uv[..., 1])
    # the flipped crop holds at column S - 1 - j what column j held
    torch.testing.assert_close(mirrored.image[..., 5], inputs.image[..., IMAGE - 6])
    # full-image box mirrored about the principal point (x0 < x1 kept)
    cx = inputs.K[:, 0, 2]
    torch.testing.assert_close(mirrored.bbox[:, 0], 2 * cx - inputs.bbox[:, 2])
    assert bool((mirrored.bbox[:, 2] > mirrored.bbox[:, 0]).all())
    # T_w2c takes world points to the mirrored camera frame
    p_world = torch.tensor([0.5, 1.0, 2.0, 1.0])
    torch.testing.assert_close((mirrored.T_w2c @ p_world)[:, :3],
                               mirror_points((inputs.T_w2c @ p_world)[:, :3]))  # fmt: skip
    back = mirror_inputs(mirrored)
    for name in ("image", "K_crop", "K", "bbox", "T_w2c", "scene_points_cam", "scene_batch_idx"):
        torch.testing.assert_close(getattr(back, name), getattr(inputs, name))


def test_mirrored_rotations_pose_the_mirror_image_of_the_body():
    """The shipped body's skeleton is symmetric (its shape blend shapes to about 0.5 mm): posing
    the mirrored rotations gives the reflected joints of the partner joints; the rotations
    map as the optimiser prior's axis-angle mirror does."""
    head = tiny_head(in_width=8)
    R = _random_rotmats(3, seed=1)
    betas = torch.randn(3, 10, generator=torch.Generator().manual_seed(2))
    posed = head.pose_body(R, betas)
    mirrored = head.pose_body(mirror_rotmats(R), betas)
    expected = posed.joints_rel[:, list(SMPL_MIRROR_INDEX)] * MIRROR
    torch.testing.assert_close(mirrored.joints_rel, expected, atol=1e-3, rtol=0)
    mean = head.pose_body(R, torch.zeros(3, 10))
    mean_mirrored = head.pose_body(mirror_rotmats(R), torch.zeros(3, 10))
    torch.testing.assert_close(mean_mirrored.joints_rel,
                               mean.joints_rel[:, list(SMPL_MIRROR_INDEX)] * MIRROR,
                               atol=2e-5, rtol=0)  # fmt: skip
    torch.testing.assert_close(mirror_rotmats(mirror_rotmats(R)), R)
    # body pose only: the same map as the prior's axis-angle mirror
    from sahmr.geometry.rotations import matrix_to_axis_angle

    aa = matrix_to_axis_angle(R[:, 1:]).reshape(3, 69).double().numpy()
    ours = matrix_to_axis_angle(mirror_rotmats(R)[:, 1:]).reshape(3, 69).double().numpy()
    assert abs(ours - mirror_body_pose(aa)).max() < 1e-5


def test_chordal_mean_is_the_geodesic_midpoint():
    axis = torch.tensor([0.3, -0.5, 0.8])
    axis = axis / axis.norm()
    a, b = 0.2, 1.4
    R1 = axis_angle_to_matrix((axis * a)[None])
    R2 = axis_angle_to_matrix((axis * b)[None])
    mid = chordal_mean(R1, R2)
    torch.testing.assert_close(mid, axis_angle_to_matrix((axis * (a + b) / 2)[None]),
                               atol=1e-6, rtol=0)  # fmt: skip
    R = _random_rotmats(4, seed=7, scale=3.0)
    torch.testing.assert_close(chordal_mean(R, R), R, atol=1e-6, rtol=0)
    assert float(geodesic_angle(chordal_mean(R1, R2), R1).max()) == pytest.approx(0.6, abs=1e-5)
    assert torch.det(chordal_mean(R, _random_rotmats(4, seed=8, scale=3.0)).double()).allclose(
        torch.ones(4, 24, dtype=torch.float64))


class SceneRCNet(nn.Module):
    """A deterministic stand-in for RCNet that reads the inputs: the root is each frame's mean
    scene point plus an image-dependent shift along x, the contacts its first points."""

    def forward(self, inputs: FrameInputs, targets=None) -> FakeRCOutput:
        bidx = inputs.scene_batch_idx
        B = inputs.batch_size
        sums = torch.zeros(B, 3).index_add_(0, bidx, inputs.scene_points_cam)
        root = sums / torch.bincount(bidx, minlength=B).clamp_min(1)[:, None]
        left = inputs.image[..., : IMAGE // 2].mean(dim=(1, 2, 3))
        root = root + torch.stack([0.1 * left, torch.zeros(B), torch.zeros(B)], dim=1)
        keep = torch.cat([torch.nonzero(bidx == b)[:3, 0] for b in range(B)])
        return FakeRCOutput(root, inputs.scene_points_cam[keep],
                            torch.ones(keep.numel(), dtype=torch.int64), bidx[keep])  # fmt: skip


def _rotmats(params: dict) -> torch.Tensor:
    aa = torch.cat([params["global_orient"][:, None], params["body_pose"].reshape(-1, 23, 3)], 1)
    return axis_angle_to_matrix(aa)


def _model(test_views: str) -> SAHMR:
    net = tiny_mesh_net(seed=4, param_head=lambda in_width, num_tokens: tiny_head(in_width))
    return SAHMR(rcnet=SceneRCNet(), mesh_net=net, test_views=test_views).eval()


def _models(*views: str) -> list[SAHMR]:
    models = [_model(v) for v in views]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    return models


def test_mirror_view_is_the_mirror_image_mapped_back():
    inputs = _with_scene(make_batch()[0])
    plain, mirror = _models("frame", "mirror")
    seen = plain.predict(mirror_inputs(inputs))
    back = mirror.predict(inputs)
    torch.testing.assert_close(back.root_cam, mirror_points(seen.root_cam))
    torch.testing.assert_close(mirror_rotmats(_rotmats(back.params)), _rotmats(seen.params),
                               atol=1e-5, rtol=0)  # fmt: skip
    torch.testing.assert_close(back.params["betas"], seen.params["betas"])
    torch.testing.assert_close(back.contact_points_cam, mirror_points(seen.contact_points_cam))
    # left and right contact regions swap (feet 1/2, hands 3/4), the rest stay
    swap = torch.tensor([0, 2, 1, 4, 3, 5, 6, 7])
    torch.testing.assert_close(back.contact_point_region, swap[seen.contact_point_region])
    # the parameters reproduce the vertices through the body model
    p = back.params
    out = body()(betas=p["betas"], global_orient=p["global_orient"], body_pose=p["body_pose"],
                 transl=p["transl"])  # fmt: skip
    torch.testing.assert_close(out.vertices, back.verts_cam, atol=2e-5, rtol=0)


def test_both_views_give_the_mean_and_are_mirror_equivariant():
    inputs = _with_scene(make_batch()[0])
    plain, mirror, both = _models("frame", "mirror", "both")
    one = plain.predict(inputs)
    other = mirror.predict(inputs)
    merged = both.predict(inputs)
    torch.testing.assert_close(merged.root_cam, (one.root_cam + other.root_cam) / 2)
    torch.testing.assert_close(merged.params["betas"],
                               (one.params["betas"] + other.params["betas"]) / 2)  # fmt: skip
    torch.testing.assert_close(_rotmats(merged.params),
                               chordal_mean(_rotmats(one.params), _rotmats(other.params)),
                               atol=1e-5, rtol=0)  # fmt: skip
    # the contacts are the frame's own view's
    torch.testing.assert_close(merged.contact_points_cam, one.contact_points_cam)
    # a mirrored frame gives the mirrored body: the merge is symmetric in the two views
    merged_m = both.predict(mirror_inputs(inputs))
    torch.testing.assert_close(mirror_points(merged_m.root_cam), merged.root_cam)
    torch.testing.assert_close(mirror_rotmats(_rotmats(merged_m.params)), _rotmats(merged.params),
                               atol=1e-5, rtol=0)  # fmt: skip
    torch.testing.assert_close(merged_m.params["betas"], merged.params["betas"])
    assert not torch.allclose(merged.verts_cam, one.verts_cam, atol=1e-4)
    p = merged.params
    out = body()(betas=p["betas"], global_orient=p["global_orient"], body_pose=p["body_pose"],
                 transl=p["transl"])  # fmt: skip
    torch.testing.assert_close(out.vertices, merged.verts_cam, atol=2e-5, rtol=0)


def test_contact_distance_matches_the_point_by_point_answer():
    g = torch.Generator().manual_seed(11)
    B, V = 3, 50
    verts = torch.randn(B, V, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (V,), generator=g)
    labels[labels == 3] = 2  # region 3 has no vertex
    points = torch.randn(7, 3, generator=g, dtype=torch.float64)
    region = torch.tensor([1, 2, 1, 2, 1, 3, 2])
    frame = torch.tensor([0, 0, 0, 2, 2, 2, 2])  # frame 1 has no point
    got = contact_distance(verts, labels, points, region, frame)
    for b in range(B):
        rows = [p for p in range(7) if int(frame[p]) == b]
        if not rows:
            assert torch.isnan(got[b])
            continue
        dists = []
        for p in rows:
            near = [float((verts[b, v] - points[p]).norm()) for v in range(V)
                    if int(labels[v]) == int(region[p])]  # fmt: skip
            dists.append(min(near) if near else float("inf"))
        assert float(got[b]) == pytest.approx(sum(dists) / len(dists), abs=1e-12)
    assert torch.isinf(got[2]) and torch.isfinite(got[0])
    none = contact_distance(verts, labels, points[:0], region[:0], frame[:0])
    assert torch.isnan(none).all()


def test_pick_views_keeps_each_frames_chosen_estimate():
    head = tiny_head(8)
    g = torch.Generator().manual_seed(2)
    a = head.pose_body(_random_rotmats(3, seed=1), torch.randn(3, 10, generator=g) * 0.5)
    b = head.pose_body(_random_rotmats(3, seed=2), torch.randn(3, 10, generator=g) * 0.5)
    ra, rb = torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g)
    take = torch.tensor([False, True, False])
    body, root = pick_views(head, a, ra, b, rb, take)
    for i, src, r in ((0, a, ra), (1, b, rb), (2, a, ra)):
        torch.testing.assert_close(body.rotmats[i], src.rotmats[i])
        torch.testing.assert_close(body.betas[i], src.betas[i])
        torch.testing.assert_close(body.verts_rel[i], src.verts_rel[i], atol=1e-6, rtol=0)
        torch.testing.assert_close(root[i], r[i])


class CountingRCNet(SceneRCNet):
    """`SceneRCNet` counting its calls; its contacts lie in the left-foot region (1)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, inputs: FrameInputs, targets=None) -> FakeRCOutput:
        self.calls += 1
        return super().forward(inputs, targets)


def test_select_view_runs_rcnet_once_and_keeps_the_body_nearer_to_its_contacts():
    """Per frame, the kept body is the frame's own view or the mirror image's (fed RCNet's
    reflected root and contacts), whichever meets RCNet's contacts more closely."""
    inputs = _with_scene(make_batch()[0])
    plain, select = _models("frame", "select")
    rcnet = CountingRCNet()
    select.rcnet = rcnet
    got = select.predict(inputs)
    assert rcnet.calls == 1
    one = plain.predict(inputs)  # the frame's view (RCNet run inside)
    rc = RootContacts(*select._from_rcnet(SceneRCNet()(inputs)))
    head = select.mesh_net.param_head
    mirrored = replace(mirror_inputs(inputs), rcnet_given=mirror_root_contacts(rc))
    with torch.no_grad():
        other = unmirror_output(select.forward(mirrored), head)
    other_verts = other.body.verts_rel + other.root_cam[:, None]
    labels = select.mesh_net.vertex_region
    d_one = contact_distance(one.verts_cam, labels, rc.contact_points_cam,
                             rc.contact_point_region, rc.contact_batch_idx)  # fmt: skip
    d_other = contact_distance(other_verts, labels, rc.contact_points_cam,
                               rc.contact_point_region, rc.contact_batch_idx)  # fmt: skip
    d_got = contact_distance(got.verts_cam, labels, rc.contact_points_cam,
                             rc.contact_point_region, rc.contact_batch_idx)  # fmt: skip
    for b in range(inputs.batch_size):
        want = other_verts[b] if d_other[b] < d_one[b] else one.verts_cam[b]
        torch.testing.assert_close(got.verts_cam[b], want, atol=1e-5, rtol=0)
        assert float(d_got[b]) <= float(torch.minimum(d_one[b], d_other[b])) + 1e-6
    assert bool((d_other < d_one).any())  # the case holds frames where the mirror view wins


def test_select_view_keeps_the_frames_own_view_where_it_is_nearer(monkeypatch):
    """The same frames with the distance's sign turned: now the frame's own view wins where
    the mirror view won above, and the output is the plain prediction there."""
    import sahmr.models.sahmr as sahmr_module

    inputs = _with_scene(make_batch()[0])
    plain, select = _models("frame", "select")
    one = plain.predict(inputs)
    turned = lambda *args: -contact_distance(*args)  # noqa: E731
    monkeypatch.setattr(sahmr_module, "contact_distance", turned)
    got = select.predict(inputs)
    torch.testing.assert_close(got.verts_cam, one.verts_cam, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.root_cam, one.root_cam)
    torch.testing.assert_close(got.contact_points_cam, one.contact_points_cam)
    p = got.params
    out = body()(betas=p["betas"], global_orient=p["global_orient"], body_pose=p["body_pose"],
                 transl=p["transl"])  # fmt: skip
    torch.testing.assert_close(out.vertices, got.verts_cam, atol=2e-5, rtol=0)


def test_test_views_are_checked():
    with pytest.raises(ValueError, match="parametric head"):
        SAHMR(rcnet=SceneRCNet(), mesh_net=tiny_mesh_net(), test_views="both")
    net = tiny_mesh_net(param_head=lambda in_width, num_tokens: tiny_head(in_width))
    with pytest.raises(ValueError, match="frozen RCNet"):
        SAHMR(rcnet=SceneRCNet(), mesh_net=net, test_views="select", freeze_rcnet=False)
    with pytest.raises(ValueError, match="one of frame, mirror, both"):
        SAHMR(rcnet=SceneRCNet(), mesh_net=tiny_mesh_net(), test_views="flipped")
