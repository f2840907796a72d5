"""The synthetic dataset generation loop: plan, rooms, parallel shard workers, resume, summary.

A dataset is a folder::

    dataset.json          format version, config, config hash, shard plan, scene table
    rooms.json            scene_id -> how to rebuild the room (bundled name / kind + seed)
    rooms/<scene_id>/     the room (mesh.ply, meta.json, ...) + scene_points.npz (2 cm)
                          + placer_sdf_<pitch>.npz (the contact placer's SDF, a cache)
    shards/shard-XXXXXX.npz   samples (`sahmr.data.shards`)
    summary.json          counts per split / action / scene, rejects, samples/s

Shard ``i`` belongs to one split and holds samples drawn from one room of that split with a
generator seeded by ``(seed, i)`` only, so a shard's content depends only on (seed, shard
index, config): runs are deterministic, resumable shard by shard and can be split across
machines (``shard="i/N"`` takes every N-th shard index). Splits hold disjoint rooms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import queue
import shutil
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import trimesh

from sahmr.data.shards import (
    SHARD_VERSION,
    encode_depth_mm,
    encode_image,
    pack_rows,
    read_header,
    remove_stale_temps,
    shard_name,
    validate_shard,
    write_shard_atomic,
)
from sahmr.synth.appearance import body_face_regions, sample_appearance
from sahmr.synth.cameras import CameraRanges, person_bbox, sample_camera
from sahmr.synth.occluders import OccluderRanges, sample_occluder
from sahmr.synth.placement import PlacedBody
from sahmr.synth.render_sample import BodyRaycaster, RoomRaycaster, render_sample
from sahmr.synth.rooms import Room
from sahmr.synth.shapes import ShapeRanges, StatureMeter, sample_shape

logger = logging.getLogger(__name__)

DATASET_FORMAT = "sahmr.synth_dataset"
DATASET_VERSION = 1
SCENE_POINT_SPACING = 0.02
"""Voxel size (m) of the stored scene point clouds."""
GENERATOR_VERSION = 3
"""Version of what the generator draws for a given config (part of the config hash, so a
resumed run never mixes shards of two versions): 2 = mixed-action placement batches, the
backrest actions, exact-mesh acceptance, repeated camera draws; 3 = wide shapes, cameras
drawn within the room (floor level to the ceiling, portrait images, 35 mm-equivalent
focal lengths, framing checked per draw, parapets no ceiling), synthetic occluders."""
BODIES_PER_ROUND = 64
"""Most bodies a shard asks the placer for at once (refined in mixed batches of candidates);
one more than the views need, as a few camera draws fail."""


# ----------------------------------------------------------------------------------------
# configuration


@dataclass(kw_only=True)
class SplitSpec:
    """Rooms and share of one split.

    Attributes:
        fraction: Share of ``num_samples`` in this split.
        kinds: Generated room kinds (`sahmr.synth.rooms.ROOM_KINDS`).
        seeds: Generated room seeds; every (kind, seed) pair is one room.
        seed_range: Optional ``[start, stop)`` appended to ``seeds``.
        bundled: Bundled scene names (`sahmr.synth.bundled.BUNDLED_SCENES`).
    """

    fraction: float
    kinds: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    seed_range: list[int] | None = None
    bundled: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from sahmr.synth.bundled import BUNDLED_SCENES
        from sahmr.synth.rooms import ROOM_KINDS

        if not (math.isfinite(float(self.fraction)) and float(self.fraction) >= 0.0):
            raise ValueError(f"fraction {self.fraction}: must be a finite number >= 0 (a "
                             "share relative to the other splits)")
        unknown = [k for k in self.kinds if k not in ROOM_KINDS]
        unknown += [b for b in self.bundled if b not in BUNDLED_SCENES]
        if unknown:
            raise ValueError(f"unknown room kind / bundled scene {unknown} (kinds: "
                             f"{', '.join(ROOM_KINDS)}; bundled: {', '.join(BUNDLED_SCENES)})")
        seeds = [int(s) for s in self.seeds]
        if self.seed_range is not None:
            lo, hi = (int(x) for x in self.seed_range)
            if lo > hi:
                raise ValueError(f"seed_range [{lo}, {hi}): start after stop")
            seeds += [s for s in range(lo, hi) if s not in seeds]
        self.seeds, self.seed_range = seeds, None
        self.kinds, self.bundled = list(self.kinds), list(self.bundled)


@dataclass(kw_only=True)
class GenerationConfig:
    """Everything that defines a dataset (``out_dir``, ``workers``, ``shard``, ``resume``
    only say where and how to run; they do not change the content).

    Attributes:
        out_dir: Dataset folder.
        num_samples: Total samples over all splits.
        samples_per_shard: Samples per shard (the last shard of a split may hold fewer).
        seed: Dataset seed.
        workers: Worker processes (0 = generate in this process).
        shard: ``"i/N"``: this run writes shard indices ``k`` with ``k % N == i``.
        resume: Skip shards that exist and validate.
        start_method: multiprocessing start method (``"fork"`` or ``"spawn"``).
        splits: Split name -> `SplitSpec`; rooms must not repeat across splits.
        actions: Action name -> weight, or empty to let the placer choose.
        camera: `CameraRanges`.
        shape: `sahmr.synth.shapes.ShapeRanges`: the body shape distribution.
        occluders: `sahmr.synth.occluders.OccluderRanges`: synthetic occluders per view.
        crop_size: Crop side S, pixels.
        crop_format: ``"jpeg"`` or ``"png"`` for crops and frames.
        jpeg_quality: JPEG quality.
        full_frame_scale: > 0 also stores the full frame rendered at this scale.
        views_per_body: Camera views rendered per placed body (one sequence id per body,
            ``frame_index`` = view); up to twice as many cameras are drawn to get them.
        sequence_fraction: Share of draws that are short motions (`sahmr.synth.sequences`)
            rendered from one camera, ``frame_index`` = time; needs the contact placer.
        sequence_frames: Frames per motion.
        max_attempts_factor: A shard gives up after ``factor * samples`` placement attempts.
        placer: ``"auto"`` (the contact placer, `sahmr.synth.placement.Placer`) or
            ``"standing"`` (feet only; tests and benchmarks).
        body_model_path: SMPL-format model file; None for the license-free body.
        sdf_voxel_size: Pitch (m) of the room SDF grid the contact placer refines and
            checks bodies on (`sahmr.synth.placement.build_placer_sdf`).
        sdf_device: Where the main process builds the SDF grids when open3d is missing
            (brute-force torch backend): ``"auto"`` (CUDA if available, else CPU), ``"cpu"``
            or ``"cuda"``. Grids are built once per room before any worker starts and
            cached in ``rooms/<scene_id>/``; workers only load them (and never touch CUDA).
    """

    out_dir: str
    num_samples: int = 1000
    samples_per_shard: int = 200
    seed: int = 0
    workers: int = 2
    shard: str = "0/1"
    resume: bool = False
    start_method: str = "fork"
    splits: dict[str, SplitSpec] = field(default_factory=dict)
    actions: dict[str, float] = field(default_factory=dict)
    camera: CameraRanges = field(default_factory=CameraRanges)
    shape: ShapeRanges = field(default_factory=ShapeRanges)
    occluders: OccluderRanges = field(default_factory=OccluderRanges)
    crop_size: int = 224
    crop_format: str = "jpeg"
    jpeg_quality: int = 92
    full_frame_scale: float = 0.0
    views_per_body: int = 4
    sequence_fraction: float = 0.0
    sequence_frames: int = 8
    max_attempts_factor: int = 20
    placer: str = "auto"
    body_model_path: str | None = None
    sdf_voxel_size: float = 0.025
    sdf_device: str = "auto"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationConfig:
        """Builds the config from a plain dict (e.g. ``OmegaConf.to_container(cfg)``)."""
        d = dict(d)
        splits = {}
        for k, v in (d.get("splits") or {}).items():
            try:
                splits[k] = _build(SplitSpec, dict(v), f"splits.{k}")
            except (TypeError, ValueError) as err:
                raise ValueError(f"splits.{k}: {err}") from err
        d["splits"] = splits
        cam = dict(d.get("camera") or {})  # CameraRanges normalises its ranges
        if "image_sizes" in cam:
            cam["image_sizes"] = [tuple(int(x) for x in s) for s in cam["image_sizes"]]
        d["camera"] = _build(CameraRanges, cam, "camera")
        d["shape"] = _build(ShapeRanges, dict(d.get("shape") or {}), "shape")
        d["occluders"] = _build(OccluderRanges, dict(d.get("occluders") or {}), "occluders")
        d["actions"] = {str(k): float(v) for k, v in (d.get("actions") or {}).items()}
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown generation config keys: {sorted(unknown)}")
        return cls(**d)

    def __post_init__(self) -> None:
        if not 0.0 <= self.sequence_fraction <= 1.0:
            raise ValueError(f"sequence_fraction {self.sequence_fraction} is not in [0, 1]")
        if self.sequence_fraction > 0 and self.sequence_frames < 4:
            raise ValueError("sequence_frames must be >= 4")
        if self.sequence_fraction > 0 and self.placer == "standing":
            raise ValueError("motion sequences need the contact placer (placer=auto)")
        if self.sdf_device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"sdf_device {self.sdf_device!r}: auto, cpu or cuda")
        if not 0.005 <= self.sdf_voxel_size <= 0.2:
            raise ValueError(f"sdf_voxel_size {self.sdf_voxel_size} m is not in [0.005, 0.2]")

    def content_dict(self) -> dict[str, Any]:
        """The config entries that define the content (JSON-ready)."""
        d = asdict(self)
        for k in ("out_dir", "workers", "shard", "resume", "start_method", "sdf_device"):
            d.pop(k)
        d["camera"]["image_sizes"] = [list(s) for s in d["camera"]["image_sizes"]]
        if not self.sequence_fraction:  # keeps the hashes of datasets made before sequences
            d.pop("sequence_fraction")
            d.pop("sequence_frames")
        if self.sdf_voxel_size == 0.025:  # ... and before the SDF pitch was configurable
            d.pop("sdf_voxel_size")
        return d

    def content_hash(self) -> str:
        """SHA-256 (16 hex digits) of `content_dict`, the shard format version and
        `GENERATOR_VERSION`."""
        text = json.dumps(
            {"cfg": self.content_dict(), "v": SHARD_VERSION, "gen": GENERATOR_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """``cls(**values)`` with unknown keys named in the error."""
    unknown = set(values) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown {where} config keys: {sorted(unknown)}")
    return cls(**values)


def config_from_mapping(cfg: Any) -> GenerationConfig:
    """`GenerationConfig` from a hydra / OmegaConf node or a plain mapping (``hydra`` keys
    and ``data`` nodes are ignored)."""
    if not isinstance(cfg, Mapping) or type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    d = {k: v for k, v in dict(cfg).items() if k not in ("hydra", "data")}
    return GenerationConfig.from_dict(d)


def parse_shard_spec(spec: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``."""
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError as err:
        raise ValueError(f"shard must look like 'i/N', got {spec!r}") from err
    if not 0 <= i < n:
        raise ValueError(f"shard {spec!r}: need 0 <= i < N")
    return i, n


