"""The in-process search loop: one personalized search with FG-NAS fitness (DESIGN steps 3-6).

`run_search` is the library's in-process function: the strategy, the feasibility check, the evaluation
cache, the scoring and the aggregation all run in the calling process (tests and experiments use it).
``nasfleet search`` and the federation round run searches as jobs of the service instead
(`nasfleet.server.service.jobs`, `nasfleet.server.service.orchestrator`), which sends the scoring to
Celery workers and keeps the cache and the archive in the registry. Both keep the loop's order of
operations, the contract a strategy relies on, and share its steps (`check_asked`, `archive_fitness`):

1. ``archs = strategy.ask(ask_size)``; each must be valid and feasible (the strategy repairs; a breach
   of that contract is a `SearchError`, never a silent skip);
2. architectures not yet in this search's archive are scored (one probe each); an architecture is
   never scored twice in one search;
3. the aggregate (FG-NAS by default) is recomputed over the whole archive, because its ranks are
   relative to the population;
4. ``strategy.tell(archs, current fitness)``, then ``strategy.refresh`` with the current fitness of
   every archive member, since earlier values change as the archive grows.

Cache key: the canonical arch string. Within one `run_search` the probe batch, the seed and the proxy
set are fixed, so the arch alone identifies an evaluation; the orchestrator's shared cache adds the
characteristics hash and the proxy configuration to the key.

Shared proxy-value cache (optional ``cache`` of `run_search`): raw proxy values depend only on the
arch and the scoring inputs (probe batch, scoring seed, proxy set), never on the strategy, so searches
that share those inputs may share raw values. The cache maps an arch string to ``(raw values, the
seconds its original scoring took)``. It is consulted only for archs new to this search's archive and
filled after scoring; a hit enters the archive exactly as if scored now (with its original seconds), so
the archive, the aggregate, the budget and every decision are the same as without the cache. Keeping
the scoring inputs equal across the searches sharing one cache is the caller's duty: the key is the
arch alone. Timing: ``scoring_seconds`` is measured scoring only; the hits' original seconds are
reported apart (``cached_scoring_seconds``), and ``uncached_wall_seconds`` adds them back to give what
the search would have taken without the cache. Cache reads and writes are counted as overhead.

Best-so-far under re-ranking: after each step, the best is the arch with the highest aggregate over
the archive *as it then was* (ties to the earliest evaluated); `SearchResult.history` records that
value as it was known then. The reported best is the argmax of the *final* aggregate, so it may differ
from the last history entry's arch only if later ranks reorder the leaders; both are reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nasfleet.proxies.base import ProxyError
from nasfleet.proxies.engine import ScoreTable, add_aggregates, expand_names, score_archs
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.spaces import SPACES, ArchitectureError, Genome, SearchSpace
from nasfleet.strategies.base import Constraints, Feasibility, LatencyModel, Strategy
from nasfleet.strategies.discovery import get_strategy

RESULT_VERSION = 1

ProxyCache = MutableMapping[str, tuple[dict[str, float], float]]
"""Arch string -> (raw proxy values, seconds its original scoring took); see the module docstring."""


class SearchError(ValueError):
    """A search that cannot run: an invalid configuration, or a strategy that breaks its contract."""


def _require(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise SearchError(f"{name} must be {rule}, but got {value!r}")


def _is_int(value: object) -> bool:
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
    aggregate: str = "fgnas"
    constraints: Constraints = field(default_factory=Constraints)
    scoring_seed: int | None = None

    def __post_init__(self) -> None:
        _require(self.space in SPACES, "space", f"one of {sorted(SPACES)}", self.space)
        _require(isinstance(self.strategy, str) and bool(self.strategy), "strategy", "a name", self.strategy)
        _require(_is_int(self.budget) and self.budget >= 1, "budget", "an integer >= 1", self.budget)
        _require(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        _require(self.scoring_seed is None or (_is_int(self.scoring_seed) and self.scoring_seed >= 0),
                 "scoring_seed", "None or an integer >= 0", self.scoring_seed)  # fmt: skip
        _require(_is_int(self.ask_size) and self.ask_size >= 1, "ask_size", "an integer >= 1", self.ask_size)
        _require(isinstance(self.labeled, bool), "labeled", "a boolean", self.labeled)
        _require(isinstance(self.constraints, Constraints), "constraints", "Constraints", self.constraints)
        _require(
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
        _require(aggregates == (self.aggregate,), "aggregate", "the name of one aggregate", self.aggregate)

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


def feasibility(
    space: SearchSpace, config: SearchConfig, batch: ProbeBatch, latency_model: LatencyModel | None = None
) -> Feasibility:
    """The feasibility check of ``config``'s constraints, with costs for the probe batch's data shape."""
    return Feasibility(space, config.constraints, batch.num_classes, batch.input_shape, latency_model)


def make_strategy(space: SearchSpace, config: SearchConfig, batch: ProbeBatch) -> Strategy:
    """The strategy ``config`` names (built-in or plug-in), constrained by `feasibility`."""
    return get_strategy(
        config.strategy, space, config.seed, config.budget, config.strategy_config,
        feasibility(space, config, batch),
    )  # fmt: skip


@dataclass(frozen=True)
class HistoryEntry:
    """The best-so-far after step ``step`` (``evaluations`` told), by the aggregate as it was then."""

    step: int
    evaluations: int
    arch: str
    score: float


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
    """The outcome of `run_search`: the best SubNet, what it cost, how the search went, how to resume.

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


