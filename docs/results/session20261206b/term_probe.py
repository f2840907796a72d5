"""Per loss term: how its gradient (train mode, train frames, the shipped weights) lines up
with the val metric's (placed parametric-vertex distance, eval mode, val frames)."""
import sys

import numpy as np
import torch
from hydra.utils import instantiate

from sahmr.data.synthetic import SyntheticDataset
from sahmr.engine.checkpoint import load_method
from sahmr.engine.data import checkpoint_steps

ckpt, data = sys.argv[1], sys.argv[2]
n_frames = int(sys.argv[3]) if len(sys.argv) > 3 else 64
cpu = torch.device("cpu")
torch.manual_seed(0)
model, cfg = load_method(ckpt, cpu)
model.rcnet.depth_hypotheses = ()
for p in model.rcnet.parameters():
    p.requires_grad_(False)
params = {n: p for n, p in model.mesh_net.named_parameters() if p.requires_grad}
loss_fn = instantiate(cfg.loss)
topology = instantiate(cfg.body).topology


def steps(split):
    ds = SyntheticDataset(data, split)
    idx = np.linspace(0, len(ds) - 1, n_frames).round().astype(int).tolist()
    return list(checkpoint_steps(ds, idx, cfg, topology, cpu, batch_size=16, desc=split,
                                 progress=False))


def vec():
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in params.values()])


def zero():
    for p in params.values():
        p.grad = None


val_b, tr_b = steps("val"), steps("train")
zero()
for st in val_b:
    model.eval()
    out = model(st.inputs)
    body = out.body.verts_rel + out.root_cam[:, None]
    dist = (body - st.frame_targets.verts_cam.to(body)).norm(dim=-1)
    (dist.mean() * 1000.0 / len(val_b)).backward()
gv = vec()
zero()
sums, values = {}, {}
for st in tr_b:
    model.eval()
    model.mesh_net.train()
    out = model(st.inputs, st.targets)
    lo = loss_fn(out, st.targets)
    names = [k for k, v in lo.terms.items() if torch.is_tensor(v) and v.requires_grad]
    for k in names:
        zero()
        (lo.terms[k] / len(tr_b)).backward(retain_graph=True)
        sums[k] = sums.get(k, 0) + vec()
        values[k] = values.get(k, 0.0) + float(lo.terms[k].detach()) / len(tr_b)
lr = 2e-5
total = sum(sums.values())
print(f"{'term':>16} {'value':>8} {'|g|':>9} {'cos(g,g_val)':>12} {'SGD mm':>9} {'sign mm':>8}")
for k, g in [*list(sums.items()), ("(sum)", total)]:
    cos = float(g @ gv / (g.norm() * gv.norm() + 1e-30))
    print(f"{k:>16} {values.get(k, float('nan')):8.4f} {float(g.norm()):9.4f} {cos:+12.3f} "
          f"{float(-lr * (g @ gv)):+9.4f} {float(-lr * (torch.sign(g) @ gv)):+8.3f}")
torch.save({"terms": sums, "g_val": gv, "values": values}, "/tmp/s29/term_grads.pt")
