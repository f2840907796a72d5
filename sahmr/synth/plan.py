"""What a dataset draws: its config, the rooms of each split and the shard plan.

Shard ``i`` belongs to one split and holds samples drawn from one room of that split with a
generator seeded by ``(seed, i)`` only (:func:`shard_rng`), so a shard's content depends
only on (seed, shard index, config): runs are deterministic, resumable shard by shard and
can be split across machines (``shard="i/N"`` takes every N-th shard index). Splits hold
disjoint rooms.

The worker that fills one shard is `sahmr.synth.worker`; the driver that runs the pool and
writes ``dataset.json`` is `sahmr.synth.generate`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, TypeVar

import numpy as np

from sahmr.body.pose_library import MIRROR_FRACTION
from sahmr.data.shards import SHARD_VERSION
from sahmr.geometry.crops import DEFAULT_CROP_SIZE
from sahmr.synth.cameras import CameraRanges
from sahmr.synth.occluders import OccluderRanges
from sahmr.synth.shapes import ShapeRanges

if TYPE_CHECKING:
    from omegaconf import DictConfig

_T = TypeVar("_T")
GENERATOR_VERSION = 3
"""Version of what the generator draws for a given config (part of the config hash, so a
resumed run never mixes shards of two versions): 2 = mixed-action placement batches, the
backrest actions, exact-mesh acceptance, repeated camera draws; 3 = wide shapes, cameras
drawn within the room (floor level to the ceiling, portrait images, 35 mm-equivalent
focal lengths, framing checked per draw, parapets no ceiling), synthetic occluders."""


@dataclass(kw_only=True)
class SplitSpec:
    """Rooms and share of one split.

    Attributes:
        fraction: Share of ``num_samples`` in this split.
        kinds: Generated room kinds (`sahmr.synth.rooms.ROOM_KINDS`).
        seeds: Generated room seeds; every (kind, seed) pair is one room.
        seed_range: Optional ``[start, stop)`` appended to ``seeds``.
        bundled: Bundled scene names (`sahmr.synth.bundled.BUNDLED_SCENES`).
        samples_per_shard: Shard size of this split; None: the dataset's
            (`GenerationConfig.samples_per_shard`). Each shard is set in one room, so smaller
            shards spread a small val or test split over more of its rooms.
        hidden_fraction: This split's share of hidden-camera views
            (`sahmr.synth.cameras.CameraRanges.hidden_fraction`); None: the camera's. Lets a
            training split draw more people behind furniture while val and test keep the
            generator's defaults.
    """

    fraction: float
    kinds: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    seed_range: list[int] | None = None
    bundled: list[str] = field(default_factory=list)
    samples_per_shard: int | None = None
    hidden_fraction: float | None = None

    def __post_init__(self) -> None:
        from sahmr.synth.bundled import BUNDLED_SCENES
        from sahmr.synth.rooms import ROOM_KINDS

        if not (math.isfinite(float(self.fraction)) and float(self.fraction) >= 0.0):
            raise ValueError(
                f"fraction {self.fraction}: must be a finite number >= 0 (a "
                "share relative to the other splits)"
            )
        unknown = [k for k in self.kinds if k not in ROOM_KINDS]
        unknown += [b for b in self.bundled if b not in BUNDLED_SCENES]
        if unknown:
            raise ValueError(
                f"unknown room kind / bundled scene {unknown} (kinds: "
                f"{', '.join(ROOM_KINDS)}; bundled: {', '.join(BUNDLED_SCENES)})"
            )
        seeds = [int(s) for s in self.seeds]
        if self.seed_range is not None:
            lo, hi = (int(x) for x in self.seed_range)
            if lo > hi:
                raise ValueError(f"seed_range [{lo}, {hi}): start after stop")
            seeds += [s for s in range(lo, hi) if s not in seeds]
        self.seeds, self.seed_range = seeds, None
        self.kinds, self.bundled = list(self.kinds), list(self.bundled)
        if self.samples_per_shard is not None:
            size = self.samples_per_shard
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"samples_per_shard {size!r}: must be an integer >= 1 or null")
        if self.hidden_fraction is not None:
            share = self.hidden_fraction
            if isinstance(share, bool) or not 0.0 <= float(share) <= 1.0:
                raise ValueError(f"hidden_fraction {share!r}: must be in [0, 1] or null")
            self.hidden_fraction = float(share)


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
        mirror_fraction: Share of placed bodies drawn as their action's left/right mirror
            image (`sahmr.body.pose_library.MIRROR_FRACTION`); 0 reproduces sets made before.
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
            checks bodies on (`sahmr.synth.placer_sdf.build_placer_sdf`).
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
    mirror_fraction: float = MIRROR_FRACTION
    occluders: OccluderRanges = field(default_factory=OccluderRanges)
    crop_size: int = DEFAULT_CROP_SIZE
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
        if not 0.0 <= self.mirror_fraction <= 1.0:
            raise ValueError(f"mirror_fraction {self.mirror_fraction} is not in [0, 1]")
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
        if not self.mirror_fraction:  # ... and before mirror-image actions
            d.pop("mirror_fraction")
        if not any(self.hidden_fraction(k) for k in self.splits):
            # ... and before the hidden-camera draw
            d["camera"].pop("hidden_fraction")
            d["camera"].pop("hidden_candidates")
        for split in d["splits"].values():  # ... and before splits had their own shard size
            for key in ("samples_per_shard", "hidden_fraction"):  # or hidden-camera share
                if split[key] is None:
                    split.pop(key)
        return d

    def hidden_fraction(self, split: str) -> float:
        """The share of hidden-camera views of ``split`` (its own, else the camera's)."""
        own = self.splits[split].hidden_fraction
        return self.camera.hidden_fraction if own is None else own

    def content_hash(self) -> str:
        """SHA-256 (16 hex digits) of `content_dict`, the shard format version and
        `GENERATOR_VERSION`."""
        text = json.dumps(
            {"cfg": self.content_dict(), "v": SHARD_VERSION, "gen": GENERATOR_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build(cls: type[_T], values: dict[str, Any], where: str) -> _T:
    """``cls(**values)`` with unknown keys named in the error."""
    unknown = set(values) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown {where} config keys: {sorted(unknown)}")
    return cls(**values)


def config_from_mapping(cfg: Mapping[str, Any] | DictConfig) -> GenerationConfig:
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


class SceneRecipe(TypedDict):
    """How to rebuild one room of the dataset (an entry of ``rooms.json``).

    Attributes:
        source: ``"generated"`` (`sahmr.synth.room_kinds.generate_room`) or ``"bundled"``.
        kind: Room kind (`sahmr.synth.rooms.ROOM_KINDS`).
        seed: Room seed.
        name: Bundled scene name (bundled rooms only).
        split: The split the room belongs to.
    """

    source: str
    kind: str
    seed: int
    name: NotRequired[str]
    split: str


def generated_scene_id(kind: str, seed: int) -> str:
    """Scene id of a generated room (``gen_office_00012``)."""
    return f"gen_{kind}_{seed:05d}"


def bundled_scene_id(name: str) -> str:
    """Scene id of a bundled room (``bundled_living_room``)."""
    return f"bundled_{name}"


def scene_table(cfg: GenerationConfig) -> dict[str, SceneRecipe]:
    """scene_id -> room recipe (``source``, ``kind``, ``seed``, ``name``, ``split``).

    Raises:
        ValueError: A room (same kind + seed, bundled rooms included) in two splits.
    """
    from sahmr.synth.bundled import BUNDLED_SCENES

    table: dict[str, SceneRecipe] = {}
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
        per_shard = spec.samples_per_shard or cfg.samples_per_shard
        for k in range(math.ceil(n / per_shard)):
            size = min(per_shard, n - k * per_shard)
            shards.append(ShardPlan(len(shards), split, size, scenes))
    return shards


def shard_rng(cfg: GenerationConfig, plan: ShardPlan) -> tuple[np.random.Generator, str]:
    """A shard's random generator, after its first draw: the room the shard is set in."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, plan.index]))
    return rng, plan.scenes[int(rng.integers(len(plan.scenes)))]


def shard_scene_id(cfg: GenerationConfig, plan: ShardPlan) -> str:
    """The scene a shard draws its samples in (a function of seed and shard index)."""
    return shard_rng(cfg, plan)[1]
