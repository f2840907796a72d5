"""Place posed bodies into a room so that they touch what the action needs and penetrate nothing.

Pipeline of :meth:`Placer.place_actions` / :meth:`Placer.sample_batch` (a batch of
candidates, of one action or of several):

1. Sample a pose (:func:`sahmr.body.pose_library.sample_pose_euler`) and betas
   (:func:`sahmr.synth.shapes.sample_shape`) per candidate.
2. Pick a target surface of the action's primary contact kind and a facing direction
   (away from the backrest when sitting, towards the wall/table when touching, ...), and
   translate the body so that the required regions land on it (rules per
   :attr:`sahmr.body.pose_library.ActionSpec.placement`).
3. Refine all candidates together by a short Adam optimisation (float32) on the room SDF
   over translation, yaw, a small root tilt and the body joint Euler angles (clamped to
   :data:`sahmr.body.pose_library.JOINT_LIMITS` after every step). The body is skinned
   (:class:`sahmr.synth.skinning.SubsetSkinner`) on a vertex subset for speed: the
   representatives of a coarse level of the body's mesh hierarchy (``subset_level``; the
   431-vertex level of SMPL's mesh by default) plus about ``region_vertices`` vertices of
   each contact region, with SMPL's pose blend shapes frozen at the sampled pose; the loss
   is penetration (``relu(margin - sdf)`` over the subset) + contact (mean of the lowest
   ``1/10`` of ``|sdf|`` over each required region) + a prior keeping the joint angles near
   the sampled pose. The loop's cost is dominated by the number of tensor operations, so
   candidates of different actions are refined in one batch (:meth:`Placer.place_actions`).
4. Evaluate the FULL mesh (exact :class:`sahmr.body.BodyModel` forward, every vertex) and
   accept a candidate only if every required region touches (min ``|sdf|`` of its vertices
   ``<= contact_tol``, 2 cm), the touching vertices of each required region lie on a
   surface of a required kind (back on the backrest, buttocks on the seat, ...; the floor
   is not checked), the deepest vertex penetrates ``<= penetration_tol`` (1 cm) and, for
   standing actions, the pelvis and ankles are over walkable floor. Distances are EXACT
   (``exact_check``): the SDF grid settles the clear cases (its trilinear value is within
   ``sum_c w_c |p - node_c|`` <= sqrt(3) voxels of the truth) and every vertex it cannot
   settle gets its closest-point distance to the room mesh
   (:class:`sahmr.scene.sdf.MeshSignedDistance`: open3d, or culled brute force in torch).
   The subset and the grid only steer the refinement; the rules see every vertex exactly.

The grid (:func:`sahmr.synth.placer_sdf.build_placer_sdf`, 2.5 cm by default) under-estimates
depths at sharp edges by up to about a voxel; the refinement's ``margin`` (8 mm) absorbs most
of it, and a coarser grid (4 cm, faster to build without open3d) costs acceptance, not
correctness. The 7 cm
vertex contact labels use the exact distance where it was computed, the grid elsewhere.

Frames: the ROOM (world) frame is z up, floor at z = 0, metres. Body parameters in
:class:`PlacedBody` are in the room frame: the body's y-up frame is rotated to z up (body
+z, the facing direction, becomes room -y at zero yaw) and then yawed about +z.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from sahmr.body.constants import SMPL_JOINT_INDEX
from sahmr.body.model import BodyModel
from sahmr.body.pose_library import (
    ACTIONS,
    JOINT_LIMITS,
    MIRROR_FRACTION,
    ActionSpec,
    body_euler_to_matrix,
    euler_to_matrix,
    mirror_action,
    mirror_body_euler_deg,
    mirror_root_euler_deg,
    sample_pose_euler,
)
from sahmr.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from sahmr.scene.sdf import MeshSignedDistance, SDFGrid
from sahmr.synth.furniture import Surface
from sahmr.synth.placement_checks import PlacementChecks
from sahmr.synth.placement_rules import (
    BODY_TO_ROOM,
    YAW_JITTER_DEG,
    PosedCandidate,
    RoomSite,
    Target,
    TargetDraw,
    horizontal_axis,
    rule_for,
    z_range,
)
from sahmr.synth.placer_sdf import SDFLookup, build_placer_sdf
from sahmr.synth.rooms import Room
from sahmr.synth.shapes import ShapeRanges, sample_shape
from sahmr.synth.skinning import SubsetSkinner, subset_vertices

logger = logging.getLogger(__name__)

__all__ = [
    "PlacedBody",
    "PlacementStats",
    "Placer",
]

_STANDING_JOINTS = [SMPL_JOINT_INDEX[n] for n in ("pelvis", "left_ankle", "right_ankle")]
"""Joints that must stand over walkable floor when a body is placed standing."""

@dataclass
class PlacedBody:
    """A body placed in a room (all quantities in the ROOM frame, z up, metres).

    Attributes:
        betas: (10,) shape coefficients.
        global_orient: (3,) root rotation, axis-angle (rad), room frame.
        body_pose: (69,) joint rotations, axis-angle (rad), SMPL order.
        transl: (3,) SMPL translation, metres, room frame; ``BodyModel`` with these four
            reproduces ``vertices_world``.
        vertices_world: float32 (V, 3) mesh vertices.
        joints_world: float32 (24, 3) SMPL joints.
        vertex_contact: int64 (V,) contact label: the vertex's region (1..7) if its
            ``|sdf| < 0.07`` m, else 0.
        contact_points_world: float32 (P, 3) scene surface points touched: each labelled
            contact vertex projected onto the scene surface along the SDF gradient
            (three steps of ``p <- p - sdf(p) * grad / |grad|``), so each lies within 7 cm
            of its vertex (up to the SDF grid's interpolation error, ~1 cm at sharp edges);
            points that end up farther than 7 cm from their vertex are dropped.
        contact_point_region: int64 (P,) region label (1..7) of each contact point.
        action: action name (key of :data:`sahmr.body.pose_library.ACTIONS`).
        object_id: id of the target object in ``Room.objects``; -1 for the floor or a wall.
        surface_kind: kind of the target surface.
        max_penetration: depth (m, >= 0) of the deepest vertex inside the scene (SDF).
        contact_gap: required region label -> min ``|sdf|`` (m) of its vertices.
        frame_index: frame number in a sequence (0 for single samples).
        mirrored: the action was drawn as its left/right mirror image
            (`sahmr.body.pose_library.mirror_action`: e.g. ``touch_wall`` with the left hand).
    """

    betas: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    transl: np.ndarray
    vertices_world: np.ndarray
    joints_world: np.ndarray
    vertex_contact: np.ndarray
    contact_points_world: np.ndarray
    contact_point_region: np.ndarray
    action: str
    object_id: int
    surface_kind: str
    max_penetration: float
    contact_gap: dict[int, float]
    frame_index: int = 0
    mirrored: bool = False


@dataclass
class PlacementStats:
    """Counters of the placer: candidates tried, accepted and rejected (by reason) per action.

    Attributes:
        attempts: action -> candidates refined.
        accepts: action -> candidates accepted.
        reasons: action -> Counter of rejection reasons (``"penetration"``,
            ``"contact:<region>"``, ``"not_walkable"``, ``"no_target"``).
        seconds: action -> wall time spent (s).
    """

    attempts: Counter = field(default_factory=Counter)
    accepts: Counter = field(default_factory=Counter)
    reasons: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    seconds: Counter = field(default_factory=Counter)

    def rejects(self, action: str) -> int:
        """Rejected candidates of an action."""
        return self.attempts[action] - self.accepts[action]

    def acceptance_rate(self, action: str) -> float:
        """Accepted / attempted candidates (0 when none attempted)."""
        n = self.attempts[action]
        return self.accepts[action] / n if n else 0.0

    def seconds_per_accept(self, action: str | None = None) -> float:
        """Wall time per accepted sample (s), for one action or overall."""
        if action is None:
            acc, sec = sum(self.accepts.values()), sum(self.seconds.values())
        else:
            acc, sec = self.accepts[action], self.seconds[action]
        return sec / acc if acc else float("inf")

    def summary(self) -> str:
        """One line per action: attempts, acceptance rate, ms per accept, top reasons."""
        lines = []
        for a in sorted(self.attempts):
            top = ", ".join(f"{k}={v}" for k, v in self.reasons[a].most_common(3))
            lines.append(
                f"{a}: {self.accepts[a]}/{self.attempts[a]} accepted "
                f"({100 * self.acceptance_rate(a):.0f}%), "
                f"{1000 * self.seconds_per_accept(a):.1f} ms/accept; rejects: {top or '-'}"
            )
        return "\n".join(lines)

    def log(self) -> None:
        """Log :meth:`summary` at INFO level."""
        for line in self.summary().splitlines():
            logger.info("placement %s", line)


# The refinement's parameters, packed one row per candidate (Adam is elementwise, so one
# tensor with one learning rate equals separate tensors):
_TRANSL = slice(0, 3)
"""Translation (m, room frame)."""
_YAW = 3
"""Yaw about room +z (rad)."""
_TILT = slice(4, 7)
"""A small root rotation (axis-angle, rad) in the body frame, on top of the sampled root."""
_JOINTS = slice(7, None)
"""The 23 x 3 joint Euler angles (rad), clamped to `JOINT_LIMITS` after every step."""
_POSE = slice(4, None)
"""Tilt and joint angles: what the pose prior pulls back to the sample."""


@dataclass
class _RestBatch:
    """Candidates of one refinement at rest (subset vertices, float32, refinement device).

    Attributes:
        betas: (B, 10) shapes.
        root_body: (B, 3, 3) sampled root rotations in the body frame.
        euler0: (B, 23, 3) sampled joint Euler angles (rad).
        yaw0: (B,) the targets' yaws (rad).
        joints_rest: (B, J, 3) rest joints.
        bound: The skinning plan bound to the rest joints.
        rot0: (B, 23, 3, 3) joint rotations of the sampled pose.
        v_posed_sub: (B, S, 3) subset vertices with the sampled pose's blend shapes.
    """

    betas: Tensor
    root_body: Tensor
    euler0: Tensor
    yaw0: Tensor
    joints_rest: Tensor
    bound: tuple[Tensor, list[Tensor]]
    rot0: Tensor
    v_posed_sub: Tensor


@dataclass
class _ContactTerms:
    """The contact loss's gather: every used region's subset vertices, concatenated.

    Attributes:
        region_idx: Subset indices of the used regions (None when no action needs one).
        bounds: (R + 1,) where each used region's run of ``region_idx`` starts and ends.
        weights: (B, R) 1 where a candidate's action requires the region, else 0.
    """

    region_idx: Tensor | None
    bounds: np.ndarray
    weights: Tensor


class Placer:
    """Samples bodies placed in contact with a room's surfaces (see the module docstring).

    The SDF (built once, or given), the body's per-vertex region labels and the skinning
    subset are cached per placer. Use :attr:`stats` for acceptance rates.
    """

    def __init__(
        self,
        room: Room,
        body: BodyModel,
        sdf: SDFGrid | None = None,
        device: str | torch.device = "cpu",
        *,
        voxel_size: float = 0.025,
        region_xy: np.ndarray | None = None,
        num_candidates: int = 8,
        iterations: int = 25,
        learning_rate: float = 0.015,
        contact_tol: float = 0.02,
        penetration_tol: float = 0.01,
        surface_tol: float = 0.02,
        subset_level: int = 2,
        region_vertices: int = 100,
        max_batches: int = 6,
        min_batch: int = 16,
        max_batch: int = 32,
        margin: float = 0.008,
        penetration_weight: float = 2.0,
        exact_check: bool = True,
        mesh_distance: MeshSignedDistance | None = None,
        shapes: ShapeRanges | None = None,
        mirror_fraction: float = MIRROR_FRACTION,
    ) -> None:
        """Builds the placer.

        Args:
            room: the room (z up, metres).
            body: body model; its ``topology.contact_labels[0]`` defines the regions.
            sdf: the room's SDF; None builds it with ``voxel_size`` (clipped to
                ``region_xy`` when given, and to 2.4 m height).
            device: torch device for the refinement.
            voxel_size: SDF pitch (m) when the SDF is built here.
            region_xy: optional (2, 2) ``[[xmin, ymin], [xmax, ymax]]`` (m): only place
                bodies whose anchor lies inside (keeps the SDF small in tests).
            num_candidates: candidates refined together per batch.
            iterations: Adam steps of the refinement.
            learning_rate: Adam step size (m for translation, rad for angles).
            contact_tol: max gap (m) between a required region and the scene.
            penetration_tol: max penetration depth (m).
            surface_tol: a required region's touching vertices must lie within
                ``contact_tol + surface_tol`` (m) of a surface rectangle of a required kind.
            subset_level: the refinement skins the unlabelled part of the body on the
                representatives of this level of ``body.topology`` (0 = every vertex,
                1 = the 1723-vertex level of SMPL's mesh, 2 = the 431-vertex level).
            region_vertices: about this many vertices of each contact region are skinned.
            max_batches: batches (rounds of :meth:`place_actions`) tried before giving up.
            min_batch: :meth:`place_actions` refines at least this many candidates per
                round (several per empty slot when few are left).
            max_batch: most candidates refined together by :meth:`place_actions`.
            margin: the refinement pushes subset vertices this far (m) out of the scene,
                covering the vertices it does not skin and the grid's under-estimated
                depths at sharp edges.
            penetration_weight: weight of the penetration term.
            exact_check: decide acceptance on the exact distance to the room mesh
                (:class:`sahmr.scene.sdf.MeshSignedDistance`) for every vertex the grid
                cannot settle; False decides on the grid alone (its trilinear interpolation
                under-estimates depths at sharp edges by up to a voxel).
            mesh_distance: the room mesh's exact distance (built on first use when None;
                pass :attr:`mesh_distance` of an earlier placer of the room to reuse it).
            shapes: the distribution body shapes are drawn from
                (:class:`sahmr.synth.shapes.ShapeRanges`; None: its defaults).
            mirror_fraction: share of candidates whose action is drawn as its left/right
                mirror image, pose and required contact regions (default
                `sahmr.body.pose_library.MIRROR_FRACTION`); 0 draws no mirror coin, as
                placers did before the option.
        """
        if not 0.0 <= mirror_fraction <= 1.0:
            raise ValueError(f"mirror_fraction {mirror_fraction} is not in [0, 1]")
        self.mirror_fraction = float(mirror_fraction)
        self.room = room
        self.body = body
        self.device = torch.device(device)
        self.region_xy = None if region_xy is None else np.asarray(region_xy, np.float64)
        self.site = RoomSite(room, self.region_xy)
        self.num_candidates = num_candidates
        self.iterations = iterations
        self.learning_rate = learning_rate
        self.contact_tol = contact_tol
        self.penetration_tol = penetration_tol
        self.max_batches = max_batches
        self.min_batch = min_batch
        self.max_batch = max_batch
        self.surface_tol = surface_tol
        self.exact_check = exact_check
        self.shapes = shapes if shapes is not None else ShapeRanges()
        self.margin = margin
        self.penetration_weight = penetration_weight
        self.stats = PlacementStats()
        self._queue: dict[str, list[PlacedBody]] = defaultdict(list)
        self._feasible: list[str] | None = None
        if sdf is None:
            sdf = build_placer_sdf(room, voxel_size, self.region_xy, device=self.device)
        self.sdf = sdf
        self._sdf_values = sdf.to_torch(self.device)[0]
        self._sdf_origin = torch.as_tensor(sdf.origin, dtype=torch.float32, device=self.device)
        self._prepare_body(subset_level, region_vertices)
        self.checks = PlacementChecks(
            room,
            sdf,
            self._sdf_values,
            self._sdf_origin,
            self.vertex_region,
            contact_tol=contact_tol,
            penetration_tol=penetration_tol,
            surface_tol=surface_tol,
            mesh_distance=mesh_distance,
        )

    # ------------------------------------------------------------------ body caches
    def _prepare_body(self, subset_level: int, region_vertices: int) -> None:
        labels = np.asarray(self.body.topology.contact_labels[0], dtype=np.int64)
        self.vertex_region = labels
        reps = np.arange(len(labels))
        for level in range(min(subset_level, self.body.topology.num_levels - 1)):
            # a coarse vertex's representative: its largest down-sampling weight (a plain
            # selection for derived topologies)
            down = self.body.topology.down[level].tocsr()
            reps = reps[np.asarray(down.argmax(axis=1)).reshape(-1)]
        subset = subset_vertices(labels, reps, region_vertices)
        self._skinner = SubsetSkinner(self.body, subset, self.device)
        self._subset = self._skinner.subset
        sub_labels = labels[subset]
        self._sub_region_idx = {
            r: torch.as_tensor(np.flatnonzero(sub_labels == r), device=self.device)
            for r in range(1, 8)
        }
        self._limits = torch.as_tensor(JOINT_LIMITS, dtype=torch.float32, device=self.device)
        self._body_to_room = torch.as_tensor(BODY_TO_ROOM, dtype=torch.float32, device=self.device)

    def _sdf_fast(self, points: Tensor) -> Tensor:
        """SDF (m) at room-frame points (..., 3), differentiable in the points; the room's
        solid ground joins it below the grid too (where the lookup adds the distance to it)."""
        d = SDFLookup.apply(
            points, self._sdf_values[0, 0], self._sdf_origin, float(self.sdf.voxel_size)
        )
        if self.sdf.ground is None:
            return d
        return torch.minimum(d, self.sdf.ground.signed_distance(points).to(d.dtype))

    def _root_rotation(self, yaw: Tensor, root_delta: Tensor, root_body: Tensor) -> Tensor:
        """Room-frame root rotation ``Rz(yaw) @ B2R @ exp(delta) @ R_body`` (B, 3, 3)."""
        c, s = torch.cos(yaw), torch.sin(yaw)
        zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)
        rz = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=-1).view(-1, 3, 3)
        return rz @ self._body_to_room @ axis_angle_to_matrix(root_delta) @ root_body

    # ------------------------------------------------------------------ targets
    def _surface_targets(self, spec: ActionSpec) -> list[tuple[int, Surface]]:
        out = []
        for oid, s in self.room.surfaces():
            if s.kind not in spec.target_surfaces:
                continue
            cat = self.room.objects[oid].category
            if spec.categories and cat not in spec.categories:
                continue
            if s.kind == "wall":
                z0, z1 = z_range(s)
                if z0 > 0.05 or z1 < 1.8 or horizontal_axis(s)[1] < 0.4:
                    continue
            if self.region_xy is not None and s.kind not in ("floor", "wall"):
                if not self.site.in_region(s.center[:2]):
                    continue
            if rule_for(spec.placement, s.kind).needs_backrest and self.site.backrest(oid) is None:
                continue
            out.append((oid, s))
        return out

    def feasible_actions(self) -> list[str]:
        """Actions whose primary surface kind (and object category) exists in the room."""
        if self._feasible is None:
            self._feasible = [a for a, spec in ACTIONS.items() if self._surface_targets(spec)]
        return list(self._feasible)

    def _choose_target(self, spec: ActionSpec, rng: np.random.Generator) -> Target | None:
        targets = self._surface_targets(spec)
        if not targets:
            return None
        for _ in range(10):
            oid, s = targets[rng.integers(len(targets))]
            t = self._target_on(spec, oid, s, rng)
            if t is not None and self.site.in_region(t.anchor[:2]):
                return t
        return None

    def _target_on(
        self, spec: ActionSpec, oid: int, s: Surface, rng: np.random.Generator
    ) -> Target | None:
        """A candidate's target on one surface, by the rule of its mode and surface kind."""
        jitter = np.deg2rad(rng.normal(0.0, YAW_JITTER_DEG))
        rule = rule_for(spec.placement, s.kind)
        return rule.target(rule, TargetDraw(self.site, oid, s, jitter, rng))

    def _initial_translation(
        self, spec: ActionSpec, target: Target, verts: np.ndarray, pelvis: np.ndarray
    ) -> np.ndarray:
        """Translation (3,) putting posed vertices (S, 3) (room frame, no transl) on target."""
        labels = self.vertex_region[self._subset.cpu().numpy()]
        prim = np.isin(labels, spec.contacts[0].regions)
        rule = rule_for(spec.placement, target.surface.kind)
        body = PosedCandidate(verts, pelvis, labels, prim)
        return rule.translation(rule, target, body, self.margin)

    # ------------------------------------------------------------------ sampling
    def sample(self, rng: np.random.Generator, action: str | None = None) -> PlacedBody | None:
        """Sample one accepted placement.

        Candidates of a batch that are accepted but not returned are queued and returned by
        later calls for the same action (so the amortised cost is per accepted sample).

        Args:
            rng: numpy random generator (all randomness comes from it).
            action: action name, or None for a random feasible one.

        Returns:
            A :class:`PlacedBody`, or None after ``max_batches`` batches without success.
        """
        if action is None:
            feasible = self.feasible_actions()
            if not feasible:
                return None
            action = feasible[rng.integers(len(feasible))]
        queue = self._queue[action]
        for _ in range(self.max_batches):
            if queue:
                break
            queue.extend(self.sample_batch(rng, action))
        return queue.pop(0) if queue else None

    def place_actions(
        self, rng: np.random.Generator, actions: Sequence[str]
    ) -> list[PlacedBody | None]:
        """One accepted placement per requested action, candidates of all actions refined
        together.

        Each round refines one candidate per still-empty slot (several per slot when fewer
        than ``min_batch`` slots are left), in batches of at most ``max_batch``
        candidates of mixed actions: the refinement's cost is dominated by the number of
        tensor operations, so one large batch is much cheaper per candidate than many small
        ones. A slot takes the first accepted candidate of its action; surplus accepted
        candidates are queued for later calls (this method and :meth:`sample`).

        Args:
            rng: numpy random generator.
            actions: action names (repeats allowed).

        Returns:
            A list aligned with ``actions``: the placement, or None for slots still empty
            after ``max_batches`` rounds.
        """
        out: list[PlacedBody | None] = [None] * len(actions)
        for i, a in enumerate(actions):
            if self._queue[a]:
                out[i] = self._queue[a].pop(0)
        for _ in range(self.max_batches):
            todo = [i for i, p in enumerate(out) if p is None]
            if not todo:
                break
            slots = list(todo)
            while len(slots) < self.min_batch:
                slots.extend(todo[: self.min_batch - len(slots)])
            for start in range(0, len(slots), self.max_batch):
                chunk = slots[start : start + self.max_batch]
                for i, p in zip(chunk, self._sample_mixed(rng, [actions[i] for i in chunk])):
                    if p is None:
                        continue
                    if out[i] is None:
                        out[i] = p
                    else:
                        self._queue[actions[i]].append(p)
        return out

    def sample_batch(
        self, rng: np.random.Generator, action: str, num_candidates: int | None = None
    ) -> list[PlacedBody]:
        """Sample, place and refine a batch of candidates of one action; return the accepted.

        Args:
            rng: numpy random generator.
            action: action name.
            num_candidates: batch size (default: the placer's ``num_candidates``).

        Returns:
            Accepted placements (possibly empty), in candidate order.
        """
        n = num_candidates or self.num_candidates
        return [p for p in self._sample_mixed(rng, [action] * n) if p is not None]

    def _sample_mixed(
        self, rng: np.random.Generator, actions: Sequence[str]
    ) -> list[PlacedBody | None]:
        """Targets, poses and shapes for one candidate per entry, placed as one batch.

        Returns:
            A list aligned with ``actions`` (None: no target or rejected).
        """
        t0 = time.perf_counter()
        keep, specs, targets, roots, bodies, betas = [], [], [], [], [], []
        flips: list[bool] = []
        for i, action in enumerate(actions):
            spec = ACTIONS[action]
            tgt = self._choose_target(spec, rng)
            if tgt is None:
                self.stats.attempts[action] += 1
                self.stats.reasons[action]["no_target"] += 1
                continue
            root, body = sample_pose_euler(action, rng)
            flip = self.mirror_fraction > 0 and rng.random() < self.mirror_fraction
            if flip:
                spec = mirror_action(spec)
                root, body = mirror_root_euler_deg(root), mirror_body_euler_deg(body)
            flips.append(flip)
            keep.append(i)
            specs.append(spec)
            targets.append(tgt)
            roots.append(np.deg2rad(root))
            bodies.append(np.deg2rad(body))
            betas.append(sample_shape(rng, self.shapes))
        out: list[PlacedBody | None] = [None] * len(actions)
        if targets:
            root_body = euler_to_matrix(torch.as_tensor(np.stack(roots))).numpy()
            placed = self._place(specs, targets, np.stack(betas), root_body, np.stack(bodies))
            for i, p, flip in zip(keep, placed, flips):
                if p is not None:
                    p.mirrored = flip
                out[i] = p
        dt = time.perf_counter() - t0
        for action in actions:
            self.stats.seconds[action] += dt / len(actions)
        logger.debug(
            "%d/%d candidates accepted in %.0f ms",
            sum(p is not None for p in out),
            len(actions),
            1000 * dt,
        )
        return out

    def _place(
        self,
        spec: ActionSpec | Sequence[ActionSpec],
        targets: list[Target],
        betas: np.ndarray,
        root_body: np.ndarray,
        body_euler: np.ndarray,
        init_transl: np.ndarray | None = None,
        iterations: int | None = None,
        prior_weight: float = 1.0,
        smooth_weight: float = 0.0,
        keep_all: bool = False,
        margin: float | None = None,
    ) -> list[PlacedBody | None]:
        """Initial placement, refinement and acceptance of a batch (see module docstring).

        Args:
            spec: the action, or one action per candidate.
            targets: per-candidate targets (length B).
            betas: (B, 10).
            root_body: (B, 3, 3) root rotation in the BODY frame (the yaw of each target and
                the body-to-room rotation are applied on top).
            body_euler: (B, 23, 3) joint Euler angles, rad.
            init_transl: optional (B, 3) translations replacing the placement rule.
            iterations: Adam steps (default: the placer's).
            prior_weight: weight of the pose prior.
            smooth_weight: weight of a second-difference penalty on the translations of
                consecutive candidates (frames of a sequence).
            keep_all: return every candidate (no rejection, stats untouched).
            margin: penetration margin of the refinement (default: the placer's).

        Returns:
            Per candidate, the placement or None when rejected (never None with
            ``keep_all``).
        """
        specs = [spec] * len(targets) if isinstance(spec, ActionSpec) else list(spec)
        margin = self.margin if margin is None else margin
        rest = self._rest(targets, betas, root_body, body_euler)
        if init_transl is None:
            init_transl = self._rule_translations(specs, targets, rest)
        x = self._pack(rest, init_transl).requires_grad_(True)
        steps = self.iterations if iterations is None else iterations
        contact = self._contact_terms(specs)
        self._refine(x, rest, contact, steps, margin, prior_weight, smooth_weight)
        global_orient, body_pose, transl = self._unpack(x, rest)
        return self._accept(specs, targets, rest.betas, global_orient, body_pose, transl, keep_all)

    def _rest(
        self,
        targets: list[Target],
        betas: np.ndarray,
        root_body: np.ndarray,
        body_euler: np.ndarray,
    ) -> _RestBatch:
        """The candidates' subset bodies at rest, bound for skinning (no gradients)."""
        dev, f32 = self.device, torch.float32
        skinner = self._skinner
        betas_t = torch.as_tensor(betas, dtype=f32, device=dev)
        root_body_t = torch.as_tensor(root_body, dtype=f32, device=dev)
        euler0 = torch.as_tensor(body_euler, dtype=f32, device=dev)
        yaw0 = torch.as_tensor([t.yaw for t in targets], dtype=f32, device=dev)
        with torch.no_grad():
            v_shaped_sub, joints_rest = skinner.rest(betas_t)
            bound = skinner.bind(joints_rest)
            # Pose blend shapes are frozen at the sampled pose inside the loop (the pose moves
            # little; this halves the backward pass). The final check is the exact model.
            rot0 = body_euler_to_matrix(euler0)
            v_posed_sub = skinner.pose_blend(v_shaped_sub, rot0)
        return _RestBatch(betas_t, root_body_t, euler0, yaw0, joints_rest, bound, rot0, v_posed_sub)

    def _rule_translations(
        self, specs: Sequence[ActionSpec], targets: list[Target], rest: _RestBatch
    ) -> np.ndarray:
        """(B, 3) translations of the placement rules, on the sampled pose and target yaw."""
        B = len(targets)
        with torch.no_grad():
            no_tilt = torch.zeros(B, 3, device=self.device)
            rot = self._root_rotation(rest.yaw0, no_tilt, rest.root_body)
            verts = self._skinner.skin(rest.v_posed_sub, rest.bound, rot, rest.rot0)
        # SMPL rotates about the rest root joint, so the pelvis stays at J_0 + transl.
        verts_np, pelvis_np = verts.cpu().numpy(), rest.joints_rest[:, 0].cpu().numpy()
        return np.stack(
            [
                self._initial_translation(specs[b], targets[b], verts_np[b], pelvis_np[b])
                for b in range(B)
            ]
        )

    def _pack(self, rest: _RestBatch, init_transl: np.ndarray) -> Tensor:
        """The refinement's parameters, one row per candidate (layout: `_TRANSL`, `_YAW`,
        `_TILT`, `_JOINTS`): the translation, the target's yaw, no tilt, the sampled pose."""
        B = len(rest.yaw0)
        return torch.cat(
            [
                torch.as_tensor(init_transl, dtype=torch.float32, device=self.device).reshape(B, 3),
                rest.yaw0[:, None],
                torch.zeros(B, 3, device=self.device),
                rest.euler0.reshape(B, -1),
            ],
            dim=1,
        )

    def _contact_terms(self, specs: Sequence[ActionSpec]) -> _ContactTerms:
        """Per region, the candidates (rows) whose action requires it, and one gather of every
        used region's subset vertices (sliced per region in the loss)."""
        need = np.zeros((len(specs), 8), dtype=bool)
        for b, sp in enumerate(specs):
            for req in sp.contacts:
                need[b, list(req.regions)] = True
        used = [r for r in range(1, 8) if need[:, r].any()]
        sizes = [len(self._sub_region_idx[r]) for r in used]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        region_idx = torch.cat([self._sub_region_idx[r] for r in used]) if used else None
        weights = torch.as_tensor(need[:, used], dtype=torch.float32, device=self.device)
        return _ContactTerms(region_idx, bounds, weights)

    def _pose_subset(self, x: Tensor, rest: _RestBatch) -> Tensor:
        """(B, S, 3) subset vertices posed by the parameters ``x``, before translation."""
        rot = self._root_rotation(x[:, _YAW], x[:, _TILT], rest.root_body)
        euler = x[:, _JOINTS].view(len(x), -1, 3)
        return self._skinner.skin(rest.v_posed_sub, rest.bound, rot, body_euler_to_matrix(euler))

    def _loss(
        self,
        x: Tensor,
        rest: _RestBatch,
        contact: _ContactTerms,
        prior_mean: Tensor,
        margin: float,
        prior_weight: float,
        smooth_weight: float,
    ) -> Tensor:
        """Penetration + contact + pose prior (+ smoothness over consecutive candidates)."""
        transl = x[:, _TRANSL]
        verts = self._pose_subset(x, rest)
        sdf = self._sdf_fast(verts + transl[:, None])  # (B, S)
        loss = self.penetration_weight * torch.relu(margin - sdf).sum()
        if contact.region_idx is not None:
            d_all = (sdf[:, contact.region_idx] - 0.5 * margin).abs()
            terms = []
            for a, b in itertools.pairwise(contact.bounds):
                k = max(3, int(b - a) // 10)
                terms.append(d_all[:, a:b].topk(k, dim=1, largest=False).values.mean(1))
            loss = loss + 10.0 * (torch.stack(terms, dim=1) * contact.weights).sum()
        loss = loss + prior_weight * ((x[:, _POSE] - prior_mean) ** 2).sum()
        if smooth_weight > 0 and len(x) > 2:
            acc = transl[2:] - 2 * transl[1:-1] + transl[:-2]
            loss = loss + smooth_weight * (acc**2).sum()
        return loss

    def _refine(
        self,
        x: Tensor,
        rest: _RestBatch,
        contact: _ContactTerms,
        steps: int,
        margin: float,
        prior_weight: float,
        smooth_weight: float,
    ) -> None:
        """Adam steps on ``x`` in place, the joint angles clamped to their limits after each.

        Adam's update is written out (as torch.optim.Adam): torch.optim.Adam costs more per
        step than the small update itself (and imports torch._dynamo, seconds, on first use).
        """
        adam_m, adam_v = torch.zeros_like(x), torch.zeros_like(x)
        beta1, beta2 = 0.9, 0.999
        lo = self._limits[..., 0].reshape(-1)
        hi = self._limits[..., 1].reshape(-1)
        prior_mean = x.detach()[:, _POSE].clone()  # no root tilt, the sampled joint angles
        for step in range(1, steps + 1):
            loss = self._loss(x, rest, contact, prior_mean, margin, prior_weight, smooth_weight)
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                adam_m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                adam_v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = (adam_v / (1.0 - beta2**step)).sqrt_().add_(1e-8)
                x.addcdiv_(adam_m, denom, value=-self.learning_rate / (1.0 - beta1**step))
                x[:, _JOINTS].clamp_(lo, hi)

    def _unpack(self, x: Tensor, rest: _RestBatch) -> tuple[Tensor, Tensor, Tensor]:
        """``(global_orient (B, 3), body_pose (B, 69), transl (B, 3))`` of the parameters,
        room frame, axis-angle."""
        B = len(x)
        with torch.no_grad():
            transl, yaw, root_delta = x[:, _TRANSL], x[:, _YAW], x[:, _TILT]
            euler = x[:, _JOINTS].reshape(B, -1, 3)
            rot = self._root_rotation(yaw, root_delta, rest.root_body)
            global_orient = matrix_to_axis_angle(rot)
            body_pose = matrix_to_axis_angle(body_euler_to_matrix(euler)).reshape(B, -1)
            transl = transl.clone()
        return global_orient, body_pose, transl

    def _accept(
        self,
        specs: Sequence[ActionSpec],
        targets: list[Target],
        betas: Tensor,
        global_orient: Tensor,
        body_pose: Tensor,
        transl: Tensor,
        keep_all: bool = False,
    ) -> list[PlacedBody | None]:
        """Exact full-mesh checks; a :class:`PlacedBody` per accepted candidate, else None.

        A candidate is accepted when its deepest vertex penetrates at most
        ``penetration_tol``, every required region comes within ``contact_tol`` of the scene,
        the touching vertices of each required region lie on a surface of a required kind
        (within ``contact_tol + surface_tol`` of one of its rectangles; requirements that
        allow the floor are not checked, the floor being everywhere), and, for standing
        actions, the pelvis and ankles are over walkable floor.
        """
        with torch.no_grad():
            out = self.body(
                betas=betas.to(self.body.v_template.dtype),
                global_orient=global_orient,
                body_pose=body_pose,
                transl=transl,
            )
            verts = out.vertices.float()
            sdf = self.sdf.sample(verts, values=self._sdf_values)
        sdf_np = sdf.cpu().numpy()
        verts_np = verts.cpu().numpy()
        joints_np = out.joints.float().cpu().numpy()
        checks = self.checks
        results: list[PlacedBody | None] = []
        for b, (spec, tgt) in enumerate(zip(specs, targets)):
            action = spec.name
            regions = [r for req in spec.contacts for r in req.regions]
            if self.exact_check:
                err = checks.grid_error(verts_np[b])
                reason = checks.decide(sdf_np[b], regions, err)
                if reason is None:  # the grid cannot settle it: exact where it matters
                    sdf_np[b] = checks.exact_near(verts_np[b], sdf_np[b], regions, err)
            reason = checks.decide(sdf_np[b], regions, None)
            depth = float(max(0.0, -sdf_np[b].min()))
            gaps = {r: float(np.abs(sdf_np[b, checks.region_idx[r]]).min()) for r in regions}
            if reason is None:
                reason = checks.surface_check(spec, tgt, verts_np[b], sdf_np[b])
            if reason is None and rule_for(spec.placement, tgt.surface.kind).standing:
                pts = joints_np[b, _STANDING_JOINTS, :2]
                if not np.all(self.room.free_space.is_walkable(pts)):
                    reason = "not_walkable"
            if not keep_all:
                self.stats.attempts[action] += 1
                if reason is not None:
                    self.stats.reasons[action][reason] += 1
                    results.append(None)
                    continue
                self.stats.accepts[action] += 1
            if self.exact_check:  # labels: the 7 cm rule on exact distances where it matters
                sdf_np[b] = checks.exact_at_threshold(verts_np[b], sdf_np[b], err)
            results.append(
                PlacedBody(
                    betas=betas[b].cpu().numpy().astype(np.float64),
                    global_orient=global_orient[b].cpu().numpy().astype(np.float64),
                    body_pose=body_pose[b].cpu().numpy().astype(np.float64),
                    transl=transl[b].cpu().numpy().astype(np.float64),
                    vertices_world=verts_np[b].astype(np.float32),
                    joints_world=joints_np[b].astype(np.float32),
                    vertex_contact=np.zeros(0, np.int64),  # filled below, all at once
                    contact_points_world=np.zeros((0, 3), np.float32),
                    contact_point_region=np.zeros(0, np.int64),
                    action=action,
                    object_id=tgt.object_id if tgt.surface.kind not in ("floor", "wall") else -1,
                    surface_kind=tgt.surface.kind,
                    max_penetration=depth,
                    contact_gap=gaps,
                )
            )
        rows = [b for b, p in enumerate(results) if p is not None]
        if rows:
            sdf = torch.as_tensor(sdf_np, device=verts.device)
            for b, (labels, points, region) in zip(rows, checks.contacts(verts[rows], sdf[rows])):
                p = results[b]
                p.vertex_contact, p.contact_points_world, p.contact_point_region = (
                    labels,
                    points,
                    region,
                )
        return results

    @property
    def mesh_distance(self) -> MeshSignedDistance:
        """Exact signed distance to the room mesh (open3d when it imports, else culled
        brute force in torch on the CPU), built on first use."""
        return self.checks.mesh_distance
