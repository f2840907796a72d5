"""One shard of the dataset: place bodies in the shard's room, draw cameras, render, write.

A worker process holds a `WorkerState` (body model, per-room caches) set by
:func:`init_worker`; :func:`run_shard` fills and writes one shard of the plan
(`sahmr.synth.plan.ShardPlan`). Everything a shard draws comes from its own generator
(:func:`sahmr.synth.plan.shard_rng`), in a fixed order.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np

from sahmr.body.model import BodyModel
from sahmr.data.shards import (
    encode_depth_mm,
    encode_image,
    pack_rows,
    remove_stale_temps,
    shard_name,
    write_shard_atomic,
)
from sahmr.scene.sdf import MeshSignedDistance, SDFGrid
from sahmr.scene.visibility import scene_hidden_share
from sahmr.synth.appearance import Appearance, body_face_regions, sample_appearance
from sahmr.synth.cameras import Camera, person_bbox, sample_camera
from sahmr.synth.occluders import Occluder, sample_occluder
from sahmr.synth.placement import PlacedBody, Placer
from sahmr.synth.placers import PlacerLike, make_placer
from sahmr.synth.plan import GenerationConfig, SceneRecipe, ShardPlan, shard_rng
from sahmr.synth.render_sample import (
    BodyRaycaster,
    RenderedSample,
    RoomRaycaster,
    render_sample,
)
from sahmr.synth.room_store import build_room, sdf_cache_path, write_placer_sdf
from sahmr.synth.rooms import Room
from sahmr.synth.shapes import StatureMeter

BODIES_PER_ROUND = 64
"""Most bodies a shard asks the placer for at once (refined in mixed batches of candidates);
one more than the views need, as a few camera draws fail."""


class ShardRow(TypedDict):
    """One sample of a shard (`sahmr.data.shards.pack_rows` stacks them): a placed body
    seen by a camera, and its encoded images. Arrays are in the room (world) frame, metres;
    see docs/dataset_format.md for every field."""

    bbox: np.ndarray
    K: np.ndarray
    K_crop: np.ndarray
    T_w2c: np.ndarray
    image_size: np.ndarray
    betas: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    transl: np.ndarray
    vertices_world: np.ndarray
    joints_world: np.ndarray
    vertex_contact: np.ndarray
    occlusion: float
    frame_index: int
    object_id: int
    image_scale: float
    height: float
    occluder: int
    contact_points_world: np.ndarray
    contact_point_region: np.ndarray
    crop: bytes
    mask: bytes
    depth: bytes
    image: bytes
    scene_id: str
    sequence_id: str
    action: str


class ShardStats(TypedDict):
    """What a shard header records of how its rows were drawn."""

    scene_id: str
    rejects: dict[str, int]
    actions: dict[str, int]
    occlusion_mean: float
    placement_attempts: int
    camera_retries: dict[str, int]
    occluded_samples: int


class ShardResult(TypedDict):
    """What a worker reports of a shard it wrote."""

    index: int
    num_samples: int
    seconds: float


@dataclass
class RoomCache:
    """A room a worker has built, with what its shards reuse.

    Attributes:
        room: The room.
        caster: Its ray caster.
        sdf: The contact placer's SDF grid (None for the standing placer).
        mesh_distance: The exact mesh distance of the first placer built for the room
            (None until one was built).
    """

    room: Room
    caster: RoomRaycaster
    sdf: SDFGrid | None
    mesh_distance: MeshSignedDistance | None = None


@dataclass(kw_only=True)
class WorkerState:
    """What a worker process keeps between shards.

    Attributes:
        cfg: The generation config.
        table: scene_id -> room recipe (`sahmr.synth.plan.scene_table`).
        body: The body model (with its topology).
        face_regions: Body region of each face (`sahmr.synth.appearance.body_face_regions`).
        stature: Measures the standing height of a shape.
        rooms: The last rooms built, by scene id (at most `ROOMS_KEPT`).
    """

    cfg: GenerationConfig
    table: dict[str, SceneRecipe]
    body: BodyModel
    face_regions: np.ndarray
    stature: StatureMeter
    rooms: dict[str, RoomCache] = field(default_factory=dict)


ROOMS_KEPT = 4
"""Rooms a worker keeps built (ray caster, SDF, mesh distance) for later shards."""
_STATE: WorkerState | None = None
_BODIES: dict[str | None, BodyModel] = {}
"""Body models loaded in this process, by path (loading takes seconds)."""


def load_body(path: str | None) -> BodyModel:
    """The body model of ``path`` with its topology (cached per process; forked workers
    inherit what the main process loaded)."""
    if path not in _BODIES:
        body = BodyModel(path)
        body.topology  # noqa: B018 -- derive (or load) the cached topology once, here
        _BODIES[path] = body
    return _BODIES[path]


def init_worker(cfg: GenerationConfig, table: dict[str, SceneRecipe]) -> None:
    """Sets this process's `WorkerState` (pool initializer; also run in-process)."""
    global _STATE
    import torch

    torch.set_num_threads(1)
    body = load_body(cfg.body_model_path)
    _STATE = WorkerState(
        cfg=cfg,
        table=table,
        body=body,
        face_regions=body_face_regions(body.lbs_weights.numpy(), body.faces),
        stature=StatureMeter(body),
    )


