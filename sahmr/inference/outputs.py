"""Files the demo writes for a frame, the batch summary table, and all-or-nothing output folders.

Per frame (all world = the scan's frame, metres; formats in docs/demo.md):

* ``body_world.ply`` / ``body_world.obj``: the body mesh in the scan's frame: the mesh of the
  parameters in ``body_params.npz`` (plain ``smplx.SMPL`` with the body's arrays reproduces it).
* ``body_params.npz``: ``vertices`` (V, 3) and ``joints`` (J, 3) world, ``root`` (3,) world,
  ``vertices_cam`` (V, 3), ``faces``, ``K``, ``T_w2c``, ``bbox``, ``scene`` (name);
  ``betas``, ``global_orient``, ``body_pose``, ``transl`` (world frame, smplx names, so
  `sahmr.evaluation.readers` can read the file) and the same four with a ``_cam`` suffix
  (camera frame); ``params_source`` (``regressed`` by the method or ``fitted`` to its
  vertices by `sahmr.optim.fit_vertices`) and ``vertices_method`` (V, 3), the method's own
  vertices (world). Only with ``fit_body`` off and a vertex-only method are the parameters
  absent.
* ``scene_body.glb``: the scan and the body in one binary glTF (nodes rotate the scan's up
  axis to glTF's +Y; the buffers hold world coordinates), body contact vertices and the
  method's contact scene points coloured by region.
* ``contacts.json``: root position, the method's contact scene points with their regions,
  and the body vertices within 7 cm of the scan per region (from the scene SDF).
* ``overlay.png``: the body drawn over the image (with the bbox).
* ``scene_views.png``: the body in the scan from the input camera and 2 orbit viewpoints,
  contact points coloured by region.
* ``summary.json``: timings per stage, penetration figures, device, errors vs ground truth.

`staged_output` writes everything into a temporary sibling folder and renames it to the
target only when the whole run succeeded, so a failed run never leaves half an output.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sahmr.body.constants import CONTACT_REGION_NAMES
from sahmr.inference.errors import InputError
from sahmr.inference.pipeline import FramePrediction
from sahmr.inference.scene import SceneData
from sahmr.scene.contact import CONTACT_THRESHOLD_M

logger = logging.getLogger(__name__)

__all__ = [
    "SUMMARY_FORMAT",
    "check_output_folder",
    "contacts_record",
    "staged_output",
    "write_batch_summary",
    "write_frame_outputs",
    "write_json",
    "write_scene_body_glb",
]

SUMMARY_FORMAT = "sahmr.demo"
"""``format`` key of every summary.json the demo writes (marks folders it may replace)."""


_NUM = r"-?[0-9][0-9.eE+-]*"
_FLAT_LIST = re.compile(rf"\[\s*({_NUM}(?:,\s*{_NUM})*)\s*\]")


def write_json(path: Path, obj: Any) -> Path:
    """Write JSON (indented, numpy scalars converted, innermost lists on one line)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    text = json.dumps(obj, indent=1, default=default)
    # Lists of plain numbers on one line each (points stay one per line).
    text = _FLAT_LIST.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _is_demo_output(folder: Path) -> bool:
    summary = folder / "summary.json"
    try:
        return json.loads(summary.read_text(encoding="utf-8")).get("format") == SUMMARY_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


OUTPUT_FILES_KEY = "output_files"
"""Key of the top summary.json listing every file of the folder the demo wrote (path: bytes)."""


def _folder_files(folder: Path) -> dict[str, int]:
    """Every file, link and empty folder under ``folder``: relative path -> size (bytes).

    Links (to files or folders) are listed, never followed; a folder's own entry is listed only
    when it is empty (a folder someone made by hand is theirs too).
    """
    found: dict[str, int] = {}
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        for name in [*files, *(d for d in dirs if (base / d).is_symlink())]:
            path = base / name
            rel = path.relative_to(folder).as_posix()
            found[rel] = -1 if path.is_symlink() else path.stat().st_size
        if not dirs and not files and base != folder:
            found[base.relative_to(folder).as_posix() + "/"] = 0
    return found


def _record_output_files(folder: Path) -> None:
    """Add `OUTPUT_FILES_KEY` (what this run wrote) to ``folder/summary.json``."""
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        return
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    listed = {k: v for k, v in _folder_files(folder).items() if k != "summary.json"}
    summary[OUTPUT_FILES_KEY] = listed
    write_json(summary_path, summary)


