"""PROX-style scene fitting against analytic box SDFs (exact, fast to build)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from _optim_cases import shipped_body

from sahmr.geometry.cameras import invert_rigid, project, transform_points
from sahmr.optim.priors import GaussianMixturePrior, sample_pose_library
from sahmr.optim.scene_fit import SceneFitter, default_prox_stages, penetration_energy
from sahmr.optim.smplify import FitStage, SMPLParams
from sahmr.scene.sdf import SDFGrid

# Camera looking along world +y from 1.5 m above the origin, world z up:
# camera x -> world x, camera y (down) -> world -z, camera z (forward) -> world +y.
R_C2W = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
T_C2W = torch.eye(4)
T_C2W[:3, :3] = R_C2W
T_C2W[:3, 3] = torch.tensor([0.0, 0.0, 1.5])
T_W2C = invert_rigid(T_C2W)[None]
K = torch.tensor([[[560.0, 0.0, 112.0], [0.0, 560.0, 112.0], [0.0, 0.0, 1.0]]])


_body = shipped_body


@functools.lru_cache(maxsize=1)
def _prior():
    return GaussianMixturePrior.from_asset()


def box_sdf_grid(lo, hi, *, origin, size, voxel: float = 0.04) -> SDFGrid:
    """Exact SDF of the axis-aligned world box [lo, hi] sampled on a grid (negative inside)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    n = np.ceil(np.asarray(size) / voxel).astype(int) + 1
    i, j, k = np.meshgrid(*(np.arange(m) for m in n), indexing="ij")
    p = np.asarray(origin) + voxel * np.stack([i, j, k], -1)
    c, h = (lo + hi) / 2, (hi - lo) / 2
    q = np.abs(p - c) - h
    sdf = np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)
    return SDFGrid(np.asarray(origin, np.float32), voxel, sdf.transpose(2, 1, 0).astype(np.float32))


def _standing(depth: float = 3.0) -> SMPLParams:
    lib = sample_pose_library(1, seed=2, actions=["stand"])
    return SMPLParams(
        global_orient=torch.tensor([[math.pi, 0.0, 0.0]]),
        body_pose=torch.tensor(lib.body_pose, dtype=torch.float32),
        betas=torch.zeros(1, 10),
        transl=torch.tensor([[0.0, 0.25, depth]]),
    )


def _sdf_of(params: SMPLParams, grid: SDFGrid) -> torch.Tensor:
    with torch.no_grad():
        v = _body()(**params.as_dict()).vertices
    return grid.sample(transform_points(T_C2W[None], v))


def _wall_behind(params: SMPLParams) -> SDFGrid:
    """A wall just behind the body (in world axes), 5 mm from its back."""
    with torch.no_grad():
        v = transform_points(T_C2W[None], _body()(**params.as_dict()).vertices)[0]
    back = float(v[:, 1].max())
    return box_sdf_grid(
        (-1.5, back + 0.005, -0.5), (1.5, back + 0.6, 2.5),
        origin=(-1.2, back - 0.9, -0.4), size=(2.4, 1.6, 2.8),
    )  # fmt: skip


def test_scene_fit_pushes_a_body_out_of_a_wall_keeping_reprojection():
    gt = _standing()
    grid = _wall_behind(gt)
    assert penetration_energy(_sdf_of(gt, grid)) == 0
    with torch.no_grad():
        kp = project(K, _body()(**gt.as_dict()).joints)
    init = gt.detach()
    init.transl = init.transl + torch.tensor([[0.0, 0.0, 0.15]])  # 15 cm into the wall
    pen0 = penetration_energy(_sdf_of(init, grid))
    assert pen0 > 1.0

    def fit(scene_weight: float):
        stages = [
            FitStage(10, 0.02, params=("global_orient", "transl"), torso_only=True),
            FitStage(25, 0.02, penetration_weight=1e4 * scene_weight,
                     contact_weight=1e3 * scene_weight),
        ]  # fmt: skip
        fitter = SceneFitter(body_model=_body(), pose_prior=_prior(), stages=stages)
        return fitter.fit(init, kp, K, T_W2C, [grid])

    with_scene = fit(1.0)
    pen = penetration_energy(_sdf_of(with_scene.params, grid))
    assert pen < 0.05 * pen0, (pen, pen0)
    assert with_scene.reprojection_error_px[0] < 4.0
    assert with_scene.iterations == [10, 25]
    assert set(with_scene.terms) >= {"penetration", "contact", "keypoints"}
    without = fit(0.0)  # the image alone (body scale) moves it only partly out of the wall
    assert penetration_energy(_sdf_of(without.params, grid)) > 5 * pen


