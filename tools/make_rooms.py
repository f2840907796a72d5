#!/usr/bin/env python
"""Generate procedural rooms: the bundled demo rooms, or one room of a given kind and seed.

Examples::

    python tools/make_rooms.py bundled                      # rewrite scenes/<name>/ (all six)
    python tools/make_rooms.py bundled --only gym office    # just these
    python tools/make_rooms.py room --kind office --seed 7 --out /tmp/office_7

Each folder gets mesh.ply, meta.json, face_object_id.npy, free_space.npy and preview.png
(format described in scenes/README.md). Output is deterministic for a given generator version.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from sahmr.synth.bundled import BUNDLED_SCENES, scenes_root
from sahmr.synth.room_kinds import generate_room
from sahmr.synth.room_preview import save_preview
from sahmr.synth.rooms import ROOM_KINDS, Room


def _write(room: Room, folder: Path, preview: bool) -> None:
    room.save(folder)
    if preview:
        save_preview(room, folder / "preview.png")
    size_kb = (folder / "mesh.ply").stat().st_size / 1024
    print(f"{folder}: {room.kind} seed {room.seed}, {len(room.furniture)} objects, "
          f"{len(room.mesh.faces)} faces, mesh.ply {size_kb:.0f} KiB, "
          f"walkable {room.free_space.walkable_fraction:.0%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bundled", help="regenerate the bundled demo rooms")
    b.add_argument("--out", type=Path, default=None,
                   help="root folder (default: the bundled scenes folder)")
    b.add_argument("--only", nargs="+", choices=sorted(BUNDLED_SCENES), default=None)
    r = sub.add_parser("room", help="write one room to a folder")
    r.add_argument("--kind", choices=ROOM_KINDS, required=True)
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--ceiling", action="store_true", help="close the room with a ceiling")
    r.add_argument("--no-preview", action="store_true", help="skip preview.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    start = time.perf_counter()
    if args.command == "bundled":
        root = args.out or scenes_root()
        for name in args.only or sorted(BUNDLED_SCENES):
            kind, seed = BUNDLED_SCENES[name]
            _write(generate_room(kind, seed), root / name, preview=True)
    else:
        room = generate_room(args.kind, args.seed, ceiling=args.ceiling)
        _write(room, args.out, preview=not args.no_preview)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
