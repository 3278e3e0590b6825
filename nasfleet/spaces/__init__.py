"""Search spaces: genome layout, canonical strings, network builders and exact costs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nasfleet.spaces.base import ArchitectureError, Cost, Genome, InputShape, SearchSpace, Segment
from nasfleet.spaces.mbv2 import MBV2Space
from nasfleet.spaces.nb201 import NB201Space

__all__ = [
    "SPACES",
    "ArchitectureError",
    "Cost",
    "Genome",
    "InputShape",
    "MBV2Space",
    "NB201Space",
    "SearchSpace",
    "Segment",
    "get_space",
]

SPACES: dict[str, type[SearchSpace]] = {"mbv2": MBV2Space, "nb201": NB201Space}


def get_space(name: str, options: Mapping[str, Any] | None = None) -> SearchSpace:
    """The search space called ``name``, built with ``options`` (e.g. a small NB201: ``channels``)."""
    if name not in SPACES:
        raise ValueError(f"space must be one of {sorted(SPACES)}, but got {name!r}")
    return SPACES[name](**(options or {}))