def worker_state() -> WorkerState:
    """This process's state (set by :func:`init_worker`)."""
    assert _STATE is not None, "worker not initialised"
    return _STATE


def _room(state: WorkerState, scene_id: str) -> tuple[Room, RoomRaycaster, PlacerLike]:
    """The room, its ray caster, SDF and exact mesh distance (cached per worker) and a fresh
    placer."""
    if scene_id not in state.rooms:
        if len(state.rooms) >= ROOMS_KEPT:
            state.rooms.pop(next(iter(state.rooms)))
        room = build_room(state.table[scene_id])
        caster = RoomRaycaster(room.mesh.vertices, room.mesh.faces)
        sdf = None
        if state.cfg.placer == "auto":
            cfg = state.cfg
            path = sdf_cache_path(Path(cfg.out_dir), scene_id, cfg.sdf_voxel_size)
            if not path.is_file():  # written by generate() before workers start
                path = write_placer_sdf(
                    Path(cfg.out_dir), scene_id, state.table[scene_id], cfg.sdf_voxel_size, "cpu"
                )
            # grids stored before rooms declared their ground lack it; joining it twice is a no-op
            sdf = SDFGrid.load(path).with_solid_ground(room.ground)
        state.rooms[scene_id] = RoomCache(room, caster, sdf)
    cached = state.rooms[scene_id]
    placer = make_placer(
        cached.room,
        state.body,
        state.cfg.placer,
        sdf=cached.sdf,
        mesh_distance=cached.mesh_distance,
        shapes=state.cfg.shape,
        mirror_fraction=state.cfg.mirror_fraction,
    )
    if cached.mesh_distance is None and isinstance(placer, Placer):
        cached.mesh_distance = placer.mesh_distance  # built once per room and worker
    return cached.room, cached.caster, placer


