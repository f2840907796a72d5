"""Refit an SA-HMR checkpoint's parametric head on its own frozen encoder outputs.

The parametric head (`sahmr.models.param_head`) is a small network at the very end of
SA-HMR: everything before it (RCNet, backbone, scene-aware encoder) can stay frozen while
the head learns something new, e.g. the crop-scale input a checkpoint was trained without.
Then one forward pass per frame is enough: `collect_head_inputs` runs the whole model once
(eval mode, RCNet's own root and contacts, exactly as at test time) and keeps what the head
reads plus the frame's ground-truth parameters; `refit_head` then trains the head alone on
that cache for many epochs - minutes on a CPU instead of GPU time.

Loss per frame (the parametric terms of `sahmr.losses.mesh.ParamTerms`, same meaning):
L1 on the 24 rotation matrices, L1 on the shape coefficients (``w_betas``), L1 on the
root-relative vertices and J14 joints of the posed body, and the mean distance of the placed
body's vertices (given root + the head's root offset) to the ground truth. The ground-truth
body is the body model posed by the frame's parameters, once when the cache is built (the
generator's bodies are exactly that; tests/models/test_head_refit.py checks it against the
stored vertices).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from sahmr.engine.optimizers import WarmupCosine
from sahmr.losses.mesh import target_rotmats
from sahmr.models.modes import eval_mode
from sahmr.models.param_head import BodyHead, BodyParams

logger = logging.getLogger(__name__)


@dataclass
class HeadCache:
    """What the head reads for N frames, and their ground truth (camera frame, metres).

    Attributes:
        tokens: Tensor (N, Q, C) float16 encoder outputs of the mesh query tokens.
        xyz_rel: Tensor (N, Q, 3) their regressed root-relative positions.
        crop_side_m: Tensor (N,) metres the crop spans at the given root's depth.
        root_given_cam: Tensor (N, 3) the root the body is placed at (RCNet's).
        betas: Tensor (N, NB) ground-truth shape coefficients.
        rotmats: Tensor (N, 24, 3, 3) ground-truth global orientation (camera axes) and joint
            rotations.
        root_cam: Tensor (N, 3) ground-truth root (pelvis).
        verts_rel: Tensor (N, V, 3) the ground-truth body's vertices minus its root (posed
            once here, not in every step).
        joints14_rel: Tensor (N, 14, 3) its J14 joints minus its root.
    """

    tokens: Tensor
    xyz_rel: Tensor
    crop_side_m: Tensor
    root_given_cam: Tensor
    betas: Tensor
    rotmats: Tensor
    root_cam: Tensor
    verts_rel: Tensor
    joints14_rel: Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def rows(self, index: Tensor) -> HeadCache:
        """The frames ``index`` (a copy)."""
        return HeadCache(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def save(self, path: str | Path) -> None:
        """Writes the tensors atomically (a dict of tensors: loads with ``weights_only``)."""
        from sahmr.engine.checkpoint import atomic_torch_save

        atomic_torch_save({f.name: getattr(self, f.name) for f in fields(self)}, path)

    @staticmethod
    def load(path: str | Path) -> HeadCache:
        """A cache written by `save` (``torch.load(weights_only=True)``)."""
        data = torch.load(path, map_location="cpu", weights_only=True)
        return HeadCache(**{f.name: data[f.name] for f in fields(HeadCache)})

    @staticmethod
    def cat(parts: list[HeadCache]) -> HeadCache:
        """Frames of several caches, in order."""
        return HeadCache(
            **{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(HeadCache)}
        )


def collect_head_inputs(model: nn.Module, steps: Iterable) -> HeadCache:
    """Runs SA-HMR on prepared steps and keeps its head's inputs and the ground truth.

    Args:
        model: An SA-HMR (`sahmr.models.sahmr.SAHMR`) with an RCNet and a parametric head.
        steps: Prepared steps (``.inputs`` `FrameInputs`, ``.frame_targets`` `FrameTargets`
            with ``betas``, ``global_orient_cam`` and ``body_pose``).

    Returns:
        `HeadCache` on the CPU.

    Raises:
        ValueError: If the model has no parametric head or the targets no parameters.
    """
    head = getattr(model.mesh_net, "param_head", None)
    if head is None:
        raise ValueError("the model has no parametric head to refit")
    seen: list[tuple[Tensor, ...]] = []

    def keep(_module: nn.Module, args: tuple) -> None:
        # (tokens, xyz_rel, crop_side_m): SA-HMR passes the crop side at the root it places at
        tokens, xyz, side = args
        seen.append((tokens.detach().half().cpu(), xyz.detach().float().cpu(),
                     side.detach().float().cpu()))  # fmt: skip

    parts = []
    handle = head.register_forward_pre_hook(keep)
    try:
        with eval_mode(model), torch.no_grad():
            for step in steps:
                t = step.frame_targets
                rotmats = target_rotmats(t)
                if t.betas is None or rotmats is None:
                    raise ValueError("the frames carry no body parameters to refit on")
                seen.clear()
                out = model(step.inputs)
                tokens, xyz, side = seen[-1]
                given = out.root_given_cam if out.root_given_cam is not None else out.root_cam
                gt = head.pose_body(rotmats, t.betas.float())
                parts.append(
                    HeadCache(
                        tokens=tokens,
                        xyz_rel=xyz,
                        crop_side_m=side,
                        root_given_cam=given.float().cpu(),
                        betas=t.betas.float().cpu(),
                        rotmats=rotmats.cpu(),
                        root_cam=t.root_cam.float().cpu(),
                        verts_rel=gt.verts_rel.float().cpu(),
                        joints14_rel=gt.joints14_rel.float().cpu(),
                    )
                )
    finally:
        handle.remove()
    return HeadCache.cat(parts)


@dataclass
class RefitWeights:
    """Weights of the refit loss terms (see the module docstring)."""

    rot: float = 1.0
    betas: float = 0.3
    verts: float = 1.0
    joints3d: float = 1.0
    verts_abs: float = 1.0


def placed_bodies(head: BodyHead, batch: HeadCache) -> tuple[BodyParams, Tensor]:
    """``(predicted body, placed-vertex distance (B, V) metres)``: the predicted body at the
    given root plus its offset against the ground truth at its root."""
    body = head(batch.tokens.float(), batch.xyz_rel, batch.crop_side_m)
    root = batch.root_given_cam
    if body.root_offset is not None:
        root = root + body.root_offset
    placed = body.verts_rel + root[:, None]
    dist = (placed - batch.verts_rel - batch.root_cam[:, None]).norm(dim=-1)
    return body, dist


def head_losses(head: BodyHead, batch: HeadCache, weights: RefitWeights) -> Tensor:
    """Weighted loss of the head on cached frames (scalar)."""
    body, dist = placed_bodies(head, batch)
    nb = min(body.betas.shape[-1], batch.betas.shape[-1])
    terms = {
        "param_rot": weights.rot * (body.rotmats - batch.rotmats).abs().mean(),
        "param_betas": weights.betas * (body.betas[:, :nb] - batch.betas[:, :nb]).abs().mean(),
        "param_verts": weights.verts * (body.verts_rel - batch.verts_rel).abs().mean(),
        "param_joints3d": weights.joints3d * (body.joints14_rel - batch.joints14_rel).abs().mean(),
        "param_verts_abs": weights.verts_abs * dist.mean(),
    }
    return torch.stack(list(terms.values())).sum()


@torch.no_grad()
def placed_vertex_error_mm(head: BodyHead, cache: HeadCache, batch_size: int = 64) -> float:
    """Mean distance (mm) of the placed body's vertices to the ground truth over ``cache``
    (camera frame; the same number as the world-frame G-MPVE, a rigid transform apart)."""
    total, count = 0.0, 0
    with eval_mode(head):
        for start in range(0, len(cache), batch_size):
            rows = cache.rows(torch.arange(start, min(start + batch_size, len(cache))))
            total += float(placed_bodies(head, rows)[1].mean(dim=1).sum())
            count += len(rows)
    return 1000.0 * total / max(count, 1)


def refit_head(
    head: BodyHead,
    train: HeadCache,
    val: HeadCache | None = None,
    *,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-4,
    weights: RefitWeights | None = None,
    val_every: int = 200,
    seed: int = 0,
    progress: bool = False,
    on_best: Callable[[dict], None] | None = None,
) -> dict:
    """Trains ``head`` (its body model stays frozen) on cached frames; keeps the weights that
    scored best on ``val`` (placed-body vertex error), or the last without ``val``.

    Args:
        head: The parametric head, trained in place.
        train: Training frames.
        val: Validation frames (other rooms), or None.
        steps: Optimiser steps (AdamW, cosine decay to 0 after a 5 % warm-up).
        batch_size: Frames per step.
        lr: Peak learning rate.
        weights: Loss weights.
        val_every: Validate every this many steps.
        seed: Seed of the batch order.
        progress: Show a progress bar.
        on_best: Called with the validation row each time val improves, while ``head``
            holds those weights (e.g. to save them: a stopped refit keeps its best).

    Returns:
        ``{"history": [{"step", "loss", "val_mm"}...], "best_step", "best_val_mm",
        "start_val_mm"}``.
    """
    from tqdm import tqdm

    weights = weights or RefitWeights()
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(steps, max(1, steps // 20)))
    gen = torch.Generator().manual_seed(seed)
    start = placed_vertex_error_mm(head, val) if val is not None else None
    best = {"step": 0, "val_mm": start, "state": copy_state(head)}
    history = []
    running = 0.0
    head.train()
    for i in tqdm(range(steps), desc="refit head", disable=not progress):
        idx = torch.randint(len(train), (batch_size,), generator=gen)
        loss = head_losses(head, train.rows(idx), weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        running += float(loss.detach())
        if (i + 1) % val_every == 0 or i + 1 == steps:
            row = {"step": i + 1, "loss": running / val_every}
            running = 0.0
            if val is not None:
                row["val_mm"] = placed_vertex_error_mm(head, val)
                if best["val_mm"] is None or row["val_mm"] < best["val_mm"]:
                    best = {"step": i + 1, "val_mm": row["val_mm"], "state": copy_state(head)}
                    if on_best is not None:
                        on_best(row)
                head.train()
            history.append(row)
            logger.info("refit step %d: %s", i + 1, row)
    if val is not None:
        head.load_state_dict(best["state"])
    head.eval()
    return {
        "history": history,
        "best_step": best["step"] if val is not None else steps,
        "best_val_mm": best["val_mm"],
        "start_val_mm": start,
    }


def encoder_digest(model: nn.Module, head_prefix: str = "mesh_net.param_head.") -> str:
    """sha256 (hex) of every weight and buffer of ``model`` outside the head (names starting
    with ``head_prefix``): what a head cache depends on. Two checkpoints that differ only in
    their heads (a refit of a refit) share their caches; any other change rebuilds them."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        if name.startswith(head_prefix):
            continue
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        digest.update(name.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(
    encoder: str, data: str | Path, split: str, frames: int, length: int, scene: bool
) -> dict:
    """What a cache file holds (`write_cache_key` stores it beside the file; a cache is reused
    only when its key matches): the encoder's weights (`encoder_digest`), the split of which
    dataset, which frames (``frames`` spread over ``length``) and whether contacts were on."""
    return {"encoder_sha256": encoder, "data": str(Path(data).resolve()), "split": split,
            "frames": min(frames, length), "of": length, "scene": scene}  # fmt: skip


def write_cache_key(path: str | Path, key: dict) -> None:
    """Store ``key`` beside the cache file ``path`` (``<path>.json``)."""
    Path(path).with_suffix(".json").write_text(json.dumps(key, indent=1), encoding="utf-8")


def read_cache_key(path: str | Path) -> dict | None:
    """The key stored beside the cache file ``path``, or None (none, or unreadable)."""
    try:
        return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def copy_state(module: nn.Module) -> dict[str, Tensor]:
    """A detached copy of ``module``'s state dict (the best weights a refit keeps)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
