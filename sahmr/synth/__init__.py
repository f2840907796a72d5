"""Scene-interaction data generation: procedural rooms and the bundled demo rooms."""

from sahmr.synth.bundled import (
    bundled_scene_dir,
    default_scene_name,
    list_bundled_scenes,
    load_bundled_room,
)
from sahmr.synth.furniture import (
    CATEGORY_COLORS,
    DIMENSION_RANGES,
    REQUIRED_SURFACES,
    SURFACE_KINDS,
    FurnitureModel,
    Surface,
)
from sahmr.synth.room_kinds import generate_room
from sahmr.synth.room_preview import render_preview, save_preview
from sahmr.synth.rooms import (
    GENERATOR_VERSION,
    ROOM_KINDS,
    FreeSpace,
    Opening,
    Room,
    SceneObject,
)

__all__ = [
    "CATEGORY_COLORS",
    "DIMENSION_RANGES",
    "GENERATOR_VERSION",
    "REQUIRED_SURFACES",
    "ROOM_KINDS",
    "SURFACE_KINDS",
    "FreeSpace",
    "FurnitureModel",
    "Opening",
    "Room",
    "SceneObject",
    "Surface",
    "bundled_scene_dir",
    "default_scene_name",
    "generate_room",
    "list_bundled_scenes",
    "load_bundled_room",
    "render_preview",
    "save_preview",
]