def test_contact_term_pulls_assigned_regions_onto_the_floor():
    fitter_kw = dict(body_model=_body(), pose_prior=_prior(), contact_distance=0.08)
    gt = _standing()
    with torch.no_grad():
        v = transform_points(T_C2W[None], _body()(**gt.as_dict()).vertices)[0]
    floor_z = float(v[:, 2].min()) - 0.04  # feet hover 4 cm above the floor
    grid = box_sdf_grid((-3, -3, floor_z - 1.0), (3, 6, floor_z), origin=(-1.0, 1.0, floor_z - 0.3),
                        size=(2.0, 3.5, 2.4))  # fmt: skip
    kp = torch.zeros(1, 24, 2)
    stage = FitStage(30, 0.01, params=("transl",), keypoint_weight=0.0, depth_weight=0.0,
                     penetration_weight=1e4, contact_weight=1e3)  # fmt: skip
    fitter = SceneFitter(stages=[stage], **fitter_kw)
    feet = torch.zeros(1, fitter.num_regions, dtype=torch.bool)
    feet[:, :2] = True  # regions 1, 2: left and right foot
    res = fitter.fit(gt, kp, K, T_W2C, [grid], contact_regions=feet)
    sdf = _sdf_of(res.params, grid)
    assert -0.01 < float(sdf.min()) < 0.01  # the soles now touch the floor
    hands = torch.zeros_like(feet)
    hands[:, 2:4] = True  # hands are far from the floor: nothing to pull
    fitter.stages = [FitStage(5, 0.01, **{k: getattr(stage, k) for k in (
        "params", "keypoint_weight", "depth_weight", "penetration_weight", "contact_weight")})]
    still = fitter.fit(gt, kp, K, T_W2C, [grid], contact_regions=hands)
    torch.testing.assert_close(still.params.transl, gt.transl)


def test_scene_context_samples_each_frame_in_its_scene():
    a = box_sdf_grid((0, 0, 0), (1, 1, 1), origin=(-1, -1, -1), size=(3, 3, 3), voxel=0.1)
    b = box_sdf_grid((-1, 0, 0), (0, 2, 1), origin=(-2, -1, -1), size=(3, 4, 3), voxel=0.1)
    fitter = SceneFitter(body_model=_body(), pose_prior=_prior())
    T = torch.eye(4).repeat(3, 1, 1)
    ctx = fitter._context(T, [a, b], torch.tensor([1, 0, 1]), None)
    pts = torch.rand(3, 50, 3, generator=torch.Generator().manual_seed(0)) * 2 - 0.5
    got = ctx.sample(pts)
    ref = torch.stack([b.sample(pts[0]), a.sample(pts[1]), b.sample(pts[2])])
    torch.testing.assert_close(got, ref)
    assert ctx.candidate.shape == (3, _body().num_vertices)
    assert (ctx.candidate == (fitter.vertex_region > 0)).all()


def test_default_prox_schedule_is_staged():
    stages = default_prox_stages(10)
    assert stages[0].torso_only and set(stages[0].params) == {"global_orient", "transl"}
    assert [s.uses_scene for s in stages] == [False] * (len(stages) - 1) + [True]
    priors = [s.pose_prior_weight for s in stages[1:]]
    assert priors == sorted(priors, reverse=True)


@pytest.mark.slow  # generates a tiny dataset and builds a room SDF: ~10-20 s on the shared CPU
def test_fit_tool_writes_predictions_scores_and_timings(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    from sahmr.synth.generate import generate
    from sahmr.synth.plan import GenerationConfig

    cfg = GenerationConfig.from_dict(
        dict(out_dir=str(tmp_path / "data"), num_samples=2, samples_per_shard=2, seed=1,
             workers=0, placer="standing", views_per_body=2,
             splits={"val": dict(fraction=1, bundled=["gym"])})
    )  # fmt: skip
    generate(cfg, progress=False)
    path = Path(__file__).resolve().parents[2] / "tools" / "fit.py"
    spec = importlib.util.spec_from_file_location("fit_tool", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "out"
    iters = [f"stages.{i}.iterations=3" for i in range(4)]
    code = tool.main([
        "--dataset", str(tmp_path / "data"), "--split", "val", "--out", str(out),
        "--sdf-voxel-size", "0.1", "--sdf-cache-dir", str(tmp_path / "sdf"), "--no-progress",
        "start_orientations=2", *iters,
    ])  # fmt: skip
    assert code == 0
    log = json.loads((out / "fit_log.json").read_text())
    assert log["frames"] == 2 and log["scene_terms"]
    assert log["iterations_per_frame"] == 2 * 6 + 6 and log["fit_seconds_per_frame"] > 0
    preds = sorted((out / "predictions").glob("*.npz"))
    assert [p.stem for p in preds] == ["val-000000", "val-000001"]
    with np.load(preds[0], allow_pickle=False) as z:
        assert z["vertices"].shape == (_body().num_vertices, 3) and z["body_pose"].shape == (69,)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert "pene" in json.dumps(metrics) and (out / "fit_frames.csv").is_file()
