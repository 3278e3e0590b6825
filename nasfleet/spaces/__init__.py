"""Search spaces: genome layout, canonical strings, network builders and exact costs.

`SPACES` holds the built-ins; third-party spaces are found through the ``nasfleet.spaces`` entry-point
group (`SPACE_PLUGINS`, see `nasfleet.plugins`) by `get_space`, `space_names` and `available_spaces`.
`nasfleet.testing.check_space` checks any space against the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nasfleet.plugins import PluginEntry, PluginGroup, PluginProblem
from nasfleet.spaces.autoformer import AutoFormerEdgeSpace, AutoFormerSpace
from nasfleet.spaces.base import ArchitectureError, Cost, Genome, InputShape, SearchSpace, Segment
from nasfleet.spaces.coer import COERSpace
from nasfleet.spaces.mbv2 import MBV2Space
from nasfleet.spaces.nb201 import NB201Space

__all__ = [
    "ENTRY_POINT_GROUP",
    "SPACES",
    "SPACE_PLUGINS",
    "ArchitectureError",
    "AutoFormerEdgeSpace",
    "AutoFormerSpace",
    "COERSpace",
    "Cost",
    "Genome",
    "InputShape",
    "MBV2Space",
    "NB201Space",
    "SearchSpace",
    "Segment",
    "available_spaces",
    "discover_spaces",
    "get_space",
    "space_names",
]

ENTRY_POINT_GROUP = "nasfleet.spaces"
SPACES: dict[str, type[SearchSpace]] = {
    "autoformer": AutoFormerSpace,
    "autoformer-edge": AutoFormerEdgeSpace,
    "coer": COERSpace,
    "mbv2": MBV2Space,
    "nb201": NB201Space,
}
SPACE_PLUGINS: PluginGroup[SearchSpace] = PluginGroup("space", ENTRY_POINT_GROUP, SearchSpace, lambda: SPACES)


def discover_spaces() -> tuple[dict[str, PluginEntry[SearchSpace]], list[PluginProblem]]:
    """Every usable space by name (built-ins and plug-ins), and the plug-ins that had to be left out."""
    return SPACE_PLUGINS.discover()


def available_spaces() -> dict[str, PluginEntry[SearchSpace]]:
    """Every usable space by name; each plug-in left out is reported as a `PluginWarning`."""
    return SPACE_PLUGINS.available()


def space_names() -> list[str]:
    """The names of every usable space, built-in or plug-in, sorted."""
    return sorted(discover_spaces()[0])


def get_space(name: str, options: Mapping[str, Any] | None = None) -> SearchSpace:
    """The search space called ``name``, built-in or plug-in, built with ``options`` (e.g. NB201's
    ``channels``); an unknown name, or a broken plug-in's, is a ``ValueError`` saying why."""
    return SPACE_PLUGINS.find(name)(**(options or {}))
