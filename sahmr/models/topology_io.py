"""The body topology a mesh network is built on, obtained from a body model in configs.

Mesh networks take a `sahmr.body.topology.BodyTopology` (vertex counts per level, templates,
up-sampling matrices, 14-joint regressor, contact labels). Configs build it from the same
``body`` group the data pipeline uses, so the network and its targets always agree::

    topology:
      _target_: sahmr.models.topology_io.load_topology
      body: ${body}          # the composed config's body group, e.g. body=license_free
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sahmr.body.model import BodyModel
    from sahmr.body.topology import BodyTopology


def load_topology(body: BodyModel | None = None) -> BodyTopology:
    """The topology of a body model (derived or read from the cache on first use).

    Args:
        body: A built `sahmr.body.BodyModel`; None loads the shipped license-free body.

    Returns:
        ``body.topology``.
    """
    if body is None:
        from sahmr.body.model import BodyModel

        body = BodyModel()
    return body.topology
