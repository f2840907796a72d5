"""Bundled demo rooms: found by name, small, and exactly what the generator makes."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import sahmr
from sahmr.synth import bundled
from sahmr.synth.bundled import (
    BUNDLED_SCENES,
    bundled_scene_dir,
    default_scene_name,
    list_bundled_scenes,
    load_bundled_room,
)
from sahmr.synth.room_kinds import generate_room
from sahmr.synth.rooms import GENERATOR_VERSION, Room

NAMES = sorted(BUNDLED_SCENES)


def test_names_and_lookup():
    assert list_bundled_scenes() == NAMES
    assert default_scene_name() == "living_room"
    assert bundled_scene_dir("gym").name == "gym"
    with pytest.raises(KeyError, match="living_room"):
        bundled_scene_dir("kitchen")


def test_falls_back_to_checkout_scenes_folder(monkeypatch):
    monkeypatch.setattr(bundled.importlib.util, "find_spec", lambda name: None)
    assert bundled.scenes_root() == Path(sahmr.__file__).resolve().parent.parent / "scenes"


@pytest.mark.parametrize("name", NAMES)
def test_bundled_scene_files(name):
    folder = bundled_scene_dir(name)
    for f in ("mesh.ply", "meta.json", "face_object_id.npy", "free_space.npy", "preview.png"):
        assert (folder / f).is_file(), f
    assert (folder / "mesh.ply").stat().st_size < 1_000_000
    assert (folder / "mesh.ply").read_bytes().startswith(b"ply\nformat binary_little_endian")
    meta = json.loads((folder / "meta.json").read_text())
    kind, seed = BUNDLED_SCENES[name]
    assert (meta["kind"], meta["seed"]) == (kind, seed)
    assert meta["up_axis"] == "z" and meta["units"] == "m"
    assert meta["generator_version"] == GENERATOR_VERSION, "run tools/make_rooms.py bundled"
    with Image.open(folder / "preview.png") as im:
        assert im.size == (640, 480)
    room = Room.load(folder)
    assert len(room.face_object_id) == len(room.mesh.faces) == meta["num_faces"]
    assert room.face_object_id.max() == len(room.objects) - 1


@pytest.mark.parametrize("name", NAMES)
def test_bundled_scene_regenerates_identically(name):
    stored = load_bundled_room(name)
    fresh = generate_room(stored.kind, stored.seed, ceiling=stored.has_ceiling)
    np.testing.assert_array_equal(stored.mesh.vertices, fresh.mesh.vertices)
    np.testing.assert_array_equal(stored.mesh.faces, fresh.mesh.faces)
    np.testing.assert_array_equal(stored.mesh.visual.face_colors, fresh.mesh.visual.face_colors)
    np.testing.assert_array_equal(stored.face_object_id, fresh.face_object_id)
    np.testing.assert_array_equal(stored.free_space.grid, fresh.free_space.grid)
    # Metadata as written to disk.
    meta = json.loads((bundled_scene_dir(name) / "meta.json").read_text())
    assert meta == json.loads(json.dumps(fresh.to_metadata()))
