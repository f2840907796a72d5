"""Torch dataset over the synthetic shards written by `sahmr.synth.generate`.

Random access through an index of (shard, row) built from ``dataset.json`` (no shard is read
at construction beyond checking it exists); shard readers are opened lazily and cached per
process (DataLoader workers each open their own). Scene points per scene id come from the
``rooms/<scene_id>/scene_points.npz`` the generator wrote (2 cm voxels), or are sampled from
the room mesh with trimesh when absent. No open3d. Format: docs/dataset_format.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from sahmr.data.sample import Sample
from sahmr.data.shards import (
    DATASET_FORMAT,
    FIXED_FIELDS,
    OPTIONAL_FIELDS,
    STRING_FIELDS,
    ShardReader,
    decode_depth_mm,
    decode_image,
)

logger = logging.getLogger(__name__)

SOURCE = "synth"


class SceneIndex(Mapping[str, np.ndarray]):
    """Lazy ``scene_id -> (N, 3) float32`` world-frame scene points (for `collate_samples`).

    Args:
        root: Dataset folder.
        scene_ids: The scene ids it serves.
    """

    def __init__(self, root: Path, scene_ids: list[str]) -> None:
        self.root = Path(root)
        self._ids = list(scene_ids)
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, scene_id: str) -> np.ndarray:
        if scene_id not in self._ids:
            raise KeyError(scene_id)
        if scene_id not in self._cache:
            folder = self.root / "rooms" / scene_id
            path = folder / "scene_points.npz"
            if path.is_file():
                with np.load(path, allow_pickle=False) as z:
                    pts = z["points"].astype(np.float32)
            else:
                import trimesh

                from sahmr.scene.points import sample_scene_points

                mesh = trimesh.load(str(folder / "mesh.ply"), process=False, force="mesh")
                pts = sample_scene_points(mesh)
            self._cache[scene_id] = pts
        return self._cache[scene_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


class SyntheticDataset(Dataset):
    """`Sample`s of one split of a synthetic dataset.

    Args:
        root: Dataset folder (``dataset.json``, ``shards/``, ``rooms/``).
        split: Split name (``train``, ``val``, ``test`` by default).
        load_image: Also decode the stored full frame (when the dataset has one): put in
            ``Sample.image`` when stored at scale 1, else in ``extra["image_small"]`` with
            ``extra["image_scale"]``.
        load_mask_depth: Also decode the crop's person mask (``extra["mask"]``, (S, S) uint8,
            0 none / 1 visible / 2 hidden) and depth (``extra["depth"]``, (S, S) float32 m,
            inf = miss).
        max_open_shards: Shard readers kept open per process.

    Attributes:
        scene_points: `SceneIndex` for the split's scenes.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        load_image: bool = False,
        load_mask_depth: bool = False,
        max_open_shards: int = 16,
    ) -> None:
        self.root = Path(root)
        meta = json.loads((self.root / "dataset.json").read_text(encoding="utf-8"))
        if meta.get("format") != DATASET_FORMAT:
            raise ValueError(f"{self.root}: not a sahmr synthetic dataset")
        self.split = split
        self.load_image = load_image
        self.load_mask_depth = load_mask_depth
        self.max_open_shards = max_open_shards
        self.shard_paths: list[Path] = []
        index: list[tuple[int, int]] = []
        missing = 0
        for entry in meta["shards"]:
            if entry["split"] != split:
                continue
            path = self.root / entry["file"]
            if not path.is_file():
                missing += 1
                continue
            k = len(self.shard_paths)
            self.shard_paths.append(path)
            index.extend((k, r) for r in range(int(entry["num_samples"])))
        if missing:
            logger.warning("%s/%s: %d planned shards are missing", self.root, split, missing)
        self._index = np.asarray(index, dtype=np.int64).reshape(-1, 2)
        # Only rooms some written shard uses are on disk (the plan lists every room).
        scenes = [
            s
            for s, rec in meta["scenes"].items()
            if rec["split"] == split and (self.root / "rooms" / s).is_dir()
        ]
        self.scene_points = SceneIndex(self.root, scenes)
        self._readers: dict[int, ShardReader] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._index)

    def _reader(self, k: int) -> ShardReader:
        if os.getpid() != self._pid:  # forked DataLoader worker: do not share open files
            self._readers, self._pid = {}, os.getpid()
        if k not in self._readers:
            if len(self._readers) >= self.max_open_shards:
                self._readers.pop(next(iter(self._readers))).close()
            self._readers[k] = ShardReader(self.shard_paths[k])
        return self._readers[k]

    def columns(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Whole columns of the split in index order, without decoding any image.

        Args:
            names: Members of `sahmr.data.shards.FIXED_FIELDS` or `OPTIONAL_FIELDS` (the
                latter filled with their default for shards written before them).

        Returns:
            ``{name: (N, *row_shape)}``, row ``i`` being `__getitem__(i)`'s.

        Raises:
            KeyError: A name that is neither.
        """
        unknown = [n for n in names if n not in FIXED_FIELDS and n not in OPTIONAL_FIELDS]
        if unknown:
            raise KeyError(f"not a per-row column: {', '.join(unknown)}")
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for k in range(len(self.shard_paths)):
            rows = self._index[self._index[:, 0] == k, 1]
            reader = self._reader(k)
            for n in names:
                if n in OPTIONAL_FIELDS and not reader.has(n):
                    dtype, default = OPTIONAL_FIELDS[n]
                    parts[n].append(np.full(len(rows), default, dtype=dtype))
                else:
                    parts[n].append(np.asarray(reader.array(n))[rows])
        return {n: np.concatenate(p) if p else np.zeros((0,)) for n, p in parts.items()}

    def strings(self, name: str) -> list[str]:
        """A `sahmr.data.shards.STRING_FIELDS` column of the split in index order."""
        if name not in STRING_FIELDS:
            raise KeyError(f"not a string column: {name}")
        out: list[str] = []
        for k in range(len(self.shard_paths)):
            values = self._reader(k).header["strings"][name]
            out.extend(values[int(r)] for r in self._index[self._index[:, 0] == k, 1])
        return out

    def __getitem__(self, idx: int) -> Sample:
        k, r = (int(x) for x in self._index[idx])
        row = self._reader(k).row(r)
        extra: dict = {
            "K_crop": row["K_crop"],
            "object_id": int(row["object_id"]),
            "shard": self.shard_paths[k].name,
            "row": r,
        }
        image = None
        if self.load_image and row["image"]:
            scale = float(row["image_scale"])
            frame = decode_image(row["image"])
            if abs(scale - 1.0) < 1e-6:
                image = frame
            else:
                extra["image_small"], extra["image_scale"] = frame, scale
        if self.load_mask_depth:
            extra["mask"] = decode_image(row["mask"])
            extra["depth"] = decode_depth_mm(decode_image(row["depth"]))
        return Sample(
            crop=decode_image(row["crop"]),
            bbox=row["bbox"],
            K=row["K"],
            T_w2c=row["T_w2c"],
            image_size=row["image_size"],
            scene_id=row["scene_id"],
            source=SOURCE,
            sequence_id=row["sequence_id"],
            frame_index=int(row["frame_index"]),
            image=image,
            betas=row["betas"],
            global_orient=row["global_orient"],
            body_pose=row["body_pose"],
            transl=row["transl"],
            vertices_world=row["vertices_world"],
            joints_world=row["joints_world"],
            vertex_contact=row["vertex_contact"].astype(np.int64),
            contact_points_world=row["contact_points_world"],
            contact_point_region=row["contact_point_region"].astype(np.int64),
            occlusion=float(row["occlusion"]),
            action=row["action"],
            extra=extra,
        )
