"""Rooms by id, numbered in the order they were added: the bookkeeping the training stores
that hold one entry per room share (`sahmr.data.memory.SceneStore`,
`sahmr.scene.sdf_store.SceneSDFStore`), so that a frame's room index means the same room in
each."""

from __future__ import annotations


class RoomIndex:
    """Room ids and their indices (0, 1, ... in order of addition)."""

    def __init__(self) -> None:
        self.scene_ids: list[str] = []
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.scene_ids)

    def __contains__(self, scene_id: str) -> bool:
        return scene_id in self._index

    def index(self, scene_id: str) -> int:
        """Index of a room (KeyError when absent)."""
        return self._index[scene_id]

    def _register(self, scene_id: str) -> int:
        """Give a new room the next index; its index."""
        self._index[scene_id] = len(self.scene_ids)
        self.scene_ids.append(scene_id)
        return self._index[scene_id]