def _user_files(folder: Path) -> list[str] | None:
    """Files in an earlier demo output that the demo did not write, or that changed since.

    Returns:
        Their relative paths (empty: the folder holds only the demo's own files), or None when
        the folder's summary.json does not list its files (an older demo wrote it).
    """
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    listed = summary.get(OUTPUT_FILES_KEY) if isinstance(summary, dict) else None
    if not isinstance(listed, dict):
        return None
    return sorted(
        rel for rel, size in _folder_files(folder).items()
        if rel != "summary.json" and listed.get(rel) != size
    )  # fmt: skip


def _check_can_write_beside(out: Path) -> None:
    """Raise `InputError` unless the staging folder (a sibling of ``out``) can be made."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--out {out}: {parent} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".sahmr-write-probe-")
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write in {parent} ({exc.strerror})") from exc
    os.close(fd)
    os.unlink(probe)


def check_output_folder(out: str | Path, *, overwrite: bool = False) -> None:
    """Raise `InputError` unless ``out`` may be (re)written by the demo.

    ``out`` may be absent, empty, an earlier demo output holding only the files the demo
    wrote there (its summary.json says ``"format": "sahmr.demo"`` and lists them, sizes
    unchanged), or anything when ``overwrite`` is set. A file someone added to (or changed in)
    an earlier output is never deleted without ``overwrite``. The folder beside ``out`` must
    be writable (checked with a probe file, removed at once).
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise InputError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()) and not overwrite:
            if not _is_demo_output(out):
                raise InputError(f"--out {out} exists and holds files the demo did not write: "
                                 "choose another folder or pass --overwrite")
            user = _user_files(out)
            if user is None:
                raise InputError(f"--out {out} is an older demo output that does not list its "
                                 "files, so yours cannot be told apart: choose another folder "
                                 "or pass --overwrite")
            if user:
                more = f" and {len(user) - 3} more" if len(user) > 3 else ""
                raise InputError(f"--out {out} holds files the demo did not write or that "
                                 f"changed since ({', '.join(user[:3])}{more}): move them, "
                                 "choose another folder or pass --overwrite")
    _check_can_write_beside(out)


_STAGING = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>[0-9]+)-[0-9]+$")


def _remove_stale_staging(out: Path) -> None:
    """Delete staging folders of ``out`` left by killed demo runs (their process is gone)."""
    if not out.parent.is_dir():
        return
    for cand in out.parent.glob(f".{glob.escape(out.name)}.*-*-*"):
        match = _STAGING.match(cand.name)
        if match is None or match["name"] != out.name or not cand.is_dir():
            continue
        pid = int(match["pid"])
        try:
            os.kill(pid, 0)
            continue  # still running (or another user's): not ours to delete
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(cand, ignore_errors=True)
        logger.info("removed %s, left by a killed demo run (pid %d)", cand, pid)


