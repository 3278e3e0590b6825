"""The search-strategy contract: ask / tell / done, resumable state, and constraint awareness.

A strategy proposes architectures (`ask`), learns their fitness (`tell`) and says when its budget is
spent (`done`). Fitness is *higher is better*.

Re-ranked fitness: the fitness (every aggregate, FG-NAS's and the default's) is a rank aggregate over the
job's archive, so the fitness of an architecture told earlier can change as the archive grows. After every
aggregation the orchestrator calls `refresh` with the current fitness of *every* architecture told so far; a
strategy that keeps fitness values (a population, an incumbent, a model) must replace them with the refreshed
ones. `tell` always carries current values too, so a strategy never mixes values from different aggregations.

Constraints: a strategy receives a `Feasibility` check and returns only feasible architectures from
`ask`, repairing or resampling infeasible candidates before any evaluation is spent on them. If no
feasible architecture turns up within its bounded number of attempts, it raises `InfeasibleSearchError`.

State: `state_dict()` returns plain, JSON-serialisable data (numbers, strings, lists, dicts), including
the random generator's state; `load_state_dict()` on a freshly constructed strategy restores it so the
search continues exactly as if it had never been interrupted.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from nasfleet.plugins import PluginTable
from nasfleet.spaces.base import Cost, Genome, SearchSpace
from nasfleet.strategies.options import StrategyError as StrategyError
from nasfleet.strategies.options import options_dict, parse_options

MAX_FEASIBILITY_ATTEMPTS = 1000


class InfeasibleSearchError(StrategyError):
    """No architecture satisfying the device's constraints could be found."""


@dataclass(frozen=True)
class SearchLimits:
    """The limits a search must respect: exact params and FLOPs, predicted latency; None means no limit.

    A device sends its `ResourceConstraints` (`nasfleet.protocol.messages`); `search.limits` turns them into
    these (weight memory folds into params; latency needs the device's profile).
    """

    max_params: int | None = None
    max_flops: int | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        for field in ("max_params", "max_flops", "max_latency_ms"):
            value = getattr(self, field)
            # No np.isfinite: it raises TypeError for an int beyond 64 bits (which is finite).
            if value is not None and not (0 < value < math.inf):
                raise StrategyError(f"{field} must be a positive finite number or None, but got {value!r}")


LatencyModel = Callable[[Genome], float]


class Feasibility:
    """Decides whether an architecture meets a device's constraints, from exact costs and a latency model."""

    def __init__(
        self,
        space: SearchSpace,
        constraints: SearchLimits,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        latency_model: LatencyModel | None = None,
    ) -> None:
        if constraints.max_latency_ms is not None and latency_model is None:
            raise StrategyError("max_latency_ms needs a latency model of the device, but none was given")
        self.space = space
        self.constraints = constraints
        self.num_classes = num_classes
        self.input_shape = input_shape
        self.latency_model = latency_model

    def cost(self, arch: Genome) -> Cost:
        return self.space.cost(arch, self.num_classes, self.input_shape)

    def __call__(self, arch: Genome) -> bool:
        limits = self.constraints
        if limits.max_params is None and limits.max_flops is None and limits.max_latency_ms is None:
            return True
        cost = self.cost(arch)
        if limits.max_params is not None and cost.params > limits.max_params:
            return False
        if limits.max_flops is not None and cost.flops > limits.max_flops:
            return False
        return not (
            limits.max_latency_ms is not None
            and self.latency_model is not None
            and self.latency_model(arch) > limits.max_latency_ms
        )

    def describe(self, arch: Genome) -> str:
        """``arch``'s string, cost (and predicted latency) on this device's data, and the limits it breaks."""
        cost, limits = self.cost(arch), self.constraints
        measured: list[tuple[str, float, float | None]] = [
            ("params", cost.params, limits.max_params),
            ("FLOPs", cost.flops, limits.max_flops),
        ]
        if self.latency_model is not None:
            measured.append(("ms predicted latency", self.latency_model(arch), limits.max_latency_ms))
        values = ", ".join(f"{_amount(value)} {unit}" for unit, value, _ in measured)
        broken = [
            f"{unit} > {_amount(limit)}"
            for unit, value, limit in measured
            if limit is not None and value > limit
        ]
        shape = "x".join(map(str, self.input_shape))
        where = f"{self.num_classes} classes, {shape} inputs"
        breaks = f"; breaks {', '.join(broken)}" if broken else ""
        return f"{self.space.encode(arch)} ({values} at {where}{breaks})"

    def nothing_found(self, attempts: int) -> InfeasibleSearchError:
        """The error for ``attempts`` infeasible random samples, naming the space's cheapest arch and cost.

        When the cheapest arch breaks the limits, they exclude the whole space (for a space whose `cheapest`
        is exact, as the built-ins' is), and the error says so instead of blaming the sampling.
        """
        cheapest = self.space.cheapest(self.num_classes, self.input_shape)
        text = f"no architecture of {self.space.name} meeting {self.constraints}"
        if not self(cheapest):
            return InfeasibleSearchError(
                f"{text} exists: the limits exclude the whole space, whose cheapest arch is "
                f"{self.describe(cheapest)}"
            )
        return InfeasibleSearchError(
            f"{text} was found in {attempts} random samples, though the space's cheapest arch "
            f"{self.describe(cheapest)} meets them: they leave only a sliver of the space"
        )


