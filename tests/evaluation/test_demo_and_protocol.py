"""The evaluator on demo output folders (numbers equal to the demo's own), ground truth
against itself, the official SA-HMR protocol and the SMPL-X -> SMPL vertex map."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import trimesh
from evaluation_cases import BoxRoomSDF, box_room_loader, write_box_room

from sahmr.evaluation import evaluator as evaluator_module
from sahmr.evaluation.evaluator import Evaluator, SceneSDFs
from sahmr.evaluation.readers import FolderReader
from sahmr.evaluation.topology_map import load_vertex_map
from sahmr.scene.contact import vertex_contact
from sahmr.scene.sdf import ExactSceneSDF, MeshSignedDistance, SDFGrid

ROOT = Path(__file__).resolve().parents[2]
DEMO_GT = ROOT / "scenes" / "living_room" / "demo"
SHIFT = np.array([0.03, -0.02, -0.02])  # the "prediction": GT moved 3 cm, 2 cm and 2 cm down


def _gt_vertices(body_model, name: str) -> np.ndarray:
    with np.load(DEMO_GT / f"{name}.gt.npz", allow_pickle=False) as g:
        params = {k: g[k] for k in ("betas", "global_orient", "body_pose", "transl")}
    dtype = body_model.shapedirs.dtype
    with torch.no_grad():
        out = body_model(**{k: torch.as_tensor(v, dtype=dtype)[None] for k, v in params.items()})
    return out.vertices[0].double().numpy()


@pytest.fixture(scope="module")
def living_room(body_model):
    """The bundled living room's mesh, its exact-node grid around the demo bodies (4 cm), and
    the ExactSceneSDF over both (fast to build; load_scene_sdf caches the full-room grid)."""
    mesh = trimesh.load(ROOT / "scenes/living_room/mesh.ply", process=False, force="mesh")
    pts = np.concatenate([_gt_vertices(body_model, n) for n in ("sit_sofa", "stand")])
    voxel, lo = 0.04, pts.min(0) - 0.2
    n = np.ceil((pts.max(0) + 0.2 - lo) / voxel).astype(int) + 1
    k, j, i = np.meshgrid(*(np.arange(c) for c in n[::-1]), indexing="ij")
    nodes = lo + voxel * np.stack([i, j, k], -1).reshape(-1, 3)
    values = MeshSignedDistance(mesh.vertices, mesh.faces)(nodes).reshape(n[2], n[1], n[0])
    grid = SDFGrid(lo.astype(np.float32), voxel, values)
    return SimpleNamespace(
        mesh=mesh, grid=grid, exact=ExactSceneSDF(grid, mesh.vertices, mesh.faces)
    )


def _write_demo_folder(out: Path, body_model) -> dict[str, np.ndarray]:
    """A folder as tools/demo.py writes it: <frame>/body_params.npz (+ a summary.json)."""
    verts = {}
    for name in ("sit_sofa", "stand"):
        (out / name).mkdir(parents=True)
        v = _gt_vertices(body_model, name) + SHIFT
        np.savez(out / name / "body_params.npz", vertices=v.astype(np.float32),
                 root=v[:1].mean(0), scene=np.array("living_room"))
        verts[name] = v.astype(np.float32).astype(np.float64)
    (out / "summary.json").write_text(json.dumps({"format": "sahmr.demo"}))
    return verts


def test_demo_folder_scored_and_numbers_agree_with_the_demo(tmp_path, body_model, living_room):
    from sahmr.inference.pipeline import InferencePipeline
    from sahmr.inference.timing import StageTimer

    verts = _write_demo_folder(tmp_path / "demo", body_model)
    pred = FolderReader(tmp_path / "demo")
    gt = FolderReader(DEMO_GT)  # <frame>.gt.npz
    assert pred.names() == gt.names() == ["sit_sofa", "stand"]
    scenes = SceneSDFs("living_room", loader=lambda path, **kw: living_room.exact)
    result = Evaluator(body_model, scenes).evaluate(pred, gt, progress=False)
    assert not result.missing and not result.failed
    rows = {r["name"]: r for r in result.per_frame}
    assert rows["sit_sofa"]["g_mpve"] == pytest.approx(1000 * np.linalg.norm(SHIFT), rel=1e-5)
    assert rows["sit_sofa"]["pene"] > rows["stand"]["pene"] > 0  # pushed 2 cm down

    # The demo's own figures for the same vertices, through the pipeline's code paths.
    pipe = InferencePipeline(
        method=None, scene=SimpleNamespace(mesh=living_room.mesh), body=body_model,
        sdf=living_room.grid,
    )
    for name, v in verts.items():
        errs = pipe._gt_errors(DEMO_GT / f"{name}.gt.npz", v, v[0])
        _, pen = pipe._scene_figures(v, StageTimer())
        row = rows[name]
        for key in ("mpjpe", "pa_mpjpe", "mpve", "pa_mpve", "g_mpjpe", "g_mpve", "root_error"):
            # equal up to the float32 body forward (batch of 2 here, of 1 in the demo): 1 um
            assert errs[f"{key}_mm"] == pytest.approx(row[key], abs=1e-3), key
        assert errs["edge_error_percent"] == pytest.approx(row["edge_error"], abs=1e-3)
        assert pen["pene_mm"] == pytest.approx(row["pene"], rel=1e-9)
        assert pen["pen_count"] == row["pen_count"]
        assert pen["pen_fraction_percent"] == pytest.approx(row["pen_fraction"], rel=1e-9)


def test_ground_truth_against_itself_end_to_end(tmp_path, body_model, living_room):
    """GT meshes as their own predictions: every error 0 and contact P = R = F1 = 1, with GT
    labels derived by the evaluator and with labels written by the one definition."""
    regions = torch.as_tensor(np.asarray(body_model.topology.contact_labels[0]))
    for labelled in (False, True):
        gt_dir = tmp_path / f"gt{int(labelled)}"
        gt_dir.mkdir()
        for name in ("sit_sofa", "stand"):
            v = _gt_vertices(body_model, name)
            extra = {}
            if labelled:
                d = living_room.exact.exact(torch.from_numpy(v))
                extra["contact"] = (vertex_contact(d, regions) > 0).numpy()
            np.savez(gt_dir / f"{name}.npz", vertices=v, **extra)
        scenes = SceneSDFs("room", loader=lambda path, **kw: living_room.exact)
        reader = FolderReader(gt_dir)
        s = Evaluator(body_model, scenes).evaluate(reader, reader, progress=False).summary()
        for k in ("precision", "recall", "f1"):
            assert s[f"contact_{k}"]["value"] == 1.0 and s[f"contact_{k}"]["count"] == 2
        for k in ("g_mpve", "mpjpe", "root_error", "edge_error"):
            assert s[k]["value"] == pytest.approx(0.0, abs=1e-9)
        # regions with no contact on either side are undefined, not 1
        assert np.isnan(s["contact_precision/left_hand"]["value"])
        assert s["contact_precision/left_hand"]["count"] == 0


def _h36m_reference(pred: np.ndarray, gt: np.ndarray, reg: np.ndarray) -> dict[str, float]:
    """The official script's formulas, written out with numpy for one frame."""
    j14 = [3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10]
    pj, gj = reg @ pred, reg @ gt
    pp, gp = pj[0], gj[0]
    pj, gj = pj[j14], gj[j14]
    return {
        "g_mpjpe": 1000 * np.linalg.norm(gj - pj, axis=1).mean(),
        "g_mpve": 1000 * np.linalg.norm(gt - pred, axis=1).mean(),
        "mpjpe": 1000 * np.linalg.norm(gj - (pj - pp + gp), axis=1).mean(),
        "mpve": 1000 * np.linalg.norm(gt - (pred - pp + gp), axis=1).mean(),
    }


