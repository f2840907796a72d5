"""Tests of sahmr.body.io: npz round trip, restricted unpickling of SMPL-style pickles."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp

from sahmr.body.io import (
    CONVERT_HINT,
    content_hash,
    load_body_model_data,
    load_npz_restricted,
    restricted_pickle_load,
    save_body_model_npz,
)


def _tiny_model(num_v: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    jreg = rng.random((24, num_v))
    weights = rng.random((num_v, 24))
    parents = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17,
                        18, 19, 20, 21])  # fmt: skip
    return {
        "v_template": rng.standard_normal((num_v, 3)),
        "f": rng.integers(0, num_v, (40, 3)),
        "shapedirs": rng.standard_normal((num_v, 3, 10)),
        "posedirs": rng.standard_normal((num_v, 3, 207)),
        "J_regressor": jreg / jreg.sum(1, keepdims=True),
        "weights": weights / weights.sum(1, keepdims=True),
        "kintree_table": np.stack([parents, np.arange(24)]),
    }


def test_npz_round_trip(tmp_path):
    data = _tiny_model()
    path = save_body_model_npz(data, tmp_path / "m.npz")
    loaded = load_body_model_data(path)
    for key in data:
        if key != "kintree_table":
            np.testing.assert_array_equal(loaded[key], data[key])
    assert loaded["kintree_table"][0, 0] == -1
    with np.load(path, allow_pickle=False) as npz:  # plain arrays only
        assert set(npz.files) == set(data)
    assert content_hash(loaded) == content_hash(load_body_model_data(path))
    assert content_hash(loaded) != content_hash(_tiny_model(seed=1))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("posedirs", np.zeros((30, 3, 10)), "207"),
        ("weights", np.zeros((29, 24)), "weights"),
        ("J_regressor", np.zeros((24, 31)), "J_regressor"),
        ("f", np.full((4, 3), 30), "outside"),
    ],
)
def test_validation_errors(tmp_path, key, value, message):
    data = _tiny_model()
    data[key] = value
    with pytest.raises(ValueError, match=message):
        save_body_model_npz(data, tmp_path / "bad.npz")


def test_missing_key(tmp_path):
    data = _tiny_model()
    del data["shapedirs"]
    np.savez(tmp_path / "m.npz", **data)
    with pytest.raises(ValueError, match="shapedirs"):
        load_body_model_data(tmp_path / "m.npz")


def _write_chumpy_pickle(path, data) -> None:
    """Pickles ``data`` the way official SMPL files are laid out, with a fake chumpy."""
    pkg = types.ModuleType("chumpy")
    mod = types.ModuleType("chumpy.ch")

    class Ch:  # stand-in with chumpy's pickled layout: state dict with the value in 'x'
        def __init__(self, x):
            self.x = x
            self._dirty_vars = set()
            self._itr = None

        def __getstate__(self):
            return dict(self.__dict__)

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    mod.Ch = Ch
    pkg.ch = mod
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, mod
    try:
        wrapped = dict(data)
        for key in ("v_template", "shapedirs", "posedirs", "weights"):
            wrapped[key] = Ch(data[key])
        wrapped["J_regressor"] = sp.csc_matrix(data["J_regressor"])
        wrapped["bs_style"] = "lbs"
        wrapped["pose_training_info"] = {"a": 1}
        with open(path, "wb") as fh:
            pickle.dump(wrapped, fh, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


def test_restricted_loader_recovers_chumpy_arrays(tmp_path):
    data = _tiny_model()
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    _write_chumpy_pickle(path, data)
    assert "chumpy" not in sys.modules
    loaded = load_body_model_data(path, allow_pickle=True)
    for key in ("v_template", "shapedirs", "posedirs", "weights", "J_regressor", "f"):
        np.testing.assert_array_equal(loaded[key], data[key])
    assert loaded["J_regressor"].dtype == np.float64
    assert "pose_training_info" not in loaded


def test_pickle_refused_by_default(tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    _write_chumpy_pickle(path, _tiny_model())
    with pytest.raises(PermissionError) as err:
        load_body_model_data(path)
    assert "allow_pickle=True" in str(err.value)
    assert CONVERT_HINT in str(err.value)


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("func", [os.system, subprocess.Popen, eval])
def test_malicious_pickle_refused_without_running(tmp_path, func):
    marker = tmp_path / "pwned"
    payload = {"v_template": _Evil(func, f"touch {marker}" if func is not eval else "1")}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_body_model_data(path, allow_pickle=True)
    assert not marker.exists()


def test_restricted_loader_accepts_numpy_scalars_and_sparse(tmp_path):
    obj = {"a": np.float32(2.5), "b": sp.csr_matrix(np.eye(3)), "c": [np.arange(3)]}
    import io

    out = restricted_pickle_load(io.BytesIO(pickle.dumps(obj, protocol=2)))
    assert out["a"] == np.float32(2.5)
    np.testing.assert_array_equal(out["b"].toarray(), np.eye(3))


def test_npz_object_arrays_read_restricted(tmp_path):
    path = tmp_path / "obj.npz"
    d = np.empty(1, dtype=object)
    d[0] = sp.csc_matrix(np.ones((2, 3)))
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil(os.system, "true")
    np.savez(path, D=d)
    assert sp.issparse(load_npz_restricted(path)["D"][0])
    np.savez(tmp_path / "evil.npz", D=evil)
    with pytest.raises(pickle.UnpicklingError):
        load_npz_restricted(tmp_path / "evil.npz")


def test_convert_tool(tmp_path):
    src = tmp_path / "SMPL_NEUTRAL.pkl"
    data = _tiny_model()
    _write_chumpy_pickle(src, data)
    out = tmp_path / "out.npz"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    tool = os.path.join(root, "tools", "convert_smpl.py")
    refused = subprocess.run([sys.executable, tool, str(src), str(out)], capture_output=True)
    assert refused.returncode != 0 and not out.exists()
    done = subprocess.run(
        [sys.executable, tool, str(src), str(out), "--allow-pickle"], capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
    np.testing.assert_array_equal(load_body_model_data(out)["shapedirs"], data["shapedirs"])
