"""The weight average (`sahmr.engine.weight_average`, ``trainer.ema_decay``): the update against
the closed form in float64, the swap in and out, and the trainer scoring, saving and resuming
the average."""

from __future__ import annotations

import json

import pytest
import torch
from engine_testkit import compose_train, tiny_overrides, train_straight_and_resumed
from torch import nn

from sahmr.engine.assembly import train_from_config
from sahmr.engine.checkpoint import load_checkpoint
from sahmr.engine.trainer_config import TrainerConfig
from sahmr.engine.weight_average import WeightAverage


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def _perturb(net: nn.Module, gen: torch.Generator) -> None:
    """A stand-in for an optimiser step and a training forward (BatchNorm statistics move)."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
    net.train()
    net(torch.randn(8, 4, generator=gen))


def test_update_is_the_exponential_average_of_every_float_entry():
    net, gen, decay = _net(), torch.Generator().manual_seed(1), 0.9
    states = [{k: v.double().clone() for k, v in net.state_dict().items()}]
    avg = WeightAverage(net, decay)
    for _ in range(5):
        _perturb(net, gen)
        avg.update(net)
        states.append({k: v.double().clone() for k, v in net.state_dict().items()})
    n = len(states) - 1
    for k, v in avg.state_dict().items():
        if not v.is_floating_point():  # BatchNorm's step counter: copied, not averaged
            assert int(v) == int(states[-1][k]) == 5, k
            continue
        # avg_n = d^n x_0 + sum_i (1 - d) d^(n - i) x_i
        want = decay**n * states[0][k]
        for i in range(1, n + 1):
            want = want + (1 - decay) * decay ** (n - i) * states[i][k]
        torch.testing.assert_close(v.double(), want, rtol=1e-6, atol=1e-6, msg=k)
    assert set(avg.state_dict()) == {"0.weight", "0.bias", "1.weight", "1.bias",
                                     "1.running_mean", "1.running_var",
                                     "1.num_batches_tracked"}  # fmt: skip


def test_decay_zero_follows_the_weights_and_the_average_starts_at_them():
    net, gen = _net(), torch.Generator().manual_seed(2)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    avg = WeightAverage(net, 0.0)
    for k, v in avg.state_dict().items():
        assert torch.equal(v, start[k])
    _perturb(net, gen)
    avg.update(net)
    for k, v in net.state_dict().items():
        assert torch.equal(avg.state_dict()[k], v), k


def test_applied_swaps_the_average_in_and_restores_the_weights_in_place():
    net, gen = _net(), torch.Generator().manual_seed(3)
    avg = WeightAverage(net, 0.5)
    _perturb(net, gen)
    avg.update(net)
    own = {k: v.clone() for k, v in net.state_dict().items()}
    ids = [id(p) for p in net.parameters()]
    with avg.applied(net):
        for k, v in net.state_dict().items():
            assert torch.equal(v, avg.state_dict()[k]), k
        assert not torch.equal(net[0].weight, own["0.weight"])
    for k, v in net.state_dict().items():
        assert torch.equal(v, own[k]), k
    assert [id(p) for p in net.parameters()] == ids  # the optimiser's tensors are untouched
    with pytest.raises(RuntimeError, match="inside"):  # restored on the way out of an error
        with avg.applied(net):
            raise RuntimeError("inside")
    assert torch.equal(net[0].weight, own["0.weight"])


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, True, "0.9"])
def test_decay_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match="ema_decay"):
        TrainerConfig(ema_decay=bad)
    if not isinstance(bad, (bool, str)):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            WeightAverage(_net(), bad)


def test_loading_another_networks_average_is_refused():
    avg = WeightAverage(_net(), 0.9)
    with pytest.raises(KeyError, match="missing"):
        avg.load_state_dict({"0.weight": torch.zeros(3, 4)})


# ----------------------------------------------------------------------------- in the trainer

RUN = {"trainer.val_every_epochs": 0, "trainer.val_every_steps": 2, "trainer.max_steps": 4,
       "trainer.max_epochs": 4, "trainer.val_at_start": True, "trainer.best_metric": "g_mpve",
       "trainer.ckpt_every": 0}  # fmt: skip


def _val_rows(out):
    """Validation lines of a run, less their timing."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds_per_frame"}
            for r in rows if r.get("split") == "val"]  # fmt: skip


def _recording(trained):
    """on_trainer hook: record the trained weights after every optimiser step."""

    def hook(trainer):
        trained.append({k: v.double().clone() for k, v in trainer.method.state_dict().items()})
        average = trainer._average

        def record():
            average()
            trained.append({k: v.double().clone() for k, v in trainer.method.state_dict().items()})

        trainer._average = record

    return hook


def test_trainer_validates_saves_and_exports_the_average(tiny_dataset, test_configs, tmp_path):
    decay = 0.6
    trained: list[dict] = []
    out = tmp_path / "ema"
    cfg = compose_train(tiny_overrides(tiny_dataset, out, **RUN, **{"trainer.ema_decay": decay}),
                        test_configs)  # fmt: skip
    assert train_from_config(cfg, on_trainer=_recording(trained)).step == 4
    assert len(trained) == 5  # the start and four steps
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    for k, v in last["model_trained"].items():  # the optimiser's weights, for resuming
        assert torch.equal(v.double(), trained[-1][k]), k
    for k, v in last["model"].items():  # the average of the start and the four steps
        if not v.is_floating_point():
            continue
        want = decay**4 * trained[0][k]
        for i in range(1, 5):
            want = want + (1 - decay) * decay ** (4 - i) * trained[i][k]
        torch.testing.assert_close(v.double(), want, rtol=1e-5, atol=1e-6, msg=k)

    # decay 0: the average is the trained weights, so every score equals a run without one
    plain, zero = tmp_path / "plain", tmp_path / "zero"
    train_from_config(compose_train(tiny_overrides(tiny_dataset, plain, **RUN), test_configs))
    train_from_config(compose_train(
        tiny_overrides(tiny_dataset, zero, **RUN, **{"trainer.ema_decay": 0.0}), test_configs))
    assert _val_rows(zero) == _val_rows(plain)
    assert "model_trained" not in load_checkpoint(plain / "checkpoints" / "last.pt")

    # the scores are the average's: with decay 0.6 they differ from the trained weights' after
    # the first steps, and at step 0 (nothing trained yet) they are the same
    ema_rows, plain_rows = _val_rows(out), _val_rows(plain)
    assert [r["step"] for r in ema_rows] == [0, 2, 4]
    assert ema_rows[0]["g_mpve"] == plain_rows[0]["g_mpve"]
    assert ema_rows[-1]["g_mpve"] != plain_rows[-1]["g_mpve"]
    # best.pt holds the average of the step it scored best at
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    best_row = min(ema_rows, key=lambda r: r["g_mpve"])
    assert best["step"] == best_row["step"] and "model_trained" in best


def test_resuming_continues_the_average_bit_identically(tiny_dataset, test_configs, tmp_path):
    extra = {**RUN, "trainer.ema_decay": 0.7}
    a, b = train_straight_and_resumed(tiny_dataset, test_configs, tmp_path, extra, stop_at=2)
    assert a["step"] == b["step"] == 4
    for key in ("model", "model_trained"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert _val_rows(tmp_path / "straight")[-1] == _val_rows(tmp_path / "split")[-1]
