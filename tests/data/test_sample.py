"""Sample validation, rigid moves of body params, and collation into a Batch."""

import math

import numpy as np
import pytest
import torch

from sahmr.data.collate import Batch, collate_samples, pack_point_sets, unpack_point_sets
from sahmr.data.sample import (
    Sample,
    crop_around_bbox,
    rest_root_joint,
    rigid_transform_body_params,
)
from sahmr.geometry.rotations import axis_angle_to_matrix

V = 12  # tiny vertex count for fabricated bodies


def make_sample(rng, n_contact=3, with_body=True, scene_id="room", **overrides):
    fields = dict(
        crop=rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
        bbox=np.array([10.0, 20.0, 50.0, 90.0]),
        K=np.array([[500.0, 0, 32], [0, 500.0, 24], [0, 0, 1]]),
        T_w2c=np.eye(4),
        image_size=np.array([64, 48]),
        scene_id=scene_id,
        source="synth",
        sequence_id="seq0",
        frame_index=7,
        contact_points_world=rng.normal(size=(n_contact, 3)),
        contact_point_region=rng.integers(1, 8, n_contact),
        occlusion=0.25,
        action="sit",
    )
    if with_body:
        fields.update(
            betas=rng.normal(size=10),
            global_orient=rng.normal(size=3),
            body_pose=rng.normal(size=69),
            transl=rng.normal(size=3),
            vertices_world=rng.normal(size=(V, 3)),
            joints_world=rng.normal(size=(24, 3)),
            vertex_contact=rng.integers(0, 8, V),
        )
    fields.update(overrides)
    return Sample(**fields)


def test_sample_coerces_dtypes():
    s = make_sample(np.random.default_rng(0))
    assert s.bbox.dtype == np.float32 and s.K.dtype == np.float32
    assert s.vertex_contact.dtype == np.int64 and s.image_size.dtype == np.int64
    assert s.has_body_params
    empty = make_sample(np.random.default_rng(0), n_contact=0, with_body=False)
    assert empty.contact_points_world.shape == (0, 3) and not empty.has_body_params
    assert math.isnan(Sample(**{**_minimal(), "source": "x"}).occlusion)


def _minimal():
    return dict(
        crop=np.zeros((224, 224, 3), np.uint8), bbox=np.zeros(4), K=np.eye(3), T_w2c=np.eye(4),
        image_size=np.array([4, 4]), scene_id="s", source="t", sequence_id="q", frame_index=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bbox": np.zeros(3)}, "bbox must have shape (4)"),
        ({"K": np.eye(4)}, "K must have shape (3, 3)"),
        ({"body_pose": np.zeros(63)}, "body_pose must have shape (69)"),
        ({"transl": None}, "all present or all None"),
        ({"vertex_contact": np.full(V, 9)}, "labels must lie in [0, 7]"),
        ({"vertex_contact": np.zeros(V + 1, np.int64)}, "vertex_contact has 13 entries"),
        ({"contact_point_region": np.zeros(2, np.int64)}, "2 labels for 3 contact points"),
        ({"occlusion": 1.5}, "occlusion must be in [0, 1]"),
        ({"crop": np.zeros((224, 224, 3), np.float32)}, "crop must be uint8"),
        ({"crop": np.zeros((224, 200, 3), np.uint8)}, "crop must be square"),
        ({"image": np.zeros((10, 10, 3), np.uint8)}, "image is 10x10"),
    ],
)
def test_sample_rejects_bad_fields(change, message):
    with pytest.raises((ValueError, TypeError)) as err:
        make_sample(np.random.default_rng(1), **change)
    assert message in str(err.value)


def test_collate_round_trip_and_shapes():
    rng = np.random.default_rng(2)
    samples = [make_sample(rng, n_contact=n) for n in (3, 0, 5)]
    scene = [rng.normal(size=(n, 3)) for n in (4, 2, 0)]
    batch = collate_samples(samples, scene_points=scene)
    assert isinstance(batch, Batch) and len(batch) == 3
    assert batch.crop.shape == (3, 224, 224, 3) and batch.crop.dtype == torch.uint8
    assert batch.bbox.shape == (3, 4) and batch.bbox.dtype == torch.float32
    assert batch.T_w2c.shape == (3, 4, 4) and batch.K.shape == (3, 3, 3)
    assert batch.image_size.dtype == torch.int64 and batch.frame_index.tolist() == [7, 7, 7]
    assert batch.body_pose.shape == (3, 69) and batch.betas.shape == (3, 10)
    assert batch.vertices_world.shape == (3, V, 3) and batch.joints_world.shape == (3, 24, 3)
    assert batch.vertex_contact.dtype == torch.int64
    assert batch.contact_points_world.shape == (8, 3)
    assert batch.contact_batch_idx.tolist() == [0, 0, 0, 2, 2, 2, 2, 2]
    assert batch.contact_batch_idx.dtype == torch.int64
    assert (
        batch.scene_points.shape == (6, 3) and batch.scene_batch_idx.tolist() == [0] * 4 + [1] * 2
    )
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(batch.crop[i].numpy(), s.crop)
        np.testing.assert_allclose(batch.transl[i].numpy(), s.transl)
        np.testing.assert_array_equal(
            batch.contact_point_region[batch.contact_batch_idx == i], s.contact_point_region
        )
    for got, want in zip(
        unpack_point_sets(batch.contact_points_world, batch.contact_batch_idx, 3), samples
    ):
        np.testing.assert_allclose(got.numpy(), want.contact_points_world)
    assert batch.to("cpu").crop.shape == batch.crop.shape


