"""Search strategies: the ask/tell contract, the built-ins and plug-in discovery.

Importing this package registers every built-in strategy in `STRATEGIES`; third-party strategies are
found through the ``nasfleet.strategies`` entry-point group by `available_strategies` and
`get_strategy`. `nasfleet.testing.check_strategy` checks any strategy against the contract.
"""

from __future__ import annotations

from nasfleet.strategies import annealing, cmaes, evolution, genetic, random_search
from nasfleet.strategies.annealing import AnnealingOptions, SimulatedAnnealing
from nasfleet.strategies.base import (
    STRATEGIES,
    Feasibility,
    InfeasibleSearchError,
    SearchLimits,
    Strategy,
    StrategyError,
    register_strategy,
    unconstrained,
)
from nasfleet.strategies.cmaes import CMAESOptions, CMAESStrategy
from nasfleet.strategies.discovery import (
    ENTRY_POINT_GROUP,
    PluginProblem,
    PluginWarning,
    StrategyEntry,
    available_strategies,
    discover_strategies,
    get_strategy,
)
from nasfleet.strategies.evolution import EvolutionOptions, RegularizedEvolution
from nasfleet.strategies.genetic import GAOptions, GeneticStrategy
from nasfleet.strategies.options import option, options_dict, parse_options, require
from nasfleet.strategies.random_search import RandomOptions, RandomSearch

__all__ = [
    "ENTRY_POINT_GROUP",
    "STRATEGIES",
    "AnnealingOptions",
    "CMAESOptions",
    "CMAESStrategy",
    "EvolutionOptions",
    "Feasibility",
    "GAOptions",
    "GeneticStrategy",
    "InfeasibleSearchError",
    "PluginProblem",
    "PluginWarning",
    "RandomOptions",
    "RandomSearch",
    "RegularizedEvolution",
    "SearchLimits",
    "SimulatedAnnealing",
    "Strategy",
    "StrategyEntry",
    "StrategyError",
    "annealing",
    "available_strategies",
    "cmaes",
    "discover_strategies",
    "evolution",
    "genetic",
    "get_strategy",
    "option",
    "options_dict",
    "parse_options",
    "random_search",
    "register_strategy",
    "require",
    "unconstrained",
]
