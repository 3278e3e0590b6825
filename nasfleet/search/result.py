"""The outcome of one search: the best SubNet, what it cost, how the search went, how to resume it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from nasfleet.search.config import SearchConfig

RESULT_VERSION = 1


@dataclass(frozen=True)
class HistoryEntry:
    """The search after step ``step`` (``evaluations`` told).

    ``arch`` and ``score`` are the current best by the aggregate over the archive as it was then. FG-NAS
    ranks every arch against the archive, so ``score`` is relative and can go down as better archs join.
    ``best_percentile`` never goes down: the highest percentile rank (0-100) any arch had when it was
    scored, among the archive of that step, itself included (`entry_percentile`). An arch's entry
    percentile is fixed once computed, so the maximum over a growing archive can only rise; it rises when
    an arch beats a larger share of everything scored before it. Entries stored without it read as 0.
    """

    step: int
    evaluations: int
    arch: str
    score: float
    best_percentile: float = 0.0


@dataclass(frozen=True)
class ArchiveEntry:
    """One scored architecture: raw proxy values, final aggregate, scoring seconds, step first scored."""

    arch: str
    values: dict[str, float]
    fitness: float
    seconds: float
    step: int


@dataclass(frozen=True)
class SearchResult:
    """The outcome of a search (`run_search`, or a job of the service): the best SubNet, its cost, how the
    search went, how to resume it.

    ``evaluations`` counts architectures told to the strategy (its budget); ``unique_evaluations``
    counts those scored, which is fewer when the strategy proposed an architecture again.
    ``overhead_seconds`` is everything but scoring: strategy, feasibility, cache and aggregation.
    ``cached_evaluations`` archs came from the shared cache (`ProxyCache`) instead of being scored;
    ``cached_scoring_seconds`` is what their original scoring took, which ``uncached_wall_seconds``
    adds back to the measured wall time.
    """

    config: SearchConfig
    best_arch: str
    best_score: float
    best_values: dict[str, float]
    best_params: int
    best_flops: int
    evaluations: int
    unique_evaluations: int
    steps: int
    wall_seconds: float
    scoring_seconds: float
    strategy_seconds: float
    aggregation_seconds: float
    history: tuple[HistoryEntry, ...]
    archive: tuple[ArchiveEntry, ...]
    strategy_state: dict[str, Any]
    probe: dict[str, Any]
    cached_evaluations: int = 0
    cached_scoring_seconds: float = 0.0

    @property
    def overhead_seconds(self) -> float:
        return max(self.wall_seconds - self.scoring_seconds, 0.0)

    @property
    def overhead_fraction(self) -> float:
        return self.overhead_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def uncached_wall_seconds(self) -> float:
        """The measured wall time plus the original scoring seconds of the cache hits."""
        return self.wall_seconds + self.cached_scoring_seconds

    @property
    def uncached_overhead_fraction(self) -> float:
        """The overhead's share of `uncached_wall_seconds`: what it would be without the cache."""
        wall = self.uncached_wall_seconds
        return self.overhead_seconds / wall if wall > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``strategy_state`` is what ``Strategy.load_state_dict`` resumes from."""
        best = {"arch": self.best_arch, "score": self.best_score, "values": self.best_values}
        timing = {
            "wall_seconds": self.wall_seconds, "scoring_seconds": self.scoring_seconds,
            "strategy_seconds": self.strategy_seconds, "aggregation_seconds": self.aggregation_seconds,
            "overhead_seconds": self.overhead_seconds, "overhead_fraction": self.overhead_fraction,
            "cached_evaluations": self.cached_evaluations,
            "cached_scoring_seconds": self.cached_scoring_seconds,
            "uncached_wall_seconds": self.uncached_wall_seconds,
            "uncached_overhead_fraction": self.uncached_overhead_fraction,
        }  # fmt: skip
        return {
            "version": RESULT_VERSION,
            "config": self.config.to_dict(),
            "probe": self.probe,
            "best": {**best, "params": self.best_params, "flops": self.best_flops},
            "evaluations": self.evaluations,
            "unique_evaluations": self.unique_evaluations,
            "steps": self.steps,
            "timing": timing,
            "history": [asdict(entry) for entry in self.history],
            "archive": [asdict(entry) for entry in self.archive],
            "strategy_state": self.strategy_state,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)