@dataclass(kw_only=True)
class _ShardDraw:
    """A shard being filled: its generator, room and placer, and what it has drawn so far.

    Attributes:
        state: The worker state.
        plan: The shard.
        rng: The shard's generator (every draw, in order).
        scene_id: The shard's room.
        room: The room.
        caster: The room's ray caster.
        placer: A fresh placer for the room.
        rows: Rows drawn so far.
        rejects: Reject reason -> count.
        camera_retries: Camera draw statistics (`sahmr.synth.cameras.sample_camera`).
        body_idx: Bodies and motions placed so far (the next sequence id).
    """

    state: WorkerState
    plan: ShardPlan
    rng: np.random.Generator
    scene_id: str
    room: Room
    caster: RoomRaycaster
    placer: PlacerLike
    rows: list[ShardRow] = field(default_factory=list)
    rejects: Counter[str] = field(default_factory=Counter)
    camera_retries: Counter[str] = field(default_factory=Counter)
    body_idx: int = 0

    @property
    def left(self) -> int:
        """Rows still to draw."""
        return self.plan.num_samples - len(self.rows)

    def next_sequence_id(self) -> str:
        """``<split>-<shard>-<body>``: the sequence id of the next body or motion."""
        seq = f"{self.plan.split}-{self.plan.index:06d}-{self.body_idx:04d}"
        self.body_idx += 1
        return seq


def generate_shard_rows(state: WorkerState, plan: ShardPlan) -> tuple[list[ShardRow], ShardStats]:
    """Generates the rows of one shard (deterministic in (seed, shard index, config)).

    Each draw is a short motion (a share ``sequence_fraction`` of draws) or a placed body seen
    from up to ``views_per_body`` cameras; bodies are placed in rounds of several.

    Args:
        state: Worker state (body model, room cache).
        plan: The shard.

    Returns:
        ``(rows, stats)``.
    """
    cfg = state.cfg
    rng, scene_id = shard_rng(cfg, plan)
    room, caster, placer = _room(state, scene_id)
    shard = _ShardDraw(
        state=state,
        plan=plan,
        rng=rng,
        scene_id=scene_id,
        room=room,
        caster=caster,
        placer=placer,
    )
    actions, weights = _action_weights(cfg, placer)
    bodies: deque[PlacedBody | None] = deque()
    attempts = 0
    while shard.left > 0:
        attempts += 1
        if attempts > cfg.max_attempts_factor * plan.num_samples + 10:
            raise RuntimeError(
                f"shard {plan.index}: only {len(shard.rows)}/{plan.num_samples} samples after "
                f"{attempts} attempts in {scene_id} (rejects {dict(shard.rejects)})"
            )
        if cfg.sequence_fraction > 0 and rng.random() < cfg.sequence_fraction:
            seq = shard.next_sequence_id()
            motion, reason = _sequence_rows(shard, seq)
            if reason is not None:
                shard.rejects[reason] += 1
            shard.rows.extend(motion[: shard.left])
            continue
        if not bodies:
            bodies.extend(_place_round(shard, actions, weights))
        placed = bodies.popleft()
        if placed is None:
            shard.rejects["placement"] += 1
            continue
        _view_rows(shard, placed)
    rows = shard.rows
    stats: ShardStats = {
        "scene_id": scene_id,
        "rejects": dict(sorted(shard.rejects.items())),
        "actions": dict(sorted(Counter(r["action"] for r in rows).items())),
        "occlusion_mean": float(np.mean([r["occlusion"] for r in rows])) if rows else 0.0,
        "placement_attempts": attempts,
        "camera_retries": dict(sorted(shard.camera_retries.items())),
        "occluded_samples": int(sum(r["occluder"] > 0 for r in rows)),
    }
    return rows, stats


def _action_weights(cfg: GenerationConfig, placer: PlacerLike) -> tuple[list[str], np.ndarray]:
    """The actions a shard draws and their weights: the config's among those the room can
    host, or uniform over those (none: the placer's choice, when it cannot tell)."""
    feasible = getattr(placer, "feasible_actions", None)
    allowed = list(feasible()) if callable(feasible) else None
    if cfg.actions:
        actions = [a for a in cfg.actions if allowed is None or a in allowed]
        weights = np.array([cfg.actions[a] for a in actions], dtype=np.float64)
    else:  # uniform over the actions the room can host (the placer's choice if unknown)
        actions = allowed or []
        weights = np.ones(len(actions))
    return actions, weights