def test_sahmr_protocol_matches_the_official_formulas(tmp_path, body_model, rest_vertices):
    rng = np.random.default_rng(3)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    sunk = rest_vertices - np.array([0.0, 0.0, 0.15])  # 5 cm under the floor at the soles
    pred = sunk + rng.normal(scale=0.01, size=sunk.shape) + np.array([0.05, 0.0, 0.0])
    z = rest_vertices[:, 2]
    contact = z < 0.12
    np.savez(gt_dir / "labelled.npz", vertices=rest_vertices, contact=contact)
    np.savez(gt_dir / "unlabelled.npz", vertices=rest_vertices)  # PROX: no contact labels
    for name in ("labelled", "unlabelled"):
        np.savez(pred_dir / f"{name}.npz", vertices=pred)
    scenes = SceneSDFs("room", loader=box_room_loader)
    ev = Evaluator(body_model, scenes, protocol="sahmr")
    result = ev.evaluate(FolderReader(pred_dir), FolderReader(gt_dir), progress=False)
    rows = {r["name"]: r for r in result.per_frame}
    reg = np.asarray(body_model.topology.j_regressor_h36m, np.float64)
    ref = _h36m_reference(pred, rest_vertices, reg)
    for key, value in ref.items():
        assert rows["labelled"][key] == pytest.approx(value, rel=1e-9), key
    # PenE: metres summed over the vertices; ConFE adds |sdf| of the labelled vertices
    # (all vertices, as the dataset gives them); without labels ConFE = PenE.
    sdf = BoxRoomSDF().sample(torch.from_numpy(pred)).numpy()
    pene = np.clip(-sdf, 0, None).sum()
    confe = np.clip(-sdf[~contact], 0, None).sum() + np.abs(sdf[contact]).sum()
    assert rows["labelled"]["pene"] == pytest.approx(pene, rel=1e-9)
    assert rows["labelled"]["confe"] == pytest.approx(confe, rel=1e-9)
    assert rows["unlabelled"]["confe"] == pytest.approx(pene, rel=1e-9)
    s = result.summary()
    assert s["pene"]["unit"].startswith("m (") and s["mpjpe"]["unit"] == "mm"