def archive_fitness(
    archs: Sequence[str], values: Mapping[str, Sequence[float]], aggregate: str, labeled: bool
) -> np.ndarray:
    """The aggregate over a whole archive, one value per member in archive order (step 3 of the loop).

    ``values`` maps each raw proxy to its values in archive order. The aggregate's ranks are relative to
    the population, so it is recomputed over the whole archive after every step.
    """
    columns = {name: np.array(column, dtype=float) for name, column in values.items()}
    table = ScoreTable(tuple(archs), columns, np.zeros(len(archs)))
    return add_aggregates(table, [aggregate], labeled)[aggregate]


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


class _Archive:
    """Every architecture scored in this search, in order, with its raw values: the evaluation cache."""

    def __init__(self, proxy_names: Sequence[str]) -> None:
        self.proxy_names = tuple(proxy_names)
        self.genomes: list[Genome] = []
        self.archs: list[str] = []
        self.index: dict[str, int] = {}
        self.values: dict[str, list[float]] = {name: [] for name in self.proxy_names}
        self.seconds: list[float] = []
        self.steps: list[int] = []

    def __contains__(self, arch: str) -> bool:
        return arch in self.index

    def add(self, genomes: Sequence[Genome], table: ScoreTable, step: int) -> None:
        for position, (genome, arch) in enumerate(zip(genomes, table.archs, strict=True)):
            self.index[arch] = len(self.archs)
            self.genomes.append(genome)
            self.archs.append(arch)
            for name in self.proxy_names:
                self.values[name].append(float(table.values[name][position]))
            self.seconds.append(float(table.seconds[position]))
            self.steps.append(step)

    def fitness(self, aggregate: str, labeled: bool) -> np.ndarray:
        """The aggregate over the whole archive, one value per member in archive order."""
        return archive_fitness(self.archs, self.values, aggregate, labeled)

    def raw(self, position: int) -> dict[str, float]:
        return {name: values[position] for name, values in self.values.items()}