def _place_round(
    shard: _ShardDraw, actions: list[str], weights: np.ndarray
) -> list[PlacedBody | None]:
    """The bodies the rest of the shard needs, placed together (the contact placer refines
    candidates of different actions in one batch: far cheaper per body); None where one
    could not be placed."""
    cfg, rng, placer = shard.state.cfg, shard.rng, shard.placer
    f = cfg.sequence_fraction
    per_draw = cfg.views_per_body * (1.0 - f) + cfg.sequence_frames * f
    n = min(BODIES_PER_ROUND, math.ceil(shard.left * (1.0 - f) / per_draw) + 1)
    if actions:
        names = [str(a) for a in rng.choice(actions, size=n, p=weights / weights.sum())]
    else:
        names = [None] * n
    place_many = getattr(placer, "place_actions", None)
    if callable(place_many) and actions:
        return list(place_many(rng, names))
    return [placer.sample(rng, action=a) for a in names]


def _view_rows(shard: _ShardDraw, placed: PlacedBody) -> None:
    """Rows of one placed body seen by up to ``views_per_body`` cameras (appended).

    Up to twice as many cameras as views are drawn: a rejected view (too occluded) costs far
    less than placing another body; a camera that does not frame the body is redrawn inside
    `sample_camera` (cheap: no rendering).
    """
    cfg, rng, room = shard.state.cfg, shard.rng, shard.room
    verts = np.asarray(placed.vertices_world, dtype=np.float64)
    pelvis = np.asarray(placed.joints_world[0], dtype=np.float64)
    radius = float(np.linalg.norm(verts - pelvis, axis=1).max())
    body_caster = BodyRaycaster(verts, shard.state.body.faces)
    seq = shard.next_sequence_id()
    hidden = cfg.hidden_fraction(shard.plan.split)

    def draw() -> Camera | None:
        return sample_camera(rng, room, pelvis, cfg.camera, subject_radius=radius,
                             vertices_world=verts, stats=shard.camera_retries)  # fmt: skip

    view, tries = 0, 0
    while view < cfg.views_per_body and tries < 2 * cfg.views_per_body:
        tries += 1
        if shard.left <= 0:
            break
        camera = draw()
        if camera is None:
            shard.rejects["camera"] += 1
            continue
        if hidden > 0 and rng.random() < hidden:
            camera = _most_hidden_camera(shard, camera, draw, verts)
        look = sample_appearance(rng, room, shard.state.face_regions)
        occluder = None
        if cfg.occluders.fraction > 0 and rng.random() < cfg.occluders.fraction:
            box = person_bbox(camera, verts)
            occluder = sample_occluder(rng, room, camera, verts, pelvis, box, cfg.occluders)
            drawn = "occluder_drawn" if occluder is not None else "occluder_none"
            shard.camera_retries[drawn] += 1
        rendered, reason = _render(shard, body_caster, verts, look, camera, occluder)
        if rendered is None:
            shard.rejects[reason] += 1
            continue
        shard.rows.append(_row(shard.state, placed, camera, rendered, shard.scene_id, seq, view))
        view += 1


HIDDEN_PROBE_STRIDE = 8
"""Every this-many-th body vertex is cast when cameras are compared for how much of the body
the room hides (`_most_hidden_camera`): 864 rays of the license-free body's 6,890."""


def _most_hidden_camera(
    shard: _ShardDraw, first: Camera, draw: Callable[[], Camera | None], verts: np.ndarray
) -> Camera:
    """Of ``first`` and ``camera.hidden_candidates - 1`` more ``draw()`` calls (the view's own
    camera draw; None: no camera), the camera behind which the room hides the largest share of
    the body (`scene_hidden_share` of every `HIDDEN_PROBE_STRIDE`-th vertex; ``verts`` (V, 3)
    world frame) without passing ``camera.max_occlusion``; ``first`` when none does better."""
    ranges = shard.state.cfg.camera
    probe = verts[::HIDDEN_PROBE_STRIDE]

    def share(camera: Camera) -> float:
        size = (camera.width, camera.height)
        return scene_hidden_share(probe, camera.K, camera.T_w2c, size, shard.caster)

    best, best_share = first, share(first)
    if best_share > ranges.max_occlusion:
        best_share = -1.0  # any other draw within the limit does better
    for _ in range(int(ranges.hidden_candidates) - 1):
        camera = draw()
        if camera is None:
            continue
        hidden = share(camera)
        if best_share < hidden <= ranges.max_occlusion:
            best, best_share = camera, hidden
    shard.camera_retries["hidden_draw" if best is first else "hidden_draw_switched"] += 1
    return best