def test_gt_vertex_map_formats_and_mapping(tmp_path, body_model, rest_vertices):
    V = rest_vertices.shape[0]
    # A made-up "SMPL-X" ground truth: the body's vertices followed by 50 others; the map takes
    # the first V and has 2 extra columns the official script's [:, :n_gt] slice drops.
    extra = 50
    other = np.random.default_rng(0).normal(size=(extra, 3))
    gt_x = np.concatenate([rest_vertices, other])
    mtx = sp.hstack([sp.identity(V), sp.csr_matrix((V, extra + 2))]).tocsr()
    sp.save_npz(tmp_path / "sparse.npz", mtx)
    np.savez(tmp_path / "dense.npz", mtx=mtx.toarray().astype(np.float32))
    small = np.arange(12.0).reshape(3, 4)
    np.savez(tmp_path / "small.npz", small)  # a dense map stored as the file's only array
    np.testing.assert_array_equal(load_vertex_map(tmp_path / "small.npz"), small)
    with open(tmp_path / "map.pkl", "wb") as fh:
        pickle.dump({"mtx": mtx}, fh)
    with pytest.raises(PermissionError, match="allow_pickle"):
        load_vertex_map(tmp_path / "map.pkl")
    with pytest.raises(ValueError, match="rows"):
        load_vertex_map(tmp_path / "sparse.npz", num_target_vertices=V + 1)
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    contact_x = np.zeros(V + extra, bool)
    contact_x[:V] = rest_vertices[:, 2] < 0.12
    np.savez(gt_dir / "f.npz", vertices=gt_x, contact=contact_x)
    np.savez(pred_dir / "f.npz", vertices=rest_vertices + np.array([0.05, 0.0, 0.0]))
    for path, allow in (("sparse.npz", False), ("dense.npz", False), ("map.pkl", True)):
        vmap = load_vertex_map(tmp_path / path, allow_pickle=allow, num_target_vertices=V)
        ev = Evaluator(body_model, SceneSDFs("room", loader=box_room_loader),
                       protocol="sahmr", gt_vertex_map=vmap)
        result = ev.evaluate(FolderReader(pred_dir), FolderReader(gt_dir), progress=False)
        assert not result.failed, result.failed
        row = result.per_frame[0]
        assert row["g_mpve"] == pytest.approx(50.0, rel=1e-9) and row["mpve"] < 1e-9
        # mapped labels: the soles hover 10-12 cm up -> ConFE = sum of their heights (m)
        assert row["confe"] == pytest.approx(rest_vertices[contact_x[:V], 2].sum(), rel=1e-6)
    # without a map, a 2V-vertex ground truth is a failed frame, not a crash
    result = Evaluator(body_model, None).evaluate(
        FolderReader(pred_dir), FolderReader(gt_dir), progress=False
    )
    assert [n for n, _ in result.failed] == ["f"]


def _run_cli(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location(
        "score_predictions_tool", ROOT / "tools" / "score_predictions.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_cli_scores_a_demo_folder_and_rejects_bad_maps(
    tmp_path, body_model, monkeypatch, capsys
):
    _write_demo_folder(tmp_path / "demo", body_model)
    monkeypatch.setattr(evaluator_module, "_default_sdf_loader", box_room_loader)
    scene = write_box_room(tmp_path / "room.ply")
    base = ["--pred", str(tmp_path / "demo"), "--gt", str(DEMO_GT), "--scene", str(scene),
            "--no-progress"]
    assert _run_cli([*base, "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["frames"] == 2 and data["protocol"] == "default"
    assert data["metrics"]["edge_error"]["value"] == pytest.approx(0.0, abs=1e-3)  # float32
    assert _run_cli([*base, "--out", str(tmp_path / "out2"), "--protocol", "sahmr"]) == 0
    data = json.loads((tmp_path / "out2" / "metrics.json").read_text())
    assert data["protocol"] == "sahmr" and data["metrics"]["pene"]["unit"].startswith("m (")
    # bad maps: one line, exit 2, nothing written
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with open(tmp_path / "map.pkl", "wb") as fh:
        pickle.dump({"mtx": np.eye(3)}, fh)
    for bad in ("bad.npz", "map.pkl", "missing.npz"):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            _run_cli([*base, "--out", str(tmp_path / "bad"), "--gt-vertex-map",
                      str(tmp_path / bad)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert "--gt-vertex-map" in err[-1], err
        assert not (tmp_path / "bad").exists()


def test_single_image_demo_folder_is_one_frame(tmp_path):
    """The demo writes one image's files straight into --out: that folder is one frame."""
    out = tmp_path / "out"
    out.mkdir()
    np.savez(out / "body_params.npz", vertices=np.zeros((4, 3)))
    trimesh.Trimesh(np.eye(3), [[0, 1, 2]], process=False).export(out / "body_world.ply")
    (out / "summary.json").write_text(json.dumps({"format": "sahmr.demo", "frame": "sit_sofa"}))
    reader = FolderReader(out)
    assert reader.names() == ["sit_sofa"]
    assert reader.load("sit_sofa").vertices.shape == (4, 3)
    (out / "summary.json").unlink()
    assert FolderReader(out).names() == ["out"]