def _amount(value: float) -> str:
    """An int with thousands separators, a float to two decimals."""
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def unconstrained(space: SearchSpace) -> Feasibility:
    """A feasibility check that accepts every architecture of ``space``."""
    return Feasibility(space, SearchLimits())


class Strategy(ABC):
    """A search strategy over a `SearchSpace`, built from the space, a seed, a config and constraints."""

    name: ClassVar[str]
    options_type: ClassVar[type[Any] | None] = None
    """The strategy's options, a dataclass of `nasfleet.strategies.options` fields: the config is checked
    against it (`validate_config`) and built into ``self.options``. None: the strategy takes no options."""
    options: Any

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        budget: int,
        config: Mapping[str, Any] | None = None,
        feasible: Feasibility | None = None,
    ) -> None:
        if budget < 1:
            raise StrategyError(f"budget must be >= 1, but got {budget}")
        self.space = space
        self.seed = seed
        self.budget = budget
        self.feasible = feasible if feasible is not None else unconstrained(space)
        self.config = self.validate_config(dict(config or {}))
        self.options = None if self.options_type is None else self.options_type(**self.config)
        self.rng = np.random.default_rng(seed)
        self.told = 0
        self.setup()

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Create the strategy's own state; called once, at the end of ``__init__``."""

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Check the config against `options_type` and fill defaults; reject unknown keys."""
        if cls.options_type is not None:
            return options_dict(parse_options(cls.name, cls.options_type, config))
        if config:
            raise StrategyError(f"{cls.name} takes no options, but got {sorted(config)}")
        return config

    @abstractmethod
    def ask(self, n: int) -> list[Genome]:
        """Up to ``n`` feasible, canonical architectures to evaluate next (fewer only at the budget's end)."""

    @abstractmethod
    def tell(self, archs: Sequence[Genome], fitness: Sequence[float]) -> None:
        """Fitness (higher is better, current values) of architectures returned by `ask`."""

    def refresh(self, fitness: Mapping[Genome, float]) -> None:  # noqa: B027 - optional hook
        """Current fitness of every architecture told so far; override if the strategy keeps fitness."""

    @property
    def done(self) -> bool:
        """True once the budget of evaluations is spent."""
        return self.told >= self.budget

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, including the generator's, from which the search resumes exactly."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()` output into a freshly constructed strategy."""

    # -- helpers for implementations ----------------------------------------------------------------------
    def remaining(self, n: int) -> int:
        """How many of ``n`` asked architectures the budget still allows."""
        if n < 1:
            raise StrategyError(f"ask needs n >= 1, but got {n}")
        return max(0, min(n, self.budget - self.told))

    def feasible_sample(self) -> Genome:
        """A uniformly random feasible architecture, or `InfeasibleSearchError` after bounded attempts."""
        for _ in range(MAX_FEASIBILITY_ATTEMPTS):
            arch = self.space.sample(self.rng)
            if self.feasible(arch):
                return arch
        raise self.feasible.nothing_found(MAX_FEASIBILITY_ATTEMPTS)

    def repair(self, arch: Genome, make: Callable[[], Genome]) -> Genome:
        """``arch`` if feasible, else the first feasible result of ``make`` (e.g. another mutation), else a
        random feasible architecture."""
        if self.feasible(arch):
            return arch
        for _ in range(MAX_FEASIBILITY_ATTEMPTS // 10):
            candidate = make()
            if self.feasible(candidate):
                return candidate
        return self.feasible_sample()

    def rng_state(self) -> dict[str, Any]:
        return dict(self.rng.bit_generator.state)

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = dict(state)


STRATEGIES: PluginTable[Strategy] = PluginTable("strategy", StrategyError)
register_strategy = STRATEGIES.register
