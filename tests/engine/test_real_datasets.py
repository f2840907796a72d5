"""RICH and PROX end to end: fake trees in the released layouts -> two training steps -> eval.

The trees, the fake SMPL-X body and the transfer matrix come from `fake_real_datasets`
(no licensed model needed). Each run trains SA-HMR small for two steps on CPU through
tools/train.py with ``data=rich`` / ``data=prox`` and evaluates the checkpoint through
tools/eval_checkpoint.py (scene metrics against the scan).
"""

from __future__ import annotations

import json

import fake_real_datasets as fake
import numpy as np
import pytest
from engine_testkit import run_hydra_tool

from sahmr.data.prox import ProxDataset
from sahmr.data.rich import RichDataset
from sahmr.data.smplx_targets import BodyMismatchError, SmplTargets, check_body_hash
from sahmr.engine.checkpoint import load_checkpoint


@pytest.fixture(autouse=True)
def _fake_smplx(monkeypatch):
    import sahmr.data.smplx_targets as targets

    monkeypatch.setattr(targets, "SmplxPoser", fake.FakeSmplxPoser)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    return {
        "rich": fake.make_rich(root / "rich"),
        "prox": fake.make_prox(root / "prox"),
        "transfer": fake.write_transfer(root / "smplx2smpl.npz"),
    }


def _data_overrides(name: str, trees) -> list[str]:
    return [
        f"data={name}",
        f"data.root={trees[name]}",
        "data.allow_pickle=true",
        f"data.targets.transfer={trees['transfer']}",
        f"data.targets.smplx_model_dir={trees[name]}",  # any folder: the poser is faked
    ]


def _train(name, trees, tmp_path, monkeypatch, extra=(), exp="sahmr_small"):
    run = tmp_path / f"run_{name}"
    overrides = [
        f"exp={exp}", *_data_overrides(name, trees), "trainer=tiny", "device=cpu",
        f"paths.output_dir={run}", "max_points_per_scene=20000", "trainer.max_steps=2",
        "trainer.batch_size=2", "trainer.val_batch_size=2", *extra,
    ]  # fmt: skip
    if name == "prox":  # one recording: the same frames serve as the validation split
        overrides.append("data_val.split=val")
    run_hydra_tool("train", overrides, monkeypatch)
    return run


def _evaluate(name, trees, ckpt, tmp_path, monkeypatch, split, protocol="default", extra=()):
    out = tmp_path / f"eval_{name}"
    run_hydra_tool(
        "eval_checkpoint",
        [f"checkpoint={ckpt}", *_data_overrides(name, trees), *extra, f"split={split}",
         f"out={out}", "device=cpu", "num_workers=0", "batch_size=2", "sdf_voxel_size=0.1",
         f"sdf_cache_dir={tmp_path / 'sdf'}", "progress=false", f"protocol={protocol}"],
        monkeypatch,
    )  # fmt: skip
    return json.loads((out / "metrics.json").read_text())


def test_rich_train_two_steps_and_evaluate(trees, tmp_path, monkeypatch):
    run = _train("rich", trees, tmp_path, monkeypatch)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["metrics"]["last"]["frames"] == 2  # RICH val: 2 frames
    from sahmr.body import BodyModel

    assert ckpt["body_hash"] == BodyModel().content_hash  # the hash travels with the weights
    metrics = _evaluate("rich", trees, run / "checkpoints" / "last.pt", tmp_path, monkeypatch,
                        "test", protocol="sahmr")  # fmt: skip
    assert metrics["frames"] == 2 and metrics["method"] == "SAHMR"
    for key in ("mpjpe", "g_mpve", "pene", "confe"):
        assert np.isfinite(metrics["metrics"][key]["value"])
    assert metrics["metrics"]["mpjpe"]["value"] > 0
    assert metrics["metrics"]["pene"]["unit"].startswith("m (sum")  # the official unit


@pytest.mark.slow
def test_prox_train_two_steps_and_evaluate(trees, tmp_path, monkeypatch):
    run = _train("prox", trees, tmp_path, monkeypatch)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 2
    # the official PROX protocol: no ground-truth contact, so ConFE = PenE
    metrics = _evaluate("prox", trees, run / "checkpoints" / "last.pt", tmp_path, monkeypatch,
                        "test", "sahmr", ["data.contact_labels=false"])  # fmt: skip
    m = metrics["metrics"]
    assert metrics["frames"] == 4 and np.isfinite(m["pene"]["value"])
    assert m["confe"]["value"] == pytest.approx(m["pene"]["value"])


