"""The val metric's own gradient on train frames under each forward mode of the mesh network:
which mode's gradient points down the val error (eval-mode metric on val frames)?"""
import numpy as np
import torch
from probe_setup import load_probe, placed_distance_mm
from torch import nn

probe = load_probe()
model, params = probe.model, probe.params
BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
for m in model.modules():
    if isinstance(m, BN):
        m.momentum = 0.0
mesh = model.mesh_net
ratio = mesh.mask_ratio if hasattr(mesh, "mask_ratio") else None
print("mask ratio", ratio)


def set_mode(mode):
    model.eval()
    if hasattr(mesh, "mask_ratio"):
        mesh.mask_ratio = ratio
    if mode == "eval":
        return
    mesh.train()
    if mode in ("train_bn_eval", "dropout_only"):
        for m in mesh.modules():
            if isinstance(m, BN):
                m.eval()
    if mode == "dropout_only":
        mesh.mask_ratio = 0.0
    if mode == "bn_only":
        for m in mesh.modules():
            if not isinstance(m, BN):
                m.training = False


def grad(batches, mode, seed=0):
    torch.manual_seed(seed)
    probe.zero_grad()
    tot = 0.0
    for st in batches:
        set_mode(mode)
        v = placed_distance_mm(model(st.inputs), st) / len(batches)
        v.backward()
        tot += float(v.detach())
    return probe.grad_vector(), tot


val_b, tr_b = probe.steps("val"), probe.steps("train")
gv, v0 = grad(val_b, "eval")
print(f"val metric {v0:.1f} mm")
names = list(params)
sizes = [params[n].numel() for n in names]
bounds = np.cumsum([0, *sizes])
part_of = {}
for i, n in enumerate(names):
    part_of.setdefault(n.split(".")[0], []).append((bounds[i], bounds[i + 1]))
lr = 2e-5
for mode in ["eval", "bn_only", "train_bn_eval", "dropout_only", "train"]:
    g, t = grad(tr_b, mode)
    cos = float(g @ gv / (g.norm() * gv.norm()))
    line = f"{mode:>14}: train-frame metric {t:6.1f}  cos {cos:+.3f}"
    line += f"  sign-step {float(-lr * (torch.sign(g) @ gv)):+.3f} mm |"
    for part in ("backbone", "encoder", "param_head"):
        idx = torch.cat([torch.arange(a, b) for a, b in part_of[part]])
        a, b = g[idx], gv[idx]
        line += f" {part} {float(a @ b / (a.norm() * b.norm() + 1e-30)):+.3f}"
    print(line, flush=True)
