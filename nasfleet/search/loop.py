"""The search loop, written once: ask, check, find raw values for what is new, aggregate, tell, refresh.

A `SearchLoop` holds one search's strategy, its `Archive` (every architecture scored, in the order first
evaluated) and its best-so-far history. It never scores: `begin_step` asks the strategy and returns the
step's architectures new to the archive; the driver finds their raw values (`run_search` scores them in
this process, a job of the service answers them from the shared cache or the workers) and hands them to
`finish_step`. The order of operations is the contract a strategy relies on:

1. ``archs = strategy.ask(ask_size)``; each must be valid and feasible (the strategy repairs; a breach of
   that contract is a `SearchError`, never a silent skip);
2. architectures not yet in the archive get raw values; an architecture is never scored twice;
3. the aggregate (``aznas_meco_fi`` by default) is recomputed over the whole archive, because its ranks
   are relative to the population;
4. ``strategy.tell(archs, current fitness)``, then ``strategy.refresh`` with the current fitness of every
   archive member, since earlier values change as the archive grows.

Best-so-far under re-ranking: after each step the best is the arch with the highest aggregate over the
archive *as it then was* (ties to the earliest evaluated); the history records that value as known then.
The reported best is the argmax of the *final* aggregate. That value is relative and can go down; the
history's monotone ``best_percentile`` is the highest `entry_percentile` of any arch so far (see
`HistoryEntry`). `state_dict` / `load_state_dict` resume a
search exactly where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nasfleet.proxies.engine import ScoreTable, add_aggregates
from nasfleet.search.config import SearchConfig, SearchError
from nasfleet.search.result import ArchiveEntry, HistoryEntry, SearchResult
from nasfleet.spaces import ArchitectureError, Genome, SearchSpace
from nasfleet.strategies.base import Feasibility, Strategy

STATE_VERSION = 1


@dataclass(frozen=True)
class Evaluation:
    """One architecture's raw proxy values, exact costs and scoring seconds; ``cached`` if not scored for
    this search (a shared cache answered it)."""

    arch: str
    values: Mapping[str, float]
    params: int
    flops: int
    seconds: float = 0.0
    cached: bool = False


@dataclass(frozen=True)
class Step:
    """One step's asked architectures (canonical, in ask order) and those new to the archive."""

    genomes: tuple[Genome, ...]
    archs: tuple[str, ...]
    new: dict[str, Genome]


