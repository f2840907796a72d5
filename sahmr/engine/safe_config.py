"""Checks a config read from a data file (a checkpoint) before hydra builds anything from it.

A checkpoint stores the run's config as YAML text, and `sahmr.engine.checkpoint.load_method`
builds the method from it with hydra's ``instantiate``, which imports and calls whatever
dotted name a ``_target_`` holds. ``torch.load(weights_only=True)`` keeps the *weights* from
running code; this module keeps the *config* from doing so. A stored config is accepted only if

* every ``_target_``, at any depth (in mappings and in lists), is a string naming one of the
  project's own buildable classes or factories in `ALLOWED_TARGETS`;
* no string holds an OmegaConf resolver interpolation (``${oc.env:HOME}``, ``${oc.decode:...}``,
  ``${hydra:...}`` or any ``${name:...}``): resolvers run code and ``oc.decode`` can even make a
  new ``_target_`` appear at resolution time. Only plain references to other nodes
  (``${model.width}``) are let through: the nodes they point to are checked like any other.

Anything else raises `UnsafeConfigError` naming the file and what was refused. Settings of
the machine the run was trained on that name folders to *write* into (`MACHINE_LOCAL_KEYS`,
e.g. ``topology_cache_dir``) are reset to null by `drop_machine_local_paths`: a shared file
must not choose where this machine writes. Configs a user composes from ``configs/`` are not
data and are not checked here.

To make a new class buildable from checkpoints, add its dotted path to `ALLOWED_TARGETS`
(tests/engine/test_safe_config.py fails while a ``_target_`` under ``configs/`` is missing).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOWED_TARGETS",
    "MACHINE_LOCAL_KEYS",
    "RENAMED_TARGETS",
    "UnsafeConfigError",
    "check_stored_config",
    "drop_machine_local_paths",
    "find_targets",
    "rename_moved_targets",
]

TARGET_KEY = "_target_"

# The one list of what a stored config may build. Keep it sorted; only sahmr's own names.
ALLOWED_TARGETS: frozenset[str] = frozenset(
    {
        # body model
        "sahmr.body.BodyModel",
        "sahmr.body.model.BodyModel",
        # data
        "sahmr.data.augment.AugmentConfig",
        "sahmr.data.memory.MemoryDataConfig",
        "sahmr.data.prox.ProxDataset",
        "sahmr.data.rich.RichDataset",
        "sahmr.data.smplx_targets.SmplTargets",
        "sahmr.data.synthetic.SyntheticDataset",
        # losses
        "sahmr.losses.hmr.HMRLoss",
        "sahmr.losses.hmr.SPINLoss",
        "sahmr.losses.hmr.VIBELoss",
        "sahmr.losses.mesh.MetroLoss",
        "sahmr.losses.mesh.ParamTerms",
        "sahmr.losses.mesh.SAHMRLoss",
        "sahmr.losses.rcnet.RCNetLoss",
        "sahmr.losses.rcnet.body_vertex_regions",
        # models and their parts
        "sahmr.models.backbones.build_backbone",
        "sahmr.models.discriminators.FactorisedPoseDiscriminator",
        "sahmr.models.discriminators.MotionDiscriminator",
        "sahmr.models.discriminators.MotionLibrary.from_generator",
        "sahmr.models.discriminators.PoseLibrary.from_generator",
        "sahmr.models.hmr.AxisAngle",
        "sahmr.models.hmr.HMR",
        "sahmr.models.hmr.IEFRegressor",
        "sahmr.models.hmr.MeanParams.from_pose_prior",
        "sahmr.models.hmr.Rot6D",
        "sahmr.models.metro.METRO",
        "sahmr.models.param_head.ParametricBodyHead",
        "sahmr.models.param_head.MLPBodyHead",
        "sahmr.models.rcnet.RCNet",
        "sahmr.models.rcnet.UpsampleNeck",
        "sahmr.models.sahmr.SAHMR",
        "sahmr.models.scene_mesh_net.SceneAwareMeshNet",
        "sahmr.models.sparse_unet.SparseUNet",
        "sahmr.models.spin.FitsDict",
        "sahmr.models.spin.SPIN",
        "sahmr.models.topology_io.load_topology",
        "sahmr.models.transformer.SceneAwareCascade",
        "sahmr.models.transformer.TransformerCascade",
        "sahmr.models.vibe.TemporalEncoder",
        "sahmr.models.vibe.VIBE",
        # optimisation baselines
        "sahmr.optim.priors.GaussianMixturePrior.from_asset",
        "sahmr.optim.scene_fit.SceneFitter",
        "sahmr.optim.smplify.FitStage",
        "sahmr.optim.smplify.SMPLify",
        "sahmr.optim.smplify.default_smplify_stages",
    }
)

MACHINE_LOCAL_KEYS: frozenset[str] = frozenset({"topology_cache_dir", "sdf_cache_dir", "cache_dir"})
"""Config keys naming folders a build writes into: reset to null in stored configs."""

# A plain node reference: "${" + dotted/bracketed key path + "}" (no resolver, no nesting).
_PLAIN_REFERENCE = re.compile(r"\$\{[A-Za-z0-9_.\-\[\]]*\}")


class UnsafeConfigError(ValueError):
    """A stored config names something the project does not build, or uses a resolver."""


def _where(path: tuple[str, ...]) -> str:
    return ".".join(path) if path else "<root>"


def _check_string(value: str, path: tuple[str, ...], source: str) -> None:
    """Refuse any ``${`` that is not a plain node reference."""
    if "${" not in value:
        return
    rest = _PLAIN_REFERENCE.sub("", value)
    if "${" in rest:
        raise UnsafeConfigError(
            f"{source}: refused config value at {_where(path)}: {value!r} uses an OmegaConf "
            "resolver interpolation; a stored config may only reference other nodes"
        )


def _walk(node: Any, path: tuple[str, ...], source: str, allowed: frozenset[str]) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if not isinstance(key, str):
                raise UnsafeConfigError(
                    f"{source}: refused config key {key!r} at {_where(path)}: keys must be text"
                )
            _check_string(key, (*path, key), source)
            here = (*path, key)
            if key == TARGET_KEY:
                if not isinstance(value, str):
                    raise UnsafeConfigError(
                        f"{source}: refused _target_ at {_where(here)}: {value!r} is not a "
                        "dotted name"
                    )
                if value not in allowed:
                    raise UnsafeConfigError(
                        f"{source}: refused _target_ {value!r} at {_where(here)}: not one of "
                        "the project's buildable classes (sahmr.engine.safe_config."
                        "ALLOWED_TARGETS)"
                    )
                continue
            _walk(value, here, source, allowed)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _walk(value, (*path, str(i)), source, allowed)
    elif isinstance(node, str):
        _check_string(node, path, source)


# Classes that moved after checkpoints naming them were written: old dotted name -> new one
# (an allowed target). Applied to a stored config before it is checked.
RENAMED_TARGETS: dict[str, str] = {
    "sahmr.models.sahmr.SceneAwareMeshNet": "sahmr.models.scene_mesh_net.SceneAwareMeshNet",
}


def rename_moved_targets(cfg: DictConfig, source: str | Path = "stored config") -> list[str]:
    """Replace, in place, every ``_target_`` of `RENAMED_TARGETS` by its new name.

    Only exact string matches change; every other value is left for `check_stored_config`.

    Args:
        cfg: A stored config.
        source: Its file, for the log.

    Returns:
        The dotted keys whose target was renamed.
    """
    renamed: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, DictConfig):
            for key, value in list(node.items_ex(resolve=False)):
                here = (*path, str(key))
                if key == TARGET_KEY and isinstance(value, str) and value in RENAMED_TARGETS:
                    node[key] = RENAMED_TARGETS[value]
                    renamed.append(_where(here))
                else:
                    walk(value, here)
        elif isinstance(node, ListConfig):
            for i, value in enumerate(node):
                walk(value, (*path, str(i)))

    walk(cfg, ())
    if renamed:
        logger.info("%s: moved classes renamed at %s", source, ", ".join(renamed))
    return renamed


def check_stored_config(
    cfg: DictConfig | ListConfig | Mapping[str, Any],
    source: str | Path = "stored config",
    *,
    allowed: frozenset[str] | None = None,
) -> None:
    """Refuse a config from a data file unless everything it would build is allowed.

    The raw (unresolved) values are inspected, so nothing in the config runs while checking.

    Args:
        cfg: The config as read (DictConfig, ListConfig or plain containers).
        source: The file it came from, named in the error.
        allowed: Dotted names ``_target_`` may hold (None: `ALLOWED_TARGETS`, read at call
            time).

    Raises:
        UnsafeConfigError: A ``_target_`` that is not a string or not allowed (at any depth,
            in mappings and lists), a non-text key, or a resolver interpolation.
    """
    if isinstance(cfg, (DictConfig, ListConfig)):
        raw = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    else:
        raw = cfg
    _walk(raw, (), str(source), ALLOWED_TARGETS if allowed is None else frozenset(allowed))


def find_targets(node: Any) -> list[str]:
    """Every ``_target_`` value in a config tree (mappings and lists), in walk order.

    Args:
        node: DictConfig / ListConfig or plain containers (e.g. from ``yaml.safe_load``).

    Returns:
        The ``_target_`` values as found (not de-duplicated, not validated).
    """
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False, throw_on_missing=False)
    found: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == TARGET_KEY:
                found.append(value)
            else:
                found.extend(find_targets(value))
    elif isinstance(node, (list, tuple)):
        for value in node:
            found.extend(find_targets(value))
    return found


def drop_machine_local_paths(cfg: DictConfig, source: str | Path = "stored config") -> list[str]:
    """Reset every `MACHINE_LOCAL_KEYS` entry of a stored config to null, in place.

    Args:
        cfg: The checked stored config.
        source: Its file, for the log.

    Returns:
        The dotted keys that held a value and were reset.
    """
    reset: list[str] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, DictConfig):
            for key, value in list(node.items_ex(resolve=False)):
                here = (*path, str(key))
                if key in MACHINE_LOCAL_KEYS:
                    if value is not None:
                        node[key] = None
                        reset.append(_where(here))
                    continue
                walk(value, here)
        elif isinstance(node, ListConfig):
            for i, value in enumerate(node):  # plain references only (checked): harmless
                walk(value, (*path, str(i)))

    walk(cfg, ())
    if reset:
        logger.info("%s: machine-local folders reset to the defaults: %s", source, ", ".join(reset))
    return reset
