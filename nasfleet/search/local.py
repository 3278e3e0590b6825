"""`run_search`: one personalized search in this process, the strategy's loop driven by local scoring.

The loop is `nasfleet.search.loop.SearchLoop`; this driver scores each step's new architectures with
`nasfleet.proxies.engine.score_archs` (optionally in a pool of processes) on the caller's probe batch.
``nasfleet search`` and the federation drive the same loop as jobs of the service instead
(`nasfleet.server.service.jobs`).

Shared proxy-value cache (optional ``cache``): raw proxy values depend only on the arch and the scoring
inputs (probe batch, scoring seed, proxy set), never on the strategy, so searches that share those inputs
may share raw values. The cache maps an arch string to ``(raw values, the seconds its original scoring
took)``. It is consulted only for archs new to this search's archive and filled after scoring; a hit
enters the archive exactly as if scored now (with its original seconds, marked cached), so every decision
is the same as without the cache. Keeping the scoring inputs equal across the searches sharing one cache
is the caller's duty: the key is the arch alone. ``scoring_seconds`` is measured scoring only; the hits'
original seconds are reported apart (``cached_scoring_seconds``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nasfleet.proxies.engine import score_archs
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.search.config import SearchConfig, SearchError, is_int, require
from nasfleet.search.loop import Evaluation, SearchLoop, timed
from nasfleet.search.result import SearchResult
from nasfleet.spaces import Genome, SearchSpace
from nasfleet.strategies.base import Feasibility, LatencyModel, Strategy
from nasfleet.strategies.discovery import get_strategy

ProxyCache = MutableMapping[str, tuple[dict[str, float], float]]
"""Arch string -> (raw proxy values, seconds its original scoring took); see the module docstring."""


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


class SearchUpdate(Protocol):
    """``update(done, score, best_percentile=None)``: evaluations told, the current best's (relative)
    score and the monotone best-so-far percentile (`HistoryEntry`)."""

    def __call__(self, done: int, score: float, best_percentile: float | None = None) -> None: ...


def best_text(score: float, best_percentile: float | None) -> str:
    """What the progress shows of the best: the monotone percentile first, then the relative score
    (only the score for a caller without the percentile)."""
    if best_percentile is None:
        return f"best {score:.4g}"
    return f"best so far p{best_percentile:.1f}, current best {score:.4g} (relative)"


@contextmanager
def search_progress(budget: int, enabled: bool) -> Iterator[SearchUpdate]:
    """A rich bar on stderr of evaluations/budget and the best (`best_text`); yields `SearchUpdate`.

    When stderr is not a terminal it prints a plain line every 5% of the budget, as the engine does.
    """
    console = Console(stderr=True)
    if enabled and not console.is_terminal:
        step, started, shown = max(1, budget // 20), time.perf_counter(), [0]

        def show(done: int, score: float, best_percentile: float | None = None) -> None:
            if done // step > shown[0] // step or done == budget:
                elapsed, best = time.perf_counter() - started, best_text(score, best_percentile)
                console.print(f"search: {done}/{budget}, {best} ({elapsed:.0f} s)", highlight=False)
            shown[0] = done

        yield show
        return
    best = TextColumn("{task.fields[best]}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), best, TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not enabled) as progress:
        task = progress.add_task("search", total=budget, best="")

        def update(done: int, score: float, best_percentile: float | None = None) -> None:
            progress.update(task, completed=done, best=best_text(score, best_percentile))

        yield update


class LocalScorer:
    """Raw values of a step's new archs: from the shared cache where it has them, else scored here."""

    def __init__(
        self, loop: SearchLoop, batch: ProbeBatch, workers: int, cache: ProxyCache | None = None
    ) -> None:
        self.loop, self.batch, self.workers, self.cache = loop, batch, workers, cache
        self.scoring_seconds = {"scoring": 0.0}

    def __call__(self, new: Mapping[str, Genome]) -> dict[str, Evaluation]:
        names, found = self.loop.archive.proxy_names, {}
        for arch in new:
            hit = self.cache.get(arch) if self.cache is not None else None
            if hit is not None and all(name in hit[0] for name in names):
                found[arch] = self._evaluation(arch, new[arch], hit[0], float(hit[1]), cached=True)
        todo = [genome for arch, genome in new.items() if arch not in found]
        if todo:
            config = self.loop.config
            with timed(self.scoring_seconds, "scoring"):
                table = score_archs(
                    self.loop.space, todo, self.batch, names,
                    seed=config.proxy_seed, workers=min(self.workers, len(todo)), progress=False,
                )  # fmt: skip
            for i, (arch, genome) in enumerate(zip(table.archs, todo, strict=True)):
                values = {name: float(table.values[name][i]) for name in names}
                found[arch] = self._evaluation(arch, genome, values, float(table.seconds[i]), cached=False)
                if self.cache is not None:
                    self.cache[arch] = (values, float(table.seconds[i]))
        return found

    def _evaluation(
        self, arch: str, genome: Genome, values: Mapping[str, float], seconds: float, cached: bool
    ) -> Evaluation:
        cost = self.loop.feasible.cost(genome)
        values = {name: float(values[name]) for name in self.loop.archive.proxy_names}
        return Evaluation(arch, values, cost.params, cost.flops, seconds, cached)


def _check_run(space: SearchSpace, strategy: Strategy, batch: ProbeBatch, config: SearchConfig) -> None:
    require(space.name == config.space, "space", f"the space of config.space ({config.space!r})", space.name)
    require(strategy.name == config.strategy, "strategy", f"named {config.strategy!r}", strategy.name)
    require(strategy.budget == config.budget, "strategy.budget", f"{config.budget} (config.budget)",
            strategy.budget)  # fmt: skip
    require(strategy.told == 0, "strategy.told", "0 (a fresh strategy)", strategy.told)
    labels = "present" if batch.labels is not None else "absent"
    require(labels == ("present" if config.labeled else "absent"), "batch labels",
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
    require(is_int(workers) and workers >= 1, "workers", "an integer >= 1", workers)
    _check_run(space, strategy, batch, config)
    # The loop re-checks what the strategy asks against config's limits; the device's latency model
    # (if any) is the one the strategy was given.
    loop = SearchLoop(
        space, strategy, feasibility(space, config, batch, strategy.feasible.latency_model), config
    )
    score, started = LocalScorer(loop, batch, workers, cache), time.perf_counter()
    with search_progress(config.budget, progress) as show:
        while not strategy.done:
            step = loop.begin_step()
            entry = loop.finish_step(step, score(step.new))
            show(entry.evaluations, entry.score, entry.best_percentile)
    if not loop.history:
        raise SearchError(f"strategy {strategy.name!r} must not be done before any evaluation, but it was")
    probe = {"batch_size": batch.size, "input_shape": list(batch.input_shape),
             "num_classes": batch.num_classes, "labeled": batch.labels is not None}  # fmt: skip
    return loop.result(time.perf_counter() - started, score.scoring_seconds["scoring"], probe)
