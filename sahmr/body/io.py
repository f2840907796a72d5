"""Reading and writing SMPL-format body model files without trusting pickles.

An SMPL-format model is a mapping of plain arrays (V vertices, F faces, 24 joints):

| key            | shape        | meaning                                                  |
| -------------- | ------------ | -------------------------------------------------------- |
| v_template     | (V, 3)       | rest-pose template vertices, metres, SMPL body frame     |
| f              | (F, 3)       | triangle vertex indices                                  |
| shapedirs      | (V, 3, NB)   | shape blend shapes, metres per unit beta                 |
| posedirs       | (V, 3, 207)  | pose blend shapes (23 joints x 9 rotation entries)       |
| J_regressor    | (24, V)      | joint regressor (dense here; scipy sparse in SMPL files) |
| weights        | (V, 24)      | linear blend skinning weights                            |
| kintree_table  | (2, 24)      | row 0: parent of each joint (root's entry is ignored)    |

Optional keys kept when present: ``landmark_vertex_ids`` (21,) with ``landmark_names`` (21,)
(smplx's extra-joint landmarks), ``joint_names``, ``J_rest``, ``shape_names``,
``format_version`` and any other plain array.

`.npz` files are read with ``allow_pickle=False``. `.pkl` files (the official SMPL
distribution, Python 2 pickles holding chumpy objects and a scipy ``csc_matrix``) are refused
unless the caller opts in; even then they are read with `RestrictedUnpickler`, which can build
only numpy arrays, scipy sparse matrices, builtin containers and an inert stand-in for chumpy
objects, so a hostile file cannot run code. `save_body_model_npz` writes plain arrays that
load without pickle; ``python tools/convert_smpl.py IN.pkl OUT.npz --allow-pickle`` does both.
"""

from __future__ import annotations

import builtins
import copyreg
import hashlib
import io
import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import scipy.sparse as sp

from sahmr.body.constants import NUM_POSE_BASIS, NUM_SMPL_JOINTS, REQUIRED_KEYS

logger = logging.getLogger(__name__)

CONVERT_HINT = "python tools/convert_smpl.py SMPL_NEUTRAL.pkl out.npz --allow-pickle"

_SPARSE_CLASS_NAMES = frozenset(
    {
        "csc_matrix", "csr_matrix", "coo_matrix", "lil_matrix", "dok_matrix", "bsr_matrix",
        "dia_matrix", "csc_array", "csr_array", "coo_array",
    }
)  # fmt: skip
_BUILTIN_NAMES = frozenset(
    {
        "dict", "list", "tuple", "set", "frozenset", "object", "int", "float", "complex",
        "bool", "str", "bytes", "bytearray", "slice", "range", "unicode", "long",
    }
)  # fmt: skip
_NUMPY_MODULES = frozenset(
    {"numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
     "numpy._core.numeric"}
)  # fmt: skip


class ChumpyStandIn:
    """Inert replacement for any chumpy object met while unpickling.

    chumpy cannot be imported on Python >= 3.11, and importing it would run its code anyway.
    A pickled chumpy object is ``cls.__new__(cls)`` followed by ``__setstate__(state)``,
    where ``state`` is the object's ``__dict__`` minus its caches. A plain ``chumpy.ch.Ch``
    keeps its value in ``state['x']``; derived nodes (``chumpy.reordering.*``,
    ``chumpy.ch_ops.*``) keep their operands under their term names (e.g. ``'a'``, ``'b'``)
    and no value at all, because chumpy drops the ``_cache`` holding the result when
    pickling. `value` therefore returns ``state['x']`` and refuses anything else.

    Attributes:
        chumpy_class: ``"module.Name"`` of the chumpy class this object stands in for.
        state: The unpickled state mapping (or whatever object the pickle supplied).
        args: Positional arguments the pickle passed to the constructor, if any.
    """

    chumpy_class = "chumpy.?"

    def __new__(cls, *args: Any, **kwargs: Any) -> ChumpyStandIn:
        obj = super().__new__(cls)
        obj.state = {}
        obj.args = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        # Protocol-2 BUILD passes the dict (or a (dict, slots) pair); keep it verbatim.
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        self.state = state

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.args, self.state)

    @property
    def value(self) -> np.ndarray:
        """The wrapped array (``state['x']``), recursively unwrapped.

        Raises:
            ValueError: If the object is a derived chumpy node without a stored value.
        """
        state = self.state
        if isinstance(state, dict) and "x" in state:
            return to_plain_array(state["x"])
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"chumpy object {self.chumpy_class} stores no value ('x' missing; state keys: "
            f"{keys}); it is a derived expression that only chumpy can evaluate"
        )