# ----------------------------------------------------------------------------------------
# plan


@dataclass(frozen=True)
class ShardPlan:
    """One shard: global index, split, number of samples, candidate scene ids."""

    index: int
    split: str
    num_samples: int
    scenes: tuple[str, ...]


def generated_scene_id(kind: str, seed: int) -> str:
    """Scene id of a generated room (``gen_office_00012``)."""
    return f"gen_{kind}_{seed:05d}"


def bundled_scene_id(name: str) -> str:
    """Scene id of a bundled room (``bundled_living_room``)."""
    return f"bundled_{name}"


def scene_table(cfg: GenerationConfig) -> dict[str, dict[str, Any]]:
    """scene_id -> room recipe (``source``, ``kind``, ``seed``, ``name``, ``split``).

    Raises:
        ValueError: A room (same kind + seed, bundled rooms included) in two splits.
    """
    from sahmr.synth.bundled import BUNDLED_SCENES

    table: dict[str, dict[str, Any]] = {}
    owner: dict[tuple[str, int], str] = {}
    for split, spec in cfg.splits.items():
        recipes = [
            (generated_scene_id(k, int(s)), {"source": "generated", "kind": k, "seed": int(s)})
            for k in spec.kinds
            for s in spec.seeds
        ]
        for name in spec.bundled:
            kind, seed = BUNDLED_SCENES[name]
            recipes.append(
                (
                    bundled_scene_id(name),
                    {"source": "bundled", "name": name, "kind": kind, "seed": int(seed)},
                )
            )
        for sid, rec in recipes:
            key = (rec["kind"], rec["seed"])
            if key in owner and owner[key] != split:
                raise ValueError(
                    f"room {key} is in splits {owner[key]!r} and {split!r}: splits must hold "
                    "disjoint rooms"
                )
            owner[key] = split
            table[sid] = {**rec, "split": split}
    return table


