"""Tiny METRO / SA-HMR builders and a fabricated batch on the real body topology (tests only)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sahmr.body import BodyModel
from sahmr.geometry.cameras import make_K, project
from sahmr.models.metro import METRO
from sahmr.models.param_head import MLPBodyHead, ParametricBodyHead
from sahmr.models.scene_mesh_net import SceneAwareMeshNet
from sahmr.models.transformer import SceneAwareCascade, TransformerCascade
from sahmr.records import FrameInputs, FrameTargets

IMAGE = 64  # crop side of the tiny cases


@functools.lru_cache(maxsize=1)
def body() -> BodyModel:
    return BodyModel()


def topology():
    return body().topology


class TinyBackbone(nn.Module):
    """A single strided conv standing in for a CNN: (B, 3, S, S) -> (B, 8, S/32, S/32)."""

    out_channels = 8
    out_stride = 32

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, self.out_channels, self.out_stride, self.out_stride)

    def forward(self, image: Tensor) -> Tensor:
        return self.conv(image)


def tiny_head(in_width: int, num_tokens: int | None = None, **options) -> ParametricBodyHead:
    """A small decoder head on the shipped body (the factory the mesh networks call);
    ``options``: ``root_offset``, ``crop_scale``."""
    return ParametricBodyHead(body_model=body(), in_width=in_width, width=16, num_layers=1,
                              num_heads=2, **options)  # fmt: skip


def tiny_mlp_head(in_width: int, num_tokens: int, **options) -> MLPBodyHead:
    """A small MLP head on the shipped body; ``options`` as for `tiny_head`."""
    return MLPBodyHead(body_model=body(), in_width=in_width, num_tokens=num_tokens,
                       token_dim=2, hidden=32, **options)  # fmt: skip


def tiny_metro(seed: int = 0, **kw) -> METRO:
    torch.manual_seed(seed)
    enc = TransformerCascade(widths=(32, 16, 8), num_layers=1, num_heads=2, dropout=0.0)
    return METRO(backbone=TinyBackbone(), encoder=enc, topology=topology(), image_size=IMAGE,
                 **kw)  # fmt: skip


def tiny_mesh_net(seed: int = 0, **kw) -> SceneAwareMeshNet:
    torch.manual_seed(seed)
    enc = SceneAwareCascade(widths=(32, 16, 8), num_layers=1, num_heads=2, dropout=0.0)
    return SceneAwareMeshNet(backbone=TinyBackbone(), encoder=enc, topology=topology(),
                             image_size=IMAGE, **kw)  # fmt: skip


def make_batch(B: int = 2, contacts: tuple[int, ...] = (5, 0), seed: int = 0):
    """Consistent inputs/targets: posed bodies in front of the crop camera, fake contacts."""
    g = torch.Generator().manual_seed(seed)
    bm = body()
    top = bm.topology
    pose = (torch.rand(B, 69, generator=g) - 0.5) * 0.4
    orient = torch.tensor([[torch.pi, 0.0, 0.0]]).repeat(B, 1)  # model y-up -> camera y-down
    out = bm(betas=torch.zeros(B, 10), global_orient=orient, body_pose=pose)
    transl = torch.stack([torch.rand(B, generator=g) - 0.5, torch.zeros(B),
                          3 + torch.rand(B, generator=g)], dim=1)  # fmt: skip
    verts = out.vertices + transl[:, None]
    joints = out.joints[:, :24] + transl[:, None]
    K_crop = make_K(torch.full((B,), 150.0), torch.full((B,), 150.0),
                    torch.full((B,), IMAGE / 2), torch.full((B,), IMAGE / 2))  # fmt: skip
    reg = torch.as_tensor(top.j_regressor_j14, dtype=torch.float32)
    joints14 = torch.einsum("jv,bvc->bjc", reg, verts)
    bidx = torch.cat([torch.full((n,), b, dtype=torch.int64) for b, n in enumerate(contacts)])
    P = int(bidx.numel())
    cpts = verts[bidx, torch.randint(0, verts.shape[1], (P,), generator=g)]
    targets = FrameTargets(
        verts_cam=verts,
        verts_cam_levels=[verts] + [top.downsample(verts, lv) for lv in range(1, top.num_levels)],
        joints_cam=joints,
        joints14_cam=joints14,
        root_cam=joints[:, 0],
        joints2d_crop=project(K_crop, joints),
        joints14_2d_crop=project(K_crop, joints14),
        vertex_contact=None,
        contact_points_cam=cpts,
        contact_point_region=torch.randint(1, 8, (P,), generator=g),
        contact_batch_idx=bidx,
        betas=torch.zeros(B, 10),
        global_orient_cam=orient,
        body_pose=pose,
        T_w2c=torch.eye(4).repeat(B, 1, 1),
    )
    inputs = FrameInputs(
        image=torch.randn(B, 3, IMAGE, IMAGE, generator=g),
        K_crop=K_crop,
        K=K_crop.clone(),
        bbox=torch.tensor([[0.0, 0.0, IMAGE, IMAGE]]).repeat(B, 1),
        T_w2c=torch.eye(4).repeat(B, 1, 1),
    )
    return inputs, targets


@dataclass
class FakeRCOutput:
    root_cam: Tensor
    contact_points_cam: Tensor
    contact_point_region: Tensor
    contact_batch_idx: Tensor


class FakeRCNet(nn.Module):
    """Returns fixed contacts and a root = learnable offset + a constant (for freeze tests)."""

    def __init__(self, root: Tensor, points: Tensor, region: Tensor, bidx: Tensor) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(3))
        self.register_buffer("root", root.clone())
        self.register_buffer("points", points.clone())
        self.register_buffer("region", region.clone())
        self.register_buffer("bidx", bidx.clone())
        self.calls: list[bool] = []  # whether targets were passed

    def forward(self, inputs: FrameInputs, targets: FrameTargets | None = None) -> FakeRCOutput:
        self.calls.append(targets is not None)
        return FakeRCOutput(self.root + self.offset, self.points, self.region, self.bidx)


def snapshot(obj) -> dict[str, object]:
    """Deep copy of the tensors of a FrameInputs/FrameTargets (for no-write checks)."""
    out = {}
    for k, v in vars(obj).items():
        if isinstance(v, Tensor):
            out[k] = v.clone()
        elif isinstance(v, list):
            out[k] = [t.clone() for t in v]
    return out


def unchanged(obj, snap: dict[str, object]) -> bool:
    for k, v in snap.items():
        cur = getattr(obj, k)
        if isinstance(v, list):
            if not all(torch.equal(a, b) for a, b in zip(cur, v)):
                return False
        elif not torch.equal(cur, v):
            return False
    return True
