"""Test-time contact perturbation (sahmr.models.contact_perturbation) and its
tools/eval_checkpoint.py option."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from _mesh_net_cases import FakeRCNet, make_batch, tiny_head, tiny_mesh_net
from omegaconf import OmegaConf

from sahmr.models.contact_perturbation import (
    ContactPerturbation,
    PerturbedContacts,
    perturb_contacts,
)
from sahmr.models.sahmr import SAHMR

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _packed(counts=(4, 3, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    bidx = torch.cat([torch.full((n,), b) for b, n in enumerate(counts)])
    return torch.randn(bidx.numel(), 3, generator=g), torch.randint(1, 8, (bidx.numel(),)), bidx


def test_identity_drop_shuffle_and_jitter_against_hand_results():
    pts, reg, bidx = _packed()
    g = torch.Generator().manual_seed(0)
    same = perturb_contacts(pts, reg, bidx, 3, ContactPerturbation(), g)
    assert all(torch.equal(a, b) for a, b in zip(same, (pts, reg, bidx)))
    none = perturb_contacts(pts, reg, bidx, 3, ContactPerturbation(drop=1.0), g)
    assert none[0].shape == (0, 3) and none[1].numel() == 0 and none[2].numel() == 0
    shuffled = perturb_contacts(pts, reg, bidx, 3, ContactPerturbation(shuffle=True), g)
    assert torch.equal(shuffled[0], pts) and torch.equal(shuffled[2], (bidx + 1) % 3)
    jit = perturb_contacts(pts, reg, bidx, 3, ContactPerturbation(jitter_m=0.05), g)
    assert torch.equal(jit[2], bidx) and 0.0 < (jit[0] - pts).abs().max() < 0.5


def test_drop_fraction_is_statistically_right_and_inputs_untouched():
    pts, reg, bidx = _packed(counts=(4000, 4000))
    before = pts.clone()
    kept = perturb_contacts(pts, reg, bidx, 2, ContactPerturbation(drop=0.25),
                            torch.Generator().manual_seed(1))  # fmt: skip
    assert abs(kept[0].shape[0] / 8000 - 0.75) < 0.02
    assert torch.equal(pts, before)


@pytest.mark.parametrize("bad", [{"drop": 1.5}, {"drop": -0.1}, {"jitter_m": -1.0}])
def test_bad_settings_raise(bad):
    with pytest.raises(ValueError):
        ContactPerturbation(**bad)


def test_sahmr_sees_no_contacts_when_all_are_dropped():
    inputs, _ = make_batch()
    root = torch.tensor([[0.1, 0.2, 3.0], [-0.2, 0.0, 4.0]])
    bidx = torch.tensor([0, 0, 1, 1])
    rc = FakeRCNet(root, root[bidx] + 0.1, torch.tensor([1, 2, 5, 6]), bidx)
    model = SAHMR(rcnet=rc, mesh_net=tiny_mesh_net(param_head=tiny_head))
    base = model.predict(inputs)
    model.rcnet = PerturbedContacts(rc, ContactPerturbation(drop=1.0))
    dropped = model.predict(inputs)
    assert base.contact_points_cam.shape[0] == 4 and dropped.contact_points_cam.shape[0] == 0
    assert torch.allclose(dropped.root_cam, base.root_cam)  # the root is untouched
    assert not torch.allclose(dropped.verts_cam, base.verts_cam)  # the scene tokens mattered
    model.rcnet = PerturbedContacts(rc, ContactPerturbation(shuffle=True))
    moved = model.predict(inputs)  # frame 0 now holds frame 1's points and vice versa
    for b in (0, 1):
        got = moved.contact_points_cam[moved.contact_batch_idx == b]
        assert torch.equal(got, base.contact_points_cam[base.contact_batch_idx == 1 - b])


def test_eval_tool_refuses_bad_perturbation_in_one_line(capsys):
    spec = importlib.util.spec_from_file_location("eval_tool", TOOLS / "eval_checkpoint.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    cfg = OmegaConf.create({"contact_perturbation": {"drop": 2.0}})
    with pytest.raises(SystemExit) as exc:
        tool.contact_perturbation(cfg)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "contact_perturbation" in err[0] and "drop" in err[0]
    assert tool.contact_perturbation(OmegaConf.create({})) == ContactPerturbation()
