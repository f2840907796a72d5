"""sahmr.engine.voter_refit and tools/refit_voter.py: RCNet's voter refitted for test-time ROIs."""

from __future__ import annotations

import json

import pytest
import torch
from engine_testkit import REPO, load_tool

from sahmr.engine.voter_refit import (
    VOTER_MODULES,
    VoterRefitSettings,
    deployed_centres,
    endless,
    rcnet_loss_config,
    refit_voter,
    training_centres,
    val_root_error_mm,
    voter_parameters,
)


def test_training_centres_by_hand():
    gt = torch.tensor([[0.0, 0.0, 4.0], [3.0, 0.0, 4.0], [0.5, -0.2, 2.0]], dtype=torch.float64)
    coarse = gt + torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    every = VoterRefitSettings(coarse_fraction=1.0)
    assert torch.equal(training_centres(gt, coarse, every, gen), coarse)
    exact = VoterRefitSettings(coarse_fraction=0.0, lateral_std=0.0, depth_std_max=0.0)
    assert torch.equal(training_centres(gt, coarse, exact, gen), gt)

    # depth noise alone moves each centre along its own viewing ray, never across it
    along = VoterRefitSettings(coarse_fraction=0.0, lateral_std=0.0, depth_std_max=0.4)
    shifts = torch.stack([training_centres(gt, coarse, along, gen) - gt for _ in range(200)])
    ray = gt / gt.norm(dim=-1, keepdim=True)
    across = torch.linalg.cross(shifts, ray.expand_as(shifts), dim=-1).norm(dim=-1)
    assert float(across.max()) < 1e-12
    size = (shifts * ray).sum(-1)
    # std uniform in [0, 0.4]: E[s^2] = 0.4^2 / 3 -> rms 0.23 m
    assert 0.18 < float(size.pow(2).mean().sqrt()) < 0.28
    # the mix: about a third of the frames exactly on the coarse root
    mixed = VoterRefitSettings()
    hits = sum(int((training_centres(gt, coarse, mixed, gen) == coarse).all(-1).sum())
               for _ in range(300))  # fmt: skip
    assert 0.28 < hits / 900 < 0.39


@pytest.fixture(scope="module")
def shipped_rcnet_steps(tiny_dataset, shipped_checkpoint):
    """The shipped SA-HMR, its RCNet loss, and prepared train/val steps of the tiny set."""
    from hydra.utils import instantiate

    from sahmr.data.synthetic import SyntheticDataset
    from sahmr.engine.checkpoint import load_method
    from sahmr.engine.data import checkpoint_steps

    model, cfg = load_method(shipped_checkpoint)
    topology = instantiate(cfg.body).topology
    cpu = torch.device("cpu")

    def steps(split: str) -> list:
        data = SyntheticDataset(tiny_dataset, split)
        return list(checkpoint_steps(data, range(len(data)), cfg, topology, cpu, batch_size=4,
                                     progress=False))  # fmt: skip

    loss_fn = instantiate(rcnet_loss_config(cfg, REPO / "configs" / "loss" / "rcnet.yaml"))
    return model, loss_fn, steps("train"), steps("val")


def test_refit_trains_the_voter_only_and_keeps_the_best(shipped_rcnet_steps):
    model, loss_fn, train, val = shipped_rcnet_steps
    rcnet = model.rcnet
    before = {k: v.clone() for k, v in rcnet.state_dict().items()}
    grads_before = {n: p.requires_grad for n, p in rcnet.named_parameters()}
    voter = {id(p) for p in voter_parameters(rcnet)}
    voter_names = {n for n, p in rcnet.named_parameters() if id(p) in voter}
    assert voter_names and all(n.split(".")[0] in VOTER_MODULES for n in voter_names)
    assert not any(n.startswith(("backbone", "neck", "depth_head", "heatmap_head"))
                   for n in voter_names)  # fmt: skip

    settings = VoterRefitSettings(steps=3, lr=3e-3, val_every=1, seed=1)
    calls = []

    def on_best(row):  # called while the model holds the improved weights
        calls.append((row["step"], row["val_mm"], val_root_error_mm(rcnet, val)))

    report = refit_voter(rcnet, loss_fn, endless(lambda epoch: train), val, settings,
                         on_best=on_best)  # fmt: skip
    running = report["start_val_mm"]
    for _step, val_mm, now in calls:
        assert val_mm < running and now == pytest.approx(val_mm, rel=1e-6)
        running = val_mm
    assert [c[0] for c in calls][-1:] == ([report["best_step"]] if report["best_step"] else [])
    assert [row["step"] for row in report["history"]] == [1, 2, 3]
    assert all({"loss", "offset", "root", "contact", "val_mm"} <= set(r) for r in report["history"])
    vals = [report["start_val_mm"]] + [r["val_mm"] for r in report["history"]]
    assert report["best_val_mm"] == min(vals)
    # the weights kept are the best ones: scoring them again gives the same error
    assert val_root_error_mm(rcnet, val) == pytest.approx(report["best_val_mm"], rel=1e-6)
    # nothing outside the voter moved, BatchNorm statistics included
    after = rcnet.state_dict()
    for k, v in before.items():
        if k.split(".")[0] in VOTER_MODULES and "running" not in k and "num_batches" not in k:
            continue
        assert torch.equal(after[k], v), k
    assert {n: p.requires_grad for n, p in rcnet.named_parameters()} == grads_before

    # with a large step the voter does change, and the step it reports is the one it kept
    if report["best_step"] == 0:
        assert all(torch.equal(after[k], v) for k, v in before.items())
    else:
        assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("unet"))
    rcnet.load_state_dict(before)


def test_val_error_is_the_placed_vote_of_rcnet(shipped_rcnet_steps):
    model, _, _, val = shipped_rcnet_steps
    errs = []
    with torch.no_grad():
        for step in val:
            fmap, *_, coarse = model.rcnet.image_stage(step.inputs)
            root = model.rcnet.vote_from(step.inputs, fmap, coarse, coarse).root_cam
            for _ in range(model.rcnet.roi_refinements):
                root = model.rcnet.vote_from(step.inputs, fmap, root, root).root_cam
            errs += (1000 * (root - step.targets.root_cam).norm(dim=-1)).tolist()
    assert val_root_error_mm(model.rcnet, val) == pytest.approx(sum(errs) / len(errs), rel=1e-5)


def test_tool_writes_a_checkpoint_with_only_the_voter_changed(
    tiny_dataset, tmp_path, capsys, shipped_checkpoint
):
    from sahmr.engine.checkpoint import load_method

    shipped = shipped_checkpoint
    tool = load_tool("refit_voter")
    out = tmp_path / "voter.pt"
    assert tool.main([str(shipped), str(tiny_dataset), str(out), "--steps", "2", "--batch", "4",
                      "--val-frames", "4", "--val-every", "1", "--lr", "3e-3"]) == 0  # fmt: skip
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["val_frames"] == 4 and len(report["history"]) == 2
    new, _ = load_method(out)
    old, _ = load_method(shipped)
    new_sd, old_sd = new.state_dict(), old.state_dict()
    assert new_sd.keys() == old_sd.keys()
    for k in new_sd:
        if not k.startswith("rcnet.") or k.split(".")[1] not in VOTER_MODULES:
            # the shipped int8 weights come back as the same floats
            assert torch.allclose(new_sd[k].float(), old_sd[k].float(), atol=1e-6), k
    capsys.readouterr()


@pytest.mark.parametrize("args, message", [
    (["missing.pt", "DATA", "OUT"], "no such checkpoint"),
    (["SHIPPED", "nowhere", "OUT"], "not a generated dataset"),
    (["SHIPPED", "DATA", "SHIPPED"], "is the input checkpoint"),
    (["SHIPPED", "DATA", "OUT", "--steps", "0"], "--steps must be >= 1"),
    (["SHIPPED", "DATA", "OUT", "--coarse-fraction", "1.5"], "--coarse-fraction"),
])  # fmt: skip
def test_tool_bad_input_is_one_line_exit_2(args, message, tiny_dataset, tmp_path, capsys):
    from sahmr.inference.method import bundled_checkpoint

    out = tmp_path / "voter.pt"
    names = {"SHIPPED": str(bundled_checkpoint("sahmr")), "DATA": str(tiny_dataset),
             "OUT": str(out)}  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        load_tool("refit_voter").main([names.get(x, x) for x in args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_deployed_centres_are_where_rcnet_votes_from(shipped_rcnet_steps):
    """The last ROI of RCNet's own forward, for 0 and 2 refinements."""
    model, loss_fn, train, _ = shipped_rcnet_steps
    rcnet, own = model.rcnet, model.rcnet.roi_refinements
    for r in (0, 2):
        rcnet.roi_refinements = r
        with torch.no_grad():
            out = rcnet(train[0].inputs)
            fmap, *_, coarse = rcnet.image_stage(train[0].inputs)
            centre = deployed_centres(rcnet, train[0].inputs, fmap, coarse)
        assert torch.allclose(centre, out.roi_centre_cam, atol=1e-6)
        if r == 0:
            assert torch.equal(centre, coarse)
    rcnet.roi_refinements = own
    with pytest.raises(ValueError, match="centring"):
        VoterRefitSettings(centring="ground_truth")
    before = {k: v.clone() for k, v in rcnet.state_dict().items()}
    settings = VoterRefitSettings(steps=1, lr=3e-3, centring="deployed")
    report = refit_voter(rcnet, loss_fn, endless(lambda epoch: train), None, settings)
    assert report["best_step"] == 1 and report["history"][0]["root"] > 0
    assert any(not torch.equal(rcnet.state_dict()[k], before[k]) for k in before
               if k.startswith("unet"))  # fmt: skip
    rcnet.load_state_dict(before)


def test_rcnet_loss_config_is_the_checkpoints_own_or_the_default_with_its_body():
    """A checkpoint fine-tuned with RCNet frozen (the shipped run 19) stores no RCNet loss; its
    voter refit then trains with the repository's default, built on the checkpoint's body."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sahmr.losses.rcnet import RCNetLoss

    default = REPO / "configs" / "loss" / "rcnet.yaml"
    body = dict(OmegaConf.load(REPO / "configs" / "body" / "license_free.yaml"))
    frozen = OmegaConf.create({"body": body, "loss": {"mesh": 1.0}})
    picked = rcnet_loss_config(frozen, default)
    assert picked._target_ == "sahmr.losses.rcnet.RCNetLoss"
    assert OmegaConf.to_container(picked.vertex_region.body, resolve=True) == body
    assert picked.offset_weight == OmegaConf.load(default).offset_weight
    own = OmegaConf.create({"body": body, "loss": {"rcnet_loss": {"_target_": "x.Y", "w": 2.0}}})
    assert rcnet_loss_config(own, default) == own.loss.rcnet_loss
    assert isinstance(instantiate(rcnet_loss_config(frozen, default)), RCNetLoss)