def test_collate_scene_mapping_and_missing_scene():
    rng = np.random.default_rng(3)
    samples = [
        make_sample(rng, scene_id="a"),
        make_sample(rng, scene_id="b"),
        make_sample(rng, scene_id="a"),
    ]
    pts = {"a": np.zeros((2, 3)), "b": np.ones((3, 3))}
    batch = collate_samples(samples, scene_points=pts)
    assert batch.scene_batch_idx.tolist() == [0, 0, 1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="no entry for scene_id"):
        collate_samples(samples, scene_points={"a": np.zeros((1, 3))})
    with pytest.raises(ValueError, match="2 sets for 3 samples"):
        collate_samples(samples, scene_points=[np.zeros((1, 3))] * 2)
    with pytest.raises(ValueError, match=r"scene_points\[0\] must have shape"):
        collate_samples(samples, scene_points=[np.zeros((1, 2))] * 3)


def test_collate_errors_for_mismatched_fields():
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="at least one"):
        collate_samples([])
    with pytest.raises(ValueError, match="betas is None for samples"):
        collate_samples([make_sample(rng), make_sample(rng, with_body=False)])
    odd = make_sample(
        rng, vertices_world=np.zeros((V + 1, 3)), vertex_contact=np.zeros(V + 1, np.int64)
    )
    with pytest.raises(ValueError, match=r"cannot stack Sample\.vertices_world"):
        collate_samples([make_sample(rng), odd])
    with pytest.raises(TypeError, match="expected Sample"):
        collate_samples([make_sample(rng), {"crop": 1}])
    no_body = collate_samples([make_sample(rng, with_body=False)])
    assert no_body.betas is None and no_body.vertices_world is None


def test_pack_empty():
    pts, idx = pack_point_sets([np.zeros((0, 3)), np.zeros((0, 3))])
    assert pts.shape == (0, 3) and idx.shape == (0,) and idx.dtype == torch.int64


def _toy_body(rng, orient, transl, root):
    """Toy 'SMPL': rest vertices rotated about the root, then translated."""
    rest = rng.normal(size=(5, 3))
    R = axis_angle_to_matrix(torch.as_tensor(orient)).numpy()
    return rest, (rest - root) @ R.T + root + transl


def test_rigid_transform_body_params_matches_moving_vertices():
    rng = np.random.default_rng(5)
    orient, transl, root = rng.normal(size=3) * 0.5, rng.normal(size=3), rng.normal(size=3)
    rest, verts = _toy_body(rng, orient, transl, root)
    T = np.eye(4)
    T[:3, :3] = axis_angle_to_matrix(torch.tensor([0.3, -1.1, 0.4], dtype=torch.float64)).numpy()
    T[:3, 3] = [1.0, 2.0, -0.5]
    new_orient, new_transl = rigid_transform_body_params(T, orient, transl, root)
    R2 = axis_angle_to_matrix(torch.as_tensor(new_orient)).numpy()
    moved = (rest - root) @ R2.T + root + new_transl
    np.testing.assert_allclose(moved, verts @ T[:3, :3].T + T[:3, 3], atol=1e-9)
    with pytest.raises(ValueError, match="rigid"):
        rigid_transform_body_params(np.diag([2.0, 2, 2, 1]), orient, transl, root)


def test_rest_root_joint_reference():
    rng = np.random.default_rng(6)
    vt, sd, jr = rng.normal(size=(6, 3)), rng.normal(size=(6, 3, 4)), rng.random((2, 6))
    betas = rng.normal(size=2)
    want = jr[0] @ (vt + sd[:, :, 0] * betas[0] + sd[:, :, 1] * betas[1])
    np.testing.assert_allclose(rest_root_joint(vt, sd, jr, betas), want)


def test_crop_around_bbox_centre_pixel():
    image = np.zeros((48, 64, 3), np.uint8)
    image[20:30, 30:40] = 200
    crop = crop_around_bbox(image, np.array([30.0, 20.0, 40.0, 30.0]))
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert crop[112, 112, 0] == 200 and crop[0, 0, 0] == 0
