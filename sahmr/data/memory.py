"""In-memory training data: synthetic shards decoded once into compact tensors, batches by indexing.

The DataLoader path (`sahmr.data.synthetic.SyntheticDataset` + `collate_samples`) decodes a
JPEG/PNG crop and copies ~100 KB of float32 geometry per sample per step in Python workers,
then cuts every frame's frustum out of all scene points. Here each shard is decoded once
(in several processes) into one `SampleCache` of fixed-size tensors held on the training
device (or in pinned host memory):

* crops ``uint8`` (N, S, S, 3);
* vertices ``float16`` relative to the pelvis joint (``joints_world[:, 0]``, float32), so the
  rounding error is below 0.5 mm for any body within 1 m of its pelvis wherever the room is;
* contact labels ``int8`` (N, V); contact points packed (P, 3) float32 with ``offsets`` (N + 1,);
* cameras, boxes, SMPL parameters and joints float32.

A batch is assembled by indexing these tensors with a tensor of sample indices
(`gather_batch`); the scene points of every room are held once on the device (`SceneStore`),
and each frame's bbox frustum is cut there with the half-spaces and arithmetic of
`sahmr.scene.frustum.frustum_crop` (same points, same order), testing each room's points
against that room's frames only. `build_frame_inputs` then gives the `FrameInputs` of the scene
front end (`sahmr.scene.frontend.build_inputs`), and `sahmr.data.prepare.prepare_targets` the
`FrameTargets`, exactly as the DataLoader path does.

`ShardStream` fills the cache from a dataset folder while the generator may still be writing
it: shards appear under their final name only when complete (`sahmr.data.shards`), so every
planned shard of ``dataset.json`` that exists can be decoded; a background thread polls for
new ones and a process pool decodes them; `ShardStream.refresh` moves what is decoded into the
cache (the training loader calls it between epochs). Format: docs/dataset_format.md.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sahmr.data.collate import Batch
from sahmr.data.shards import DATASET_FORMAT
from sahmr.records import FrameInputs
from sahmr.scene.frontend import FRUSTUM_FAR_M, FRUSTUM_NEAR_M, crop_intrinsics, normalize_crop
from sahmr.scene.frustum import _frustum_planes_world
from sahmr.scene.room_index import RoomIndex
from sahmr.scene.sdf_store import SceneSDFStore, stored_or_built_sdf

logger = logging.getLogger(__name__)

SOURCE = "synth"
"""``Batch.source`` of every cached sample (as `sahmr.data.synthetic.SOURCE`)."""

ROOT_JOINT = 0
"""Joint the cached float16 vertices are stored relative to (SMPL pelvis)."""

CACHE_FIELDS: dict[str, tuple[torch.dtype, tuple[int | str, ...]]] = {
    "crop": (torch.uint8, ("S", "S", 3)),
    "bbox": (torch.float32, (4,)),
    "K": (torch.float32, (3, 3)),
    "T_w2c": (torch.float32, (4, 4)),
    "image_size": (torch.int64, (2,)),
    "frame_index": (torch.int64, ()),
    "occlusion": (torch.float32, ()),
    "betas": (torch.float32, (10,)),
    "global_orient": (torch.float32, (3,)),
    "body_pose": (torch.float32, (69,)),
    "transl": (torch.float32, (3,)),
    "joints_world": (torch.float32, (24, 3)),
    "verts_rel": (torch.float16, ("V", 3)),
    "vertex_contact": (torch.int8, ("V",)),
}
"""Fixed-size per-sample tensors of the cache: name -> (dtype, row shape; S crop side, V
body vertices)."""

STORAGES = ("auto", "device", "pinned", "cpu")
"""Where the cache lives: ``auto`` (the training device), ``device``, ``pinned`` host memory
(CUDA training), plain ``cpu`` memory."""


# ----------------------------------------------------------------------------- settings


@dataclass(kw_only=True)
class MemoryDataConfig:
    """Settings of the in-memory training data path (``configs/loader/memory.yaml``).

    Attributes:
        storage: One of `STORAGES`.
        decode_workers: Processes decoding shards (0: decode in the calling thread).
        min_samples: Samples to hold before training starts (at least one batch per rank);
            when every planned shard already exists, all of them are decoded first.
        poll_seconds: Interval between looks for newly written shards.
        wait_minutes: Longest wait for ``dataset.json`` and the first samples.
        frustum_chunk: Point-frame pairs tested at once by the frustum crop (memory about
            6 bytes each: one plane's distances and the masks).
        augment: Device augmentation settings (`sahmr.data.augment.AugmentConfig`), or None.
        rcnet_once: A frozen RCNet (stage two of SA-HMR) runs once per sample, on its crop
            without augmentation, and later steps reuse its root and contacts
            (`sahmr.engine.rcnet_store`).
        rcnet_new_per_step: With ``rcnet_once``: at most this many samples whose RCNet output
            is not stored yet enter a step; a batch's other new samples are swapped for stored
            ones drawn at random (`sahmr.engine.rcnet_store.RCNetStore.limit_new`). More steps
            over fewer distinct frames when filling the store sets the pace. 0: no cap.
        scene_sdf: Also hold every room's SDF grid on the device (`sahmr.scene.sdf_store`)
            and give each step's targets their rooms (``FrameTargets.scene_sdf``) for a scene
            penetration term (``loss.param_terms.penetration``). The grid is the one the
            generator placed the bodies against (``rooms/<id>/placer_sdf_*.npz``, with the
            room's solid ground), read in background threads as the rooms' shards arrive.
    """

    storage: str = "auto"
    decode_workers: int = 4
    min_samples: int = 0
    poll_seconds: float = 10.0
    wait_minutes: float = 60.0
    frustum_chunk: int = 2**27
    augment: Any = None
    rcnet_once: bool = False
    rcnet_new_per_step: int = 0
    scene_sdf: bool = False

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {STORAGES}, got {self.storage!r}")
        if self.decode_workers < 0:
            raise ValueError(f"decode_workers must be >= 0, got {self.decode_workers}")
        if self.frustum_chunk < 1:
            raise ValueError(f"frustum_chunk must be >= 1, got {self.frustum_chunk}")
        if self.rcnet_new_per_step < 0:
            raise ValueError(f"rcnet_new_per_step must be >= 0, got {self.rcnet_new_per_step}")
        if self.rcnet_new_per_step and not self.rcnet_once:
            raise ValueError("rcnet_new_per_step caps the RCNet store: it needs rcnet_once=true")


def resolve_storage(storage: str, device: torch.device) -> tuple[torch.device, bool]:
    """``(cache device, pinned)`` of a `STORAGES` choice for a training device."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if storage in ("auto", "device"):
        return device, False
    return torch.device("cpu"), storage == "pinned" and device.type == "cuda"


# ----------------------------------------------------------------------------- decoding


@dataclass
class DecodedShard:
    """One shard decoded to numpy arrays (what a decode worker returns).

    Attributes:
        name: Shard file name.
        arrays: `CACHE_FIELDS` arrays (N, ...) plus ``contact_points_world`` (P, 3) float32,
            ``contact_point_region`` (P,) int8 and ``contact_offsets`` (N + 1,) int64.
        scene_id: N scene ids.
        sequence_id: N sequence ids.
        action: N action names.
    """

    name: str
    arrays: dict[str, np.ndarray]
    scene_id: list[str]
    sequence_id: list[str]
    action: list[str]

    def __len__(self) -> int:
        return int(self.arrays["bbox"].shape[0])


def decode_shard(path: str | Path) -> DecodedShard:
    """Decode every row of a shard into compact arrays (crops decoded, vertices to float16).

    Args:
        path: Shard file (`sahmr.data.shards` format).

    Returns:
        The `DecodedShard`.
    """
    from sahmr.data.shards import ShardReader, decode_image

    reader = ShardReader(path)
    try:
        n = len(reader)
        data = reader.array("crop")
        off = np.asarray(reader.array("crop_offsets"))
        crops = np.stack([decode_image(data[off[i] : off[i + 1]]) for i in range(n)])
        if crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"{path}: crops of shape {crops.shape[1:]}, expected (S, S, 3)")
        joints = np.asarray(reader.array("joints_world"), dtype=np.float32)
        verts = np.asarray(reader.array("vertices_world"), dtype=np.float32)
        arrays: dict[str, np.ndarray] = {"crop": crops}
        for name in CACHE_FIELDS:
            if name in ("crop", "verts_rel", "vertex_contact"):
                continue
            dtype = str(CACHE_FIELDS[name][0]).removeprefix("torch.")
            arrays[name] = np.asarray(reader.array(name)).astype(dtype)
        arrays["verts_rel"] = (verts - joints[:, ROOT_JOINT : ROOT_JOINT + 1]).astype(np.float16)
        arrays["vertex_contact"] = np.asarray(reader.array("vertex_contact")).astype(np.int8)
        arrays["contact_points_world"] = np.array(
            reader.array("contact_points_world"), dtype=np.float32
        ).reshape(-1, 3)
        arrays["contact_point_region"] = np.asarray(reader.array("contact_point_region")).astype(
            np.int8
        )
        arrays["contact_offsets"] = np.array(reader.array("contact_offsets"), dtype=np.int64)
        strings = reader.header["strings"]
        return DecodedShard(
            name=Path(path).name,
            arrays=arrays,
            scene_id=list(strings["scene_id"]),
            sequence_id=list(strings["sequence_id"]),
            action=list(strings["action"]),
        )
    finally:
        reader.close()


# ----------------------------------------------------------------------------- transfers


class PinnedStager:
    """Host tensors to a CUDA device without a stream synchronisation.

    A copy from pageable host memory makes CUDA wait for the stream's queued work first; a copy
    from pinned memory does not, so batch assembly can overlap the previous step's kernels.
    Tensors go through a ring of pinned buffers; a buffer is reused only once the copy that
    last read it has run (its event).

    Args:
        slots: Buffers in the ring (copies that may be in flight at once).
    """

    def __init__(self, slots: int = 8) -> None:
        self._buffers: list[Tensor | None] = [None] * slots
        self._events: list[Any] = [None] * slots
        self._next = 0

    def __call__(self, tensor: Tensor, device: torch.device | str) -> Tensor:
        """``tensor`` (CPU) on ``device`` (a plain copy unless ``device`` is CUDA)."""
        device = torch.device(device)
        if device.type != "cuda" or tensor.device.type != "cpu":
            return tensor.to(device)
        k = self._next
        self._next = (k + 1) % len(self._buffers)
        if self._events[k] is not None:
            self._events[k].synchronize()
        buf = self._buffers[k]
        n = tensor.numel()
        if buf is None or buf.dtype != tensor.dtype or buf.numel() < n:
            buf = torch.empty(max(n, 4096), dtype=tensor.dtype, pin_memory=True)
            self._buffers[k] = buf
        view = buf[:n].view(tensor.shape)
        view.copy_(tensor)
        out = view.to(device, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        self._events[k] = event
        return out


# ----------------------------------------------------------------------------- cache


def _alloc(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, pin: bool) -> Tensor:
    return torch.empty(shape, dtype=dtype, device=device, pin_memory=pin)


class SampleCache:
    """Decoded samples as fixed-size tensors on one device, filled shard by shard.

    Args:
        capacity: Rows allocated up front (grows by copying when exceeded).
        device: Where the tensors live.
        pin: Pin them (host memory, CUDA training).

    Attributes:
        fields: `CACHE_FIELDS` tensors (capacity, ...); rows ``[0, size)`` are filled.
        scene: Tensor (capacity,) int64 scene index (in the owner's scene list) per sample,
            on the CPU (the frustum crop groups frames by room there).
        contact_points: Tensor (P_cap, 3) float32 world-frame contact points, packed.
        contact_region: Tensor (P_cap,) int8 region 1..7 of each contact point.
        contact_offsets: Tensor (capacity + 1,) int64 on the CPU: sample i's contact points are
            rows ``[off[i], off[i + 1])``.
        scene_id, sequence_id, action: Per-sample strings.
        keys: Per-sample ``(shard name, row)``.
    """

    def __init__(self, capacity: int, device: torch.device | str = "cpu", *, pin: bool = False):
        self.capacity = max(1, int(capacity))
        self.device = torch.device(device)
        self.pin = bool(pin)
        self.size = 0
        self.fields: dict[str, Tensor] = {}
        self.scene = torch.zeros(0, dtype=torch.int64)
        self.contact_points = torch.zeros(0, 3)
        self.contact_region = torch.zeros(0, dtype=torch.int8)
        self.contact_offsets = torch.zeros(1, dtype=torch.int64)
        self.scene_id: list[str] = []
        self.sequence_id: list[str] = []
        self.action: list[str] = []
        self.keys: list[tuple[str, int]] = []
        self.crop_size: int | None = None
        self.num_verts: int | None = None

    def __len__(self) -> int:
        return self.size

    def nbytes(self) -> int:
        """Bytes held by the tensors (allocated capacity)."""
        ts = [*self.fields.values(), self.scene, self.contact_points, self.contact_region]
        return sum(t.numel() * t.element_size() for t in ts)

    def _allocate(self, crop_size: int, num_verts: int) -> None:
        self.crop_size, self.num_verts = int(crop_size), int(num_verts)
        dims = {"S": self.crop_size, "V": self.num_verts}
        for name, (dtype, row) in CACHE_FIELDS.items():
            shape = (self.capacity, *(dims[d] if isinstance(d, str) else d for d in row))
            self.fields[name] = _alloc(shape, dtype, self.device, self.pin)
        self.scene = torch.zeros(self.capacity, dtype=torch.int64)
        cap = 64 * self.capacity
        self.contact_points = _alloc((cap, 3), torch.float32, self.device, self.pin)
        self.contact_region = _alloc((cap,), torch.int8, self.device, self.pin)

    def _grow_rows(self, needed: int) -> None:
        new_cap = max(needed, 2 * self.capacity)
        logger.warning("sample cache grows from %d to %d rows (copy)", self.capacity, new_cap)
        for name, t in self.fields.items():
            grown = _alloc((new_cap, *t.shape[1:]), t.dtype, self.device, self.pin)
            grown[: self.size] = t[: self.size]
            self.fields[name] = grown
        grown = torch.zeros(new_cap, dtype=torch.int64)
        grown[: self.size] = self.scene[: self.size]
        self.scene = grown
        self.capacity = new_cap

    def _grow_contacts(self, needed: int) -> None:
        new_cap = max(needed, 2 * self.contact_points.shape[0])
        used = int(self.contact_offsets[self.size])
        pts = _alloc((new_cap, 3), torch.float32, self.device, self.pin)
        reg = _alloc((new_cap,), torch.int8, self.device, self.pin)
        pts[:used] = self.contact_points[:used]
        reg[:used] = self.contact_region[:used]
        self.contact_points, self.contact_region = pts, reg

    def append(self, shard: DecodedShard, scene_index: Sequence[int]) -> range:
        """Copy a decoded shard into the next rows.

        Args:
            shard: The decoded shard.
            scene_index: Per row, the index of its scene (in the owner's scene list).

        Returns:
            The cache rows it occupies.

        Raises:
            ValueError: Crops or vertices of another size than the cached ones.
        """
        n = len(shard)
        a = shard.arrays
        crop_size, num_verts = int(a["crop"].shape[1]), int(a["verts_rel"].shape[1])
        if not self.fields:
            self._allocate(crop_size, num_verts)
        elif (crop_size, num_verts) != (self.crop_size, self.num_verts):
            raise ValueError(
                f"shard {shard.name}: crop {crop_size} / {num_verts} vertices, the cache holds "
                f"crop {self.crop_size} / {self.num_verts} vertices"
            )
        if self.size + n > self.capacity:
            self._grow_rows(self.size + n)
        rows = slice(self.size, self.size + n)
        for name in CACHE_FIELDS:
            self.fields[name][rows] = torch.from_numpy(np.ascontiguousarray(a[name]))
        self.scene[rows] = torch.as_tensor(np.asarray(scene_index, dtype=np.int64))
        off = torch.from_numpy(a["contact_offsets"])
        used = int(self.contact_offsets[-1])
        n_pts = int(off[-1])
        if used + n_pts > self.contact_points.shape[0]:
            self._grow_contacts(used + n_pts)
        self.contact_points[used : used + n_pts] = torch.from_numpy(a["contact_points_world"])
        self.contact_region[used : used + n_pts] = torch.from_numpy(a["contact_point_region"])
        self.contact_offsets = torch.cat([self.contact_offsets, used + off[1:]])
        self.scene_id.extend(shard.scene_id)
        self.sequence_id.extend(shard.sequence_id)
        self.action.extend(shard.action)
        self.keys.extend((shard.name, r) for r in range(n))
        self.size += n
        return range(rows.start, rows.stop)


# ----------------------------------------------------------------------------- scenes


def subsample_points(
    points: np.ndarray, max_points: int | None, scene_id: str, seed: int = 0
) -> np.ndarray:
    """A random subset of a scene's points seeded by ``(seed, scene_id)`` (so a scene's subset
    does not depend on which other scenes are loaded), in the original order."""
    if max_points is None or points.shape[0] <= max_points:
        return points
    rng = np.random.default_rng([int(seed), zlib.crc32(scene_id.encode("utf-8"))])
    return points[np.sort(rng.choice(points.shape[0], int(max_points), replace=False))]


class SceneStore(RoomIndex):
    """Scene points of every room held once on a device, concatenated with per-room offsets.

    Args:
        device: Where the points live.
        chunk: Point-frame pairs tested at once by `frustum` (about 6 bytes each).
    """

    def __init__(self, device: torch.device | str = "cpu", *, chunk: int = 2**27) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.chunk = int(chunk)
        self._host: list[Tensor] = []
        self.points = torch.zeros(0, 3, device=self.device)
        self.offsets: list[int] = [0]
        self._dirty = False
        self._stage = PinnedStager()

    def add(self, scene_id: str, points_world: np.ndarray | Tensor) -> int:
        """Add a scene's (N, 3) world-frame points (no-op when present); its index."""
        if scene_id in self._index:
            return self._index[scene_id]
        pts = torch.as_tensor(np.asarray(points_world), dtype=torch.float32)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"scene {scene_id!r}: points must be (N, 3), got {tuple(pts.shape)}")
        index = self._register(scene_id)
        self._host.append(pts)
        self._dirty = True
        return index

    def _pack(self) -> None:
        if not self._dirty:
            return
        self.points = torch.cat(self._host).to(self.device)
        self.offsets = [0, *np.cumsum([p.shape[0] for p in self._host]).tolist()]
        self._dirty = False

    def frustum(
        self,
        K: Tensor,
        T_w2c: Tensor,
        bbox: Tensor,
        frame_scene: Tensor,
        near: float = FRUSTUM_NEAR_M,
        far: float = FRUSTUM_FAR_M,
    ) -> tuple[Tensor, Tensor]:
        """Each frame's scene points inside its bbox frustum, in its camera frame.

        The definition and arithmetic of `sahmr.scene.frustum.frustum_crop` (the same six
        world-frame half-spaces, each tested as ``points @ normals + offset >= 0``, the same
        float32 transform), but each room's points are tested against its own frames only: one
        matrix product per room present in the batch and plane, no per-frame copies.

        Args:
            K: Tensor (B, 3, 3) full-image intrinsics.
            T_w2c: Tensor (B, 4, 4) world -> camera.
            bbox: Tensor (B, 4) person boxes ``x0, y0, x1, y1``, pixels.
            frame_scene: Tensor (B,) int64 scene index of each frame (read on the CPU).
            near: Nearest depth kept, metres.
            far: Farthest depth kept, metres.

        Returns:
            ``(points_cam, batch_idx)``: Tensor (M, 3) camera-frame points and Tensor (M,)
            int64 frame of each, ordered by frame, then by the room's point order.
        """
        self._pack()
        device = self.device
        planes = _frustum_planes_world(K.double(), T_w2c.double(), bbox.double(), near, far)
        planes = planes.to(torch.float32).transpose(0, 1)  # (6, B, 4)
        normals = planes[..., :3].transpose(1, 2).contiguous()  # (6, 3, B)
        offsets = planes[..., 3]  # (6, B)
        scene_host = frame_scene.detach().to("cpu", torch.int64)
        by_scene = torch.argsort(scene_host, stable=True)  # frames grouped by room
        by_scene_dev = self._stage(by_scene, device)
        counts = torch.bincount(scene_host, minlength=len(self.scene_ids)).tolist()
        frames, points = [], []
        first = 0
        for s, n in enumerate(counts):
            if n == 0:
                continue
            lo, hi = self.offsets[s], self.offsets[s + 1]
            pts = self.points[lo:hi]
            mine = by_scene_dev[first : first + n]
            first += n
            rows = max(1, self.chunk // max(hi - lo, 1))
            for start in range(0, n, rows):
                cols = mine[start : start + rows]
                inside = (pts @ normals[0][:, cols] + offsets[0][cols]) >= 0  # (n, b)
                for k in range(1, 6):
                    inside &= (pts @ normals[k][:, cols] + offsets[k][cols]) >= 0
                b, i = torch.nonzero(inside.T, as_tuple=True)
                frames.append(cols[b])
                points.append(i + lo)
        if not frames:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            return torch.zeros(0, 3, device=device), empty
        batch_idx, order = torch.sort(torch.cat(frames), stable=True)
        point_idx = torch.cat(points)[order]
        T = T_w2c.to(device=device, dtype=torch.float32)
        R, t = T[:, :3, :3], T[:, :3, 3]
        pts = self.points[point_idx]
        points_cam = torch.einsum("mij,mj->mi", R[batch_idx], pts) + t[batch_idx]
        return points_cam, batch_idx


# ----------------------------------------------------------------------------- batches


def contact_gather_index(offsets: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of the packed contact points of samples ``indices``, and each row's batch slot.

    Args:
        offsets: Tensor (N + 1,) int64 CPU offsets of the packed points.
        indices: Tensor (B,) int64 CPU sample indices.

    Returns:
        ``(rows, batch_idx)``: Tensors (P,) int64 (CPU), sample i's rows in order.
    """
    starts = offsets[indices]
    return packed_rows(starts, offsets[indices + 1] - starts)


def packed_rows(starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Rows ``starts[b] .. starts[b] + counts[b] - 1`` of every slot b, slot after slot, and
    each row's slot.

    Args:
        starts: Tensor (B,) int64 CPU first row of each slot.
        counts: Tensor (B,) int64 CPU rows of each slot.

    Returns:
        ``(rows, batch_idx)``: Tensors (P,) int64 (CPU), P = ``counts.sum()``.
    """
    batch_idx = torch.repeat_interleave(torch.arange(starts.shape[0]), counts)
    first = torch.cumsum(counts, 0) - counts  # first packed position of each slot
    rows = torch.arange(int(counts.sum())) - first[batch_idx] + starts[batch_idx]
    return rows, batch_idx


def gather_batch(
    cache: SampleCache,
    indices: Tensor,
    device: torch.device | str,
    *,
    stager: PinnedStager | None = None,
) -> Batch:
    """The `Batch` of cached samples ``indices`` on ``device`` (float32 geometry, int64 labels,
    as `sahmr.data.collate.collate_samples` gives; vertices restored from float16).

    Args:
        cache: The filled cache.
        indices: Tensor (B,) int64 sample indices (any device; read on the CPU for strings).
        device: Where the batch goes.
        stager: Host-to-device copier of the indices (None: plain copies, which wait for the
            stream's queued work).

    Raises:
        IndexError: An index outside the filled rows.
    """
    device = torch.device(device)
    host = indices.detach().to("cpu", torch.int64)
    if host.numel() == 0:
        raise ValueError("gather_batch needs at least one index")
    lo, hi = int(host.min()), int(host.max())
    if lo < 0 or hi >= cache.size:
        raise IndexError(f"sample index {lo if lo < 0 else hi} outside the cache's {cache.size}")
    rows, cidx = contact_gather_index(cache.contact_offsets, host)
    B, P = host.numel(), rows.numel()
    packed = torch.cat([host, rows, cidx])  # one host-to-device copy for all three
    packed = stager(packed, cache.device) if stager is not None else packed.to(cache.device)
    idx, rows = packed[:B], packed[B : B + P]

    def take(name: str) -> Tensor:
        return cache.fields[name].index_select(0, idx).to(device, non_blocking=True)

    joints = take("joints_world")
    verts = take("verts_rel").float() + joints[:, ROOT_JOINT : ROOT_JOINT + 1]
    cpts = cache.contact_points.index_select(0, rows).to(device, non_blocking=True)
    creg = cache.contact_region.index_select(0, rows).to(device, non_blocking=True)
    order = host.tolist()
    return Batch(
        crop=take("crop"),
        bbox=take("bbox"),
        K=take("K"),
        T_w2c=take("T_w2c"),
        image_size=take("image_size"),
        frame_index=take("frame_index"),
        occlusion=take("occlusion"),
        scene_id=[cache.scene_id[i] for i in order],
        source=[SOURCE] * len(order),
        sequence_id=[cache.sequence_id[i] for i in order],
        action=[cache.action[i] for i in order],
        contact_points_world=cpts,
        contact_point_region=creg.long(),
        contact_batch_idx=packed[B + P :].to(device, non_blocking=True),
        betas=take("betas"),
        global_orient=take("global_orient"),
        body_pose=take("body_pose"),
        transl=take("transl"),
        vertices_world=verts,
        joints_world=joints,
        vertex_contact=take("vertex_contact").long(),
    )


def build_frame_inputs(
    frames: Batch,
    scenes: SceneStore | None,
    frame_scene: Tensor | None,
    *,
    near: float = FRUSTUM_NEAR_M,
    far: float = FRUSTUM_FAR_M,
) -> FrameInputs:
    """`FrameInputs` of a batch on one device: what `sahmr.scene.frontend.build_inputs` gives,
    with the frustum cut from `SceneStore`.

    Args:
        frames: The batch (crops uint8 (B, S, S, 3), cameras, boxes).
        scenes: Scene points, or None for inputs without scene points.
        frame_scene: Tensor (B,) int64 scene index of each frame (with ``scenes``).
        near: Nearest frustum depth, metres.
        far: Farthest frustum depth, metres.
    """
    pts = idx = None
    if scenes is not None:
        if frame_scene is None:
            raise ValueError("scene points need frame_scene")
        pts, idx = scenes.frustum(frames.K, frames.T_w2c, frames.bbox, frame_scene, near, far)
    return FrameInputs(
        image=normalize_crop(frames.crop),
        K_crop=crop_intrinsics(frames.K, frames.bbox, int(frames.crop.shape[1])),
        K=frames.K,
        bbox=frames.bbox,
        T_w2c=frames.T_w2c,
        scene_points_cam=pts,
        scene_batch_idx=idx,
    )


# ----------------------------------------------------------------------------- stream


@dataclass
class _PlannedShard:
    order: int
    path: Path
    num_samples: int


@dataclass
class _StreamState:
    submitted: set[int] = field(default_factory=set)
    done: queue.Queue = field(default_factory=queue.Queue)


def read_plan(root: Path, split: str) -> list[_PlannedShard]:
    """Planned shards of a split, in ``dataset.json`` order."""
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    if meta.get("format") != DATASET_FORMAT:
        raise ValueError(f"{root}: not a sahmr synthetic dataset")
    return [
        _PlannedShard(k, root / e["file"], int(e["num_samples"]))
        for k, e in enumerate(meta["shards"])
        if e["split"] == split
    ]


class ShardStream:
    """Fills a `SampleCache` and `SceneStore` from a synthetic dataset split, also while the
    generator is still writing it.

    Args:
        root: Dataset folder (``dataset.json``, ``shards/``, ``rooms/``).
        split: Split name.
        device: Training device (scene points go there).
        config: Storage, decode workers, polling.
        needs_scene: Load the rooms' scene points.
        max_points_per_scene: Random subset per room (None: all), seeded per room.
        seed: Seed of those subsets.
        progress: Show a progress bar while waiting for samples.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        device: torch.device | str,
        config: MemoryDataConfig | None = None,
        *,
        needs_scene: bool = True,
        max_points_per_scene: int | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.device = torch.device(device)
        self.config = config or MemoryDataConfig()
        self.needs_scene = needs_scene
        self.max_points_per_scene = max_points_per_scene
        self.seed = int(seed)
        self.progress = progress
        self._wait_for_plan()
        self.plan = read_plan(self.root, split)
        if not self.plan:
            raise ValueError(f"{self.root}: dataset.json plans no shards of split {split!r}")
        cache_device, pin = resolve_storage(self.config.storage, self.device)
        self.cache = SampleCache(sum(p.num_samples for p in self.plan), cache_device, pin=pin)
        self.scenes = SceneStore(self.device, chunk=self.config.frustum_chunk)
        self.sdfs: SceneSDFStore | None = None
        self._sdf_loads: dict[str, Future] = {}
        self._sdf_lock = threading.Lock()
        self._sdf_pool: ThreadPoolExecutor | None = None
        if self.config.scene_sdf:
            if not needs_scene:
                raise ValueError("loader.scene_sdf needs the rooms (needs_scene=true)")
            self.sdfs = SceneSDFStore(self.device)
            self._sdf_pool = ThreadPoolExecutor(2, thread_name_prefix="room-sdf")
        self._state = _StreamState()
        self._pending: dict[int, DecodedShard] = {}
        self.loaded: set[int] = set()
        self._pool: ProcessPoolExecutor | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.config.decode_workers > 0:
            import multiprocessing as mp

            self._pool = ProcessPoolExecutor(
                self.config.decode_workers, mp_context=mp.get_context("spawn")
            )
            self._thread = threading.Thread(target=self._poll_loop, daemon=True, name="shards")
            self._thread.start()

    # -- plan and polling

    def _wait_for_plan(self) -> None:
        path = self.root / "dataset.json"
        deadline = time.monotonic() + 60.0 * self.config.wait_minutes
        while not path.is_file():
            if time.monotonic() > deadline:
                raise FileNotFoundError(f"{path} did not appear")
            time.sleep(min(self.config.poll_seconds, 5.0))

    @property
    def complete(self) -> bool:
        """Whether every planned shard is in the cache."""
        return len(self.loaded) == len(self.plan)

    @property
    def planned_samples(self) -> int:
        """Samples the plan holds for the split."""
        return sum(p.num_samples for p in self.plan)

    def _ready_shards(self) -> list[int]:
        """Planned shards written (under their final name) and not yet submitted."""
        return [
            k
            for k, p in enumerate(self.plan)
            if k not in self._state.submitted and p.path.is_file()
        ]

    def _submit(self, k: int) -> None:
        self._state.submitted.add(k)
        if self._pool is None:
            self._state.done.put((k, decode_shard(self.plan[k].path), None))
            return
        fut = self._pool.submit(decode_shard, str(self.plan[k].path))

        def done(f: Future, k: int = k) -> None:
            err = f.exception()
            if err is None:
                self._prefetch_sdfs(f.result().scene_id)
            self._state.done.put((k, None if err else f.result(), err))

        fut.add_done_callback(done)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                for k in self._ready_shards():
                    self._submit(k)
            except RuntimeError:  # the pool shut down
                return
            if len(self._state.submitted) == len(self.plan):
                return
            self._stop.wait(self.config.poll_seconds)

    # -- filling

    def _scene_points(self, scene_id: str) -> np.ndarray:
        from sahmr.data.synthetic import SceneIndex

        pts = SceneIndex(self.root, [scene_id])[scene_id]
        return subsample_points(pts, self.max_points_per_scene, scene_id, self.seed)

    def _prefetch_sdfs(self, scene_ids: Sequence[str]) -> None:
        """Start reading the SDF grids of rooms not seen yet (background threads)."""
        if self._sdf_pool is None:
            return
        with self._sdf_lock:
            for sid in dict.fromkeys(scene_ids):
                if sid not in self._sdf_loads and sid not in self.sdfs:
                    mesh = self.root / "rooms" / sid / "mesh.ply"
                    self._sdf_loads[sid] = self._sdf_pool.submit(stored_or_built_sdf, mesh)

    def _append(self, k: int, shard: DecodedShard) -> None:
        scene_index = []
        if self.sdfs is not None:
            self._prefetch_sdfs(shard.scene_id)  # no-op for rooms already asked for
        for sid in shard.scene_id:
            if self.needs_scene and sid not in self.scenes:
                self.scenes.add(sid, self._scene_points(sid))
            if self.sdfs is not None and sid not in self.sdfs:
                with self._sdf_lock:
                    load = self._sdf_loads[sid]
                self.sdfs.add(sid, load.result())
                with self._sdf_lock:  # stored: the read grid is let go
                    del self._sdf_loads[sid]
                if self.needs_scene and self.sdfs.index(sid) != self.scenes.index(sid):
                    raise RuntimeError(f"room {sid}: SDF and scene-point stores disagree")
            scene_index.append(self.scenes.index(sid) if self.needs_scene else 0)
        self.cache.append(shard, scene_index)
        self.loaded.add(k)

    def _drain(self, block: bool, timeout: float | None) -> int:
        """Move decoded shards into ``_pending``; returns how many arrived."""
        got = 0
        while True:
            try:
                k, shard, err = self._state.done.get(block=block and got == 0, timeout=timeout)
            except queue.Empty:
                return got
            if err is not None:
                raise RuntimeError(f"decoding {self.plan[k].path} failed: {err}") from err
            self._pending[k] = shard
            got += 1

    def available(self) -> set[int]:
        """Plan indices of the shards in the cache or decoded and waiting to join it."""
        self._drain(block=False, timeout=None)
        return set(self.loaded) | set(self._pending)

    def wait(self, min_samples: int = 0) -> None:
        """Wait until at least ``min_samples`` are cached or decoded, with a progress bar; on
        the first fill, when every planned shard is written already, wait for all of them (the
        cache then holds the split in plan order, as the DataLoader path indexes it).

        Raises:
            TimeoutError: Fewer after ``wait_minutes``.
        """
        if self._pool is None:
            for k in self._ready_shards():
                self._submit(k)
        first = self.cache.size == 0
        all_written = first and all(p.path.is_file() for p in self.plan)
        target = self.planned_samples if all_written else min_samples
        target = min(target, self.planned_samples)
        self._drain(block=False, timeout=None)
        deadline = time.monotonic() + 60.0 * self.config.wait_minutes
        held = lambda: self.cache.size + sum(len(s) for s in self._pending.values())  # noqa: E731
        if held() < target:
            from tqdm import tqdm

            bar = tqdm(
                total=target,
                initial=held(),
                desc=f"decoding {self.split} shards",
                unit="sample",
                disable=not self.progress,
            )
            while held() < target:
                if time.monotonic() > deadline:
                    bar.close()
                    raise TimeoutError(
                        f"{self.root}: {held()} of {target} samples of split {self.split!r} "
                        f"after {self.config.wait_minutes} min"
                    )
                if self._pool is None:
                    for k in self._ready_shards():
                        self._submit(k)
                    if held() < target:
                        time.sleep(self.config.poll_seconds)
                n0 = held()
                self._drain(block=True, timeout=self.config.poll_seconds)
                bar.update(held() - n0)
            bar.close()

    def refresh(self, min_samples: int = 0, only: set[int] | None = None) -> int:
        """Move decoded shards into the cache, in plan order, after `wait` (``min_samples``).

        Args:
            min_samples: Samples the cache must hold (or have decoded) first.
            only: Append only these plan indices (each cached or decoded already; ranks of a
                job append the same shards in the same order); None: every decoded shard.

        Returns:
            Samples added.

        Raises:
            TimeoutError: Fewer than ``min_samples`` after ``wait_minutes``.
        """
        before = self.cache.size
        self.wait(min_samples)
        keys = sorted(self._pending) if only is None else sorted(set(only) - self.loaded)
        for k in keys:
            if k not in self._pending:
                raise RuntimeError(f"shard {self.plan[k].path} is not decoded on this process")
            self._append(k, self._pending.pop(k))
        added = self.cache.size - before
        if added:
            logger.info(
                "memory cache %s: +%d samples, %d of %d planned, %.2f GiB on %s",
                self.split,
                added,
                self.cache.size,
                self.planned_samples,
                self.cache.nbytes() / 2**30,
                self.cache.device,
            )
        if self.complete:
            self.close()
        return added

    def close(self) -> None:
        """Stop polling and shut the decode pool down."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._sdf_pool is not None:
            self._sdf_pool.shutdown(wait=False)  # pending reads are waited for in _append
            self._sdf_pool = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass
