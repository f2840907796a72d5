"""SMPL-X -> SMPL vertex transfer: read (.npz, opt-in .pkl), convert, apply in batch."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sahmr.body.smplx_to_smpl import VertexTransfer, load_vertex_map, save_vertex_map

ROOT = Path(__file__).resolve().parents[2]


def _random_map(n_tgt: int = 7, n_src: int = 11, seed: int = 0) -> np.ndarray:
    """A made-up row-stochastic map with 3 non-zeros per row (like deformation transfer)."""
    rng = np.random.default_rng(seed)
    m = np.zeros((n_tgt, n_src))
    for i in range(n_tgt):
        cols = rng.choice(n_src, 3, replace=False)
        w = rng.random(3) + 0.1
        m[i, cols] = w / w.sum()
    return m


def _loop(m: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Obvious reference: out[b, i] = sum_j m[i, j] * verts[b, j]."""
    out = np.zeros((verts.shape[0], m.shape[0], verts.shape[2]))
    for b in range(verts.shape[0]):
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                out[b, i] += m[i, j] * verts[b, j]
    return out


def test_batch_product_matches_dense_loop() -> None:
    m = _random_map()
    verts = np.random.default_rng(1).normal(size=(4, 11, 3))
    ref = _loop(m, verts)
    tr = VertexTransfer(sp.csr_matrix(m))
    out_t = tr(torch.from_numpy(verts))
    assert out_t.shape == (4, 7, 3) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy(), ref, atol=1e-12)
    out_f32 = tr(torch.from_numpy(verts).float())
    assert out_f32.dtype == torch.float32
    np.testing.assert_allclose(out_f32.numpy(), ref, atol=1e-5)
    np.testing.assert_allclose(tr(verts), ref, atol=1e-12)  # numpy path
    np.testing.assert_allclose(tr(torch.from_numpy(verts[0])).numpy(), ref[0], atol=1e-12)


def test_known_linear_map_picks_and_averages() -> None:
    # target 0 = source 2; target 1 = mean of sources 0 and 3; target 2 = source 4.
    m = np.zeros((3, 6))
    m[0, 2] = 1.0
    m[1, [0, 3]] = 0.5
    m[2, 4] = 1.0
    src = np.array([[0, 0, 0], [9, 9, 9], [1, 2, 3], [2, 4, 6], [-1, 0, 5], [7, 7, 7]], np.float32)
    out = VertexTransfer(m)(torch.from_numpy(src))
    np.testing.assert_allclose(out.numpy(), [[1, 2, 3], [1, 2, 3], [-1, 0, 5]])
    # contact labels: source 0 only -> target 1 has weight 0.5 (set), others 0.
    np.testing.assert_array_equal(
        VertexTransfer(m).labels(np.array([1, 0, 0, 0, 0, 1])), [False, True, False]
    )


def test_extra_columns_are_dropped_and_sizes_checked() -> None:
    m = _random_map(5, 14)
    tr = VertexTransfer(m, num_source_vertices=11)
    assert (tr.num_target_vertices, tr.num_source_vertices) == (5, 11)
    verts = np.random.default_rng(2).normal(size=(2, 11, 3))
    np.testing.assert_allclose(tr(verts), _loop(m[:, :11], verts), atol=1e-12)
    with pytest.raises(ValueError, match="takes 11 source vertices; got 12"):
        tr(np.zeros((1, 12, 3)))
    with pytest.raises(ValueError, match="columns"):
        VertexTransfer(m, num_source_vertices=20)


def test_read_npz_dense_sparse_and_pickle_opt_in(tmp_path: Path) -> None:
    m = _random_map()
    np.savez(tmp_path / "dense.npz", mtx=m)
    save_vertex_map(m, tmp_path / "sparse.npz")
    for name in ("dense.npz", "sparse.npz"):
        got = load_vertex_map(tmp_path / name, num_target_vertices=7)
        got = got.toarray() if sp.issparse(got) else got
        np.testing.assert_allclose(got, m)
    pkl = tmp_path / "smplx2smpl_deftrafo_setup.pkl"
    pkl.write_bytes(pickle.dumps({"mtx": sp.csr_matrix(m), "faces": np.zeros((2, 3))}))
    with pytest.raises(PermissionError, match="refusing to unpickle"):
        load_vertex_map(pkl)
    np.testing.assert_allclose(load_vertex_map(pkl, allow_pickle=True).toarray(), m)
    with pytest.raises(ValueError, match="7 rows"):
        load_vertex_map(tmp_path / "dense.npz", num_target_vertices=8)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"mtx": Path("/")}))
    with pytest.raises(pickle.UnpicklingError):
        load_vertex_map(evil, allow_pickle=True)


def _tool():
    spec = importlib.util.spec_from_file_location(
        "convert_smplx_transfer", ROOT / "tools" / "convert_smplx_transfer.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_convert_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = _tool()
    m = _random_map(7, 13)
    pkl = tmp_path / "setup.pkl"
    pkl.write_bytes(pickle.dumps({"mtx": sp.csr_matrix(m)}))
    out = tmp_path / "out.npz"
    assert tool.main([str(pkl), str(out)]) == 2  # no opt-in
    assert "refusing to unpickle" in capsys.readouterr().err and not out.exists()
    assert tool.main([str(pkl), str(out), "--allow-pickle", "--num-source-vertices", "11"]) == 0
    with np.load(out, allow_pickle=False) as z:
        assert "format" in z.files  # a plain scipy sparse file
    np.testing.assert_allclose(load_vertex_map(out).toarray(), m[:, :11])
    assert tool.main([str(pkl), str(tmp_path / "x.npz"), "--allow-pickle",
                      "--num-source-vertices", "20"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "13 columns" in err
    assert tool.main([str(tmp_path / "missing.npz"), str(out)]) == 2
    assert "not found" in capsys.readouterr().err