@contextmanager
def timed(seconds: MutableMapping[str, float], part: str) -> Iterator[None]:
    """Add the seconds the ``with`` block takes to ``seconds[part]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] += time.perf_counter() - start


@contextmanager
def search_progress(budget: int, enabled: bool) -> Iterator[Callable[[int, float], None]]:
    """A rich bar on stderr of evaluations/budget and the best-so-far score; yields ``update(done, best)``.

    When stderr is not a terminal it prints a plain line every 5% of the budget, as the engine does.
    """
    console = Console(stderr=True)
    if enabled and not console.is_terminal:
        step, started, shown = max(1, budget // 20), time.perf_counter(), [0]

        def show(done: int, best: float) -> None:
            if done // step > shown[0] // step or done == budget:
                elapsed = time.perf_counter() - started
                console.print(f"search: {done}/{budget}, best {best:.4g} ({elapsed:.0f} s)", highlight=False)
            shown[0] = done

        yield show
        return
    best = TextColumn("best {task.fields[best]}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), best, TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not enabled) as progress:
        task = progress.add_task("search", total=budget, best="-")
        yield lambda done, best: progress.update(task, completed=done, best=f"{best:.4g}")


class _Search:
    """The state of one running search; `step` is one ask / check / score / aggregate / tell / refresh."""

    def __init__(
        self,
        space: SearchSpace,
        strategy: Strategy,
        batch: ProbeBatch,
        config: SearchConfig,
        workers: int,
        cache: ProxyCache | None = None,
    ) -> None:
        self.space, self.strategy, self.batch, self.config = space, strategy, batch, config
        self.workers, self.cache = workers, cache
        self.cached, self.cached_seconds = 0, 0.0
        # The loop re-checks what the strategy asks against config's limits; the device's latency model
        # (if any) is the one the strategy was given.
        self.feasible = feasibility(space, config, batch, strategy.feasible.latency_model)
        self.archive = _Archive(config.proxy_names)
        self.history: list[HistoryEntry] = []
        self.seconds = {"scoring": 0.0, "strategy": 0.0, "aggregation": 0.0}
        self.evaluations = 0

    def timed(self, part: str) -> AbstractContextManager[None]:
        return timed(self.seconds, part)

    def step(self) -> HistoryEntry:
        with self.timed("strategy"):
            genomes = self.checked(self.strategy.ask(self.config.ask_size))
        archs = [self.space.encode(genome) for genome in genomes]
        new = {arch: genome for arch, genome in zip(archs, genomes, strict=True) if arch not in self.archive}
        if new:
            self.archive.add(list(new.values()), self.score(new), len(self.history) + 1)
        with self.timed("aggregation"):
            fitness = self.archive.fitness(self.config.aggregate, self.config.labeled)
        with self.timed("strategy"):
            self.strategy.tell(genomes, [float(fitness[self.archive.index[arch]]) for arch in archs])
            self.strategy.refresh(dict(zip(self.archive.genomes, fitness.tolist(), strict=True)))
        self.evaluations += len(genomes)
        best = int(np.argmax(fitness))  # the first of equal scores: the earliest evaluated
        entry = HistoryEntry(
            len(self.history) + 1, self.evaluations, self.archive.archs[best], float(fitness[best])
        )
        self.history.append(entry)
        return entry

    def score(self, new: Mapping[str, Genome]) -> ScoreTable:
        """Raw values of the ``new`` archs, in order: from the shared cache where it has them, else scored."""
        names = self.archive.proxy_names
        found: dict[str, tuple[dict[str, float], float]] = {}
        if self.cache is not None:
            for arch in new:
                hit = self.cache.get(arch)
                if hit is not None and all(name in hit[0] for name in names):
                    found[arch] = ({name: float(hit[0][name]) for name in names}, float(hit[1]))
            self.cached += len(found)
            self.cached_seconds += sum(seconds for _, seconds in found.values())
        todo = [genome for arch, genome in new.items() if arch not in found]
        if not todo:
            return _table(new, found, names)
        with self.timed("scoring"):
            table = score_archs(
                self.space, todo, self.batch, names,
                seed=self.config.proxy_seed, workers=min(self.workers, len(todo)), progress=False,
            )  # fmt: skip
        if not found and self.cache is None:
            return table
        for i, arch in enumerate(table.archs):
            scored = ({name: float(table.values[name][i]) for name in names}, float(table.seconds[i]))
            found[arch] = scored
            if self.cache is not None:
                self.cache[arch] = scored
        return _table(new, found, names)

    def checked(self, asked: Sequence[Genome]) -> list[Genome]:
        """The asked architectures in canonical form; a `SearchError` if the strategy broke its contract."""
        left = self.config.budget - self.evaluations
        return check_asked(self.strategy, asked, self.feasible, self.config.ask_size, left)

    def result(self, wall_seconds: float) -> SearchResult:
        fitness = self.archive.fitness(self.config.aggregate, self.config.labeled)
        best = int(np.argmax(fitness))
        cost = self.feasible.cost(self.archive.genomes[best])
        archive = tuple(
            ArchiveEntry(
                arch, self.archive.raw(i), float(fitness[i]), self.archive.seconds[i], self.archive.steps[i]
            )
            for i, arch in enumerate(self.archive.archs)
        )
        probe = {"batch_size": self.batch.size, "input_shape": list(self.batch.input_shape)}
        return SearchResult(
            self.config, self.archive.archs[best], float(fitness[best]), self.archive.raw(best),
            cost.params, cost.flops, self.evaluations, len(self.archive.archs), len(self.history),
            wall_seconds, self.seconds["scoring"], self.seconds["strategy"], self.seconds["aggregation"],
            tuple(self.history), archive, self.strategy.state_dict(),
            {**probe, "num_classes": self.batch.num_classes, "labeled": self.batch.labels is not None},
            self.cached, self.cached_seconds,
        )  # fmt: skip


def _table(
    archs: Iterable[str], values: Mapping[str, tuple[dict[str, float], float]], names: Sequence[str]
) -> ScoreTable:
    """A score table of ``archs`` in order, from ``arch -> (raw values, seconds)``."""
    order = tuple(archs)
    columns = {name: np.array([values[arch][0][name] for arch in order]) for name in names}
    return ScoreTable(order, columns, np.array([values[arch][1] for arch in order]))


def _check_run(space: SearchSpace, strategy: Strategy, batch: ProbeBatch, config: SearchConfig) -> None:
    _require(space.name == config.space, "space", f"the space of config.space ({config.space!r})", space.name)
    _require(strategy.name == config.strategy, "strategy", f"named {config.strategy!r}", strategy.name)
    _require(strategy.budget == config.budget, "strategy.budget", f"{config.budget} (config.budget)",
             strategy.budget)  # fmt: skip
    _require(strategy.told == 0, "strategy.told", "0 (a fresh strategy)", strategy.told)
    labels = "present" if batch.labels is not None else "absent"
    _require(labels == ("present" if config.labeled else "absent"), "batch labels",
             f"{'present' if config.labeled else 'absent'} (labeled={config.labeled})", labels)  # fmt: skip


def run_search(
    space: SearchSpace,
    strategy: Strategy,
    batch: ProbeBatch,
    config: SearchConfig,
    *,
    progress: bool = True,
    workers: int = 1,
    cache: ProxyCache | None = None,
) -> SearchResult:
    """One personalized search in this process, until ``strategy.done``; see the module docstring.

    ``strategy`` is a fresh instance for ``config`` (`make_strategy` builds one); passing the space and
    the strategy as instances lets tests use small spaces and spy strategies. ``workers > 1`` scores
    each step's new architectures in a pool of spawned processes (one pool per step, so it pays only
    when ``ask_size`` is well above ``workers``). An `InfeasibleSearchError` of the strategy propagates.
    ``cache``, when given, is a shared proxy-value cache consulted before scoring and filled after (see
    the module docstring); its entries must come from the same probe batch, scoring seed and proxies.
    """
    _require(_is_int(workers) and workers >= 1, "workers", "an integer >= 1", workers)
    _check_run(space, strategy, batch, config)
    search, started = _Search(space, strategy, batch, config, workers, cache), time.perf_counter()
    with search_progress(config.budget, progress) as show:
        while not strategy.done:
            entry = search.step()
            show(entry.evaluations, entry.score)
    if not search.history:
        raise SearchError(f"strategy {strategy.name!r} must not be done before any evaluation, but it was")
    return search.result(time.perf_counter() - started)
