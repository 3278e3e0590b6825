"""The strategy contract: every check a search strategy, built-in or plug-in, must pass.

Fitness is synthetic (`synthetic_fitness`: agreement with a seeded target genome plus a stable
tie-breaker), so no network is built. The checks: configuration validation; every ``ask`` returns
exactly ``min(n, budget - told)`` valid, canonical, feasible genomes of plain ints; the budget and
``done``; determinism under the seed; JSON-serialisable state from which a fresh instance continues
exactly like the uninterrupted search; ``refresh``; a tight constraint and an infeasible one. A
strategy that overrides ``refresh`` declares that it keeps fitness, so a refresh that reverses every
value must change its later asks; one that does not override it must be unaffected by refreshes.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasfleet.spaces.base import Genome, SearchSpace
from nasfleet.strategies.base import (
    Feasibility,
    InfeasibleSearchError,
    SearchLimits,
    Strategy,
    StrategyError,
)
from nasfleet.testing.contract import ContractError, default_spaces, expect, parametrize, raises, run_checks

BATCH_SIZES = (1, 3, 2, 5, 4)
Fitness = Callable[[Genome], float]


FITNESS_STREAM = 0x46495421  # a separate seed stream for the target genome


def synthetic_fitness(space: SearchSpace, seed: int = 0) -> Fitness:
    """Genes agreeing with a seeded target genome (the optimum), plus a tie-breaker in [0, 0.5).

    The tie-breaker is a CRC32 of the genome, so values are equal in every process and rarely tie. The
    target comes from its own random stream, so it is never a strategy's first sample for the same seed.
    """
    target = space.sample(np.random.default_rng([seed, FITNESS_STREAM]))

    def fitness(arch: Genome) -> float:
        matches = sum(gene == goal for gene, goal in zip(arch, target, strict=True))
        return matches + zlib.crc32(repr(tuple(arch)).encode()) / 2**33

    return fitness


def tight_feasibility(space: SearchSpace, quantile: float = 0.1, samples: int = 200) -> Feasibility:
    """A parameter limit that about ``quantile`` of random architectures of ``space`` meet."""
    rng = np.random.default_rng(0)
    params = [space.cost(space.sample(rng)).params for _ in range(samples)]
    return Feasibility(space, SearchLimits(max_params=int(np.quantile(params, quantile))))


@dataclass(frozen=True)
class StrategyCase:
    """A strategy class with the space, configuration and budget its checks run on."""

    strategy: type[Strategy]
    space: SearchSpace
    config: Mapping[str, Any] = field(default_factory=dict)
    invalid_configs: Sequence[Mapping[str, Any]] = ()
    budget: int = 48
    seed: int = 7

    @property
    def label(self) -> str:
        return f"{getattr(self.strategy, 'name', self.strategy.__qualname__)} on {self.space.name}"

    def make(self, feasible: Feasibility | None = None, budget: int | None = None) -> Strategy:
        return self.strategy(
            self.space, self.seed, self.budget if budget is None else budget, dict(self.config), feasible
        )

    def fitness(self) -> Fitness:
        return synthetic_fitness(self.space, self.seed)


def _check_genome(case: StrategyCase, strategy: Strategy, arch: object) -> None:
    if not (isinstance(arch, tuple) and all(type(gene) is int for gene in arch)):
        raise ContractError(
            f"{case.label}: ask must return genomes as tuples of plain ints, but got {arch!r}"
        )
    try:
        canonical = case.space.validate(arch)
    except ValueError as error:
        raise ContractError(f"{case.label}: ask returned an invalid genome {arch}: {error}") from None
    expect(canonical == arch, f"{case.label}: ask must return canonical genomes, but got {arch}")
    expect(strategy.feasible(arch), f"{case.label}: ask returned an infeasible genome {arch}")


def _ask(case: StrategyCase, strategy: Strategy, n: int) -> list[Genome]:
    """``strategy.ask(n)``, checked: ``min(n, budget - told)`` valid, canonical, feasible genomes."""
    expected = max(0, min(n, strategy.budget - strategy.told))
    archs = strategy.ask(n)
    expect(isinstance(archs, list), f"{case.label}: ask must return a list, but got {type(archs)}")
    expect(
        len(archs) == expected,
        f"{case.label}: ask({n}) with {strategy.told} of {strategy.budget} evaluations told must return "
        f"{expected} architectures, but returned {len(archs)}",
    )
    for arch in archs:
        _check_genome(case, strategy, arch)
    return archs


def _drive(
    case: StrategyCase,
    strategy: Strategy,
    fitness: Fitness,
    first_batch: int = 0,
    until: int | None = None,
    after_tell: Callable[[Strategy, list[Genome]], None] | None = None,
) -> list[list[Genome]]:
    """Ask and tell, cycling through `BATCH_SIZES` from ``first_batch``, until done or ``until`` told."""
    asks: list[list[Genome]] = []
    limit = strategy.budget if until is None else until
    while strategy.told < limit:
        expect(
            not strategy.done, f"{case.label}: done is true with {strategy.told} of {strategy.budget} told"
        )
        archs = _ask(case, strategy, BATCH_SIZES[(first_batch + len(asks)) % len(BATCH_SIZES)])
        strategy.tell(archs, [fitness(arch) for arch in archs])
        asks.append(archs)
        if after_tell is not None:
            after_tell(strategy, [arch for batch in asks for arch in batch])
    return asks


def _snapshot(case: StrategyCase, strategy: Strategy) -> dict[str, Any]:
    """The strategy's state after a strict JSON round trip (no NaN, no tuples, no numpy scalars)."""
    state = strategy.state_dict()
    try:
        text = json.dumps(state, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ContractError(f"{case.label}: state_dict must be JSON-serialisable, but {error}") from None
    restored: dict[str, Any] = json.loads(text)
    expect(restored == state, f"{case.label}: state_dict must survive a JSON round trip unchanged")
    return restored


def check_config(case: StrategyCase) -> None:
    """Defaults are filled idempotently; unknown keys and the given invalid configs are rejected."""
    defaults = case.strategy.validate_config({})
    expect(isinstance(defaults, dict), f"{case.label}: validate_config must return a dict, got {defaults!r}")
    json.dumps(defaults, allow_nan=False)
    expect(
        case.strategy.validate_config(dict(defaults)) == defaults,
        f"{case.label}: validate_config must accept its own defaults unchanged",
    )
    expect(
        case.make().config == case.strategy.validate_config(dict(case.config)),
        f"{case.label}: a strategy's config must be its validated config",
    )
    unknown = raises(StrategyError, case.strategy, case.space, 0, 5, {"no_such_option": 1})
    expect(
        unknown is not None and "no_such_option" in str(unknown),
        f"{case.label}: an unknown config key must raise StrategyError naming the key, but got {unknown!r}",
    )
    for config in case.invalid_configs:
        raised = raises(StrategyError, case.strategy, case.space, 0, 5, dict(config))
        expect(raised is not None, f"{case.label}: config {dict(config)} must raise StrategyError")
    expect(
        raises(StrategyError, lambda: case.make(budget=0)) is not None,
        f"{case.label}: budget 0 must raise StrategyError",
    )


def check_ask_and_budget(case: StrategyCase) -> None:
    """Asks return exactly what the budget allows; done flips when the budget is told, not before."""
    strategy = case.make()
    expect(not strategy.done, f"{case.label}: done must be false before any evaluation")
    expect(raises(StrategyError, lambda: strategy.ask(0)) is not None, f"{case.label}: ask(0) must raise")
    asks = _drive(case, strategy, case.fitness())
    total = sum(len(batch) for batch in asks)
    expect(total == case.budget, f"{case.label}: asked {total} architectures for a budget of {case.budget}")
    expect(strategy.done and strategy.told == case.budget, f"{case.label}: done must be true at the budget")
    expect(strategy.ask(3) == [], f"{case.label}: ask after the budget is spent must return []")
    single = case.make(budget=1)
    expect(len(_ask(case, single, 4)) == 1, f"{case.label}: a budget of 1 must allow one architecture")


def check_determinism(case: StrategyCase) -> None:
    """Two strategies built alike and told alike ask alike."""
    first = _drive(case, case.make(), case.fitness())
    second = _drive(case, case.make(), case.fitness())
    expect(first == second, f"{case.label}: equal seeds must give equal asks")


def check_resume(case: StrategyCase) -> None:
    """A fresh instance loaded with a mid-search state continues exactly like the uninterrupted search."""
    fitness = case.fitness()
    reference = _drive(case, case.make(), fitness)
    for stop in (0, 1, case.budget // 2):
        original = case.make()
        head = _drive(case, original, fitness, until=stop)
        state, told = _snapshot(case, original), original.told
        tail = _drive(case, original, fitness, first_batch=len(head))
        expect(head + tail == reference, f"{case.label}: calling state_dict must not change the search")
        restored = case.make()
        restored.load_state_dict(json.loads(json.dumps(state)))
        expect(restored.told == told, f"{case.label}: a restored strategy must have told={told}")
        expect(
            _snapshot(case, restored) == state,
            f"{case.label}: state_dict right after load_state_dict must equal the loaded state",
        )
        resumed = _drive(case, restored, fitness, first_batch=len(head))
        expect(
            resumed == reference[len(head) :],
            f"{case.label}: a search restored after {told} evaluations must ask exactly what the "
            "uninterrupted search asks",
        )


@dataclass(frozen=True)
class _RefreshedRun:
    asks: list[list[Genome]]
    head: int  # batches told before the refresh
    restored: Strategy  # a fresh instance loaded with the state right after the refresh


def _refresh_run(case: StrategyCase, refreshed: Fitness, later: Fitness) -> _RefreshedRun:
    """Tell the synthetic fitness for half the budget, refresh every told value to ``refreshed``, then
    tell ``later`` values to the end."""
    strategy = case.make()
    head = _drive(case, strategy, case.fitness(), until=case.budget // 2)
    strategy.refresh({arch: refreshed(arch) for batch in head for arch in batch})
    restored = case.make()
    restored.load_state_dict(_snapshot(case, strategy))
    tail = _drive(case, strategy, later, first_batch=len(head))
    return _RefreshedRun(head + tail, len(head), restored)


def check_refresh(case: StrategyCase) -> None:
    """Refreshes are deterministic and saved in the state; an overridden refresh must matter."""
    fitness = case.fitness()

    def reversed_fitness(arch: Genome) -> float:
        return -fitness(arch)

    def refresh_all(strategy: Strategy, told: list[Genome]) -> None:
        strategy.refresh({arch: fitness(arch) for arch in told})

    unchanged = _drive(case, case.make(), fitness, after_tell=refresh_all)
    expect(
        unchanged == _drive(case, case.make(), fitness),
        f"{case.label}: refreshing unchanged fitness values must change no ask",
    )
    changed = _refresh_run(case, reversed_fitness, reversed_fitness)
    expect(
        changed.asks == _refresh_run(case, reversed_fitness, reversed_fitness).asks,
        f"{case.label}: equal refreshes must give equal asks",
    )
    expect(
        _drive(case, changed.restored, reversed_fitness, first_batch=changed.head)
        == changed.asks[changed.head :],
        f"{case.label}: a search restored right after a refresh must continue like the refreshed one",
    )
    ignored = _refresh_run(case, fitness, reversed_fitness).asks
    if type(changed.restored).refresh is Strategy.refresh:
        expect(
            changed.asks == ignored, f"{case.label}: refresh is not overridden, yet refreshing changed asks"
        )
    else:
        expect(
            changed.asks != ignored,
            f"{case.label}: the strategy overrides refresh (so it keeps fitness), yet reversing every "
            "told fitness value through refresh changed none of its later asks",
        )


def check_constraints(case: StrategyCase) -> None:
    """Under a tight limit every ask is feasible; with nothing feasible, InfeasibleSearchError is raised."""
    feasible = tight_feasibility(case.space)
    for batch in _drive(case, case.make(feasible=feasible), case.fitness()):
        expect(
            all(map(feasible, batch)), f"{case.label}: asked {batch}, not all within {feasible.constraints}"
        )
    nothing = Feasibility(case.space, SearchLimits(max_params=1))

    def ask_with_nothing_feasible() -> None:
        case.make(feasible=nothing).ask(1)

    expect(
        raises(InfeasibleSearchError, ask_with_nothing_feasible) is not None,
        f"{case.label}: with no feasible architecture, ask must raise InfeasibleSearchError",
    )


CHECKS: tuple[Callable[[StrategyCase], None], ...] = (
    check_config,
    check_ask_and_budget,
    check_determinism,
    check_resume,
    check_refresh,
    check_constraints,
)


@dataclass(frozen=True)
class StrategyCheck:
    """One contract check of one case; call it to run it (raises `ContractError` on a breach)."""

    check: Callable[[StrategyCase], None]
    case: StrategyCase

    @property
    def id(self) -> str:
        name = getattr(self.case.strategy, "name", self.case.strategy.__qualname__)
        return f"{name}-{self.case.space.name}-{self.check.__name__.removeprefix('check_')}"

    def __call__(self) -> None:
        self.check(self.case)


def strategy_checks(
    strategy: type[Strategy],
    spaces: Iterable[SearchSpace] | None = None,
    config: Mapping[str, Any] | None = None,
    invalid_configs: Sequence[Mapping[str, Any]] = (),
    skip: Iterable[str] = (),
) -> list[StrategyCheck]:
    """Every contract check of ``strategy`` on each space, less the checks named in ``skip``."""
    skipped = set(skip)
    unknown = skipped - {check.__name__ for check in CHECKS}
    if unknown:
        raise ValueError(
            f"skip must name checks among {[c.__name__ for c in CHECKS]}, but got {sorted(unknown)}"
        )
    return [
        StrategyCheck(check, StrategyCase(strategy, space, dict(config or {}), tuple(invalid_configs)))
        for space in (default_spaces() if spaces is None else spaces)
        for check in CHECKS
        if check.__name__ not in skipped
    ]


def check_strategy(
    strategy: type[Strategy],
    spaces: Iterable[SearchSpace] | None = None,
    config: Mapping[str, Any] | None = None,
    invalid_configs: Sequence[Mapping[str, Any]] = (),
    skip: Iterable[str] = (),
) -> None:
    """Run every contract check on ``strategy``; one `ContractError` lists every failure."""
    run_checks(strategy_checks(strategy, spaces, config, invalid_configs, skip))


def parametrize_with_checks(strategies: Iterable[type[Strategy]], **options: Any) -> Any:
    """A ``pytest.mark.parametrize`` over every check of every strategy, as argument ``check``.

    ``options`` are those of `strategy_checks` (spaces, config, invalid_configs, skip).
    """
    return parametrize([check for strategy in strategies for check in strategy_checks(strategy, **options)])
