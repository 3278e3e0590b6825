"""One device's personalized search, in process (DESIGN steps 2-6 without Celery).

This is the *in-process path* the federation round uses until the Celery orchestrator takes over the
scoring: it rebuilds the device's synthetic proxy batch from its characteristics, turns its
constraints and calibrated profile into a feasibility check (exact params/FLOPs, weight memory and the
profile's latency model), and runs `nasfleet.search.run_search` with FG-NAS fitness.
"""

from __future__ import annotations

from dataclasses import dataclass

from nasfleet.clients.device import latency_model
from nasfleet.clients.messages import DataCharacteristics, DeviceProfile, ResourceConstraints
from nasfleet.search import SearchConfig, SearchResult, run_search
from nasfleet.server.synthetic import synthetic_probe_batch
from nasfleet.spaces import get_space
from nasfleet.strategies.base import Constraints, Feasibility
from nasfleet.strategies.discovery import get_strategy


@dataclass(frozen=True)
class SearchPlan:
    """How every device's search runs: space, strategy and its config, budget, probe batch, seed."""

    space: str = "nb201"
    strategy: str = "evolution"
    budget: int = 24
    ask_size: int = 8
    batch_size: int = 32
    seed: int = 0


def search_constraints(constraints: ResourceConstraints, profile: DeviceProfile | None) -> Constraints:
    """The strategy-side limits: weight memory folds into max_params; latency needs a profile."""
    max_latency = constraints.max_latency_ms if profile is not None else None
    return Constraints(constraints.effective_max_params(), constraints.max_flops, max_latency)


def personalized_search(
    plan: SearchPlan,
    characteristics: DataCharacteristics,
    constraints: ResourceConstraints,
    profile: DeviceProfile | None,
    *,
    progress: bool = False,
) -> SearchResult:
    """Search the best feasible SubNet for one device, scored on its synthetic proxy batch."""
    space = get_space(plan.space)
    batch = synthetic_probe_batch(characteristics, plan.batch_size, plan.seed)
    limits = search_constraints(constraints, profile)
    config = SearchConfig(
        plan.space,
        plan.strategy,
        plan.budget,
        plan.seed,
        plan.ask_size,
        labeled=characteristics.labeled,
        constraints=limits,
    )
    shape, classes = characteristics.input_shape, characteristics.num_classes
    latency = latency_model(profile, space, classes, shape) if profile is not None else None
    feasible = Feasibility(space, limits, classes, shape, latency)
    strategy = get_strategy(plan.strategy, space, plan.seed, plan.budget, config.strategy_config, feasible)
    return run_search(space, strategy, batch, config, progress=progress)
