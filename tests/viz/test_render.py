import numpy as np
import pytest
import trimesh

from sahmr.viz.grid import image_grid
from sahmr.viz.render import MeshToRender, intrinsics_from_fov, look_at, render


def _box_scene():
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))  # centred at the origin
    K = intrinsics_from_fov(64, 48, 60.0)
    T = look_at(np.array([0.0, 0.0, -4.0]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
    return box, K, T


def test_depth_and_instance_match_geometry():
    box, K, T = _box_scene()
    out = render([MeshToRender(box.vertices, box.faces, (1.0, 0.0, 0.0))], K, T, 64, 48)
    assert out.rgb.shape == (48, 64, 3) and out.rgb.dtype == np.uint8
    # The face nearest the camera lies at world z=-0.5, i.e. 3.5 m in front of it.
    centre = out.depth[24, 32]
    assert centre == pytest.approx(3.5, abs=1e-6)
    assert out.instance[24, 32] == 0 and out.instance[0, 0] == -1
    assert np.isinf(out.depth[0, 0])
    # The box spans f * 1 m / 3.5 m pixels across.
    f = K[0, 0]
    width_px = (out.instance[24] == 0).sum()
    assert abs(width_px - f / 3.5) <= 2
    # Lit box is red; background is white.
    assert out.rgb[24, 32, 0] > 0 and out.rgb[24, 32, 1] == 0
    assert (out.rgb[0, 0] == 255).all()


def test_nearer_mesh_occludes_and_owns_pixels():
    box, K, T = _box_scene()
    small = trimesh.creation.box(extents=(0.2, 0.2, 0.2))
    small.apply_translation((0.0, 0.0, -1.0))
    out = render(
        [MeshToRender(box.vertices, box.faces), MeshToRender(small.vertices, small.faces)],
        K, T, 64, 48, supersample=2,
    )
    assert out.instance[24, 32] == 1
    assert out.depth[24, 32] == pytest.approx(2.9, abs=1e-6)


def test_look_at_puts_target_on_optical_axis():
    eye = np.array([1.0, 2.0, 3.0])
    target = np.array([-0.5, 0.2, 0.1])
    T = look_at(eye, target, np.array([0.0, 0.0, 1.0]))
    R = T[:3, :3]
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-12)
    p = R @ target + T[:3, 3]
    assert np.allclose(p[:2], 0.0, atol=1e-12) and p[2] > 0
    up_cam = R @ np.array([0.0, 0.0, 1.0])
    assert up_cam[1] < 0  # world up appears upwards in the image (OpenCV y down)


def test_image_grid_layout():
    ims = [np.full((10, 12, 3), i * 40, dtype=np.uint8) for i in range(5)]
    sheet = image_grid(ims, [str(i) for i in range(5)], columns=3, pad=2)
    assert sheet.shape == (2 * 12 + 2, 3 * 14 + 2, 3)
    with pytest.raises(ValueError):
        image_grid([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])


def test_pixel_centres_follow_the_projection_convention():
    # A point projected by sahmr.geometry.cameras.project lands on the pixel whose ray hits it.
    import torch

    from sahmr.geometry.cameras import project

    box, K, T = _box_scene()
    out = render([MeshToRender(box.vertices, box.faces)], K, T, 64, 48)
    corner_world = np.array([0.5, 0.5, -0.5])
    cam = T[:3, :3] @ corner_world + T[:3, 3]
    uv = project(torch.from_numpy(K), torch.from_numpy(cam[None]))[0].numpy()
    j, i = np.round(uv).astype(int)
    # The corner pixel is covered; one pixel further out along both axes is background.
    sj, si = np.sign(uv - [K[0, 2], K[1, 2]]).astype(int)
    assert out.instance[i - si, j - sj] == 0
    assert out.instance[i + 2 * si, j + 2 * sj] == -1