def test_training_samples_match_the_known_body(trees, tmp_path):
    """Targets equal the body posed directly (the matrix undoes the fake SMPL-X order); the
    box is the body's projection; contact labels follow each dataset's rule."""
    targets = SmplTargets(trees["transfer"], smplx_vertices_fn=fake.FakeSmplx())
    rich = RichDataset(trees["rich"], "train", allow_pickle=True, targets=targets)
    prox = ProxDataset(trees["prox"], allow_pickle=True, targets=targets)
    assert rich.body_hash == prox.body_hash == targets.body_hash
    for ds, shift in ((rich, 0.0), (prox, 0.0)):
        s = ds[0]
        want = fake.pose_smpl(fake.world_params(shift))
        np.testing.assert_allclose(s.vertices_world, want, atol=1e-4)
        np.testing.assert_allclose(s.joints_world, targets.J_regressor @ want, atol=1e-4)
        assert s.extra["bbox_source"] == "projection" and s.extra["body_hash"] == ds.body_hash
        cam = want @ s.T_w2c[:3, :3].T + s.T_w2c[:3, 3]
        uv = cam[:, :2] / cam[:, 2:] * [s.K[0, 0], s.K[1, 1]] + s.K[:2, 2]
        np.testing.assert_allclose(s.bbox, [*uv.min(0), *uv.max(0)], atol=1e-3)
        on = s.vertex_contact > 0
        assert on.any() and set(np.unique(s.vertex_contact[on])) <= {1, 2}  # feet only
        assert len(s.contact_points_world) == on.sum()
        assert np.abs(s.contact_points_world[:, 2]).max() < 1e-4  # on the floor top
    # RICH: its own labels (z < 3 cm) x the body's regions; PROX: 7 cm by distance.
    regions = targets.vertex_region
    want_rich = np.where(fake.hsc_contact(rich[0].vertices_world) > 0, regions, 0)
    np.testing.assert_array_equal(rich[0].vertex_contact, want_rich)
    s = prox[0]
    want_prox = np.where((s.vertices_world[:, 2] < 0.07) & (regions > 0), regions, 0)
    np.testing.assert_array_equal(s.vertex_contact, want_prox)
    assert len(rich.scene_points["Gym"]) > 1000 and len(prox.scene_points) == 1
    official = ProxDataset(trees["prox"], allow_pickle=True, targets=targets, contact_labels=False)
    listed = tmp_path / "test_frames.txt"  # e.g. the official RICH test list
    listed.write_text(f"{fake.RICH_SEQS['train']}/00/00002\n")
    only = RichDataset(trees["rich"], "train", allow_pickle=True, frame_list=listed)
    assert [f.frame_id for f in only.frames] == [2]
    assert official[0].vertex_contact is None and len(official[0].contact_points_world) > 0


def test_body_mismatch_is_refused(trees, tmp_path, monkeypatch, capsys):
    class Other:
        body_hash = "0" * 64

    with pytest.raises(BodyMismatchError, match="built on body 000000000000"):
        check_body_hash(Other(), "f" * 64)
    check_body_hash(object(), "f" * 64)  # datasets without a body hash (generated data) pass
    from sahmr.body import BodyModel

    body = BodyModel()
    other = tmp_path / "other_body.npz"
    arrays = {k: np.asarray(v) for k, v in body._data.items()}
    arrays["v_template"] = arrays["v_template"] * 1.01
    np.savez(other, **arrays)
    with pytest.raises(SystemExit) as exc:  # refused by tools/train.py before any work
        _train("rich", trees, tmp_path, monkeypatch, [f"data.targets.body_model_path={other}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "are different bodies" in err
    run = tmp_path / "run_rich"  # (in-process, hydra made the folder; the CLI checks first)
    assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()
    # the engine's own check (for datasets built without the tool)
    with pytest.raises(BodyMismatchError, match="built on body"):
        check_body_hash(
            RichDataset(
                trees["rich"], "train", allow_pickle=True,
                targets=SmplTargets(trees["transfer"], smplx_vertices_fn=fake.FakeSmplx(),
                                    body_model_path=other),
            ),
            body.content_hash,
        )  # fmt: skip
    # fine-tuning from weights trained on another body
    from sahmr.engine.checkpoint import save_checkpoint

    foreign = save_checkpoint(tmp_path / "foreign.pt", model={}, config="", body_hash="0" * 64)
    with pytest.raises(SystemExit) as exc:
        _train("rich", trees, tmp_path, monkeypatch, [f"init.weights={foreign}"])
    assert exc.value.code == 2
    assert "was trained on body 000000000000" in capsys.readouterr().err


@pytest.mark.slow
def test_rich_finetune_from_the_synthetic_checkpoint(trees, tmp_path, monkeypatch):
    """The documented fine-tuning command (docs/datasets.md): exp=sahmr_small_e2e from the
    shipped synthetic-data checkpoint, on RICH."""
    from sahmr.inference.method import bundled_checkpoint

    shipped = bundled_checkpoint("sahmr")
    run = _train("rich", trees, tmp_path, monkeypatch, [f"init.weights={shipped}"],
                 exp="sahmr_small_e2e")  # fmt: skip
    start = load_checkpoint(shipped)["model"]
    trained = load_checkpoint(run / "checkpoints" / "last.pt")
    assert trained["step"] == 2
    model = trained["model"]
    moved = [k for k in start if start[k].is_floating_point() and k in model
             and not np.array_equal(model[k].numpy(), start[k].float().numpy())]  # fmt: skip
    assert any(k.startswith("rcnet.") for k in moved) and any(
        k.startswith("mesh_net.") for k in moved
    )
