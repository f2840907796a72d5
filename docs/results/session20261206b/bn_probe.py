"""Does the mesh network's train-mode forward (BatchNorm batch statistics, dropout, query
masking) see other features than its eval-mode forward? Placed-vertex error (camera frame, mm)
of the shipped model on val frames under each mode; no weights change."""
import sys

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from sahmr.data.synthetic import SyntheticDataset
from sahmr.engine.checkpoint import load_method
from sahmr.engine.data import checkpoint_steps

ckpt, data = sys.argv[1], sys.argv[2]
every = int(sys.argv[3]) if len(sys.argv) > 3 else 5
cpu = torch.device("cpu")
model, cfg = load_method(ckpt, cpu)
model.rcnet.depth_hypotheses = ()
ds = SyntheticDataset(data, "val")
index = list(range(0, len(ds), every))
topology = instantiate(cfg.body).topology
BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
for m in model.modules():
    if isinstance(m, BN):
        m.momentum = 0.0  # batch statistics used in train mode, running ones never change

def set_mode(name):
    model.eval()
    mesh = model.mesh_net
    if name == "bn_train":
        for m in mesh.modules():
            if isinstance(m, BN):
                m.train()
    elif name == "dropout_train":
        for m in mesh.modules():
            if isinstance(m, nn.Dropout):
                m.train()
    elif name == "mesh_train":
        mesh.train()
    elif name == "mesh_train_bn_eval":
        mesh.train()
        for m in mesh.modules():
            if isinstance(m, BN):
                m.eval()

names = ["eval", "bn_train", "dropout_train", "mesh_train", "mesh_train_bn_eval"]
errs = {n: [] for n in names}
errs_free = {n: [] for n in names}
nbn = sum(isinstance(m, BN) for m in model.mesh_net.modules())
print("BatchNorm layers in the mesh network:", nbn)
torch.manual_seed(0)
with torch.no_grad():
    for step in checkpoint_steps(ds, index, cfg, topology, cpu, batch_size=16, desc="bn probe"):
        gt = step.frame_targets.verts_cam
        for n in names:
            set_mode(n)
            out = model(step.inputs)
            body = out.body.verts_rel.double() + out.root_cam.double()[:, None]
            errs[n].extend(((body - gt.double()).norm(dim=-1).mean(-1) * 1000).tolist())
            free = out.verts_cam.double()
            errs_free[n].extend(((free - gt.double()).norm(dim=-1).mean(-1) * 1000).tolist())
for n in names:
    print(f"{n:>20}: parametric body {np.mean(errs[n]):7.1f} mm "
          f"(median {np.median(errs[n]):.1f}); free-form {np.mean(errs_free[n]):7.1f}; "
          f"{len(errs[n])} frames")
