"""Argument checks shared by the command-line tools: one clear line per bad input, exit 2.

Each ``check_*`` raises `BadArgument` with a one-line message naming the argument, the value
and what is wrong; `fail` prints such a message as ``error: ...`` on stderr and exits with
`EXIT_BAD_ARGUMENT`. All checks run before any slow work and write nothing (a writability
probe file is removed at once).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch

from sahmr.data.shards import DATASET_FORMAT
from sahmr.inference.images import MAX_IMAGE_PIXELS, image_file_problem

T = TypeVar("T")

__all__ = [
    "EXIT_BAD_ARGUMENT",
    "MAX_IMAGE_PIXELS",
    "BadArgument",
    "check_checkpoint",
    "check_complete_split",
    "check_dataset_root",
    "check_dataset_split",
    "check_device",
    "check_float",
    "check_int",
    "check_scan_file",
    "check_writable_folder",
    "checkpoint_data_problem",
    "compose_for_checks",
    "fail",
    "image_file_problem",
    "missing_shards",
    "one_line",
    "scan_files",
]

EXIT_BAD_ARGUMENT = 2
"""Exit status of every tool for bad input."""


class BadArgument(ValueError):
    """A bad command-line argument or config value; the message is for the user."""


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(text).split())


def _named(what: str, value: object) -> str:
    """``--flag VALUE`` or ``key=VALUE`` (``what`` ending in ``=``) for messages."""
    return f"{what}{value}" if what.endswith("=") else f"{what} {value}"


def fail(message: object) -> NoReturn:
    """Print ``error: <message>`` (one line) on stderr and exit with status 2."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_ARGUMENT)