def _render(
    shard: _ShardDraw,
    body_caster: BodyRaycaster,
    verts: np.ndarray,
    look: Appearance,
    camera: Camera,
    occluder: Occluder | None = None,
) -> tuple[RenderedSample | None, str]:
    """`render_sample` of one body (vertices (V, 3), world frame) in the shard's room at the
    config's crop size and frame scale."""
    cfg = shard.state.cfg
    return render_sample(
        shard.caster,
        body_caster,
        verts,
        look,
        camera,
        cfg.camera,
        crop_size=cfg.crop_size,
        full_frame_scale=cfg.full_frame_scale,
        occluder=occluder,
    )


def _row(
    state: WorkerState,
    placed: PlacedBody,
    camera: Camera,
    rendered: RenderedSample,
    scene_id: str,
    sequence_id: str,
    frame_index: int,
    action: str | None = None,
) -> ShardRow:
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
        "height": state.stature(placed.betas),
        "occluder": rendered.occluder.code if rendered.occluder is not None else 0,
        "mirrored": int(placed.mirrored),
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


def _sequence_rows(shard: _ShardDraw, sequence_id: str) -> tuple[list[ShardRow], str | None]:
    """Rows of one short motion seen by one camera, or ``([], reject reason)``.

    The whole motion is dropped when any frame fails to render (out of frame, too occluded),
    so a written sequence always has consecutive frames ``0..T-1``.
    """
    from sahmr.synth.sequences import SEQUENCE_KINDS, sample_sequence

    state, rng, room = shard.state, shard.rng, shard.room
    cfg = state.cfg
    kind = str(rng.choice(SEQUENCE_KINDS))
    frames = sample_sequence(shard.placer, rng, kind, cfg.sequence_frames)
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
        stats=shard.camera_retries,
    )
    if camera is None:
        return [], "camera"
    look = sample_appearance(rng, room, state.face_regions)
    rows = []
    for t, placed in enumerate(frames):
        verts = np.asarray(placed.vertices_world, dtype=np.float64)
        body_caster = BodyRaycaster(verts, state.body.faces)
        rendered, reason = _render(shard, body_caster, verts, look, camera)
        if rendered is None:
            return [], reason
        row = _row(state, placed, camera, rendered, shard.scene_id, sequence_id, t, f"seq_{kind}")
        rows.append(row)
    return rows, None


def _shard_header(cfg: GenerationConfig, plan: ShardPlan, stats: ShardStats) -> dict[str, object]:
    return {
        "shard_index": plan.index,
        "split": plan.split,
        "seed": cfg.seed,
        "config_hash": cfg.content_hash(),
        "stats": dict(stats),
    }


def run_shard(plan: ShardPlan) -> ShardResult:
    """Fills one shard and writes it atomically (in a process set up by `init_worker`)."""
    state = worker_state()
    t0 = time.perf_counter()
    rows, stats = generate_shard_rows(state, plan)
    path = Path(state.cfg.out_dir) / "shards" / shard_name(plan.index)
    remove_stale_temps(path)
    write_shard_atomic(path, pack_rows(rows, _shard_header(state.cfg, plan, stats)))
    return {"index": plan.index, "num_samples": len(rows), "seconds": time.perf_counter() - t0}
