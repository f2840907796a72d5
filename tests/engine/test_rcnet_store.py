"""A frozen RCNet's outputs stored once per sample (`sahmr.engine.rcnet_store`,
``loader.rcnet_once``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from engine_testkit import compose_train

from sahmr.body.model import BodyModel
from sahmr.data.augment import AugmentConfig
from sahmr.data.memory import MemoryDataConfig, ShardStream
from sahmr.engine import rcnet_store
from sahmr.engine.assembly import train_from_config
from sahmr.engine.memory_data import MemoryStepPreparer
from sahmr.engine.rcnet_store import UNCAPPED_BATCHES, RCNetStore
from sahmr.records import RootContacts


class _FakeSAHMR:
    """Outputs that depend on the sample index only: sample i has i % 4 contact points."""

    rcnet = object()
    freeze_rcnet = True

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    @staticmethod
    def output_of(i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = i % 4
        root = torch.tensor([i, -i, 2.0 * i])
        pts = torch.arange(3 * n, dtype=torch.float32).reshape(n, 3) + 100.0 * i
        reg = torch.arange(1, n + 1) % 7 + 1
        return root, pts, reg

    def rcnet_root_contacts(self, inputs: torch.Tensor) -> RootContacts:
        ids = inputs.tolist()  # the fake "inputs" are the sample indices themselves
        self.calls.append(ids)
        outs = [self.output_of(i) for i in ids]
        # frames' points interleaved (not grouped by frame), as nothing promises grouping
        bidx = torch.cat([torch.full((o[1].shape[0],), m) for m, o in enumerate(outs)]).long()
        pts = torch.cat([o[1] for o in outs])
        reg = torch.cat([o[2] for o in outs])
        perm = torch.randperm(bidx.numel())
        return RootContacts(torch.stack([o[0] for o in outs]), pts[perm], reg[perm], bidx[perm])


def _reference(indices: list[int]) -> RootContacts:
    """The slow, obvious answer: per sample, in batch order."""
    outs = [_FakeSAHMR.output_of(i) for i in indices]
    return RootContacts(
        root_cam=torch.stack([o[0] for o in outs]),
        contact_points_cam=torch.cat([o[1] for o in outs]),
        contact_point_region=torch.cat([o[2] for o in outs]),
        contact_batch_idx=torch.cat(
            [torch.full((o[1].shape[0],), b) for b, o in enumerate(outs)]
        ).long(),
    )


def _sorted_within_frames(rc: RootContacts) -> tuple[torch.Tensor, torch.Tensor]:
    """Points and regions ordered by (frame, point value): compare regardless of the order
    inside a frame."""
    key = rc.contact_batch_idx.double() * 1e7 + rc.contact_points_cam[:, 0].double()
    order = torch.argsort(key)
    return rc.contact_points_cam[order], rc.contact_point_region[order]


def test_store_serves_what_was_computed_and_computes_each_sample_once():
    torch.manual_seed(0)
    model = _FakeSAHMR()
    store = RCNetStore(model, "cpu")
    batches = [[5, 1, 6, 2], [1, 9, 5, 0], [13, 2, 9, 7, 6], [0, 1, 2, 5, 6, 7, 9, 13]]
    for batch in batches:
        got = store.given(torch.tensor(batch), lambda idx: idx)
        want = _reference(batch)
        torch.testing.assert_close(got.root_cam, want.root_cam)
        assert torch.equal(got.contact_batch_idx, want.contact_batch_idx)
        for a, b in zip(_sorted_within_frames(got), _sorted_within_frames(want), strict=True):
            torch.testing.assert_close(a, b, check_dtype=False)
        assert got.contact_point_region.dtype == torch.int64
    # only the samples not seen before were computed, each once
    assert model.calls == [[1, 2, 5, 6], [0, 9], [7, 13]]
    assert store.computed == len(store) == 8 and store.served == sum(map(len, batches))
    assert store.used == sum(i % 4 for i in {0, 1, 2, 5, 6, 7, 9, 13})


def _filled_store(n: int, **kw) -> RCNetStore:
    """A store of the fake model holding samples 0..n-1."""
    model = _FakeSAHMR()
    store = RCNetStore(model, "cpu", **kw)
    ids = torch.arange(n)
    store.add(ids, model.rcnet_root_contacts(ids))
    return store


def test_limit_new_keeps_the_first_new_samples_and_swaps_the_rest_for_stored_ones():
    """Against the slow answer, sample by sample: stored samples stay where they are, the
    first ``new_per_step`` new ones too, and every later new one becomes a stored sample."""
    B, cap = 8, 2
    batch = torch.tensor([900, 3, 901, 902, 17, 903, 904, 40])
    store = _filled_store(UNCAPPED_BATCHES * B, new_per_step=cap, seed=5)
    got = store.limit_new(batch)
    assert got.shape == batch.shape and got.dtype == torch.int64
    kept_new = 0
    for was, now in zip(batch.tolist(), got.tolist(), strict=True):
        if was < UNCAPPED_BATCHES * B:  # stored: unchanged
            assert now == was
        elif kept_new < cap:  # new, within the cap: unchanged
            assert now == was
            kept_new += 1
        else:  # new, over the cap: some stored sample
            assert 0 <= now < UNCAPPED_BATCHES * B
    assert store.swapped == 3  # 902, 903, 904
    # the draw follows the seed
    again = _filled_store(UNCAPPED_BATCHES * B, new_per_step=cap, seed=5).limit_new(batch)
    assert torch.equal(got, again)
    # a batch within the cap, or with nothing new, is returned as it came
    assert torch.equal(store.limit_new(batch[:3]), batch[:3])
    assert torch.equal(store.limit_new(torch.tensor([1, 2, 3])), torch.tensor([1, 2, 3]))


def test_limit_new_leaves_batches_alone_without_a_cap_or_before_the_store_fills():
    batch = torch.tensor([900, 901, 902, 903])
    uncapped = _filled_store(UNCAPPED_BATCHES * 4)
    assert torch.equal(uncapped.limit_new(batch), batch) and uncapped.swapped == 0
    early = _filled_store(UNCAPPED_BATCHES * 4 - 1, new_per_step=1)
    assert torch.equal(early.limit_new(batch), batch) and early.swapped == 0
    with pytest.raises(ValueError, match="rcnet_new_per_step"):
        RCNetStore(_FakeSAHMR(), "cpu", new_per_step=-1)


def test_memory_config_checks_the_cap():
    assert MemoryDataConfig(rcnet_once=True, rcnet_new_per_step=24).rcnet_new_per_step == 24
    with pytest.raises(ValueError, match="needs rcnet_once"):
        MemoryDataConfig(rcnet_new_per_step=24)
    with pytest.raises(ValueError, match=">= 0"):
        MemoryDataConfig(rcnet_once=True, rcnet_new_per_step=-1)


@pytest.mark.parametrize("bf16", [False, True])
def test_store_fills_at_the_training_steps_precision(bf16):
    """RCNet fills the store under the step's bfloat16 autocast when asked (the trainer asks
    on CUDA), and in float32 otherwise; what it stores is float32 either way."""
    seen: list[tuple[bool, torch.dtype]] = []

    class Records(_FakeSAHMR):
        def rcnet_root_contacts(self, inputs):
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return super().rcnet_root_contacts(inputs)

    store = RCNetStore(Records(), "cpu", bf16=bf16)
    got = store.given(torch.tensor([3, 1]), lambda idx: idx)
    assert [enabled for enabled, _ in seen] == [bf16]  # one fill, autocast as asked
    if bf16:
        assert seen[0][1] == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")  # the autocast ends with the filling
    assert got.root_cam.dtype == torch.float32
    assert torch.equal(got.root_cam, _reference([3, 1]).root_cam)


def test_training_config_autocasts_on_cuda_only():
    from sahmr.engine.trainer_config import TrainerConfig

    assert TrainerConfig(bf16=True).autocast_bf16("cuda:0")
    assert not TrainerConfig(bf16=True).autocast_bf16("cpu")
    assert not TrainerConfig(bf16=False).autocast_bf16(torch.device("cuda"))


def test_store_refuses_a_model_without_a_frozen_rcnet():
    class Trains(_FakeSAHMR):
        freeze_rcnet = False

    with pytest.raises(ValueError, match="frozen RCNet"):
        RCNetStore(Trains(), "cpu")


@pytest.fixture(scope="module")
def shipped_model():
    from sahmr.engine.checkpoint import load_method
    from sahmr.inference.method import bundled_checkpoint

    model, _ = load_method(bundled_checkpoint("sahmr"), device="cpu")
    assert model.rcnet is not None and model.freeze_rcnet
    return model


def test_stored_outputs_are_rcnet_on_the_unaugmented_crop_and_give_the_same_body(
    tiny_dataset, shipped_model
):
    """With the store, the step's `rcnet_given` is RCNet's output on the crop without
    augmentation, and the model given it returns the body it returns when it runs RCNet
    itself on that crop."""
    body = BodyModel()
    cpu = torch.device("cpu")
    stream = ShardStream(tiny_dataset, "train", cpu, MemoryDataConfig(decode_workers=0),
                         max_points_per_scene=20000)  # fmt: skip
    stream.refresh()
    plain = MemoryStepPreparer(stream, body.topology, cpu)
    augmented = MemoryStepPreparer(stream, body.topology, cpu, augment=AugmentConfig())
    store = augmented.use_rcnet_store(shipped_model)
    idx = torch.tensor([3, 0, 6, 1])
    torch.manual_seed(1)
    step = augmented.step(idx)
    given = step.inputs.rcnet_given
    assert given is not None and store.computed == 4
    assert step.inputs.scene_points_cam is None  # the step reads none: no frustum cut
    assert not torch.equal(step.inputs.image, plain.step(idx).inputs.image)  # augmented crop

    inputs = plain.step(idx).inputs
    want = shipped_model.rcnet_root_contacts(inputs)
    torch.testing.assert_close(given.root_cam, want.root_cam)
    assert torch.equal(given.contact_batch_idx, want.contact_batch_idx)
    assert want.contact_batch_idx.numel() > 0  # the shipped RCNet finds contacts here
    torch.testing.assert_close(given.contact_points_cam, want.contact_points_cam)
    assert torch.equal(given.contact_point_region, want.contact_point_region)

    shipped_model.eval()
    with torch.no_grad():
        ran = shipped_model(inputs)
        served = shipped_model(replace(inputs, rcnet_given=given))
    assert ran.rc is not None and served.rc is None  # RCNet did not run
    torch.testing.assert_close(served.root_cam, ran.root_cam)
    torch.testing.assert_close(served.verts_cam, ran.verts_cam)


def test_a_trainable_rcnet_refuses_given_outputs(shipped_model):
    given = RootContacts(torch.zeros(1, 3), torch.zeros(0, 3), torch.zeros(0).long(),
                         torch.zeros(0).long())  # fmt: skip
    shipped_model.freeze_rcnet = False
    try:
        with pytest.raises(ValueError, match="frozen RCNet"):
            shipped_model.rcnet_root_contacts(None)
        from sahmr.records import FrameInputs

        inputs = FrameInputs(image=torch.zeros(1, 3, 224, 224), K_crop=torch.eye(3)[None],
                             K=torch.eye(3)[None], bbox=torch.zeros(1, 4),
                             T_w2c=torch.eye(4)[None], rcnet_given=given)  # fmt: skip
        with pytest.raises(ValueError, match="frozen RCNet"):
            shipped_model(inputs)
    finally:
        shipped_model.freeze_rcnet = True


def _stored_rcnet_recipe(exp: str, data, tmp_path) -> list[str]:
    """Overrides of a two-step CPU run of ``exp`` from the shipped weights on the
    stored-RCNet in-memory path, BatchNorm frozen (the lease recipes' shape)."""
    from sahmr.inference.method import bundled_checkpoint

    return [
        f"exp={exp}", f"init.weights={bundled_checkpoint('sahmr')}",
        "trainer=tiny", "device=cpu", f"data.root={data}",
        f"paths.output_dir={tmp_path / 'run'}", "max_points_per_scene=20000",
        "trainer.max_steps=2", "trainer.max_epochs=5", "trainer.batch_size=4",
        "trainer.val_every_epochs=0", "trainer.frozen_batchnorm=[mesh_net]",
        "loader=memory", "loader.decode_workers=0", "loader.rcnet_once=true",
    ]  # fmt: skip


def test_finetune_trains_with_the_store(tiny_dataset, test_configs, tmp_path):
    """The next lease's recipe: exp=sahmr_small_finetune with loader.rcnet_once and the
    encoder frozen. The store is attached, RCNet ran once per sample seen, the encoder kept
    its weights and the rest of the mesh network trained."""
    from sahmr.engine.checkpoint import load_checkpoint

    seen = {}
    frozen = ["trainer.frozen_parameters=[mesh_net.encoder]"]
    recipe = _stored_rcnet_recipe("sahmr_small_finetune", tiny_dataset, tmp_path)
    cfg = compose_train(recipe + frozen, test_configs)

    def grab(trainer):
        seen["prepare"] = trainer.prepare
        seen["start"] = {k: v.clone() for k, v in trainer.method.state_dict().items()}

    result = train_from_config(cfg, on_trainer=grab)
    assert result.step == 2
    store = seen["prepare"].rcnet_store
    assert isinstance(store, RCNetStore)
    assert store.served == 8 and store.computed == 8  # 8 train samples, 2 batches of 4
    end = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    start = seen["start"]
    encoder = [k for k in start if k.startswith("mesh_net.encoder.")]
    assert encoder and all(torch.equal(end[k], start[k]) for k in encoder)
    head = [k for k in start if k.startswith("mesh_net.param_head.")
            and start[k].is_floating_point() and not torch.equal(end[k], start[k])]  # fmt: skip
    assert head  # the head trained


def test_finetune_with_a_capped_store_computes_fewer_new_samples(
    tiny_dataset, test_configs, tmp_path, monkeypatch
):
    """``loader.rcnet_new_per_step``: once the store holds a batch (the threshold lowered to
    one batch for the test), the second step of 4 takes one new sample and three stored ones,
    and the run trains through it."""
    monkeypatch.setattr(rcnet_store, "UNCAPPED_BATCHES", 1)
    seen = {}
    recipe = _stored_rcnet_recipe("sahmr_small_finetune", tiny_dataset, tmp_path)
    cfg = compose_train([*recipe, "loader.rcnet_new_per_step=1"], test_configs)
    result = train_from_config(cfg, on_trainer=lambda t: seen.setdefault("prepare", t.prepare))
    assert result.step == 2
    store = seen["prepare"].rcnet_store
    assert store.new_per_step == 1
    assert store.computed == 5 and store.swapped == 3 and store.served == 8


def test_rcnet_once_trains_the_scene_less_ablation(tiny_dataset, test_configs, tmp_path):
    """The next lease's comparison (docs/results.md, section (s)): exp=sahmr_small_noscene on
    the stored-RCNet path. RCNet's stored contacts never reach the mesh network: a step's
    forward pass hands it none, and the run saves the ablation's config."""
    from sahmr.engine.checkpoint import checkpoint_config, load_checkpoint

    seen = {}
    cfg = compose_train(_stored_rcnet_recipe("sahmr_small_noscene", tiny_dataset, tmp_path),
                        test_configs)  # fmt: skip

    handed = []  # contact points handed to the mesh network, per forward pass

    def grab(trainer):
        seen["trainer"] = trainer
        trainer.method.mesh_net.register_forward_pre_hook(
            lambda _module, args: handed.append(int(args[2].shape[0]))
        )

    result = train_from_config(cfg, on_trainer=grab)
    assert result.step == 2
    trainer = seen["trainer"]
    store = trainer.prepare.rcnet_store
    assert store.computed == 8 and store.used > 0  # RCNet found contacts and they were stored
    assert trainer.method.scene_contacts is False
    assert len(handed) >= 2 and set(handed) == {0}
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert checkpoint_config(load_checkpoint(ckpt), ckpt).model.scene_contacts is False


def test_rcnet_once_with_a_trained_rcnet_is_one_clear_error(tiny_dataset, test_configs, tmp_path):
    from sahmr.inference.method import bundled_checkpoint

    cfg = compose_train([
        "exp=sahmr_small_e2e", f"init.weights={bundled_checkpoint('sahmr')}", "trainer=tiny",
        "device=cpu", f"data.root={tiny_dataset}", f"paths.output_dir={tmp_path / 'run'}",
        "loader=memory", "loader.decode_workers=0", "loader.rcnet_once=true",
    ], test_configs)  # fmt: skip
    with pytest.raises(ValueError, match="frozen RCNet"):
        train_from_config(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written