def check_int(value: Any, what: str, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """An integer ``>= minimum`` from an int or its text (not a bool, not a fraction).

    Raises:
        BadArgument: Not an integer, or below ``minimum``.
    """
    if value is None and allow_none:
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None:
        raise BadArgument(f"{what}={value!r}: not an integer")
    if number < minimum:
        raise BadArgument(f"{what}={number}: must be >= {minimum}")
    return number


def check_float(
    value: Any, what: str, *, minimum: float = 0.0, inclusive: bool = False,
    allow_none: bool = False,
) -> float | None:  # fmt: skip
    """A finite number above ``minimum`` (or at it with ``inclusive``).

    Raises:
        BadArgument: Not a number, not finite, or too small.
    """
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise BadArgument(f"{what}={value!r}: not a number") from None
    if not math.isfinite(number):
        raise BadArgument(f"{what}={value!r}: not a finite number")
    if number < minimum or (number == minimum and not inclusive):
        sign = ">=" if inclusive else ">"
        raise BadArgument(f"{what}={number:g}: must be {sign} {minimum:g}")
    return number


def check_device(value: Any, what: str = "device") -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` resolved against this machine.

    Raises:
        BadArgument: Unknown device text, CUDA asked without CUDA, or no such GPU.
    """
    text = str(value).strip()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise BadArgument(f"{what}={text}: not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadArgument(f"{what}={text}: CUDA is not available on this machine "
                              "(use cpu or auto)")  # fmt: skip
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise BadArgument(f"{what}={text}: this machine has {count} GPU(s)")
    elif device.type != "cpu":
        raise BadArgument(f"{what}={text}: only cpu and cuda are supported")
    return device


def check_writable_folder(path: str | Path, what: str) -> Path:
    """Check that ``path`` is, or can be made as, a folder this process can write in.

    Nothing is created: the nearest existing ancestor must be a folder (not a file in the
    way) that accepts a probe file, which is removed at once.

    Raises:
        BadArgument: A file where a folder is needed, or no permission / read-only.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadArgument(f"{_named(what, path)}: exists and is not a folder")
    existing = path
    while not existing.exists():
        if existing.is_symlink():
            raise BadArgument(f"{_named(what, path)}: {existing} is a broken link")
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise BadArgument(f"{_named(what, path)}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".sahmr-write-probe-")
    except OSError as exc:
        name = _named(what, path)
        raise BadArgument(f"{name}: cannot write in {existing} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return path


SYNTHETIC_DATASET_TARGET = "sahmr.data.synthetic.SyntheticDataset"
"""``_target_`` of configs/data/synthetic.yaml: the data whose root holds a dataset.json."""


def check_output_file(path: str | Path, what: str = "output") -> Path:
    """An output file path that can be written: not a folder or other non-file, in a folder
    that can be written (created when missing).

    Raises:
        BadArgument: One line naming ``path``.
    """
    dst = Path(path)
    if dst.exists() and not dst.is_file():
        raise BadArgument(f"{dst}: exists and is not a file")
    check_writable_folder(dst.parent, f"{what} folder of")
    return dst


READ_ERRORS = (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile)
"""What reading a user's array file (.npz, or an opted-in pickle) raises on a bad file."""


def read_input(load: Callable[..., T], path: str | Path, **kwargs: Any) -> T:
    """``load(path, **kwargs)`` with a bad file reported as one line naming it.

    Raises:
        BadArgument: The file could not be read (missing, refused pickle, damaged, wrong keys).
    """
    try:
        return load(path, **kwargs)
    except READ_ERRORS as err:
        text = one_line(err)
        raise BadArgument(text if str(path) in text else f"{path}: {text}") from err


def is_synthetic_data(data_cfg: Any) -> bool:
    """Whether a ``data`` config builds the generator's dataset (RICH / PROX do not)."""
    return str(data_cfg.get("_target_", SYNTHETIC_DATASET_TARGET)) == SYNTHETIC_DATASET_TARGET


def check_data_folder(path: str | Path, what: str) -> Path:
    """An existing folder (the root of a RICH / PROX download).

    Raises:
        BadArgument: No such folder, or not a folder.
    """
    path = Path(path)
    if not path.exists():
        raise BadArgument(f"{_named(what, path)}: no such folder")
    if not path.is_dir():
        raise BadArgument(f"{_named(what, path)}: not a folder")
    return path


def checkpoint_data_problem(
    checkpoint: Path, data: Path, out: Path | None = None
) -> str | None:
    """The one-line problem with a CPU tool's ``checkpoint data [out]`` arguments
    (``tools/refit_head.py``, ``tools/refit_voter.py``, ``tools/diagnose_root.py``), or None:
    the checkpoint file must exist, ``data`` must be a generated dataset, ``out`` must not be
    the checkpoint itself."""
    if not Path(checkpoint).is_file():
        return f"{checkpoint}: no such checkpoint file"
    if not (Path(data) / "dataset.json").is_file():
        return f"{data}: not a generated dataset (no dataset.json)"
    if out is not None and Path(out).resolve() == Path(checkpoint).resolve():
        return f"out {out} is the input checkpoint: write to another file"
    return None


def check_dataset_root(path: str | Path, what: str) -> dict[str, Any]:
    """A dataset folder of tools/make_dataset.py; returns its ``dataset.json``.

    Raises:
        BadArgument: No such folder, not a folder, or no readable ``dataset.json``.
    """
    path = Path(path)
    if not path.exists():
        raise BadArgument(f"{_named(what, path)}: no such folder")
    if not path.is_dir():
        raise BadArgument(f"{_named(what, path)}: not a folder")
    meta_path = path / "dataset.json"
    if not meta_path.is_file():
        raise BadArgument(
            f"{_named(what, path)}: no dataset.json (not a dataset of make_dataset.py)"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        name = _named(what, path)
        raise BadArgument(f"{name}: unreadable dataset.json ({one_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != DATASET_FORMAT:
        raise BadArgument(f"{_named(what, path)}: dataset.json is not a sahmr synthetic dataset")
    for key, kind in (("shards", list), ("scenes", dict)):
        if not isinstance(meta.get(key), kind):
            raise BadArgument(f"{_named(what, path)}: dataset.json has no {key} "
                              f"({kind.__name__}): damaged or hand-edited")  # fmt: skip
    def whole(e: Any) -> bool:
        count = e.get("num_samples") if isinstance(e, dict) else None
        return ("split" in e and "file" in e and isinstance(count, int)
                and not isinstance(count, bool) and count >= 0)  # fmt: skip

    if not all(whole(e) for e in meta["shards"]):
        raise BadArgument(f"{_named(what, path)}: dataset.json lists a shard without its split, "
                          "file or num_samples: damaged or hand-edited")  # fmt: skip
    return meta


def check_checkpoint(path: str | Path, what: str = "checkpoint") -> Path:
    """A readable, weights-only sahmr checkpoint whose stored config builds only the
    project's classes (`sahmr.engine.safe_config`).

    Raises:
        BadArgument: Missing, unreadable, pickled objects, or a refused config.
    """
    from sahmr.engine.checkpoint import checkpoint_config, load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise BadArgument(f"{_named(what, path)}: no such file")
    try:
        checkpoint_config(load_checkpoint(path), path)
    except ValueError as exc:
        raise BadArgument(_named(what, one_line(exc))) from None
    return path


def compose_for_checks(config_dir: str | Path, config_name: str, argv: list[str]) -> Any | None:
    """The config a ``@hydra.main`` tool is about to run with, composed without running it.

    Lets a tool check its inputs before hydra makes its output folder (``hydra.run.dir``).
    Returns None when ``argv`` holds hydra flags (``--help``, ``-m``, ``--cfg`` ...): hydra
    handles those itself. A malformed override or an unknown config group ends the process
    here with one line and exit 2 (instead of hydra's long report).

    Args:
        config_dir: The tool's config folder.
        config_name: The primary config (``eval``, ``train``).
        argv: The command line after the program name.
    """
    argv = list(argv)
    rest: list[str] = []
    while argv:  # --config-name / --config-dir as hydra reads them; other flags: hydra's
        arg = argv.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--config-name", "-cn", "--config-dir", "-cd"):
            if not eq:
                if not argv:
                    return None
                value = argv.pop(0)
            if name in ("--config-name", "-cn"):
                config_name = value
            else:
                config_dir = value
        elif arg.startswith("-"):
            return None
        else:
            rest.append(arg)
    argv = rest
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:  # hydra.* overrides (searchpath, run.dir, logging groups) compose as in a run
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            return compose(config_name, overrides=list(argv))
    except Exception as exc:  # hydra's override / missing-config errors have several types
        fail(f"bad override: {exc}")
    finally:
        GlobalHydra.instance().clear()


def missing_shards(root: str | Path, meta: dict[str, Any], split: str) -> list[str]:
    """The planned shard files of ``split`` that are not on disk, empty, or not the archive
    their suffix says (``.npz`` zip, ``.tar``) (``dataset.json`` order).

    A split read without them numbers its frames differently from the complete dataset, so
    predictions named ``<split>-<index>`` would be scored against the wrong frames.
    """
    root = Path(root)
    def present(file: Path) -> bool:  # one header / directory read: cheap for every shard
        if not (file.is_file() and file.stat().st_size > 0):
            return False
        if file.suffix == ".npz":  # sahmr.data.shards: an uncompressed zip of .npy members
            return zipfile.is_zipfile(file)
        return tarfile.is_tarfile(file) if file.suffix == ".tar" else True

    return [
        str(e.get("file"))
        for e in meta.get("shards", [])
        if str(e.get("split")) == split and not present(root / str(e.get("file")))
    ]


def check_dataset_split(root: str | Path, what: str, split: str, split_what: str) -> dict[str, Any]:
    """A dataset folder (`check_dataset_root`) that has shards of ``split``; its metadata.

    Raises:
        BadArgument: Not a dataset, or no shard of ``split`` (the message names the splits).
    """
    meta = check_dataset_root(root, what)
    splits = sorted({str(e.get("split")) for e in meta.get("shards", [])})
    if split not in splits:
        raise BadArgument(f"{_named(split_what, split)}: {root} has splits {splits}")
    return meta


def check_complete_split(
    root: str | Path, meta: dict[str, Any], split: str, what: str, allow: str
) -> None:
    """Refuse a split with shards missing on disk (`missing_shards`) unless allowed.

    Args:
        root: The dataset folder.
        meta: Its ``dataset.json``.
        split: The split read.
        what: The argument naming the folder (``--dataset``, ``data.root=``).
        allow: The flag that reads the rest anyway, for the message; pass it only when the
            user has not given it.

    Raises:
        BadArgument: Some of the split's shards are missing.
    """
    missing = missing_shards(root, meta, split)
    if missing:
        more = f" and {len(missing) - 2} more" if len(missing) > 2 else ""
        raise BadArgument(
            f"{_named(what, root)}: {len(missing)} shard(s) of split {split} are missing "
            "or unreadable "
            f"({', '.join(missing[:2])}{more}): frame numbers would shift and frames be matched "
            f"to the wrong ground truth; {allow} reads the rest anyway"
        )


def check_scan_file(path: str | Path, what: str, up_axis: str, force: str) -> None:
    """A scan that loads (`sahmr.scene.io.load_scene`) and whose normals face the room
    (`sahmr.scene.orientation.check_scan_orientation`; point clouds are not judged).

    Args:
        path: The scan file.
        what: The argument naming it (``--scene``, ``--scene-dir``), for the message.
        up_axis: Gravity-up axis of the scan frame.
        force: The flag that goes on anyway, for the message.

    Raises:
        BadArgument: Unreadable, implausible, or facing away from the room.
    """
    from sahmr.scene.io import UP_AXES, SceneMesh, load_scene
    from sahmr.scene.orientation import UnorientedScanError, check_scan_orientation

    if up_axis not in UP_AXES:
        raise BadArgument(f"--up-axis {up_axis}: choose one of {', '.join(UP_AXES)}")
    try:
        mesh = load_scene(path, up_axis=up_axis)
    except (OSError, ValueError, IndexError, KeyError) as exc:
        raise BadArgument(f"{_named(what, path)}: {one_line(exc)}") from None
    if isinstance(mesh, SceneMesh):
        try:
            check_scan_orientation(mesh.vertices, mesh.faces, up_axis, _named(what, path))
        except UnorientedScanError as exc:
            raise BadArgument(f"{one_line(exc)} ({force} goes on anyway)") from None


def scan_files(folder: str | Path) -> list[Path]:
    """The scans a scene folder resolves names to (`sahmr.evaluation.evaluator.SceneSDFs`):
    ``<name>.<ext>`` and ``<name>/mesh.<ext>``, sorted."""
    from sahmr.evaluation.evaluator import SceneSDFs

    folder = Path(folder)
    found = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SceneSDFs.MESH_EXTS]
    found += [p for sub in folder.iterdir() if sub.is_dir() for ext in SceneSDFs.MESH_EXTS
              if (p := sub / f"mesh{ext}").is_file()]  # fmt: skip
    return sorted(found)