@contextmanager
def staged_output(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder that becomes ``out`` only if the block succeeds.

    An existing ``out`` is replaced when it is empty, is an earlier demo output holding only
    the demo's own files (`check_output_folder`, checked again just before the swap) or
    ``overwrite`` is set. The files written are listed in summary.json (`OUTPUT_FILES_KEY`)
    so that a later run can tell them from files added by hand. Staging folders of killed
    runs are removed.

    Args:
        out: The final folder.
        overwrite: Replace any existing ``out``.

    Yields:
        The temporary folder (a hidden sibling of ``out``).

    Raises:
        InputError: ``out`` exists, is not a previous demo output and ``overwrite`` is off
            (raised before anything is written, and again, with nothing kept, if someone
            added files to ``out`` while the demo ran).
    """
    out = Path(out)
    check_output_folder(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        yield tmp
        _record_output_files(tmp)
        check_output_folder(out, overwrite=overwrite)  # files may have appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def contacts_record(result: FramePrediction) -> dict[str, Any]:
    """The content of ``contacts.json`` (world frame, metres)."""
    regions = result.contact_point_region.astype(np.int64)
    by_region = {
        CONTACT_REGION_NAMES[r]: int((regions == r).sum()) for r in sorted(set(regions.tolist()))
    }
    body = None
    if result.body_contact is not None:
        labels = result.body_contact
        body = {
            CONTACT_REGION_NAMES[r]: int((labels == r).sum())
            for r in range(1, len(CONTACT_REGION_NAMES))
            if (labels == r).any()
        }
    return {
        "frame": "world (the scan's frame), metres",
        "root_world": np.round(result.root_world, 6).tolist(),
        "root_cam": np.round(result.prediction.root_cam[0].double().numpy(), 6).tolist(),
        "regions_in_contact": sorted(set(by_region) | set(body or {})),
        "predicted_contact_points": {
            "count": len(regions),
            "per_region": by_region,
            "points_world": np.round(result.contact_points_world, 5).tolist(),
            "region": regions.tolist(),
        },
        "body_vertices_in_contact": (
            None if body is None else {"threshold_m": CONTACT_THRESHOLD_M, "per_region": body}
        ),
        "region_names": list(CONTACT_REGION_NAMES),
    }


def _write_mesh(folder: Path, vertices: np.ndarray, faces: np.ndarray,
                vertex_colors: np.ndarray | None) -> None:
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if vertex_colors is not None:
        rgba = np.concatenate([vertex_colors, np.ones((len(vertex_colors), 1))], axis=1)
        mesh.visual.vertex_colors = (rgba * 255 + 0.5).astype(np.uint8)
    (folder / "body_world.ply").write_bytes(mesh.export(file_type="ply", encoding="binary"))
    (folder / "body_world.obj").write_text(
        mesh.export(file_type="obj", include_color=False, include_normals=False),
        encoding="utf-8",
    )


def _params_arrays(result: FramePrediction, faces: np.ndarray, scene: str) -> dict[str, Any]:
    arrays: dict[str, Any] = {
        "vertices": result.vertices_world.astype(np.float32),
        "joints": result.joints_world.astype(np.float32),
        "root": result.root_world.astype(np.float32),
        "vertices_cam": result.verts_cam.astype(np.float32),
        "faces": np.asarray(faces, np.int32),
        "K": result.camera.K.astype(np.float64),
        "T_w2c": result.camera.T_w2c.astype(np.float64),
        "bbox": np.asarray(result.bbox, np.float64),
        "scene": np.array(scene),
    }
    if result.params_world is not None and result.params_cam is not None:
        for k, v in result.params_world.items():
            arrays[k] = np.asarray(v, np.float32)
        for k, v in result.params_cam.items():
            arrays[f"{k}_cam"] = np.asarray(v, np.float32)
        arrays["params_source"] = np.array(result.params_source or "regressed")
    if result.verts_method_world is not None:
        arrays["vertices_method"] = result.verts_method_world.astype(np.float32)
    if result.body_contact is not None:
        arrays["vertex_contact"] = result.body_contact.astype(np.int8)
    return arrays


GLB_CONTACT_POINT_RADIUS_M = 0.015
"""Radius of the spheres marking contact scene points in ``scene_body.glb``."""


def _up_to_gltf_y(up_axis: str) -> np.ndarray:
    """4x4 rotation taking the scan's up axis to glTF's +Y (viewers show it upright)."""
    sign = -1.0 if up_axis.startswith("-") else 1.0
    up = np.zeros(3)
    up["xyz".index(up_axis[-1])] = sign
    y = np.array([0.0, 1.0, 0.0])
    axis = np.cross(up, y)
    s, c = np.linalg.norm(axis), float(up @ y)
    if s < 1e-12:
        R = np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    else:
        k = axis / s
        K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        R = np.eye(3) + s * K + (1 - c) * (K @ K)
    T = np.eye(4)
    T[:3, :3] = R
    return T


def _rgba_uint8(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, np.float64).reshape(-1, 3)
    return (np.concatenate([rgb, np.ones((len(rgb), 1))], axis=1) * 255 + 0.5).astype(np.uint8)


def write_scene_body_glb(
    path: Path,
    scene: SceneData,
    vertices_world: np.ndarray,
    faces: np.ndarray,
    body_colors: np.ndarray,
    contact_points_world: np.ndarray,
    contact_labels: np.ndarray,
) -> Path:
    """Write the scan and the body placed in it as one binary glTF (``.glb``).

    Geometry (named ``scan``, ``body``, ``contact_points``) is stored in world coordinates
    (the scan's frame, metres); each node carries the rotation `_up_to_gltf_y` so viewers,
    which take +Y as up, show the room upright. A point-cloud scan is stored as points.

    Args:
        path: The ``.glb`` file.
        scene: The scan (`SceneData`; its mesh, else its down-sampled points).
        vertices_world: (V, 3) body vertices, world frame.
        faces: (F, 3) body faces.
        body_colors: (V, 3) RGB in [0, 1] (contact vertices coloured by region).
        contact_points_world: (P, 3) the method's contact scene points, world frame.
        contact_labels: (P,) their regions 1..7.

    Returns:
        ``path``.
    """
    import trimesh

    from sahmr.viz.colors import SCENE_COLOR, region_colors

    up = _up_to_gltf_y(scene.up_axis)
    glb = trimesh.Scene()
    if scene.mesh is not None:
        scan = trimesh.Trimesh(scene.mesh.vertices, scene.mesh.faces, process=False)
        colors = scene.mesh.vertex_colors
        colors = np.tile(SCENE_COLOR, (len(scan.vertices), 1)) if colors is None else colors
        scan.visual.vertex_colors = _rgba_uint8(colors)
    else:
        pts = scene.points_world
        colors = scene.points.colors
        colors = np.tile(SCENE_COLOR, (len(pts), 1)) if colors is None else colors
        scan = trimesh.PointCloud(pts, colors=_rgba_uint8(colors))
    glb.add_geometry(scan, node_name="scan", geom_name="scan", transform=up)
    body = trimesh.Trimesh(vertices_world, faces, process=False)
    body.visual.vertex_colors = _rgba_uint8(body_colors)
    glb.add_geometry(body, node_name="body", geom_name="body", transform=up)
    points = np.asarray(contact_points_world, np.float64).reshape(-1, 3)
    if len(points):
        ball = trimesh.creation.icosphere(subdivisions=1, radius=GLB_CONTACT_POINT_RADIUS_M)
        nv = len(ball.vertices)
        verts = (ball.vertices[None] + points[:, None]).reshape(-1, 3)
        tris = (ball.faces[None] + nv * np.arange(len(points))[:, None, None]).reshape(-1, 3)
        balls = trimesh.Trimesh(verts, tris, process=False)
        balls.visual.vertex_colors = _rgba_uint8(np.repeat(region_colors(contact_labels), nv,
                                                           axis=0))
        glb.add_geometry(balls, node_name="contact_points", geom_name="contact_points",
                         transform=up)
    path.write_bytes(glb.export(file_type="glb"))
    return path


def write_frame_outputs(
    folder: Path,
    result: FramePrediction,
    scene: SceneData,
    faces: np.ndarray,
    *,
    extra_summary: Mapping[str, Any] | None = None,
    view_size: tuple[int, int] = (400, 300),
    num_orbit_views: int = 2,
) -> dict[str, Any]:
    """Write one frame's files into ``folder``.

    Args:
        folder: Existing folder.
        result: The frame's prediction.
        scene: The scan.
        faces: (F, 3) body faces.
        extra_summary: Entries merged into summary.json (method, device, scene timings...).
        view_size: ``(W, H)`` of each scene view.
        num_orbit_views: Orbit views in scene_views.png (plus the input camera's view).

    Returns:
        The summary written to summary.json.
    """
    from sahmr.viz.colors import body_vertex_colors
    from sahmr.viz.overlay import draw_bbox, render_overlay
    from sahmr.viz.scene_views import ViewCamera, render_scene_views

    t0 = time.perf_counter()
    colors = body_vertex_colors(result.body_contact, len(result.vertices_world))
    _write_mesh(folder, result.vertices_world, faces, colors)
    np.savez(folder / "body_params.npz", **_params_arrays(result, faces, scene.name))
    write_json(folder / "contacts.json", contacts_record(result))
    t_files = time.perf_counter() - t0

    t0 = time.perf_counter()
    write_scene_body_glb(folder / "scene_body.glb", scene, result.vertices_world, faces, colors,
                         result.contact_points_world, result.contact_point_region)
    t_glb = time.perf_counter() - t0

    t0 = time.perf_counter()
    overlay = render_overlay(result.image, result.verts_cam, faces, result.camera.K,
                             vertex_colors=colors, supersample=2)
    overlay = draw_bbox(overlay, result.bbox)
    Image.fromarray(overlay).save(folder / "overlay.png", optimize=True)
    t_overlay = time.perf_counter() - t0

    t0 = time.perf_counter()
    H, W = result.image.shape[:2]
    cam = ViewCamera(result.camera.K, result.camera.T_w2c, W, H, label="input camera")
    mesh = None if scene.mesh is None else (scene.mesh.vertices, scene.mesh.faces)
    views = render_scene_views(
        scene_mesh=mesh,
        body_vertices=result.vertices_world,
        body_faces=faces,
        contact_points=result.contact_points_world,
        contact_labels=result.contact_point_region,
        body_vertex_colors=colors,
        scene_points=scene.points_world if mesh is None else None,
        # a point scan is shaded (and culled in the orbit views) by its normals, facing the
        # camera that saw it
        scene_point_normals=scene.point_normals(towards=cam.center_world) if mesh is None else None,
        scene_point_colors=scene.points.colors if mesh is None else None,
        scene_point_spacing_m=scene.points.voxel_size,
        up_axis=scene.up_axis,
        input_camera=cam,
        num_orbit_views=num_orbit_views,
        size=view_size,
    )
    Image.fromarray(views).save(folder / "scene_views.png", optimize=True)
    t_views = time.perf_counter() - t0

    timings = dict(result.timings)
    timings.update(write_files=t_files, write_glb=t_glb, render_overlay=t_overlay,
                   render_scene_views=t_views)
    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "version": 1,
        "frame": result.name,
        "image": {"width": W, "height": H},
        "bbox": np.round(result.bbox, 2).tolist(),
        "camera_source": result.camera.source,
        "scene": {"name": scene.name, "path": str(scene.path), "up_axis": scene.up_axis,
                  "extent_m": round(scene.extent_m, 3), "points": len(scene.points)},
        "frustum_points": result.frustum_points,
        "root_world": np.round(result.root_world, 4).tolist(),
        "ground_shift_m": round(result.ground_shift_m, 4),  # slid back onto the ground
        "scene_slide_m": round(result.scene_slide_m, 4),  # slid along the ray out of the scan
        "depenetrated": result.depenetrated,  # joints bent out of the scan (--depenetrate)
        "has_smpl_params": result.params_world is not None,
        "body_params": {
            "source": result.params_source,
            "frame": "world (the scan's frame); smplx SMPL names; _cam keys: camera frame",
            "method_mesh_distance_mm": (None if result.method_mesh_distance_mm is None
                                        else round(result.method_mesh_distance_mm, 3)),
            "note": "fitted: mean vertex error of the fit to the method's vertices; "
                    "regressed: distance of the parameters' mesh to the method's vertices",
        },
        "penetration": result.penetration,
        "penetration_units": "pene_mm: sum over penetrating vertices of depth (mm, SA-HMR PenE)",
        "gt_errors": result.gt_errors,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "files": [*sorted(p.name for p in folder.iterdir()), "summary.json"],
    }
    if extra_summary:
        summary.update(extra_summary)
    write_json(folder / "summary.json", summary)
    return summary


_TABLE_COLUMNS = (
    "frame", "status", "g_mpve_mm", "root_error_mm", "pa_mpve_mm", "pene_mm",
    "pen_fraction_percent", "contact_points", "predict_s", "total_s", "error",
)  # fmt: skip


def _row(entry: Mapping[str, Any]) -> dict[str, Any]:
    gt = entry.get("gt_errors") or {}
    pen = entry.get("penetration") or {}
    t = entry.get("timings_s") or {}

    def r(v: Any) -> Any:
        return round(v, 2) if isinstance(v, float) else v

    return {
        "frame": entry.get("frame"),
        "status": entry.get("status", "ok"),
        "g_mpve_mm": r(gt.get("g_mpve_mm")),
        "root_error_mm": r(gt.get("root_error_mm")),
        "pa_mpve_mm": r(gt.get("pa_mpve_mm")),
        "pene_mm": r(pen.get("pene_mm")),
        "pen_fraction_percent": r(pen.get("pen_fraction_percent")),
        "contact_points": entry.get("contact_points"),
        "predict_s": r(t.get("predict")),
        "total_s": r(sum(t.values())) if t else None,
        "error": entry.get("error", ""),
    }


def write_batch_summary(
    folder: Path, entries: Sequence[Mapping[str, Any]], header: Mapping[str, Any]
) -> dict[str, Any]:
    """Write the batch table (``summary.csv``, ``summary.md``) and ``summary.json``.

    Args:
        folder: The batch output folder (one sub-folder per successful frame).
        entries: Per frame: its summary, or ``{"frame", "status": "failed", "error"}``.
        header: Entries for summary.json (method, scene, device, shared timings...).

    Returns:
        The summary written.
    """
    rows = [_row(e) for e in entries]
    with (folder / "summary.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(_TABLE_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    lines = ["| " + " | ".join(_TABLE_COLUMNS) + " |",
             "|" + "---|" * len(_TABLE_COLUMNS)]
    for row in rows:
        cells = ["" if row[c] is None else str(row[c]).replace("|", "/") for c in _TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    (folder / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ok = [e for e in entries if e.get("status", "ok") == "ok"]
    summary = {
        "format": SUMMARY_FORMAT,
        "version": 1,
        "mode": "batch",
        **dict(header),
        "frames": len(entries),
        "succeeded": len(ok),
        "failed": [{"frame": e.get("frame"), "error": e.get("error")} for e in entries
                   if e.get("status", "ok") != "ok"],
        "table": rows,
    }
    write_json(folder / "summary.json", summary)
    return summary
