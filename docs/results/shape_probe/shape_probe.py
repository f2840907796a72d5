#!/usr/bin/env python3
"""Can a dedicated network read the body's shape from the crop? (docs/results.md, section (s))

Two probes on generated sets (tools/make_dataset.py), both scored on a val split (held-out
rooms) by the rest-pose vertex error of the shape (mm, against the mean shape's) and R^2 per
shape coefficient:

    python3 docs/results/shape_probe/shape_probe.py pixels OUT.json --data DATA [--data DATA2] \
        --train-frames 12000 --steps 2000 --size 192
    python3 docs/results/shape_probe/shape_probe.py backbone OUT.json --data DATA \
        --train-frames 8000 --steps 2000 [--checkpoint sahmr/checkpoints/sahmr_small.pt]
    python3 docs/results/shape_probe/shape_probe.py pixels OUT.json --data DATA --overfit 500 \
        --size 192 --steps 600        # train and score on the same 500 frames, no augmentation

``pixels``: a small CNN (five stride-2 blocks, a 1x1 reduction, flattened, the crop's metric side
added) trained from scratch on the crops, with flips, zoom (the crop side moved to match),
shift, colour jitter and log-normal noise on the crop side. ``backbone``: the shipped mesh
network's frozen ResNet-18 map (14 x 14 x 256) with a small convolutional read-out. Loss: the
mean absolute rest-pose vertex difference plus 0.01 x the squared coefficient error (the
vertex term alone is ruled by the stature). The script is the record of an experiment that
did not ship (the package has no shape network); it uses only the package's public pieces.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sahmr.geometry.crops import crop_side_m
from sahmr.models.param_head import CROP_SIDE_REF_M
from sahmr.scene.frontend import crop_intrinsics, normalize_crop

SHAPE_NET_SIZE = 192
"""Default side (pixels) the crop is resized to."""


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions, the first with stride 2, each with BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CropShapeNet(nn.Module):
    """Crop + crop scale -> shape coefficients (see the module docstring).

    Args:
        num_betas: Coefficients predicted (the body model's ``num_betas``; fewer are
            zero-padded by the body model).
        size: Side the crop is resized to, pixels; a multiple of 32.
        widths: Channels of the five stride-2 blocks.
        hidden: Width of the read-out layer.
        readout_channels: Channels the last feature map is reduced to (1x1 convolution)
            before it is flattened: the read-out keeps where things are in the crop (a
            silhouette's width against its height) at a few weights.
    """

    def __init__(
        self,
        *,
        num_betas: int = 10,
        size: int = SHAPE_NET_SIZE,
        widths: tuple[int, ...] = (24, 32, 48, 64, 96),
        hidden: int = 128,
        readout_channels: int = 16,
    ) -> None:
        super().__init__()
        if size % 32 != 0 or size <= 0:
            raise ValueError(f"size must be a positive multiple of 32, got {size}")
        if len(widths) != 5:
            raise ValueError(f"widths must name five blocks, got {len(widths)}")
        self.num_betas = int(num_betas)
        self.size = int(size)
        chans = (3, *(int(w) for w in widths))
        self.features = nn.Sequential(*(_block(a, b) for a, b in itertools.pairwise(chans)))
        side = self.size // 32
        self.readout = nn.Sequential(
            nn.Conv2d(chans[-1], readout_channels, 1, bias=False),
            nn.BatchNorm2d(readout_channels),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(readout_channels * side * side, hidden),
            nn.ReLU(inplace=True),
        )
        self.scale = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(inplace=True))
        self.out = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, self.num_betas)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, image: Tensor, crop_side_m: Tensor) -> Tensor:
        """Shape coefficients.

        Args:
            image: Tensor (B, 3, S, S) crops, ImageNet-normalised (any S).
            crop_side_m: Tensor (B,) metres the crop's side spans at the body's depth.

        Returns:
            Tensor (B, num_betas) float32.
        """
        x = image.float()
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=True)  # fmt: skip
        h = self.readout(self.features(x))
        log_side = torch.log(crop_side_m.float().clamp_min(1e-3) / CROP_SIDE_REF_M)[:, None]
        return self.out(h + self.scale(log_side)).float()


def shape_loss(
    shapedirs: Tensor, betas_pred: Tensor, betas_true: Tensor, coefficient_weight: float = 0.0
) -> Tensor:
    """`shape_displacement_l1` plus ``coefficient_weight`` x the mean squared coefficient
    error (scalar). The displacement is ruled by the stature (beta 0 moves the license-free
    body's vertices by 14 mm per unit, the others by 0.6-2 mm), so on its own it leaves the
    girth (beta 1) unlearned although the girth matters for the mesh's edge lengths; the
    squared error weighs every coefficient alike.

    Args:
        shapedirs: Tensor (V, 3, NB).
        betas_pred: Tensor (B, NP), NP <= NB.
        betas_true: Tensor (B, NT), NT <= NB.
        coefficient_weight: Weight of the squared error (per coefficient; metres^-1 x m).
    """
    loss = shape_displacement_l1(shapedirs, betas_pred, betas_true)
    if coefficient_weight > 0:
        k = min(betas_pred.shape[-1], betas_true.shape[-1])
        err = betas_pred[:, :k].float() - betas_true[:, :k].float()
        loss = loss + coefficient_weight * err.square().mean()
    return loss


def shape_displacement_l1(shapedirs: Tensor, betas_pred: Tensor, betas_true: Tensor) -> Tensor:
    """Mean absolute rest-pose vertex difference between two shapes, metres (scalar).

    Args:
        shapedirs: Tensor (V, 3, NB) the body model's shape directions.
        betas_pred: Tensor (B, NP) with NP <= NB (missing coefficients are zero).
        betas_true: Tensor (B, NT) with NT <= NB.
    """
    nb = shapedirs.shape[-1]
    diff = F.pad(betas_pred.float(), (0, nb - betas_pred.shape[-1])) - F.pad(
        betas_true.float(), (0, nb - betas_true.shape[-1])
    )
    disp = torch.einsum("vcn,bn->bvc", shapedirs.float(), diff)
    return disp.abs().mean()


@dataclass
class ShapeFrames:
    """Frames for the shape net, on the CPU.

    Attributes:
        crops: Tensor (N, S, S, 3) uint8 RGB crops at the net's size.
        betas: Tensor (N, NB) float32 true shape coefficients.
        crop_side_m: Tensor (N,) float32 metres the crop spans at the true root's depth.
    """

    crops: Tensor
    betas: Tensor
    crop_side_m: Tensor

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    def subset(self, idx: Tensor) -> ShapeFrames:
        return ShapeFrames(self.crops[idx], self.betas[idx], self.crop_side_m[idx])


def sample_crop_side_m(sample, crop_size: int) -> float:
    """Metres the stored crop of ``sample`` spans at its true root's camera depth."""
    T = np.asarray(sample.T_w2c, dtype=np.float64)
    root_world = np.asarray(sample.joints_world, dtype=np.float64)[0]
    depth = float(T[2, :3] @ root_world + T[2, 3])
    K = torch.as_tensor(np.asarray(sample.K, dtype=np.float64))[None]
    bbox = torch.as_tensor(np.asarray(sample.bbox, dtype=np.float64))[None]
    K_crop = crop_intrinsics(K, bbox, crop_size)
    return float(crop_side_m(K_crop, torch.tensor([depth], dtype=torch.float64), crop_size)[0])


def collect_shape_frames(dataset, indices: Sequence[int], size: int, *, progress: bool = True):
    """Decodes ``dataset[i]`` for each index into a `ShapeFrames` (crops resized to ``size``).

    Raises:
        ValueError: A sample without a crop or body parameters.
    """
    from tqdm import tqdm

    crops, betas, sides = [], [], []
    for i in tqdm(indices, desc="decoding crops", unit="frame", disable=not progress):
        s = dataset[int(i)]
        if s.crop is None or s.betas is None:
            raise ValueError(f"frame {i} has no crop or no shape coefficients")
        crop = torch.from_numpy(np.array(s.crop, dtype=np.uint8))
        crops.append(_resize_uint8(crop, size))
        betas.append(torch.as_tensor(np.asarray(s.betas, dtype=np.float32)))
        sides.append(sample_crop_side_m(s, crop.shape[0]))
    return ShapeFrames(
        torch.stack(crops), torch.stack(betas), torch.tensor(sides, dtype=torch.float32)
    )


def _resize_uint8(crop: Tensor, size: int) -> Tensor:
    """(S, S, 3) uint8 -> (size, size, 3) uint8, antialiased."""
    if crop.shape[0] == size:
        return crop.contiguous()
    x = crop.permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)


@dataclass
class ShapeAugment:
    """Augmentation of a training batch (see the module docstring).

    Attributes:
        zoom: The crop is zoomed by a factor in ``[1/zoom, zoom]`` (log-uniform).
        shift: Largest shift of the crop's centre, as a fraction of its side.
        colour: Largest relative change of brightness and of contrast.
        side_noise: Std of the log of the factor the crop side is multiplied by.
    """

    zoom: float = 1.15
    shift: float = 0.06
    colour: float = 0.25
    side_noise: float = 0.05

    def __call__(self, frames: ShapeFrames, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """(normalised images (B, 3, S, S), crop sides (B,)) of an augmented batch."""
        x = frames.crops.permute(0, 3, 1, 2).float().div_(255.0)
        b = x.shape[0]

        def uniform(lo: float, hi: float) -> Tensor:
            return lo + (hi - lo) * torch.rand(b, generator=gen)

        z = torch.exp(uniform(-math.log(self.zoom), math.log(self.zoom)))
        flip = torch.rand(b, generator=gen) < 0.5
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = torch.where(flip, -1.0, 1.0) / z
        theta[:, 1, 1] = 1.0 / z
        theta[:, :, 2] = (torch.rand(b, 2, generator=gen) * 2 - 1) * 2 * self.shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        bright = uniform(1 - self.colour, 1 + self.colour).view(b, 1, 1, 1)
        contrast = uniform(1 - self.colour, 1 + self.colour).view(b, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean) * bright
        x = x.clamp(0, 1).mul(255.0).permute(0, 2, 3, 1)
        side = frames.crop_side_m / z * torch.exp(torch.randn(b, generator=gen) * self.side_noise)
        return normalize_crop(x), side


def predict_betas(net: CropShapeNet, frames: ShapeFrames, batch_size: int = 256) -> Tensor:
    """Tensor (N, NB) the net's coefficients for ``frames`` (eval mode, no augmentation)."""
    was = net.training
    net.eval()
    dev = next(net.parameters()).device
    out = []
    with torch.no_grad():
        for k in range(0, len(frames), batch_size):
            part = frames.subset(torch.arange(k, min(k + batch_size, len(frames))))
            image = normalize_crop(part.crops.to(dev).float())
            out.append(net(image, part.crop_side_m.to(dev)).cpu())
    net.train(was)
    return torch.cat(out) if out else torch.zeros(0, net.num_betas)


def shape_scores(net: CropShapeNet, frames: ShapeFrames, shapedirs: Tensor) -> dict[str, float]:
    """``shape_mm``: mean rest-pose vertex error of the predicted shape (mm);
    ``mean_shape_mm``: the same for the mean shape (zeros); ``r2_b<k>``: R^2 of coefficient k
    over ``frames``."""
    pred = predict_betas(net, frames)
    true = frames.betas
    shapedirs = shapedirs.cpu()
    scores = {
        "shape_mm": 1000.0 * float(shape_displacement_l1(shapedirs, pred, true)),
        "mean_shape_mm": 1000.0 * float(shape_displacement_l1(shapedirs, pred * 0, true)),
    }
    k = min(pred.shape[1], true.shape[1])
    resid = ((pred[:, :k] - true[:, :k]) ** 2).sum(0)
    total = ((true[:, :k] - true[:, :k].mean(0)) ** 2).sum(0).clamp_min(1e-12)
    for j, r2 in enumerate((1 - resid / total).tolist()):
        scores[f"r2_b{j}"] = float(r2)
    return scores


def train_shape_net(
    net: CropShapeNet,
    train: ShapeFrames,
    val: ShapeFrames,
    shapedirs: Tensor,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    val_every: int = 200,
    augment: ShapeAugment | None = None,
    coefficient_weight: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> tuple[nn.Module, list[dict]]:
    """Trains ``net`` on ``train`` with AdamW and a one-cycle schedule; keeps the weights with
    the lowest ``shape_mm`` on ``val``. The loss is `shape_loss` (``coefficient_weight``: its
    squared coefficient error's weight). The frames stay on the CPU; each batch is augmented
    there and moved to ``shapedirs``' device, where ``net`` must be.

    Returns:
        (the net with its best weights loaded, the history: one dict per validation with
        ``step``, ``loss`` (the mean training loss since the last one) and `shape_scores`).
    """
    from tqdm import tqdm

    if steps < 1 or batch_size < 1 or len(train) == 0 or len(val) == 0:
        raise ValueError("train_shape_net needs steps, a batch size and frames >= 1")
    augment = augment or ShapeAugment()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=steps, pct_start=min(0.1, 200 / steps)
    )
    history = [{"step": 0, "loss": float("nan"), **shape_scores(net, val, shapedirs)}]
    best, best_state = history[0]["shape_mm"], copy.deepcopy(net.state_dict())
    losses: list[float] = []
    net.train()
    bar = tqdm(range(1, steps + 1), desc="shape net", unit="step", disable=not progress)
    for step in bar:
        idx = torch.randint(len(train), (min(batch_size, len(train)),), generator=gen)
        part = train.subset(idx)
        image, side = augment(part, gen)
        pred = net(image.to(shapedirs.device), side.to(shapedirs.device))
        loss = shape_loss(shapedirs, pred, part.betas.to(shapedirs.device), coefficient_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % val_every == 0 or step == steps:
            rec = {"step": step, "loss": 1000.0 * float(np.mean(losses)),
                   **shape_scores(net, val, shapedirs)}  # fmt: skip
            losses.clear()
            history.append(rec)
            bar.set_postfix(val_mm=f"{rec['shape_mm']:.2f}", r2_b1=f"{rec['r2_b1']:.2f}")
            if rec["shape_mm"] < best:
                best, best_state = rec["shape_mm"], copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    return net, history


class BackboneReadout(nn.Module):
    """A frozen backbone's map (B, C, 14, 14) + crop side -> shape coefficients."""

    def __init__(self, channels: int = 256, num_betas: int = 10, hidden: int = 128) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 64, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten(),
            nn.LazyLinear(hidden), nn.ReLU(),
        )  # fmt: skip
        self.scale = nn.Sequential(nn.Linear(1, hidden), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_betas))

    def forward(self, feat: Tensor, side: Tensor) -> Tensor:
        log_side = torch.log(side.float().clamp_min(1e-3) / CROP_SIDE_REF_M)[:, None]
        return self.out(self.conv(feat.float()) + self.scale(log_side))


def spread(n_total: int, n: int) -> list[int]:
    """``min(n, n_total)`` indices spread evenly over ``range(n_total)``."""
    n = min(n, n_total)
    return sorted({int(i * n_total / n) for i in range(n)}) if n > 0 else []


def backbone_probe(a, shapedirs: Tensor) -> list[dict]:
    """Cache the checkpoint's mesh-network backbone maps and train `BackboneReadout`."""
    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.checkpoint import load_method

    method, _ = load_method(a.checkpoint)
    bb = method.mesh_net.backbone.eval()

    def cache(root: Path, split: str, n: int):
        ds = SyntheticDataset(root, split)
        idx = spread(len(ds), n)
        feats, betas, sides = [], [], []
        for k in range(0, len(idx), 64):
            ss = [ds[i] for i in idx[k : k + 64]]
            crops = torch.stack([torch.from_numpy(np.array(s.crop)) for s in ss])
            x = normalize_crop(crops.float())
            with torch.no_grad():
                feats.append(bb(x).half())
            betas += [torch.as_tensor(np.asarray(s.betas, np.float32)) for s in ss]
            sides += [sample_crop_side_m(s, x.shape[-1]) for s in ss]
        return torch.cat(feats), torch.stack(betas), torch.tensor(sides)

    f_tr, b_tr, s_tr = cache(a.data[0], "train", a.train_frames)
    f_va, b_va, s_va = cache(a.data[0], "val", a.val_frames)
    torch.manual_seed(a.seed)
    head = BackboneReadout(channels=f_tr.shape[1])
    head(f_tr[:2], s_tr[:2])  # materialise the lazy layer
    opt = torch.optim.AdamW(head.parameters(), a.lr, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps)

    def score(step: int) -> dict:
        head.eval()
        with torch.no_grad():
            p = torch.cat([head(f_va[k : k + 200], s_va[k : k + 200])
                           for k in range(0, len(f_va), 200)])  # fmt: skip
        head.train()
        r2 = 1 - ((p - b_va) ** 2).sum(0) / ((b_va - b_va.mean(0)) ** 2).sum(0)
        return {"step": step, "shape_mm": 1000 * float(shape_displacement_l1(shapedirs, p, b_va)),
                "mean_shape_mm": 1000 * float(shape_displacement_l1(shapedirs, p * 0, b_va)),
                **{f"r2_b{j}": float(v) for j, v in enumerate(r2)}}  # fmt: skip

    history = [score(0)]
    gen = torch.Generator().manual_seed(a.seed)
    for step in range(1, a.steps + 1):
        i = torch.randint(len(f_tr), (a.batch_size,), generator=gen)
        side = s_tr[i] * torch.exp(torch.randn(len(i), generator=gen) * a.side_noise)
        loss = shape_loss(shapedirs, head(f_tr[i], side), b_tr[i], a.coefficient_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % a.val_every == 0 or step == a.steps:
            history.append(score(step))
            print(json.dumps(history[-1]), flush=True)
    return history


def coefficient_table() -> list[dict]:
    """Per shape coefficient of the loaded body: the edge-length error (%) the evaluator gives
    the mean body scored against a true body with that coefficient at +1 or +2 (the rest zero),
    and the mean vertex displacement between the two (mm)."""
    from sahmr.body import BodyModel
    from sahmr.evaluation.metrics import edge_length_error, mesh_edges

    body = BodyModel()
    edges = mesh_edges(torch.as_tensor(np.asarray(body.faces, dtype=np.int64)))
    with torch.no_grad():
        mean = body(betas=torch.zeros(1, body.num_betas)).vertices.double()
        rows = []
        for k in range(body.num_betas):
            for value in (1.0, 2.0):
                betas = torch.zeros(1, body.num_betas)
                betas[0, k] = value
                v = body(betas=betas).vertices.double()
                moved_mm = 1000 * float((v - mean).norm(dim=-1).mean())
                rows.append({"coefficient": k, "value": value,
                             "edge_error_pct": float(edge_length_error(mean, v, edges)[0]),
                             "mean_displacement_mm": moved_mm})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["pixels", "backbone", "coefficients"])
    p.add_argument("out", type=Path, help="JSON file of the validation history")
    p.add_argument("--data", type=Path, action="append", default=[])
    p.add_argument("--train-frames", type=int, default=12000)
    p.add_argument("--val-frames", type=int, default=600)
    p.add_argument("--overfit", type=int, default=0,
                   help="pixels: train, score on these train frames, no augmentation")  # fmt: skip
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--side-noise", type=float, default=0.05)
    p.add_argument("--coefficient-weight", type=float, default=0.01)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="backbone: SA-HMR checkpoint (default: the shipped one)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.mode == "coefficients":
        rows = coefficient_table()
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(rows, indent=1), encoding="utf-8")
        for r in rows:
            print(json.dumps(r))
        return 0
    if not a.data:
        p.error("--data is needed for the pixels and backbone probes")
    for root in a.data:
        if not (root / "dataset.json").is_file():
            p.error(f"{root}: not a generated set (no dataset.json)")
    from sahmr.body import BodyModel
    from sahmr.data.synthetic import SyntheticDataset

    torch.manual_seed(a.seed)
    shapedirs = BodyModel().shapedirs
    if a.mode == "backbone":
        if a.checkpoint is None:
            from sahmr.inference.method import bundled_checkpoint

            a.checkpoint = bundled_checkpoint("sahmr")
        history = backbone_probe(a, shapedirs)
    else:
        net = CropShapeNet(size=a.size)
        if a.overfit:
            ds = SyntheticDataset(a.data[0], "train")
            train = collect_shape_frames(ds, spread(len(ds), a.overfit), net.size)
            val, augment = train, ShapeAugment(zoom=1.0, shift=0.0, colour=0.0, side_noise=0.0)
        else:
            per_set = -(-a.train_frames // len(a.data))
            parts = [collect_shape_frames(ds, spread(len(ds), per_set), net.size)
                     for ds in (SyntheticDataset(r, "train") for r in a.data)]  # fmt: skip
            train = ShapeFrames(*(torch.cat([getattr(f, k) for f in parts])
                                  for k in ("crops", "betas", "crop_side_m")))  # fmt: skip
            ds = SyntheticDataset(a.data[0], "val")
            val = collect_shape_frames(ds, spread(len(ds), a.val_frames), net.size)
            augment = ShapeAugment(side_noise=a.side_noise)
        _, history = train_shape_net(
            net, train, val, shapedirs, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
            val_every=a.val_every, augment=augment, coefficient_weight=a.coefficient_weight,
            seed=a.seed,
        )  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()},
                                 "history": history}, indent=1), encoding="utf-8")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
