"""Shard format round trip, atomic writes, and the generator: resume, determinism, sharding,
hydra entry point. Uses the fast standing placer so the whole file runs in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sahmr.data import shards as shards_mod
from sahmr.data.shards import (
    BYTES_FIELDS,
    FIXED_FIELDS,
    MIRRORED_UNKNOWN,
    OPTIONAL_FIELDS,
    RAGGED_FIELDS,
    STRING_FIELDS,
    ShardReader,
    decode_depth_mm,
    decode_image,
    encode_depth_mm,
    encode_image,
    pack_rows,
    shard_name,
    validate_shard,
    write_shard_atomic,
)
from sahmr.synth.generate import generate
from sahmr.synth.plan import GenerationConfig, plan_shards, scene_table, shard_scene_id


def _random_row(rng: np.random.Generator, i: int, num_verts: int = 50) -> dict:
    row = {}
    for name, (dtype, shape) in FIXED_FIELDS.items():
        shape = tuple(num_verts if s is None else s for s in shape)
        row[name] = (rng.normal(size=shape) * 5).astype(dtype)
    p = int(rng.integers(0, 6))
    row["contact_points_world"] = rng.normal(size=(p, 3)).astype(np.float32)
    row["contact_point_region"] = rng.integers(1, 8, size=p).astype(np.uint8)
    row["crop"] = encode_image(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), "png")
    row["mask"] = encode_image(rng.integers(0, 3, (16, 16), dtype=np.uint8), "png")
    row["depth"] = encode_image(encode_depth_mm(rng.uniform(0.5, 9, (16, 16))), "png")
    row["image"] = b"" if i % 2 else encode_image(np.zeros((8, 12, 3), np.uint8), "jpeg")
    row.update(scene_id=f"scene{i % 2}", sequence_id=f"seq{i}", action="sit_chair")
    return row


def test_shard_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rows = [_random_row(rng, i) for i in range(5)]
    path = write_shard_atomic(tmp_path / shard_name(3), pack_rows(rows, {"shard_index": 3}))
    assert validate_shard(path, {"shard_index": 3})
    assert not validate_shard(path, {"shard_index": 4})
    with np.load(path, allow_pickle=False) as z:  # plain numpy can read every member
        assert z["bbox"].shape == (5, 4)
    reader = ShardReader(path)
    assert len(reader) == 5 and reader.header["version"] == shards_mod.SHARD_VERSION
    for i, want in enumerate(rows):
        got = reader.row(i)
        for k in (*FIXED_FIELDS, *RAGGED_FIELDS):
            assert got[k].dtype == np.dtype((FIXED_FIELDS.get(k) or RAGGED_FIELDS[k])[0]), k
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        for k in BYTES_FIELDS:
            assert got[k] == want[k], k
        for k in STRING_FIELDS:
            assert got[k] == want[k]
    reader.close()
    depth = np.array([[1.2345, np.inf]], dtype=np.float32)
    back = decode_depth_mm(decode_image(encode_image(encode_depth_mm(depth), "png")))
    np.testing.assert_allclose(back, [[1.234, np.inf]], atol=1e-6)


def test_optional_fields_round_trip_and_default_in_older_shards(tmp_path):
    rng = np.random.default_rng(1)
    rows = [_random_row(rng, i) for i in range(3)]
    old = write_shard_atomic(tmp_path / shard_name(0), pack_rows(rows, {}))  # v1 as shipped
    for i, r in enumerate(rows):
        r["height"], r["occluder"], r["mirrored"] = 1.5 + 0.1 * i, i % 3, i % 2
    new = write_shard_atomic(tmp_path / shard_name(1), pack_rows(rows, {}))
    assert validate_shard(old) and validate_shard(new)
    r_old, r_new = ShardReader(old), ShardReader(new)
    for i in range(3):
        a, b = r_old.row(i), r_new.row(i)
        assert np.isnan(a["height"]) and a["occluder"] == 0  # the defaults
        assert a["mirrored"] == MIRRORED_UNKNOWN
        assert b["height"] == pytest.approx(1.5 + 0.1 * i) and b["occluder"] == i % 3
        assert b["mirrored"] == i % 2
        for k, (dtype, _) in OPTIONAL_FIELDS.items():
            assert a[k].dtype == b[k].dtype == np.dtype(dtype)
    r_old.close()
    r_new.close()
    del rows[0]["height"]
    with pytest.raises(ValueError, match="height"):
        pack_rows(rows, {})


def test_crash_mid_write_leaves_no_shard(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    arrays = pack_rows([_random_row(rng, 0)], {"shard_index": 0})
    real_savez = np.savez

    def crashing_savez(f, **kw):
        real_savez(f, **{k: kw[k] for k in list(kw)[:3]})  # part of the members...
        raise KeyboardInterrupt("killed")  # ...then the process dies

    monkeypatch.setattr(shards_mod.np, "savez", crashing_savez)
    final = tmp_path / shard_name(0)
    with pytest.raises(KeyboardInterrupt):
        write_shard_atomic(final, arrays)
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []
    # a truncated file under the final name (e.g. copied by hand) does not validate
    monkeypatch.setattr(shards_mod.np, "savez", real_savez)
    write_shard_atomic(final, arrays)
    final.write_bytes(final.read_bytes()[:-200])
    assert not validate_shard(final)


# ----------------------------------------------------------------------------------------
# generator


def _cfg(out: Path, **kw) -> GenerationConfig:
    d = dict(
        out_dir=str(out),
        num_samples=12,
        samples_per_shard=3,
        seed=7,
        workers=0,
        placer="standing",
        views_per_body=2,
        crop_size=64,
        crop_format="png",
        full_frame_scale=0.05,
        splits={
            "train": dict(fraction=2, kinds=["bedroom"], seeds=[100]),
            "test": dict(fraction=1, bundled=["bedroom"]),
        },
    )
    d.update(kw)
    return GenerationConfig.from_dict(d)


def _shard_contents(root: Path) -> dict[str, list[dict]]:
    out = {}
    for p in sorted((root / "shards").glob("shard-*.npz")):
        r = ShardReader(p)
        out[p.name] = [r.row(i) for i in range(len(r))] + [r.header]
        r.close()
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert len(a[name]) == len(b[name])
        for ra, rb in zip(a[name], b[name]):
            assert ra.keys() == rb.keys()
            for k in ra:
                if isinstance(ra[k], np.ndarray):
                    np.testing.assert_array_equal(ra[k], rb[k], err_msg=f"{name} {k}")
                else:
                    assert ra[k] == rb[k], (name, k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ref")
    summary = generate(_cfg(root), progress=False)
    return root, summary


def test_plan_and_disjoint_rooms(reference):
    root, summary = reference
    plans = plan_shards(_cfg(root))
    assert [p.num_samples for p in plans] == [3, 3, 2, 3, 1]
    assert [p.split for p in plans] == ["train"] * 3 + ["test"] * 2
    assert summary["samples_per_split"] == {"train": 8, "test": 4}
    assert summary["shards_done"] == 5
    assert (root / "rooms" / "gen_bedroom_00100" / "mesh.ply").is_file()
    assert (root / "rooms" / "bundled_bedroom" / "scene_points.npz").is_file()
    with pytest.raises(ValueError, match="disjoint"):  # bundled bedroom is (bedroom, 2)
        scene_table(_cfg(root, splits={"train": dict(fraction=1, kinds=["bedroom"], seeds=[2]),
                                       "test": dict(fraction=1, bundled=["bedroom"])}))  # fmt: skip


def test_a_split_can_have_its_own_shard_size(tmp_path):
    """One shard is set in one room: smaller val and test shards spread a small split over
    more rooms (a GPU lease's 1,280 val frames sat in 6 of 30 rooms). Unset, nothing moves:
    neither the plan nor the hash of datasets made before."""
    splits = {
        "train": dict(fraction=2, kinds=["bedroom"], seeds=[100]),
        "test": dict(fraction=1, kinds=["gym", "office"], seeds=[500, 501, 502]),
    }
    base = _cfg(tmp_path, splits=splits)
    unset = {**splits, "train": {**splits["train"], "samples_per_shard": None}}
    same = _cfg(tmp_path, splits=unset)
    assert same.content_hash() == base.content_hash()
    assert "samples_per_shard" not in base.content_dict()["splits"]["test"]
    assert [p.num_samples for p in plan_shards(base)] == [3, 3, 2, 3, 1]
    split_sized = _cfg(
        tmp_path, splits={**splits, "test": {**splits["test"], "samples_per_shard": 1}}
    )
    plans = plan_shards(split_sized)
    assert [(p.split, p.num_samples) for p in plans] == [("train", 3)] * 2 + [("train", 2)] + [
        ("test", 1)
    ] * 4
    assert [p.index for p in plans] == list(range(7))
    assert split_sized.content_hash() != base.content_hash()
    rooms = {shard_scene_id(split_sized, p) for p in plans if p.split == "test"}
    assert len(rooms) > 1  # seed 7 draws more than one of the six rooms
    for bad in (0, -2, 1.5, True, "3"):
        with pytest.raises(ValueError, match="samples_per_shard"):
            _cfg(tmp_path, splits={**splits, "test": {**splits["test"], "samples_per_shard": bad}})


def test_resume_skips_done_shards_and_matches(reference, tmp_path):
    ref_root, _ = reference
    cfg = _cfg(tmp_path)
    generate(cfg, progress=False)
    shard_dir = tmp_path / "shards"
    (shard_dir / shard_name(1)).unlink()  # never written (killed before)
    bad = shard_dir / shard_name(3)
    bad.write_bytes(bad.read_bytes()[:1000])  # half-written by hand
    (shard_dir / f".{shard_name(1)}.tmp.12345").write_bytes(b"junk")  # left by a kill
    kept = {n: (shard_dir / shard_name(n)).stat().st_mtime_ns for n in (0, 2, 4)}
    summary = generate(_cfg(tmp_path, resume=True), progress=False)
    assert summary["this_run"]["shards_written"] == 2
    for n, t in kept.items():
        assert (shard_dir / shard_name(n)).stat().st_mtime_ns == t
    assert not list(shard_dir.glob(".*tmp*"))
    _assert_same(_shard_contents(tmp_path), _shard_contents(ref_root))


def test_determinism_parallel_and_machine_sharding(reference, tmp_path):
    ref_root, _ = reference
    # two "machines" writing shard=0/2 and shard=1/2 (one of them with 2 worker processes)
    generate(_cfg(tmp_path, shard="0/2"), progress=False)
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.npz")) == [
        shard_name(0), shard_name(2), shard_name(4)
    ]  # fmt: skip
    generate(_cfg(tmp_path, shard="1/2", workers=2), progress=False)
    _assert_same(_shard_contents(tmp_path), _shard_contents(ref_root))
    other = tmp_path / "other_seed"
    generate(_cfg(other, seed=8, num_samples=3), progress=False)
    a = _shard_contents(other)[shard_name(0)][0]["transl"]
    b = _shard_contents(ref_root)[shard_name(0)][0]["transl"]
    assert not np.array_equal(a, b)


def test_make_dataset_via_hydra_compose(tmp_path):
    from hydra import compose, initialize_config_dir

    from sahmr.synth.plan import config_from_mapping

    config_dir = str(Path(__file__).resolve().parents[2] / "configs")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose(
            config_name="make_dataset",
            overrides=[
                f"out_dir={tmp_path}", "num_samples=4", "samples_per_shard=2", "workers=0",
                "placer=standing", "sequence_fraction=0", "crop_size=32", "views_per_body=2",
                "splits.train.seed_range=[100,101]", "splits.train.kinds=[gym]",
                "splits.val.fraction=0", "splits.val.kinds=[]",
                "splits.test.fraction=0", "splits.test.kinds=[]", "splits.test.bundled=[]",
                "shard=0/1",
            ],
        )  # fmt: skip
    gen_cfg = config_from_mapping(cfg)
    assert gen_cfg.shard == "0/1" and gen_cfg.camera.distance == (1.2, 8.0)
    summary = generate(gen_cfg, progress=False)
    assert summary["samples_per_split"] == {"train": 4}
    assert (tmp_path / "summary.json").is_file()
    assert os.path.isfile(tmp_path / "shards" / shard_name(1))


def test_generated_rows_carry_stature_occluders_and_side(tmp_path):
    from sahmr.body import BodyModel
    from sahmr.synth.render_sample import MASK_OCCLUDED, MASK_VISIBLE
    from sahmr.synth.shapes import StatureMeter

    cfg = _cfg(
        tmp_path,
        num_samples=8,
        samples_per_shard=8,
        splits={"train": dict(fraction=1, bundled=["gym"])},
        occluders={"fraction": 1.0},
        mirror_fraction=1.0,
    )
    summary = generate(cfg, progress=False)
    reader = ShardReader(tmp_path / "shards" / shard_name(0))
    meter = StatureMeter(BodyModel())  # the license-free body the generator used
    occluded, hidden = 0, 0
    for i in range(len(reader)):
        row = reader.row(i)
        assert row["height"] == pytest.approx(meter(row["betas"]), abs=1e-5)
        assert row["mirrored"] == 0  # the standing placer's symmetric poses: never mirrored
        if row["occluder"] == 0:
            continue
        occluded += 1
        mask = decode_image(row["mask"])
        person = np.isin(mask, (MASK_VISIBLE, MASK_OCCLUDED)).sum()
        assert row["occlusion"] == pytest.approx((mask == MASK_OCCLUDED).sum() / person)
        hidden += row["occlusion"] > 0.02  # (a pole's box may cover a gap between the legs)
    reader.close()
    assert occluded >= 5 and summary["occluded_samples"] == occluded
    assert hidden >= 0.6 * occluded
    assert summary["camera_retries"]["tries"] >= 8


def test_away_from_defaults_variant_config(tmp_path):
    from hydra import compose, initialize_config_dir

    from sahmr.synth.plan import config_from_mapping

    config_dir = str(Path(__file__).resolve().parents[2] / "configs")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose(
            config_name="make_dataset_away",
            overrides=[
                f"out_dir={tmp_path}", "num_samples=6", "samples_per_shard=6", "workers=0",
                "placer=standing", "crop_size=32", "views_per_body=2",
                "splits.test.kinds=[gym]", "splits.test.bundled=[]",
            ],
        )  # fmt: skip
    gen_cfg = config_from_mapping(cfg)
    assert gen_cfg.shape.tail_fraction == 1.0 and gen_cfg.occluders.fraction == 0.5
    assert gen_cfg.camera.height == ((0.3, 0.8), (2.0, 2.8))
    summary = generate(gen_cfg, progress=False)
    assert summary["samples_per_split"] == {"test": 6}
    reader = ShardReader(tmp_path / "shards" / shard_name(0))
    for i in range(len(reader)):
        row = reader.row(i)
        assert abs(row["betas"][0]) >= 2.5 and abs(row["betas"][1]) >= 2.0
        assert row["height"] < 1.58 or row["height"] > 1.84
        T = row["T_w2c"].astype(np.float64)
        z = (-T[:3, :3].T @ T[:3, 3])[2]
        assert z <= 0.8 + 1e-4 or z >= 2.0 - 1e-4
    reader.close()


def test_main_config_draws_the_documented_default_distributions():
    """configs/make_dataset.yaml repeats the dataclass defaults: they must not drift apart."""
    from hydra import compose, initialize_config_dir

    from sahmr.synth.plan import config_from_mapping

    config_dir = str(Path(__file__).resolve().parents[2] / "configs")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = config_from_mapping(compose(config_name="make_dataset", overrides=["out_dir=/x"]))
    default = GenerationConfig(out_dir="/x")
    for name in ("camera", "shape", "occluders"):
        assert cfg.content_dict()[name] == default.content_dict()[name], name
    assert cfg.camera.height == (0.3, 2.8) and cfg.camera.distance == (1.2, 8.0)
    assert cfg.shape.tail_fraction > 0 and cfg.occluders.fraction > 0