def plan_shards(cfg: GenerationConfig) -> list[ShardPlan]:
    """All shards of the dataset, split by split (in config order), indices 0..S-1."""
    table = scene_table(cfg)
    shards: list[ShardPlan] = []
    total_frac = sum(s.fraction for s in cfg.splits.values())
    for split, spec in cfg.splits.items():
        n = round(cfg.num_samples * spec.fraction / total_frac)
        scenes = tuple(sid for sid, rec in table.items() if rec["split"] == split)
        if n > 0 and not scenes:
            raise ValueError(f"split {split!r} has samples but no rooms")
        for k in range(math.ceil(n / cfg.samples_per_shard)):
            size = min(cfg.samples_per_shard, n - k * cfg.samples_per_shard)
            shards.append(ShardPlan(len(shards), split, size, scenes))
    return shards


# ----------------------------------------------------------------------------------------
# bodies: the placer interface and a standing fallback


class PlacerLike(Protocol):
    """Samples bodies in a room: ``sample(rng, action) -> PlacedBody | None``."""

    def sample(self, rng: np.random.Generator, action: str | None = None) -> Any: ...


class StandingPlacer:
    """Fallback placer: a standing body (A-pose, random shape, small pose noise, random
    heading) with both feet on the floor at a walkable spot; feet vertices within
    ``contact_threshold`` of the floor are labelled in contact.

    Args:
        room: The room (z-up, floor at z = 0, floor object id 0).
        body: A `sahmr.body.BodyModel` (y-up rest frame, as SMPL).
        contact_threshold: Contact distance, metres (7 cm as DESIGN.md).
        shapes: The body shape distribution (None: `ShapeRanges` defaults).
    """

    def __init__(
        self,
        room: Room,
        body: Any,
        contact_threshold: float = 0.07,
        shapes: ShapeRanges | None = None,
    ) -> None:
        self.room = room
        self.body = body
        self.shapes = shapes if shapes is not None else ShapeRanges()
        self.contact_threshold = contact_threshold
        self.labels = np.asarray(body.topology.contact_labels[0], dtype=np.int64)
        self.stats: Counter[str] = Counter()
        cells = room.free_space.cell_centers()[room.free_space.walkable]
        self._cells = cells.reshape(-1, 2)

    def sample(self, rng: np.random.Generator, action: str | None = None) -> PlacedBody | None:
        """Draws one standing body; None when the footprint hits furniture."""
        import torch

        from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

        self.stats["tries"] += 1
        if len(self._cells) == 0:
            return None
        xy = self._cells[int(rng.integers(len(self._cells)))]
        betas = sample_shape(rng, self.shapes).astype(np.float32)
        pose = rng.normal(0.0, 0.04, (23, 3))
        pose[15, 2] -= 1.2  # left shoulder (joint 16) down, about the rest z axis
        pose[16, 2] += 1.2  # right shoulder (joint 17) down
        yaw = rng.uniform(0.0, 2.0 * np.pi)
        rx = axis_angle_to_matrix(torch.tensor([np.pi / 2, 0.0, 0.0], dtype=torch.float64))
        rz = axis_angle_to_matrix(torch.tensor([0.0, 0.0, yaw], dtype=torch.float64))
        orient = matrix_to_axis_angle(rz @ rx).numpy().astype(np.float32)
        with torch.no_grad():
            out = self.body(
                betas=torch.as_tensor(betas)[None],
                global_orient=torch.as_tensor(orient)[None],
                body_pose=torch.as_tensor(pose.reshape(1, -1), dtype=torch.float32),
            )
        v = out.vertices[0].numpy().astype(np.float64)
        j = out.joints[0].numpy().astype(np.float64)
        transl = np.array([xy[0] - j[0, 0], xy[1] - j[0, 1], -v[:, 2].min()])
        v += transl
        j += transl
        if not np.all(self.room.free_space.is_walkable(v[::25, :2])):
            return None
        near = (v[:, 2] < self.contact_threshold) & np.isin(self.labels, (1, 2))
        contact = np.where(near, self.labels, 0)
        pts = v[near].copy()
        pts[:, 2] = 0.0
        self.stats["placed"] += 1
        return PlacedBody(
            betas=betas,
            global_orient=orient,
            body_pose=pose.reshape(-1).astype(np.float32),
            transl=transl.astype(np.float32),
            vertices_world=v.astype(np.float32),
            joints_world=j.astype(np.float32),
            vertex_contact=contact,
            contact_points_world=pts.astype(np.float32),
            contact_point_region=self.labels[near],
            action="stand",
            object_id=0,
            surface_kind="floor",
            max_penetration=0.0,  # the lowest vertex rests on the floor plane
            contact_gap={r: float(v[self.labels == r, 2].min()) for r in (1, 2)},
        )