def _make_stand_in(module: str, name: str) -> type[ChumpyStandIn]:
    return type(name, (ChumpyStandIn,), {"chumpy_class": f"{module}.{name}"})


def _guarded_reconstructor(cls: type, base: type, state: Any) -> Any:
    """`copyreg._reconstructor` for protocol 0/1 pickles, restricted to vetted classes."""
    if not (issubclass(cls, ChumpyStandIn) or cls in _vetted_classes()):
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")
    if base is object:
        return object.__new__(cls)
    if base not in _vetted_classes():
        raise pickle.UnpicklingError(f"refusing base class {base!r}")
    return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as Python 3 pickles bytes at protocol < 3, text codecs only."""
    if encoding.replace("-", "").replace("_", "").lower() not in {"latin1", "iso88591", "utf8"}:
        raise pickle.UnpicklingError(f"refusing codec {encoding!r} in _codecs.encode")
    return text.encode(encoding)


def _vetted_classes() -> frozenset[type]:
    classes = {dict, list, tuple, set, frozenset, object, int, float, complex, bool, str,
               bytes, bytearray, np.ndarray, np.dtype}  # fmt: skip
    classes.update(getattr(sp, n) for n in _SPARSE_CLASS_NAMES if hasattr(sp, n))
    return frozenset(classes)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only build plain data: arrays, sparse matrices, containers.

    Allowed globals: numpy's array/dtype/scalar reconstruction functions, numpy scalar and
    dtype classes, scipy.sparse matrix classes (any ``scipy.sparse*`` module, old or new
    layout), builtin containers and scalars, and ``copyreg._reconstructor`` /
    ``_codecs.encode`` guarded to those. Any ``chumpy.*`` class maps to a `ChumpyStandIn`
    subclass. Everything else raises `pickle.UnpicklingError` naming the class, before
    anything is called.
    """

    def __init__(self, file: BinaryIO, **kwargs: Any) -> None:
        kwargs.setdefault("encoding", "latin1")
        super().__init__(file, **kwargs)
        self._stand_ins: dict[tuple[str, str], type[ChumpyStandIn]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            key = (module, name)
            if key not in self._stand_ins:
                self._stand_ins[key] = _make_stand_in(module, name)
            return self._stand_ins[key]
        if module in _NUMPY_MODULES or module.startswith("numpy."):
            found = _numpy_global(name)
            if found is not None:
                return found
        if module.startswith("scipy.sparse") and name in _SPARSE_CLASS_NAMES:
            cls = getattr(sp, name, None)
            if cls is not None:
                return cls
        if module in ("builtins", "__builtin__") and name in _BUILTIN_NAMES:
            return {"unicode": str, "long": int}.get(name) or getattr(builtins, name)
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _guarded_reconstructor
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise pickle.UnpicklingError(
            f"refusing to unpickle global {module}.{name}: only numpy arrays, scipy sparse "
            "matrices, builtin containers and chumpy values are allowed"
        )


def _numpy_global(name: str) -> Any:
    """The numpy object a pickle may name, or None if it is not array/dtype/scalar related."""
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    if name == "_reconstruct":
        return reconstruct
    if name == "scalar":
        return scalar
    if name in ("ndarray", "dtype"):
        return getattr(np, name)
    # numpy 2 pickles dtypes as numpy.dtypes.Float64DType etc.
    if name.endswith("DType"):
        import numpy.dtypes as npd

        return getattr(npd, name, None)
    cls = getattr(np, name, None)
    if isinstance(cls, type) and issubclass(cls, np.generic):
        return cls
    return None


def restricted_pickle_load(file: BinaryIO) -> Any:
    """Unpickles ``file`` with `RestrictedUnpickler` (latin1, for Python 2 pickles).

    Args:
        file: A binary file object positioned at a pickle.

    Returns:
        The unpickled object; chumpy objects appear as `ChumpyStandIn` instances.

    Raises:
        pickle.UnpicklingError: If the pickle names a global outside the allow-list.
    """
    return RestrictedUnpickler(file, encoding="latin1").load()


def to_plain_array(value: Any) -> np.ndarray:
    """Converts a loaded value (array, sparse matrix, chumpy stand-in, list) to numpy.

    Sparse matrices become dense float64 arrays, rebuilt from their raw components so that
    matrices pickled by old scipy versions convert too.

    Args:
        value: The value to convert.

    Returns:
        A plain numpy array.
    """
    if isinstance(value, ChumpyStandIn):
        return value.value
    if isinstance(value, np.ndarray):
        if value.dtype == object and value.size:
            items = [to_plain_array(v) for v in value.ravel()]
            if all(i.shape == items[0].shape and i.dtype != object for i in items):
                return np.stack(items).reshape(value.shape + items[0].shape)
        return value
    if sp.issparse(value):
        return _sparse_to_dense(value)
    return np.asarray(value)


def _sparse_to_dense(mat: Any) -> np.ndarray:
    state = getattr(mat, "__dict__", {})
    shape = state.get("_shape") or state.get("shape") or mat.shape
    fmt = type(mat).__name__[:3]
    if fmt in ("csc", "csr") and {"data", "indices", "indptr"} <= set(state):
        cls = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
        fresh = cls((state["data"], state["indices"], state["indptr"]), shape=tuple(shape))
        return np.asarray(fresh.toarray(), dtype=np.float64)
    if fmt == "coo" and "data" in state:
        if "coords" in state:
            row, col = state["coords"]
        else:
            row, col = state["row"], state["col"]
        fresh = sp.coo_matrix((state["data"], (row, col)), shape=tuple(shape))
        return np.asarray(fresh.toarray(), dtype=np.float64)
    return np.asarray(mat.toarray(), dtype=np.float64)


def validate_body_model_data(data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Checks an SMPL-format mapping and returns it as clean numpy arrays.

    Floats become float64, ``f`` and ``landmark_vertex_ids`` int64, ``kintree_table`` int64
    (the root's parent entry set to -1). Non-array entries (e.g. the dict
    ``pose_training_info`` of official files) are dropped with a debug message.

    Args:
        data: Mapping of key -> array-like (sparse matrices and chumpy stand-ins allowed).

    Returns:
        Dict of key -> numpy array.

    Raises:
        ValueError: On a missing key or inconsistent shapes, naming the key.
    """
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"body model is missing required key(s) {missing}; has {sorted(data)}")
    out: dict[str, np.ndarray] = {}
    for key, value in data.items():
        if isinstance(value, dict) or value is None:
            logger.debug("dropping non-array entry %r (%s)", key, type(value).__name__)
            continue
        try:
            arr = to_plain_array(value)
        except (TypeError, ValueError) as err:
            if key in REQUIRED_KEYS:
                raise ValueError(f"cannot convert {key!r} to an array: {err}") from err
            logger.debug("dropping entry %r: %s", key, err)
            continue
        if arr.dtype == object:
            if key in REQUIRED_KEYS:
                raise ValueError(f"{key!r} is an object array, expected numbers")
            logger.debug("dropping object-array entry %r", key)
            continue
        if np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64, copy=False)
        out[key] = np.ascontiguousarray(arr)

    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        if not np.issubdtype(out[key].dtype, np.number) or not np.isfinite(out[key]).all():
            raise ValueError(f"{key} holds NaN, infinite or non-numeric values")
    v = out["v_template"]
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"v_template must be (V, 3), got {v.shape}")
    num_v = v.shape[0]
    f = out["f"]
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"f must be an integer (F, 3) array, got {f.dtype} {f.shape}")
    f = f.astype(np.int64)
    if f.size and (f.min() < 0 or f.max() >= num_v):
        raise ValueError(f"f indexes vertices outside [0, {num_v})")
    out["f"] = f
    sd = out["shapedirs"]
    if sd.ndim != 3 or sd.shape[:2] != (num_v, 3) or sd.shape[2] < 1:
        raise ValueError(f"shapedirs must be (V={num_v}, 3, NB>=1), got {sd.shape}")
    pd = out["posedirs"]
    if pd.shape != (num_v, 3, NUM_POSE_BASIS):
        raise ValueError(
            f"posedirs must be (V={num_v}, 3, {NUM_POSE_BASIS}) (23 joints x 9 rotation "
            f"entries; zeros allowed), got {pd.shape}"
        )
    jr = out["J_regressor"]
    if jr.shape != (NUM_SMPL_JOINTS, num_v):
        raise ValueError(f"J_regressor must be ({NUM_SMPL_JOINTS}, V={num_v}), got {jr.shape}")
    w = out["weights"]
    if w.shape != (num_v, NUM_SMPL_JOINTS):
        raise ValueError(f"weights must be (V={num_v}, {NUM_SMPL_JOINTS}), got {w.shape}")
    kt = out["kintree_table"]
    if kt.shape != (2, NUM_SMPL_JOINTS):
        raise ValueError(f"kintree_table must be (2, {NUM_SMPL_JOINTS}), got {kt.shape}")
    kt = kt.astype(np.int64)
    kt[0, 0] = -1
    parents = kt[0, 1:]
    if np.any(parents < 0) or np.any(parents >= np.arange(1, NUM_SMPL_JOINTS)):
        raise ValueError("kintree_table parents must precede their children (SMPL order)")
    out["kintree_table"] = kt
    if "landmark_vertex_ids" in out:
        ids = out["landmark_vertex_ids"]
        if not np.issubdtype(ids.dtype, np.integer) or ids.ndim != 1:
            raise ValueError(f"landmark_vertex_ids must be 1-D integers, got {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= num_v):
            raise ValueError(f"landmark_vertex_ids outside [0, {num_v})")
        out["landmark_vertex_ids"] = ids.astype(np.int64)
        names = out.get("landmark_names")
        if names is not None and names.shape != ids.shape:
            raise ValueError(
                f"landmark_names {names.shape} does not match landmark_vertex_ids {ids.shape}"
            )
    return out


def load_body_model_data(path: str | Path, *, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """Loads an SMPL-format model file as plain, validated numpy arrays.

    Args:
        path: A ``.npz`` file (read without pickle) or a ``.pkl`` file (official SMPL
            layout; read only with ``allow_pickle=True``, through `RestrictedUnpickler`).
        allow_pickle: Opt-in for ``.pkl`` files.

    Returns:
        Dict of key -> numpy array, see the module docstring for keys and shapes.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        PermissionError: For a pickle without ``allow_pickle=True`` (message says how).
        pickle.UnpicklingError: If the pickle holds anything but plain data.
        ValueError: On an unknown suffix, a missing key or inconsistent shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"body model file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            raw: dict[str, Any] = {k: npz[k] for k in npz.files}
    elif suffix in (".pkl", ".pickle"):
        if not allow_pickle:
            raise PermissionError(
                f"refusing to unpickle {path}: pickles can run code. Either convert it once to "
                f"a plain .npz with `{CONVERT_HINT}` and point model_path at the .npz, or pass "
                "allow_pickle=True (config: body.allow_pickle=true) to read it with a restricted "
                "unpickler that builds only arrays."
            )
        with path.open("rb") as fh:
            raw = restricted_pickle_load(fh)
        if not isinstance(raw, dict):
            raise ValueError(f"{path} holds a {type(raw).__name__}, expected a dict of arrays")
    else:
        raise ValueError(f"unsupported body model file {path}: expected .npz or .pkl")
    data = validate_body_model_data(raw)
    logger.debug("loaded body model %s: V=%d", path, data["v_template"].shape[0])
    return data


def save_body_model_npz(data: Mapping[str, Any], path: str | Path) -> Path:
    """Writes an SMPL-format mapping as an ``.npz`` of plain arrays (no pickle needed).

    Args:
        data: Mapping of key -> array-like; validated with `validate_body_model_data`.
        path: Output path; parent folders are created.

    Returns:
        The written path.
    """
    clean = validate_body_model_data(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, **clean)
    return path


def content_hash(data: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over a model's arrays (sorted keys, dtype, shape and bytes).

    Args:
        data: Mapping of key -> numpy array, as returned by `load_body_model_data`.

    Returns:
        Hex digest identifying the model content (used as a cache key).
    """
    h = hashlib.sha256()
    for key in sorted(data):
        arr = np.ascontiguousarray(data[key])
        h.update(key.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def load_npz_restricted(path: str | Path) -> dict[str, Any]:
    """Reads an ``.npz`` whose members may be object arrays, without arbitrary unpickling.

    Plain members are read as numpy does; object-array members (stored as pickles inside
    the ``.npy``) are unpickled with `RestrictedUnpickler`, so they may hold only arrays,
    scipy sparse matrices and builtin containers. Used for METRO's ``mesh_downsampling.npz``.

    Args:
        path: The ``.npz`` file.

    Returns:
        Dict of member name -> array (object arrays hold sparse matrices / lists).
    """
    out: dict[str, Any] = {}
    with zipfile.ZipFile(Path(path)) as zf:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            with zf.open(info) as member:
                buf = io.BytesIO(member.read())
            version = np.lib.format.read_magic(buf)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(buf)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(buf)
            if dtype.hasobject:
                obj = restricted_pickle_load(buf)
                out[name] = obj
            else:
                buf.seek(0)
                out[name] = np.lib.format.read_array(buf, allow_pickle=False)
    return out
