"""``trainer.frozen_batchnorm`` (`sahmr.engine.optimizers.freeze_batchnorm`): BatchNorm layers
under the named submodules normalise with their running statistics in training and never
update them, while their affine weights and everything else train."""

from __future__ import annotations

import pytest
import torch
from engine_testkit import compose_train, run_hydra_tool, tiny_overrides
from torch import nn

from sahmr.engine.assembly import train_from_config
from sahmr.engine.checkpoint import load_checkpoint
from sahmr.engine.optimizers import freeze_batchnorm
from sahmr.engine.trainer_config import TrainerConfig


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.ModuleDict({
        "a": nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)),
        "b": nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)),
        "c": nn.Linear(2, 2),
    })  # fmt: skip


def _forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net["c"](net["b"](net["a"](x)))


def test_only_the_named_submodules_batchnorm_is_frozen_and_it_normalises_as_in_eval():
    net = _net()
    with torch.no_grad():  # running statistics unlike any batch's
        net["a"][1].running_mean.fill_(0.5)
        net["a"][1].running_var.fill_(2.0)
    net.train()
    assert freeze_batchnorm(net, ["a"]) == 1
    assert not net["a"][1].training and net["a"][0].training and net["b"][1].training
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    mean_b = net["b"][1].running_mean.clone()
    with torch.no_grad():
        got = net["a"](x)
        ref = (net["a"][0](x) - 0.5) / torch.sqrt(torch.tensor(2.0) + net["a"][1].eps)
        ref = ref * net["a"][1].weight + net["a"][1].bias
    torch.testing.assert_close(got, ref)
    _forward(net, x)
    assert torch.equal(net["a"][1].running_mean, torch.full((3,), 0.5))  # frozen
    assert not torch.equal(net["b"][1].running_mean, mean_b)  # still learning its statistics
    out = _forward(net, x).sum()
    out.backward()
    assert net["a"][1].weight.grad is not None and net["a"][1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("paths", "match"), [(["nope"], "no submodule"),
                                              (["c"], "no BatchNorm")])  # fmt: skip
def test_a_path_without_batchnorm_is_refused(paths, match):
    with pytest.raises(ValueError, match=match):
        freeze_batchnorm(_net(), paths)


def test_config_takes_a_list():
    assert TrainerConfig(frozen_batchnorm=["mesh_net"]).frozen_batchnorm == ("mesh_net",)
    assert TrainerConfig().frozen_batchnorm == ()


RUN = {"trainer.val_every_epochs": 0, "trainer.max_steps": 3, "trainer.max_epochs": 3,
       "trainer.ckpt_every": 0}  # fmt: skip


def test_trainer_keeps_the_statistics_and_trains_the_affine_weights(tiny_dataset, test_configs,
                                                                    tmp_path):  # fmt: skip
    start = {}

    def keep_start(trainer):
        start.update({k: v.clone() for k, v in trainer.method.state_dict().items()})

    frozen, plain = tmp_path / "frozen", tmp_path / "plain"
    cfg = compose_train(tiny_overrides(tiny_dataset, frozen, **RUN,
                                       **{"trainer.frozen_batchnorm": "[norm]"}),
                        test_configs)  # fmt: skip
    assert train_from_config(cfg, on_trainer=keep_start).step == 3
    end = load_checkpoint(frozen / "checkpoints" / "last.pt")["model"]
    for k in ("norm.running_mean", "norm.running_var", "norm.num_batches_tracked"):
        assert torch.equal(end[k], start[k]), k
    for k in ("norm.weight", "norm.bias", "conv.weight", "head.weight"):
        assert not torch.equal(end[k], start[k]), k

    train_from_config(compose_train(tiny_overrides(tiny_dataset, plain, **RUN), test_configs))
    moved = load_checkpoint(plain / "checkpoints" / "last.pt")["model"]
    assert not torch.equal(moved["norm.running_mean"], start["norm.running_mean"])


def test_trainer_refuses_a_path_without_batchnorm(tiny_dataset, test_configs, tmp_path):
    cfg = compose_train(tiny_overrides(tiny_dataset, tmp_path, **RUN,
                                       **{"trainer.frozen_batchnorm": "[head]"}),
                        test_configs)  # fmt: skip
    with pytest.raises(ValueError, match="no BatchNorm"):
        train_from_config(cfg)


@pytest.mark.parametrize("setting", ["trainer.frozen_batchnorm=[conv]",
                                     "trainer.grad_clip_groups=[nope]",
                                     "trainer.frozen_parameters=[nope]"])  # fmt: skip
def test_train_tool_reports_a_bad_submodule_path_in_one_line(
    setting, tiny_dataset, test_configs, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    args = [f"hydra.searchpath=[file://{test_configs}]",
            *tiny_overrides(tiny_dataset, run, **{"trainer.max_steps": 1}), setting]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        run_hydra_tool("train", args, monkeypatch)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: trainer.")
    assert not any(run.rglob("*"))  # nothing written (hydra makes the empty run folder)
