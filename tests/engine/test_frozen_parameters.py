"""``trainer.frozen_parameters`` (`sahmr.engine.optimizers.freeze_parameters`): the parameters
under the named submodules keep their values while the rest trains."""

from __future__ import annotations

import pytest
import torch
from engine_testkit import compose_train, tiny_overrides
from torch import nn

from sahmr.engine.assembly import train_from_config
from sahmr.engine.checkpoint import load_checkpoint
from sahmr.engine.optimizers import SubmodulePathError, freeze_parameters, longest_path_value
from sahmr.engine.trainer_config import TrainerConfig


def test_freezes_what_lies_under_the_path_and_nothing_else():
    net = nn.ModuleDict({"enc": nn.Linear(3, 3), "encoder": nn.Linear(3, 2)})
    assert freeze_parameters(net, ["enc"]) == 12
    assert [n for n, p in net.named_parameters() if not p.requires_grad] == ["enc.weight",
                                                                            "enc.bias"]  # fmt: skip
    with pytest.raises(SubmodulePathError, match="no parameter under 'dec'"):
        freeze_parameters(net, ["dec"])


def test_longest_path_decides():
    values = {"a": 1, "a.b": 2}
    assert longest_path_value("a.b.w", values) == 2
    assert longest_path_value("a.bc.w", values) == 1
    assert longest_path_value("c.w", values) is None


def test_config_takes_a_list():
    assert TrainerConfig(frozen_parameters=["x"]).frozen_parameters == ("x",)


def test_trainer_keeps_the_frozen_weights(tiny_dataset, test_configs, tmp_path):
    start = {}

    def keep_start(trainer):
        start.update({k: v.clone() for k, v in trainer.method.state_dict().items()})

    run = {"trainer.val_every_epochs": 0, "trainer.max_steps": 3, "trainer.max_epochs": 3,
           "trainer.frozen_parameters": "[conv]"}  # fmt: skip
    cfg = compose_train(tiny_overrides(tiny_dataset, tmp_path, **run), test_configs)
    assert train_from_config(cfg, on_trainer=keep_start).step == 3
    end = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    for k in ("conv.weight", "conv.bias"):
        assert torch.equal(end[k], start[k]), k
    assert not torch.equal(end["head.weight"], start["head.weight"])