def make_placer(
    room: Room,
    body: Any,
    kind: str = "auto",
    sdf: Any = None,
    mesh_distance: Any = None,
    shapes: ShapeRanges | None = None,
) -> PlacerLike:
    """The contact placer `sahmr.synth.placement.Placer` (``kind="auto"``), or the fast
    `StandingPlacer` (``kind="standing"``: feet on the floor only, for tests and benchmarks).

    Args:
        room: The room.
        body: The body model.
        kind: ``"auto"`` or ``"standing"``.
        sdf: The room's SDF grid for the real placer (None builds it on the CPU, seconds
            per room with open3d, minutes without).
        mesh_distance: The room's exact mesh distance of an earlier placer (None: built
            on first use).
        shapes: The body shape distribution (None: `ShapeRanges` defaults).

    Returns:
        A placer. Build a fresh one per shard: the real placer queues accepted bodies
        between calls, which would make a shard depend on the shards before it.
    """
    if kind == "auto":
        from sahmr.synth.placement import Placer

        return Placer(room, body, sdf=sdf, mesh_distance=mesh_distance, shapes=shapes)
    if kind != "standing":
        raise ValueError(f"unknown placer {kind!r} (auto or standing)")
    return StandingPlacer(room, body, shapes=shapes)


def sdf_cache_path(root: Path, scene_id: str, voxel_size: float) -> Path:
    """``rooms/<scene_id>/placer_sdf_<pitch in 0.1 mm>.npz``: a room's cached placer SDF."""
    return root / "rooms" / scene_id / f"placer_sdf_{round(voxel_size * 1e4):04d}.npz"


