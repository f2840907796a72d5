"""Is a training step on the lease's loss a step down the validation error? At the shipped
weights: gradients (mesh network only, RCNet frozen, no depth search) of
  val_metric  - mean placed parametric-vertex distance (the G-MPVE the ledger ranks by) on val
                frames, eval mode;
  tr_metric   - the same metric on train frames, eval mode;
  tr_loss_tm  - the lease's training loss (SAHMRLoss, the checkpoint's weights) on train frames,
                train mode (BatchNorm batch statistics, dropout, query masking);
  tr_loss_em  - the same loss on train frames, eval mode;
  tr_param    - the parametric terms of that loss alone, train mode;
and the first-order change of val_metric (mm) for an SGD step and an Adam-like first step
(sign of the gradient) of each, at the same lr, per part of the network."""
import torch
from hydra.utils import instantiate
from probe_setup import load_probe, placed_distance_mm

probe = load_probe()
model, cfg, params = probe.model, probe.cfg, probe.params
n_frames = probe.frames
loss_fn = instantiate(cfg.loss)


def set_mode(train):
    model.eval()
    if train:
        model.mesh_net.train()


def grad_of(fn, batches, train):
    probe.zero_grad()
    total = 0.0
    for st in batches:
        set_mode(train)
        out = model(st.inputs, st.targets if train else None)
        val = fn(out, st) / len(batches)
        val.backward()
        total += float(val)
    return {n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for n, p in params.items()}, total


def metric(out, st):
    return placed_distance_mm(out, st)


def full_loss(out, st):
    return loss_fn(out, st.targets).total


def param_loss(out, st):
    lo = loss_fn(out, st.targets)
    return sum(v for k, v in lo.terms.items() if k.startswith("param_"))


val_b, tr_b = probe.steps("val"), probe.steps("train")
g = {}
g["val_metric"], v0 = grad_of(metric, val_b, False)
g["tr_metric"], _ = grad_of(metric, tr_b, False)
g["tr_loss_tm"], _ = grad_of(full_loss, tr_b, True)
g["tr_loss_em"], _ = grad_of(full_loss, tr_b, False)
g["tr_param"], _ = grad_of(param_loss, tr_b, True)
print(f"val metric at the shipped weights: {v0:.1f} mm over {n_frames} frames")

parts = ["backbone", "encoder", "param_head", "(all)"]


def flat(gr, part):
    keys = [k for k in gr if part == "(all)" or k.startswith(part + ".")]
    return torch.cat([gr[k].flatten() for k in keys])


gv = g["val_metric"]
lr = 2e-5
print(f"first-order change of the val metric (mm) for one step at lr {lr:g} (SGD: -lr*g; "
      "Adam's first step: -lr*sign(g)), and cos(g, g_val)")
for name in ["tr_metric", "tr_loss_tm", "tr_loss_em", "tr_param"]:
    for part in parts:
        a, b = flat(g[name], part), flat(gv, part)
        cos = float(a @ b / (a.norm() * b.norm() + 1e-30))
        sgd = float(-lr * (a @ b))
        sign = float(-lr * (torch.sign(a) @ b))
        print(f"{name:>11} {part:>11}: cos {cos:+.3f}  SGD {sgd:+.4f}  sign-step {sign:+.4f}  "
              f"({a.numel()} params)")
