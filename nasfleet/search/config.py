"""What one personalized search is (`SearchConfig`), and the error of a search that cannot run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from nasfleet import checks
from nasfleet.bounds import DEFAULT_AGGREGATE
from nasfleet.proxies.base import ProxyError
from nasfleet.proxies.engine import expand_names
from nasfleet.spaces import space_names
from nasfleet.strategies.base import SearchLimits


class SearchError(ValueError):
    """A search that cannot run: an invalid configuration, or a strategy that breaks its contract."""


def require(ok: bool, name: str, rule: str, value: object) -> None:
    """Raise `SearchError` unless *ok*, naming the field, the rule and the value."""
    checks.require(ok, name, rule, value, SearchError)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SearchConfig:
    """What one personalized search is: space and strategy names, budget, ask size, seed and fitness.

    ``ask_size`` is how many architectures are asked of the strategy per step (one scoring batch);
    ``aggregate`` names the population-level fitness (an aggregate, not a raw proxy); ``labeled`` says
    whether the probe batch has labels (alpha), which decides the aggregate's inputs. ``seed`` seeds the
    strategy and, unless ``scoring_seed`` is set, the scoring (network initialisation and the probe's
    own randomness); set ``scoring_seed`` to keep the scoring fixed while ``seed`` varies the strategy,
    e.g. to share a proxy-value cache between searches. The probe batch is the caller's.
    """

    space: str
    strategy: str
    budget: int
    seed: int = 0
    ask_size: int = 8
    strategy_config: Mapping[str, Any] = field(default_factory=dict)
    labeled: bool = True
    aggregate: str = DEFAULT_AGGREGATE
    constraints: SearchLimits = field(default_factory=SearchLimits)
    scoring_seed: int | None = None

    def __post_init__(self) -> None:
        require(self.space in (names := space_names()), "space", f"one of {names}", self.space)
        require(isinstance(self.strategy, str) and bool(self.strategy), "strategy", "a name", self.strategy)
        require(is_int(self.budget) and self.budget >= 1, "budget", "an integer >= 1", self.budget)
        require(is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        require(self.scoring_seed is None or (is_int(self.scoring_seed) and self.scoring_seed >= 0),
                 "scoring_seed", "None or an integer >= 0", self.scoring_seed)  # fmt: skip
        require(is_int(self.ask_size) and self.ask_size >= 1, "ask_size", "an integer >= 1", self.ask_size)
        require(isinstance(self.labeled, bool), "labeled", "a boolean", self.labeled)
        require(isinstance(self.constraints, SearchLimits), "constraints", "SearchLimits", self.constraints)
        require(
            isinstance(self.strategy_config, Mapping), "strategy_config", "a mapping", self.strategy_config
        )
        try:
            object.__setattr__(self, "strategy_config", json.loads(json.dumps(dict(self.strategy_config))))
        except (TypeError, ValueError):
            raise SearchError(
                f"strategy_config must be JSON data, but got {self.strategy_config!r}"
            ) from None
        try:
            _, aggregates = expand_names(self.aggregate, self.labeled)
        except ProxyError as error:
            raise SearchError(f"aggregate: {error}") from None
        require(aggregates == (self.aggregate,), "aggregate", "the name of one aggregate", self.aggregate)

    @property
    def proxy_names(self) -> tuple[str, ...]:
        """The raw proxies the aggregate reads, given ``labeled``."""
        return expand_names(self.aggregate, self.labeled)[0]

    @property
    def proxy_seed(self) -> int:
        """The seed the scoring uses: ``scoring_seed``, or ``seed`` when that is None."""
        return self.seed if self.scoring_seed is None else self.scoring_seed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "strategy_config": dict(self.strategy_config)}