def resolve_sdf_device(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` when this process sees a GPU, else ``"cpu"``."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def write_placer_sdf(
    root: Path, scene_id: str, recipe: Mapping[str, Any], voxel_size: float, device: str
) -> Path:
    """Builds a room's placer SDF once and caches it (atomically) next to the room files.

    Run in the main process before workers start: with open3d the grid is built on the
    CPU in seconds; without it, by brute force on ``device`` (``"cuda"`` on a GPU machine).
    """
    path = sdf_cache_path(root, scene_id, voxel_size)
    if path.is_file():
        return path
    from sahmr.synth.placement import build_placer_sdf

    t0 = time.perf_counter()
    grid = build_placer_sdf(build_room(recipe), voxel_size, device=device)
    tmp = path.with_name(f".{path.stem}.tmp.{os.getpid()}.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(tmp)
    os.replace(tmp, path)
    logger.info("%s: placer SDF %s built in %.1f s", scene_id, grid.values.shape,
                time.perf_counter() - t0)  # fmt: skip
    return path


# ----------------------------------------------------------------------------------------
# rooms on disk


def build_room(recipe: Mapping[str, Any]) -> Room:
    """Builds (bundled: loads) the room of a scene recipe."""
    if recipe["source"] == "bundled":
        from sahmr.synth.bundled import load_bundled_room

        return load_bundled_room(recipe["name"])
    from sahmr.synth.rooms import generate_room

    return generate_room(recipe["kind"], int(recipe["seed"]))


def sample_scene_points(
    mesh: trimesh.Trimesh, spacing: float = SCENE_POINT_SPACING, seed: int = 0
) -> np.ndarray:
    """Surface points of a mesh, voxel-downsampled to ``spacing`` (one point per voxel).

    Args:
        mesh: Room mesh, world frame, metres.
        spacing: Voxel size, metres.
        seed: Seed of the surface sampling.

    Returns:
        (N, 3) float32 points, world frame.
    """
    count = int(min(4e6, max(1000, 2.0 * mesh.area / spacing**2)))
    pts, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    cells = np.floor(pts / spacing).astype(np.int64)
    cells -= cells.min(axis=0)
    dims = cells.max(axis=0) + 1
    keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    _, first = np.unique(keys, return_index=True)
    return pts[np.sort(first)].astype(np.float32)


def write_room(root: Path, scene_id: str, recipe: Mapping[str, Any]) -> Path:
    """Writes ``rooms/<scene_id>/`` (room files + ``scene_points.npz``) once, atomically.

    The folder is built under a temporary name and renamed; an existing folder is kept.
    """
    final = root / "rooms" / scene_id
    if (final / "scene_points.npz").is_file():
        return final
    tmp = root / "rooms" / f".{scene_id}.tmp.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    room = build_room(recipe)
    room.save(tmp)
    pts = sample_scene_points(room.mesh)
    np.savez(tmp / "scene_points.npz", points=pts, spacing=np.float32(SCENE_POINT_SPACING))
    try:
        os.replace(tmp, final)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------
# worker


@dataclass
class _WorkerState:
    cfg: GenerationConfig
    table: dict[str, dict[str, Any]]
    body: Any = None
    face_regions: np.ndarray | None = None
    stature: StatureMeter | None = None
    rooms: dict[str, list[Any]] = field(default_factory=dict)


_STATE: _WorkerState | None = None
_BODIES: dict[str | None, Any] = {}
"""Body models loaded in this process, by path (loading takes seconds)."""


def _load_body(path: str | None) -> Any:
    """The body model of ``path`` with its topology (cached per process; forked workers
    inherit what the main process loaded)."""
    if path not in _BODIES:
        from sahmr.body import BodyModel

        body = BodyModel(path)
        body.topology  # noqa: B018 -- derive (or load) the cached topology once, here
        _BODIES[path] = body
    return _BODIES[path]


def _init_worker(cfg: GenerationConfig, table: dict[str, dict[str, Any]]) -> None:
    global _STATE
    import torch

    torch.set_num_threads(1)
    body = _load_body(cfg.body_model_path)
    _STATE = _WorkerState(cfg=cfg, table=table, body=body)
    _STATE.face_regions = body_face_regions(body.lbs_weights.numpy(), body.faces)
    _STATE.stature = StatureMeter(body)


def _room(state: _WorkerState, scene_id: str) -> tuple[Room, RoomRaycaster, PlacerLike]:
    """The room, its ray caster, SDF and exact mesh distance (cached per worker) and a fresh
    placer."""
    if scene_id not in state.rooms:
        if len(state.rooms) >= 4:
            state.rooms.pop(next(iter(state.rooms)))
        room = build_room(state.table[scene_id])
        caster = RoomRaycaster(room.mesh.vertices, room.mesh.faces)
        sdf = None
        if state.cfg.placer == "auto":
            from sahmr.scene.sdf import SDFGrid

            cfg = state.cfg
            path = sdf_cache_path(Path(cfg.out_dir), scene_id, cfg.sdf_voxel_size)
            if not path.is_file():  # written by generate() before workers start
                path = write_placer_sdf(
                    Path(cfg.out_dir), scene_id, state.table[scene_id], cfg.sdf_voxel_size, "cpu"
                )
            sdf = SDFGrid.load(path)
        state.rooms[scene_id] = [room, caster, sdf, None]
    cached = state.rooms[scene_id]
    room, caster, sdf, exact = cached
    placer = make_placer(
        room, state.body, state.cfg.placer, sdf=sdf, mesh_distance=exact, shapes=state.cfg.shape
    )
    if exact is None and hasattr(placer, "mesh_distance"):
        cached[3] = placer.mesh_distance  # built once per room and worker
    return room, caster, placer


def _shard_rng(cfg: GenerationConfig, plan: ShardPlan) -> tuple[np.random.Generator, str]:
    """A shard's random generator, after its first draw: the room the shard is set in."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, plan.index]))
    return rng, plan.scenes[int(rng.integers(len(plan.scenes)))]


def shard_scene_id(cfg: GenerationConfig, plan: ShardPlan) -> str:
    """The scene a shard draws its samples in (a function of seed and shard index)."""
    return _shard_rng(cfg, plan)[1]


def generate_shard_rows(
    state: _WorkerState, plan: ShardPlan
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Generates the rows of one shard (deterministic in (seed, shard index, config)).

    Args:
        state: Worker state (body model, room cache).
        plan: The shard.

    Returns:
        ``(rows, stats)`` with stats ``{"scene_id", "rejects": {reason: count},
        "actions": {action: count}}``.
    """
    cfg = state.cfg
    rng, scene_id = _shard_rng(cfg, plan)
    room, caster, placer = _room(state, scene_id)
    feasible = getattr(placer, "feasible_actions", None)
    allowed = list(feasible()) if callable(feasible) else None
    if cfg.actions:
        actions = [a for a in cfg.actions if allowed is None or a in allowed]
        weights = np.array([cfg.actions[a] for a in actions], dtype=np.float64)
    else:  # uniform over the actions the room can host (the placer's choice if unknown)
        actions = allowed or []
        weights = np.ones(len(actions))
    place_many = getattr(placer, "place_actions", None)
    bodies: deque[PlacedBody | None] = deque()
    rows: list[dict[str, Any]] = []
    rejects: Counter[str] = Counter()
    camera_retries: Counter[str] = Counter()
    attempts, body_idx = 0, 0
    faces = state.body.faces
    while len(rows) < plan.num_samples:
        attempts += 1
        if attempts > cfg.max_attempts_factor * plan.num_samples + 10:
            raise RuntimeError(
                f"shard {plan.index}: only {len(rows)}/{plan.num_samples} samples after "
                f"{attempts} attempts in {scene_id} (rejects {dict(rejects)})"
            )
        if cfg.sequence_fraction > 0 and rng.random() < cfg.sequence_fraction:
            seq = f"{plan.split}-{plan.index:06d}-{body_idx:04d}"
            body_idx += 1
            motion, reason = _sequence_rows(
                state, rng, room, caster, placer, scene_id, seq, camera_retries
            )
            if reason is not None:
                rejects[reason] += 1
            rows.extend(motion[: plan.num_samples - len(rows)])
            continue
        if not bodies:
            # Place the bodies the rest of the shard needs together (the contact placer
            # refines candidates of different actions in one batch: far cheaper per body).
            left = plan.num_samples - len(rows)
            f = cfg.sequence_fraction
            per_draw = cfg.views_per_body * (1.0 - f) + cfg.sequence_frames * f
            n = min(BODIES_PER_ROUND, math.ceil(left * (1.0 - f) / per_draw) + 1)
            if actions:
                names = [str(a) for a in rng.choice(actions, size=n, p=weights / weights.sum())]
            else:
                names = [None] * n
            if callable(place_many) and actions:
                bodies.extend(place_many(rng, names))
            else:
                bodies.extend(placer.sample(rng, action=a) for a in names)
        placed = bodies.popleft()
        if placed is None:
            rejects["placement"] += 1
            continue
        verts = np.asarray(placed.vertices_world, dtype=np.float64)
        pelvis = np.asarray(placed.joints_world[0], dtype=np.float64)
        radius = float(np.linalg.norm(verts - pelvis, axis=1).max())
        body_caster = BodyRaycaster(verts, faces)
        seq = f"{plan.split}-{plan.index:06d}-{body_idx:04d}"
        body_idx += 1
        view, tries = 0, 0
        # up to twice as many cameras as views: a rejected view (too occluded) costs far less
        # than placing another body; a camera that does not frame the body is redrawn
        # inside sample_camera (cheap: no rendering)
        while view < cfg.views_per_body and tries < 2 * cfg.views_per_body:
            tries += 1
            if len(rows) >= plan.num_samples:
                break
            camera = sample_camera(
                rng,
                room,
                pelvis,
                cfg.camera,
                subject_radius=radius,
                vertices_world=verts,
                stats=camera_retries,
            )
            if camera is None:
                rejects["camera"] += 1
                continue
            look = sample_appearance(rng, room, state.face_regions)
            occluder = None
            if cfg.occluders.fraction > 0 and rng.random() < cfg.occluders.fraction:
                box = person_bbox(camera, verts)
                occluder = sample_occluder(rng, room, camera, verts, pelvis, box, cfg.occluders)
                camera_retries["occluder_drawn" if occluder is not None else "occluder_none"] += 1
            rendered, reason = render_sample(
                caster,
                body_caster,
                verts,
                look,
                camera,
                cfg.camera,
                crop_size=cfg.crop_size,
                full_frame_scale=cfg.full_frame_scale,
                occluder=occluder,
            )
            if rendered is None:
                rejects[reason] += 1
                continue
            rows.append(_row(state, placed, camera, rendered, scene_id, seq, view))
            view += 1
    stats = {
        "scene_id": scene_id,
        "rejects": dict(sorted(rejects.items())),
        "actions": dict(sorted(Counter(r["action"] for r in rows).items())),
        "occlusion_mean": float(np.mean([r["occlusion"] for r in rows])) if rows else 0.0,
        "placement_attempts": attempts,
        "camera_retries": dict(sorted(camera_retries.items())),
        "occluded_samples": int(sum(r["occluder"] > 0 for r in rows)),
    }
    return rows, stats


def _row(
    state: _WorkerState,
    placed: PlacedBody,
    camera: Any,
    rendered: Any,
    scene_id: str,
    sequence_id: str,
    frame_index: int,
    action: str | None = None,
) -> dict[str, Any]:
    """One shard row: labels of a placed body seen by a camera, and its encoded images."""
    cfg = state.cfg
    fmt = cfg.crop_format
    return {
        "bbox": rendered.bbox,
        "K": camera.K,
        "K_crop": rendered.K_crop,
        "T_w2c": camera.T_w2c,
        "image_size": np.array([camera.width, camera.height]),
        "betas": placed.betas,
        "global_orient": placed.global_orient,
        "body_pose": placed.body_pose,
        "transl": placed.transl,
        "vertices_world": placed.vertices_world,
        "joints_world": placed.joints_world,
        "vertex_contact": placed.vertex_contact,
        "occlusion": rendered.occlusion,
        "frame_index": frame_index,
        "object_id": int(getattr(placed, "object_id", -1)),
        "image_scale": rendered.image_scale,
        "height": state.stature(placed.betas) if state.stature is not None else float("nan"),
        "occluder": rendered.occluder.code if rendered.occluder is not None else 0,
        "contact_points_world": placed.contact_points_world,
        "contact_point_region": placed.contact_point_region,
        "crop": encode_image(rendered.crop.rgb, fmt, cfg.jpeg_quality),
        "mask": encode_image(rendered.crop.mask, "png"),
        "depth": encode_image(encode_depth_mm(rendered.crop.depth), "png"),
        "image": (
            encode_image(rendered.image, fmt, cfg.jpeg_quality)
            if rendered.image is not None
            else b""
        ),
        "scene_id": scene_id,
        "sequence_id": sequence_id,
        "action": str(action if action is not None else placed.action),
    }


def _sequence_rows(
    state: _WorkerState,
    rng: np.random.Generator,
    room: Room,
    caster: Any,
    placer: Any,
    scene_id: str,
    sequence_id: str,
    camera_retries: Counter[str],
) -> tuple[list[dict[str, Any]], str | None]:
    """Rows of one short motion seen by one camera, or ``([], reject reason)``.

    The whole motion is dropped when any frame fails to render (out of frame, too occluded),
    so a written sequence always has consecutive frames ``0..T-1``.
    """
    from sahmr.synth.sequences import SEQUENCE_KINDS, sample_sequence

    cfg = state.cfg
    kind = str(rng.choice(SEQUENCE_KINDS))
    frames = sample_sequence(placer, rng, kind, cfg.sequence_frames)
    if not frames:
        return [], "sequence"
    middle = np.asarray(frames[len(frames) // 2].joints_world[0], dtype=np.float64)
    all_verts = np.concatenate([np.asarray(f.vertices_world, dtype=np.float64) for f in frames])
    camera = sample_camera(
        rng,
        room,
        middle,
        cfg.camera,
        subject_radius=float(np.linalg.norm(all_verts - middle, axis=1).max()),
        vertices_world=all_verts,
        stats=camera_retries,
    )
    if camera is None:
        return [], "camera"
    look = sample_appearance(rng, room, state.face_regions)
    rows = []
    for t, placed in enumerate(frames):
        verts = np.asarray(placed.vertices_world, dtype=np.float64)
        rendered, reason = render_sample(
            caster,
            BodyRaycaster(verts, state.body.faces),
            verts,
            look,
            camera,
            cfg.camera,
            crop_size=cfg.crop_size,
            full_frame_scale=cfg.full_frame_scale,
        )
        if rendered is None:
            return [], reason
        rows.append(_row(state, placed, camera, rendered, scene_id, sequence_id, t, f"seq_{kind}"))
    return rows, None


def _shard_header(cfg: GenerationConfig, plan: ShardPlan, stats: Mapping[str, Any]) -> dict:
    return {
        "shard_index": plan.index,
        "split": plan.split,
        "seed": cfg.seed,
        "config_hash": cfg.content_hash(),
        "stats": dict(stats),
    }


def _run_shard(plan: ShardPlan) -> dict[str, Any]:
    assert _STATE is not None, "worker not initialised"
    t0 = time.perf_counter()
    rows, stats = generate_shard_rows(_STATE, plan)
    path = Path(_STATE.cfg.out_dir) / "shards" / shard_name(plan.index)
    remove_stale_temps(path)
    write_shard_atomic(path, pack_rows(rows, _shard_header(_STATE.cfg, plan, stats)))
    return {"index": plan.index, "num_samples": len(rows), "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------
# driver


def _summarise(cfg: GenerationConfig, plans: Sequence[ShardPlan]) -> dict[str, Any]:
    shard_dir = Path(cfg.out_dir) / "shards"
    per_split: Counter[str] = Counter()
    per_action: dict[str, Counter[str]] = {}
    per_scene: dict[str, Counter[str]] = {}
    rejects: Counter[str] = Counter()
    camera_retries: Counter[str] = Counter()
    done, occl_sum, occluded = 0, 0.0, 0
    for p in plans:
        path = shard_dir / shard_name(p.index)
        if not path.is_file():
            continue
        try:
            h = read_header(path)
        except (OSError, ValueError, KeyError):
            continue
        done += 1
        n = int(h["num_samples"])
        per_split[p.split] += n
        s = h["stats"]
        per_action.setdefault(p.split, Counter()).update(s["actions"])
        per_scene.setdefault(p.split, Counter())[s["scene_id"]] += n
        rejects.update(s["rejects"])
        camera_retries.update(s.get("camera_retries", {}))
        occluded += int(s.get("occluded_samples", 0))
        occl_sum += float(s.get("occlusion_mean", 0.0)) * n
    return {
        "shards_done": done,
        "shards_planned": len(plans),
        "samples_per_split": dict(per_split),
        "samples_per_action": {k: dict(v) for k, v in per_action.items()},
        "samples_per_scene": {k: dict(v) for k, v in per_scene.items()},
        "rejects": dict(rejects),
        "occlusion_mean": occl_sum / max(sum(per_split.values()), 1),
        "camera_retries": dict(camera_retries),
        "occluded_samples": occluded,
    }


def generate(cfg: GenerationConfig, *, progress: bool = True) -> dict[str, Any]:
    """Generates (this machine's part of) a dataset.

    Args:
        cfg: The configuration.
        progress: Show a tqdm progress bar over shards.

    Returns:
        The summary written to ``summary.json``.
    """
    from tqdm import tqdm

    root = Path(cfg.out_dir)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    part, parts = parse_shard_spec(cfg.shard)
    table = scene_table(cfg)
    plans = plan_shards(cfg)
    meta = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "shard_version": SHARD_VERSION,
        "config": cfg.content_dict(),
        "config_hash": cfg.content_hash(),
        "shards": [
            {
                "index": p.index,
                "split": p.split,
                "num_samples": p.num_samples,
                "file": f"shards/{shard_name(p.index)}",
            }
            for p in plans
        ],
        "scenes": table,
    }
    old = root / "dataset.json"
    if old.is_file():
        prev = json.loads(old.read_text(encoding="utf-8"))
        if prev.get("config_hash") != meta["config_hash"] and cfg.resume:
            raise ValueError(
                f"{root} holds a dataset of another config (hash {prev.get('config_hash')} != "
                f"{meta['config_hash']}); use a new out_dir or resume=false"
            )
    _write_json_atomic(old, meta)
    _write_json_atomic(root / "rooms.json", table)
    mine = [p for p in plans if p.index % parts == part]
    expect = {"config_hash": cfg.content_hash()}
    todo = [
        p
        for p in mine
        if not (
            cfg.resume
            and validate_shard(
                root / "shards" / shard_name(p.index), {**expect, "shard_index": p.index}
            )
        )
    ]
    logger.info(
        "%d of %d shards to write (%d skipped as done)", len(todo), len(mine), len(mine) - len(todo)
    )
    # Evaluation splits first (small, and a trainer streaming this dataset validates on them
    # from its start), then training shards in index order.
    todo.sort(key=lambda p: (p.split == "train", p.index))
    sdf_device = resolve_sdf_device(cfg.sdf_device) if cfg.placer == "auto" else None

    def room_ready(plan: ShardPlan, built: set[str]) -> None:
        """Writes the plan's room and builds its SDF (main process; forked workers must not
        touch CUDA and each grid is built once, not once per worker) before the shard is
        handed out. Only rooms this machine's shards are set in are written."""
        sid = shard_scene_id(cfg, plan)
        if sid not in built:
            write_room(root, sid, table[sid])
            if sdf_device is not None:
                write_placer_sdf(root, sid, table[sid], cfg.sdf_voxel_size, sdf_device)
            built.add(sid)

    t0 = time.perf_counter()
    made = 0
    built: set[str] = set()
    bar = tqdm(total=sum(p.num_samples for p in todo), unit="sample", disable=not progress)
    if cfg.workers <= 0 or len(todo) <= 1:
        _init_worker(cfg, table)
        for p in todo:
            room_ready(p, built)
            made += _run_shard(p)["num_samples"]
            bar.update(p.num_samples)
    else:
        if cfg.start_method == "fork":
            _load_body(cfg.body_model_path)  # once here, not once per worker
        ctx = mp.get_context(cfg.start_method)
        done: queue.SimpleQueue = queue.SimpleQueue()
        with ctx.Pool(
            min(cfg.workers, len(todo)), initializer=_init_worker, initargs=(cfg, table)
        ) as pool:
            # Each shard is handed out as soon as its room's SDF exists: workers start on
            # the first rooms while the main process builds the rest.
            for p in todo:
                room_ready(p, built)
                pool.apply_async(_run_shard, (p,), callback=done.put, error_callback=done.put)
            for _ in todo:
                res = done.get()
                if isinstance(res, BaseException):
                    raise res
                made += res["num_samples"]
                bar.update(res["num_samples"])
    bar.close()
    seconds = time.perf_counter() - t0
    summary = _summarise(cfg, plans)
    summary.update(
        {
            "this_run": {
                "shard": cfg.shard,
                "shards_written": len(todo),
                "samples": made,
                "seconds": round(seconds, 3),
                "samples_per_second": round(made / seconds, 2) if made else 0.0,
                "workers": cfg.workers,
            },
            "config_hash": cfg.content_hash(),
        }
    )
    _write_json_atomic(root / "summary.json", summary)
    return summary
