"""tools/fit_meshes.py (sahmr.cli.fit_meshes): a folder of meshes -> parameter files."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
import trimesh

from sahmr.cli.fit_meshes import SUMMARY_NAME, main
from sahmr.optim.fit_vertices import VertexFitter, sample_body_params


@functools.lru_cache(maxsize=1)
def _body():
    from sahmr.body import BodyModel

    return BodyModel()


@pytest.fixture(scope="module")
def bodies():
    """Three generated bodies: (params, vertices (3, V, 3))."""
    truth = sample_body_params(3, seed=21)
    with torch.no_grad():
        verts = VertexFitter(body_model=_body()).vertices(truth)
    return truth, verts.numpy()


def _write(folder, name, vertices, faces):
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    suffix = name.rsplit(".", 1)[1]
    data = mesh.export(file_type=suffix)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def test_folder_of_meshes_becomes_parameter_files(tmp_path, bodies, capsys):
    truth, verts = bodies
    faces = _body().faces
    src = tmp_path / "meshes"
    src.mkdir()
    for i, name in enumerate(["a.ply", "b.obj", "c.PLY"]):
        _write(src, name, verts[i], faces)
    (src / "notes.txt").write_text("not a mesh")
    out = tmp_path / "params"
    code = main([str(src), "--out", str(out), "--batch-size", "2", "--iterations", "8",
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.npz", "b.npz", "c.npz", SUMMARY_NAME]
    for i, stem in enumerate("abc"):
        with np.load(out / f"{stem}.npz", allow_pickle=False) as z:
            params = {k: z[k] for k in z.files}
        assert params["betas"].shape == (10,) and params["body_pose"].shape == (69,)
        assert params["global_orient"].shape == (3,) and params["transl"].shape == (3,)
        assert float(params["vertex_error_mm"]) < 0.1
        assert float(params["max_vertex_error_mm"]) >= float(params["vertex_error_mm"])
        # the parameters reproduce the file's mesh through the body model
        with torch.no_grad():
            again = _body()(**{k: torch.as_tensor(params[k])[None] for k in
                               ("betas", "global_orient", "body_pose", "transl")}).vertices
        assert np.abs(again[0].numpy() - verts[i]).max() < 1e-3
        np.testing.assert_allclose(params["betas"], truth.betas[i].numpy(), atol=0.02)
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["meshes"] == 3 and [f["mesh"] for f in summary["files"]] == [
        "a.ply", "b.obj", "c.PLY"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files


def test_empty_folder(tmp_path, capsys):
    assert main([str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no meshes" in err and str(tmp_path) in err


def test_missing_folder(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--quiet"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_bad_inputs_name_the_file_and_write_nothing(tmp_path, bodies, capsys):
    _, verts = bodies
    faces = _body().faces
    src = tmp_path / "meshes"
    src.mkdir()
    _write(src, "good.ply", verts[0], faces)
    small = trimesh.creation.icosphere(subdivisions=1)
    _write(src, "sphere.ply", small.vertices, small.faces)
    out = tmp_path / "out"
    assert main([str(src), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "sphere.ply" in err and f"{len(small.vertices)} vertices" in err and "6890" in err
    assert not out.exists()

    (src / "sphere.ply").unlink()
    (src / "broken.obj").write_bytes(b"\x00\x01 garbage \xff")
    assert main([str(src), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "broken.obj" in err
    assert not out.exists()


def test_bad_options(tmp_path, capsys):
    assert main([str(tmp_path), "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
    assert main([str(tmp_path), "--body-model", str(tmp_path / "none.npz")]) == 2
    assert "none.npz" in capsys.readouterr().err


def test_unusable_device(tmp_path, capsys):
    (tmp_path / "a.ply").write_bytes(b"")
    assert main([str(tmp_path), "--device", "nosuchdevice", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--device nosuchdevice" in err and err.count("\n") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.ply"]
