"""Convert a folder of body meshes into SMPL-format parameter files.

Every ``.ply`` / ``.obj`` in the folder must have the body model's topology (same vertex
count and order, e.g. the output of METRO, SA-HMR, a fit, or ``body_world.ply`` of the demo).
Each becomes ``<name>.npz`` with ``betas`` (NB,), ``global_orient`` (3,), ``body_pose`` (69,)
axis-angle radians and ``transl`` (3,) metres, in the mesh's own frame (smplx names), plus
``vertex_error_mm`` (mean distance of the parameters' mesh to the file's vertices) and
``max_vertex_error_mm``; ``fit_meshes_summary.json`` lists them all. The fit is
`sahmr.optim.fit_vertices.VertexFitter`, batched, on ``--device``.

Every input is checked before the fit starts; a bad one stops the run with one line on stderr
and exit code 2, and nothing is written. Each output file is written to a temporary name and
renamed, so no half-written file is left behind.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sahmr.atomic_write import atomic_save_npz, atomic_write_json
from sahmr.body.constants import MAX_BODY_EXTENT_M

logger = logging.getLogger(__name__)

__all__ = ["MESH_SUFFIXES", "MeshInputError", "find_meshes", "main", "read_mesh_vertices"]

MESH_SUFFIXES: tuple[str, ...] = (".ply", ".obj")
"""Mesh file types read (case-insensitive)."""

SUMMARY_NAME = "fit_meshes_summary.json"


class MeshInputError(ValueError):
    """A bad input; the message is the one line shown to the user."""


@dataclass
class _Mesh:
    name: str
    path: Path
    vertices: np.ndarray  # (V, 3) float32, metres


def find_meshes(folder: Path) -> list[Path]:
    """The mesh files directly inside ``folder``, sorted by name.

    Raises:
        MeshInputError: ``folder`` is not a folder or holds no mesh.
    """
    if not folder.is_dir():
        raise MeshInputError(f"{folder}: no such folder")
    paths = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    if not paths:
        raise MeshInputError(f"{folder}: no meshes ({', '.join(MESH_SUFFIXES)}) in this folder")
    stems = [p.stem for p in paths]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise MeshInputError(f"{folder}: several meshes share the name {dup[0]!r} "
                             f"(their parameter files would collide)")
    return paths


def read_mesh_vertices(path: Path, num_vertices: int, scale: float = 1.0) -> np.ndarray:
    """Vertices of one mesh file, in file order, checked against the body model.

    Args:
        path: A ``.ply`` or ``.obj`` file.
        num_vertices: The body model's V.
        scale: File units -> metres.

    Returns:
        (V, 3) float32, metres.

    Raises:
        MeshInputError: Unreadable, wrong vertex count, non-finite or implausibly large.
    """
    import trimesh

    kwargs = {"maintain_order": True} if path.suffix.lower() == ".obj" else {}
    try:
        mesh = trimesh.load(path, process=False, force="mesh", **kwargs)
        vertices = np.asarray(mesh.vertices, dtype=np.float64)
    except Exception as exc:  # trimesh raises many types for broken files
        raise MeshInputError(f"{path}: cannot read the mesh ({type(exc).__name__}: {exc})"
                             ) from exc
    if vertices.ndim != 2 or vertices.shape[-1] != 3 or len(vertices) == 0:
        raise MeshInputError(f"{path}: cannot read the mesh (no vertices)")
    if len(vertices) != num_vertices:
        raise MeshInputError(f"{path}: {len(vertices)} vertices, but the body model has "
                             f"{num_vertices} (the mesh must have its topology)")
    vertices = vertices * scale
    if not np.isfinite(vertices).all():
        raise MeshInputError(f"{path}: vertices hold NaN or infinite values")
    extent = float(np.ptp(vertices, axis=0).max())
    if extent > MAX_BODY_EXTENT_M:
        raise MeshInputError(f"{path}: the body spans {extent:.1f} m; give --scale 0.001 for "
                             "millimetres")
    return vertices.astype(np.float32)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("meshes", type=Path, help="folder of .ply / .obj body meshes")
    p.add_argument("--out", type=Path, default=None,
                   help="folder of the parameter files (default: the mesh folder)")
    p.add_argument("--body-model", type=Path, default=None,
                   help="SMPL-format .npz the meshes come from (default: the shipped body); "
                        "a .pkl needs --allow-pickle")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow unpickling a .pkl body model (only for files you trust)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    p.add_argument("--batch-size", type=int, default=64, help="meshes fitted together")
    p.add_argument("--iterations", type=int, default=None,
                   help="Levenberg-Marquardt iterations (default: the fitter's)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="mesh units -> metres (0.001 for millimetres)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tools/fit_meshes.py``; returns the exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.batch_size < 1:
        return _fail(f"--batch-size {args.batch_size}: must be >= 1")
    if args.iterations is not None and args.iterations < 0:
        return _fail(f"--iterations {args.iterations}: must be >= 0")
    if not (args.scale > 0 and np.isfinite(args.scale)):
        return _fail(f"--scale {args.scale}: must be a positive number")
    from sahmr.cli.checks import BadArgument, check_writable_folder

    out = args.out if args.out is not None else args.meshes
    try:  # a file in the way, no permission, read-only: before the fitting, not after it
        check_writable_folder(out, "--out")
    except BadArgument as exc:
        return _fail(str(exc))
    if args.body_model is not None and not args.body_model.is_file():
        return _fail(f"--body-model {args.body_model}: no such file")
    try:
        paths = find_meshes(args.meshes)
    except MeshInputError as exc:
        return _fail(str(exc))

    import torch

    from sahmr.body import BodyModel
    from sahmr.optim.fit_vertices import VertexFitter

    try:
        device = torch.device(args.device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:
        return _fail(f"--device {args.device} is not usable ({exc})")
    try:
        body = BodyModel(args.body_model, allow_pickle=args.allow_pickle)
    except (FileNotFoundError, ValueError, OSError, KeyError) as exc:
        return _fail(f"--body-model {args.body_model}: {exc}")
    try:
        meshes = [_Mesh(p.stem, p, read_mesh_vertices(p, body.num_vertices, args.scale))
                  for p in paths]
    except MeshInputError as exc:
        return _fail(str(exc))

    from tqdm import tqdm

    kwargs = {} if args.iterations is None else {"iterations": args.iterations}
    fitter = VertexFitter(body_model=body, **kwargs).to(device)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    with tqdm(total=len(meshes), unit="mesh", disable=args.quiet, desc="fit") as bar:
        for start in range(0, len(meshes), args.batch_size):
            chunk = meshes[start : start + args.batch_size]
            target = torch.from_numpy(np.stack([m.vertices for m in chunk])).to(device)
            res = fitter.fit(target)
            dist_mm = (res.vertices - target).norm(dim=-1).double().cpu().numpy() * 1000.0
            params = {k: v.detach().cpu().numpy().astype(np.float32)
                      for k, v in res.params.as_dict().items()}
            for i, mesh in enumerate(chunk):
                arrays = {k: v[i] for k, v in params.items()}
                arrays["vertex_error_mm"] = np.float32(dist_mm[i].mean())
                arrays["max_vertex_error_mm"] = np.float32(dist_mm[i].max())
                atomic_save_npz(out / f"{mesh.name}.npz", arrays)
                records.append({"mesh": mesh.path.name, "params": f"{mesh.name}.npz",
                                "vertex_error_mm": round(float(dist_mm[i].mean()), 4),
                                "max_vertex_error_mm": round(float(dist_mm[i].max()), 4)})
            bar.update(len(chunk))
    errors = [r["vertex_error_mm"] for r in records]
    summary = {
        "meshes": len(records),
        "body_model": str(body.model_path),
        "device": str(device),
        "iterations": fitter.iterations if args.iterations is None else args.iterations,
        "frame": "each mesh's own frame; units metres, rotations axis-angle radians",
        "mean_vertex_error_mm": round(float(np.mean(errors)), 4),
        "files": records,
    }
    atomic_write_json(out / SUMMARY_NAME, summary, indent=1)
    print(f"fitted {len(records)} meshes -> {out} (mean vertex error "
          f"{summary['mean_vertex_error_mm']:.3f} mm)")
    return 0