@contextmanager
def timed(seconds: MutableMapping[str, float], part: str) -> Iterator[None]:
    """Add the seconds the ``with`` block takes to ``seconds[part]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] += time.perf_counter() - start


def archive_fitness(
    archs: Sequence[str], values: Mapping[str, Sequence[float]], aggregate: str, labeled: bool
) -> np.ndarray:
    """The aggregate over a whole archive, one value per member in archive order (step 3 of the loop)."""
    columns = {name: np.array(column, dtype=float) for name, column in values.items()}
    table = ScoreTable(tuple(archs), columns, np.zeros(len(archs)))
    return add_aggregates(table, [aggregate], labeled)[aggregate]


def entry_percentile(fitness: np.ndarray, position: int) -> float:
    """The percentile rank (0-100) of member *position* within *fitness*: the share of members below it,
    plus half the share equal to it (itself included), the textbook definition. The top one of n has
    100 * (n - 0.5) / n, so a top arch among more archs ranks higher."""
    value = fitness[position]
    below, equal = int(np.sum(fitness < value)), int(np.sum(fitness == value))
    return 100.0 * (below + 0.5 * equal) / len(fitness)


def check_asked(
    strategy: Strategy, asked: Sequence[Genome], feasible: Feasibility, ask_size: int, left: int
) -> list[Genome]:
    """The asked architectures in canonical form (step 1 of the loop), or a `SearchError` if the strategy
    broke its contract: between 1 and ``min(ask_size, left)`` archs, each of ``feasible.space`` and feasible.
    """
    name, most = strategy.name, min(left, ask_size)
    if not 0 < len(asked) <= most:
        raise SearchError(
            f"strategy {name!r}: ask({ask_size}) must return 1 to {most} "
            f"architectures ({left} of the budget left), but returned {len(asked)}"
        )
    genomes = []
    for arch in asked:
        try:
            genome = feasible.space.validate(arch)
        except ArchitectureError as error:
            raise SearchError(f"strategy {name!r} must propose architectures of the space: {error}") from None
        if not feasible(genome):
            cost = feasible.cost(genome)
            raise SearchError(
                f"strategy {name!r} must propose only feasible architectures, but proposed "
                f"{feasible.space.encode(genome)} ({cost.params} params, {cost.flops} FLOPs) "
                f"under {feasible.constraints}"
            )
        genomes.append(genome)
    return genomes


class Archive:
    """Every architecture scored in one search, in the order first evaluated: what the aggregate ranks."""

    def __init__(self, proxy_names: Sequence[str]) -> None:
        self.proxy_names = tuple(proxy_names)
        self.archs: list[str] = []
        self.genomes: list[Genome] = []
        self.evaluations: list[Evaluation] = []
        self.steps: list[int] = []
        self.index: dict[str, int] = {}

    def __contains__(self, arch: str) -> bool:
        return arch in self.index

    def __len__(self) -> int:
        return len(self.archs)

    def add(self, genome: Genome, evaluation: Evaluation, step: int) -> None:
        self.index[evaluation.arch] = len(self.archs)
        self.archs.append(evaluation.arch)
        self.genomes.append(genome)
        self.evaluations.append(evaluation)
        self.steps.append(step)

    def fitness(self, aggregate: str, labeled: bool) -> np.ndarray:
        """The aggregate over the whole archive, one value per member in archive order."""
        values = {name: [e.values[name] for e in self.evaluations] for name in self.proxy_names}
        return archive_fitness(self.archs, values, aggregate, labeled)

    def raw(self, position: int) -> dict[str, float]:
        """The raw values of the member at *position*, for the aggregate's proxies."""
        return {name: float(self.evaluations[position].values[name]) for name in self.proxy_names}


