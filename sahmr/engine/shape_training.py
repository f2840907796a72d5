"""Training `sahmr.models.shape_net.CropShapeNet` on a generated set's crops.

The frames are decoded once into compact tensors (uint8 crops at the net's size, the true
betas, the crop's metric side at the true root), then trained on with augmentation in the
step: horizontal flips (a mirrored person has the same shape), colour jitter, and a zoom of the
crop with the crop side moved to match (a crop zoomed in by ``z`` spans ``side / z`` metres).
The crop side the net reads at test time comes from RCNet's root, not the true one, so
training multiplies it by ``exp(N(0, side_noise^2))``.

`shape_scores` reports what the edge-length error depends on: the rest-pose vertex error of the
shape alone (mm) and how much of each coefficient the net recovers (R^2).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sahmr.geometry.crops import crop_side_m
from sahmr.models.shape_net import CropShapeNet, shape_displacement_l1
from sahmr.scene.frontend import crop_intrinsics, normalize_crop


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
    seed: int = 0,
    progress: bool = True,
) -> tuple[nn.Module, list[dict]]:
    """Trains ``net`` on ``train`` with AdamW and a one-cycle schedule; keeps the weights with
    the lowest ``shape_mm`` on ``val``. The frames stay on the CPU; each batch is augmented
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
        loss = shape_displacement_l1(shapedirs, pred, part.betas.to(shapedirs.device))
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
