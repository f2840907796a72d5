"""Per loss term: how its gradient (train mode, train frames, the shipped weights) lines up
with the val metric's (placed parametric-vertex distance, eval mode, val frames)."""
import torch
from hydra.utils import instantiate
from probe_setup import load_probe, placed_distance_mm

probe = load_probe()
model, cfg = probe.model, probe.cfg
loss_fn = instantiate(cfg.loss)
vec, zero = probe.grad_vector, probe.zero_grad

val_b, tr_b = probe.steps("val"), probe.steps("train")
zero()
for st in val_b:
    model.eval()
    (placed_distance_mm(model(st.inputs), st) / len(val_b)).backward()
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
