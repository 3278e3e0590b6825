"""Finding strategies by name: the built-ins plus third-party plug-ins published through entry points.

A plug-in distribution declares each strategy class in its ``pyproject.toml``; the entry point's name
must equal the class's ``name``::

    [project.entry-points."nasfleet.strategies"]
    hillclimb = "my_package.search:HillClimb"

Discovery is `nasfleet.plugins.PluginGroup`, shared with spaces and proxies: a plug-in that cannot be used
(it fails to import, is no concrete `Strategy` subclass, names itself differently, or takes a name
already provided) is left out with a `PluginProblem` naming its entry point and distribution;
`available_strategies` turns each problem into a `PluginWarning`, so one broken plug-in never hides the
others. Names become classes only at the edges (CLI, tasks, server), through `get_strategy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nasfleet.plugins import BUILT_IN, PluginEntry, PluginGroup, PluginProblem, PluginWarning
from nasfleet.spaces.base import SearchSpace
from nasfleet.strategies.base import STRATEGIES, Feasibility, Strategy, StrategyError

__all__ = [
    "BUILT_IN",
    "ENTRY_POINT_GROUP",
    "STRATEGY_PLUGINS",
    "PluginProblem",
    "PluginWarning",
    "StrategyEntry",
    "available_strategies",
    "discover_strategies",
    "get_strategy",
]

ENTRY_POINT_GROUP = "nasfleet.strategies"
StrategyEntry = PluginEntry[Strategy]
STRATEGY_PLUGINS: PluginGroup[Strategy] = PluginGroup(
    "strategy", ENTRY_POINT_GROUP, Strategy, lambda: STRATEGIES, StrategyError
)


def discover_strategies() -> tuple[dict[str, StrategyEntry], list[PluginProblem]]:
    """Every available strategy by name, and the plug-ins that had to be left out."""
    return STRATEGY_PLUGINS.discover()


def available_strategies() -> dict[str, StrategyEntry]:
    """Every usable strategy by name; each plug-in left out is reported as a `PluginWarning`."""
    return STRATEGY_PLUGINS.available()


def get_strategy(
    name: str,
    space: SearchSpace,
    seed: int,
    budget: int,
    config: Mapping[str, Any] | None = None,
    feasible: Feasibility | None = None,
) -> Strategy:
    """A new strategy called ``name``, built-in or plug-in: the edge where names become classes."""
    return STRATEGY_PLUGINS.find(name)(space, seed, budget, config, feasible)