class SearchLoop:
    """One search's strategy, archive and history, stepped by a driver; see the module docstring."""

    def __init__(self, space: SearchSpace, strategy: Strategy, feasible: Feasibility, config: SearchConfig):
        self.space, self.strategy, self.feasible, self.config = space, strategy, feasible, config
        self.archive = Archive(config.proxy_names)
        self.history: list[HistoryEntry] = []
        self.told = 0
        self.seconds = {"strategy": 0.0, "aggregation": 0.0}  # this process's share of the search
        #: Replaces the config's aggregate as the fitness when set: a personalized search ranks by its
        #: device model from its second round on (`nasfleet.personalization`).
        self.rank: Callable[[Archive], np.ndarray] | None = None

    @property
    def done(self) -> bool:
        return self.strategy.done

    def fitness(self) -> np.ndarray:
        """Every archive member's current fitness: `rank`'s if set, else the config's aggregate."""
        if self.rank is not None:
            return np.asarray(self.rank(self.archive), dtype=float)
        return self.archive.fitness(self.config.aggregate, self.config.labeled)

    def begin_step(self) -> Step:
        """Ask and check (step 1); the step's new archs (in ask order, once each) still need raw values."""
        with timed(self.seconds, "strategy"):
            asked = self.strategy.ask(self.config.ask_size)
            left = self.config.budget - self.told
            genomes = check_asked(self.strategy, asked, self.feasible, self.config.ask_size, left)
        archs = tuple(self.space.encode(genome) for genome in genomes)
        new = {arch: genome for arch, genome in zip(archs, genomes, strict=True) if arch not in self.archive}
        return Step(tuple(genomes), archs, new)

    def finish_step(self, step: Step, evaluations: Mapping[str, Evaluation]) -> HistoryEntry:
        """Archive the new archs' *evaluations*, aggregate, tell and refresh (steps 2-4); the best so far."""
        for arch, genome in step.new.items():
            self.archive.add(genome, evaluations[arch], len(self.history) + 1)
        with timed(self.seconds, "aggregation"):
            fitness = self.fitness()
        with timed(self.seconds, "strategy"):
            self.strategy.tell(
                list(step.genomes), [float(fitness[self.archive.index[a]]) for a in step.archs]
            )
            self.strategy.refresh(dict(zip(self.archive.genomes, fitness.tolist(), strict=True)))
        self.told += len(step.genomes)
        best = int(np.argmax(fitness))  # the first of equal scores: the earliest evaluated
        entered = [entry_percentile(fitness, self.archive.index[arch]) for arch in step.new]
        percentile = max([self.history[-1].best_percentile if self.history else 0.0, *entered])
        entry = HistoryEntry(
            len(self.history) + 1, self.told, self.archive.archs[best], float(fitness[best]), percentile
        )
        self.history.append(entry)
        return entry

    def best(self) -> tuple[Evaluation, float]:
        """The archive member with the highest final aggregate, and that aggregate."""
        if not self.history:
            raise SearchError(f"strategy {self.strategy.name!r} must not be done before any evaluation")
        fitness = self.fitness()
        best = int(np.argmax(fitness))
        return self.archive.evaluations[best], float(fitness[best])

    # -- resuming --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The strategy's state, the archive's order and steps, and the history: what resumes the loop."""
        return {
            "version": STATE_VERSION,
            "strategy": self.strategy.state_dict(),
            "archive": list(self.archive.archs),
            "steps": list(self.archive.steps),
            "history": [asdict(entry) for entry in self.history],
        }

    def load_state_dict(
        self, state: Mapping[str, Any], evaluations: Mapping[str, Evaluation], told: int
    ) -> None:
        """Resume from `state_dict`: the archive from *evaluations* in the stored order, *told* so far."""
        if state.get("version") != STATE_VERSION:
            raise SearchError(
                f"search state version must be {STATE_VERSION}, but got {state.get('version')!r}"
            )
        for arch, step in zip(state["archive"], state["steps"], strict=True):
            if arch not in evaluations:
                raise SearchError(f"the search state lists {arch}, which has no stored evaluation")
            self.archive.add(self.space.decode(arch), evaluations[arch], step)
        self.history = [HistoryEntry(**entry) for entry in state["history"]]
        self.strategy.load_state_dict(state["strategy"])
        self.told = told

    # -- the end ---------------------------------------------------------------------------------------------
    def result(
        self,
        wall_seconds: float,
        scoring_seconds: float,
        probe: Mapping[str, Any],
        recorded: Mapping[str, Evaluation] | None = None,
    ) -> SearchResult:
        """The search as `SearchResult` reports it; *recorded* evaluations (seconds, cache flags) replace
        the archive's where the driver kept better records than the values it handed to `finish_step`."""
        fitness = self.fitness()
        members = [(recorded or {}).get(e.arch, e) for e in self.archive.evaluations]
        archive = tuple(
            ArchiveEntry(e.arch, self.archive.raw(i), float(fitness[i]), e.seconds, self.archive.steps[i])
            for i, e in enumerate(members)
        )
        best, score = self.best()
        cached = [e for e in members if e.cached]
        return SearchResult(
            self.config, best.arch, score, self.archive.raw(self.archive.index[best.arch]), best.params,
            best.flops, self.told, len(self.archive), len(self.history), wall_seconds, scoring_seconds,
            self.seconds["strategy"], self.seconds["aggregation"], tuple(self.history), archive,
            self.strategy.state_dict(), dict(probe), len(cached), sum(e.seconds for e in cached),
        )  # fmt: skip
