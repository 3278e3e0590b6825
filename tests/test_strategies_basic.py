"""The built-in strategies: they optimise, and each behaves as its algorithm says (synthetic fitness only)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from torch import nn

from nasfleet.spaces import Cost, Genome, NB201Space, SearchSpace, Segment
from nasfleet.strategies import (
    STRATEGIES,
    AnnealingOptions,
    EvolutionOptions,
    Feasibility,
    RandomOptions,
    RandomSearch,
    RegularizedEvolution,
    SearchLimits,
    SimulatedAnnealing,
    Strategy,
    StrategyError,
    available_strategies,
    get_strategy,
)
from nasfleet.strategies.annealing import normalized_rank

NB201 = NB201Space()
TARGET = (3, 3, 1, 3, 2, 3)  # a fixed NB201 cell: the optimum of `agreement`
BUILT_INS = ("annealing", "evolution", "random")


def agreement(arch: Genome) -> float:
    """Edges agreeing with `TARGET`: 6 at the optimum, 1.2 on average for a random cell."""
    return float(sum(gene == goal for gene, goal in zip(arch, TARGET, strict=True)))


def run(strategy: Strategy, fitness: Callable[[Genome], float], batch: int = 4) -> list[Genome]:
    """Ask and tell until done; every architecture asked, in order."""
    asked: list[Genome] = []
    while not strategy.done:
        archs = strategy.ask(batch)
        strategy.tell(archs, [fitness(arch) for arch in archs])
        asked += archs
    return asked


class TinySpace(SearchSpace):
    """Eight genomes (three binary genes): small enough to exhaust."""

    name = "tiny"

    @property
    def choices(self) -> tuple[int, ...]:
        return (2, 2, 2)

    @property
    def segments(self) -> tuple[Segment, ...]:
        return (Segment("all", 0, 3),)

    def encode(self, arch: Genome) -> str:
        return "".join(map(str, self.validate(arch)))

    def decode(self, text: str) -> Genome:
        return self.validate([int(c) for c in text])

    def build(
        self, arch: Genome, num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32)
    ) -> nn.Module:
        raise NotImplementedError("TinySpace has no networks")

    def cost(
        self, arch: Genome, num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32)
    ) -> Cost:
        return Cost(params=1 + sum(arch), flops=1 + sum(arch))


# -- every built-in ---------------------------------------------------------------------------------------
def test_the_built_ins_are_registered_and_listed_as_built_in() -> None:
    assert set(BUILT_INS) <= set(STRATEGIES)
    entries = available_strategies()
    for name in BUILT_INS:
        assert entries[name].origin == "built-in"
        assert entries[name].summary and "\n" not in entries[name].summary


def test_get_strategy_builds_by_name_and_rejects_unknown_names() -> None:
    strategy = get_strategy("evolution", NB201, seed=1, budget=10, config={"population_size": 8})
    assert isinstance(strategy, RegularizedEvolution)
    assert strategy.config == {"population_size": 8, "sample_size": 5}
    with pytest.raises(StrategyError, match=r"strategy must be one of \[.*'random'.*\], but got 'nope'"):
        get_strategy("nope", NB201, seed=1, budget=10)


@pytest.mark.parametrize("name", ["evolution", "annealing"])
def test_guided_search_beats_random_search_on_average(name: str) -> None:
    def best(strategy_name: str, seed: int) -> float:
        return max(agreement(arch) for arch in run(get_strategy(strategy_name, NB201, seed, 100), agreement))

    guided = np.mean([best(name, seed) for seed in range(8)])
    random = np.mean([best("random", seed) for seed in range(8)])
    assert guided >= random + 1.0, (guided, random)


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        (
            "random",
            {"avoid_repeats": 1},
            "option 'avoid_repeats' must be a boolean (true or false), but got 1",
        ),
        ("random", {"repeat_attempts": 0}, "option 'repeat_attempts' must be an integer >= 1, but got 0"),
        ("evolution", {"population_size": 1}, "option 'population_size' must be an integer >= 2, but got 1"),
        ("evolution", {"population_size": 20.0}, "option 'population_size' must be an integer, but got 20.0"),
        ("evolution", {"population_size": 4}, "'sample_size' must be <= population_size (4), but got 5"),
        ("annealing", {"cooling": 0}, "option 'cooling' must be a number in (0, 1], but got 0"),
        (
            "annealing",
            {"initial_temperature": math.nan},
            "'initial_temperature' must be a finite number, but got nan",
        ),
        (
            "annealing",
            {"t0": 1.0},
            "options must be among ['cooling', 'initial_temperature'], but got unknown ['t0']",
        ),
    ],
)
def test_invalid_configs_are_rejected_naming_key_rule_and_value(
    name: str, config: dict[str, object], message: str
) -> None:
    with pytest.raises(StrategyError) as raised:
        get_strategy(name, NB201, seed=0, budget=5, config=config)
    assert str(raised.value).startswith(f"{name}: config ")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("name", "options_type"),
    [("random", RandomOptions), ("evolution", EvolutionOptions), ("annealing", AnnealingOptions)],
)
def test_defaults_are_filled_and_documented(name: str, options_type: type) -> None:
    strategy = get_strategy(name, NB201, seed=0, budget=5)
    assert strategy.config == STRATEGIES[name].validate_config({}) == dataclasses.asdict(options_type())
    assert strategy.config == json.loads(json.dumps(strategy.config))
    for field in dataclasses.fields(options_type):
        key, default = field.name, field.default
        assert f"{key}:" in (options_type.__doc__ or ""), f"option {key} of {name} is undocumented"
        assert f"(default {str(default).lower()})" in (options_type.__doc__ or "").replace("\n", " ")


@pytest.mark.parametrize("name", BUILT_INS)
def test_tell_rejects_mismatched_lengths_invalid_archs_and_non_finite_fitness(name: str) -> None:
    strategy = get_strategy(name, NB201, seed=0, budget=5)
    archs = strategy.ask(2)
    with pytest.raises(
        StrategyError, match="one fitness per architecture, but got 2 architectures and 1 values"
    ):
        strategy.tell(archs, [1.0])
    with pytest.raises(StrategyError, match="fitness must be a finite number, but got nan"):
        strategy.tell(archs, [1.0, math.nan])
    with pytest.raises(StrategyError, match="gene 0 must lie in"):
        strategy.tell([(9, 0, 0, 0, 0, 0)], [1.0])
    assert strategy.told == 0


@pytest.mark.parametrize("name", BUILT_INS)
def test_state_of_another_search_is_rejected_naming_the_field(name: str) -> None:
    strategy = get_strategy(name, NB201, seed=0, budget=5)
    other = "random" if name != "random" else "evolution"
    with pytest.raises(
        StrategyError, match=rf"state field 'strategy' must equal '{name}'.*but got '{other}'"
    ):
        strategy.load_state_dict(get_strategy(other, NB201, seed=0, budget=5).state_dict())
    state = strategy.state_dict()
    with pytest.raises(StrategyError, match="state field 'config' must equal"):
        strategy.load_state_dict({**state, "config": {"unknown": 1}})
    with pytest.raises(StrategyError, match="state must have a field 'rng', but it is missing"):
        strategy.load_state_dict({key: value for key, value in state.items() if key != "rng"})


@pytest.mark.parametrize("name", BUILT_INS)
def test_a_resumed_search_may_get_a_larger_budget(name: str) -> None:
    strategy = get_strategy(name, NB201, seed=3, budget=10)
    run(strategy, agreement)
    longer = get_strategy(name, NB201, seed=3, budget=20)
    longer.load_state_dict(strategy.state_dict())
    assert not longer.done and len(run(longer, agreement)) == 10


# -- random search ---------------------------------------------------------------------------------------
def test_random_search_never_repeats_while_unseen_architectures_remain() -> None:
    asked = run(RandomSearch(TinySpace(), seed=0, budget=12), lambda arch: 0.0, batch=3)
    assert len(set(asked[:8])) == 8  # the whole space before any repeat
    assert set(asked[8:]) <= set(asked[:8])
    nb201 = run(RandomSearch(NB201, seed=0, budget=300), agreement, batch=7)
    assert len(set(nb201)) == 300


def test_random_search_keeps_its_seen_set_across_a_resume() -> None:
    first = RandomSearch(TinySpace(), seed=5, budget=8)
    head = first.ask(5)
    first.tell(head, [0.0] * 5)
    resumed = RandomSearch(TinySpace(), seed=5, budget=8)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert set(resumed.ask(3)).isdisjoint(head)


def test_random_search_may_repeat_when_told_to() -> None:
    asked = run(RandomSearch(TinySpace(), seed=0, budget=8, config={"avoid_repeats": False}), lambda a: 0.0)
    assert len(set(asked)) < 8


# -- regularized evolution -------------------------------------------------------------------------------
def test_evolution_starts_from_population_size_random_archs_then_mutates_tournament_winners() -> None:
    strategy = RegularizedEvolution(NB201, seed=0, budget=30, config={"population_size": 6, "sample_size": 3})
    initial = strategy.ask(6)
    strategy.tell(initial, [agreement(arch) for arch in initial])
    for child in strategy.ask(10):
        distances = [
            sum(a != b for a, b in zip(child, member, strict=True)) for member, _ in strategy.population
        ]
        assert min(distances) >= 1  # a mutation never returns its parent
        assert min(distances) <= 3  # and stays near one (rate 1/6 per gene)


def test_evolution_removes_the_oldest_member_even_when_it_is_the_best() -> None:
    strategy = RegularizedEvolution(NB201, seed=1, budget=20, config={"population_size": 4, "sample_size": 2})
    told: list[Genome] = []
    for step in range(12):
        (arch,) = strategy.ask(1)
        strategy.tell([arch], [100.0 if step == 4 else float(step)])  # step 4 is by far the best
        told.append(arch)
        assert [genome for genome, _ in strategy.population] == told[-4:]
    assert all(value != 100.0 for _, value in strategy.population)


def test_evolution_tournament_selects_the_best_of_its_sample() -> None:
    def best_share(sample_size: int) -> float:
        strategy = RegularizedEvolution(NB201, 0, 50, {"population_size": 5, "sample_size": sample_size})
        archs = strategy.ask(5)
        strategy.tell(archs, [0.0, 1.0, 5.0, 2.0, 3.0])
        return sum(strategy.tournament() == archs[2] for _ in range(400)) / 400

    assert abs(best_share(5) - (1 - 0.8**5)) < 0.08  # drawn with replacement: 67 %
    assert abs(best_share(1) - 0.2) < 0.06  # a sample of one is uniform


def test_evolution_refresh_replaces_population_fitness_and_changes_the_winner() -> None:
    strategy = RegularizedEvolution(NB201, 0, 50, {"population_size": 5, "sample_size": 5})
    archs = strategy.ask(5)
    strategy.tell(archs, [0.0, 1.0, 5.0, 2.0, 3.0])
    strategy.refresh({arch: -value for arch, value in zip(archs, [0.0, 1.0, 5.0, 2.0, 3.0], strict=True)})
    assert [value for _, value in strategy.population] == [-0.0, -1.0, -5.0, -2.0, -3.0]
    winners = {strategy.tournament() for _ in range(200)}
    assert archs[0] in winners and archs[2] not in winners


# -- simulated annealing ---------------------------------------------------------------------------------
def test_annealing_temperature_is_geometric_in_evaluations() -> None:
    strategy = SimulatedAnnealing(NB201, 0, 40, {"initial_temperature": 0.5, "cooling": 0.9})
    assert strategy.temperature == 0.5
    for told in (3, 8, 20):
        while strategy.told < told:
            archs = strategy.ask(1)
            strategy.tell(archs, [agreement(archs[0])])
        assert strategy.temperature == pytest.approx(0.5 * 0.9**told)
    assert SimulatedAnnealing(NB201, 0, 5).temperature_at(100) == pytest.approx(0.1 * 0.98**100)


def test_annealing_metropolis_rule_on_normalized_ranks() -> None:
    strategy = SimulatedAnnealing(NB201, 0, 40)
    better, worse = (0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 2)
    strategy.archive, strategy.current = {better: 10.0, worse: 3.0}, better
    assert normalized_rank(3.0, np.array([10.0, 3.0])) - normalized_rank(10.0, np.array([10.0, 3.0])) == -0.5
    accepted = sum(strategy.accepts(worse, 0.5) for _ in range(4000)) / 4000
    assert accepted == pytest.approx(math.exp(-0.5 / 0.5), abs=0.03)
    assert not strategy.accepts(worse, 0.0)  # an underflowed temperature is greedy
    state = strategy.rng_state()
    strategy.current = worse
    assert strategy.accepts(better, 1e-9) and strategy.rng_state() == state  # no draw for a better one


def test_annealing_at_a_tiny_temperature_never_moves_to_a_worse_architecture() -> None:
    strategy = SimulatedAnnealing(NB201, 2, 80, {"initial_temperature": 1e-12})
    currents = []
    while not strategy.done:
        archs = strategy.ask(2)
        strategy.tell(archs, [agreement(arch) for arch in archs])
        currents.append(strategy.current)
    values = [agreement(arch) for arch in currents if arch is not None]
    assert values == sorted(values) and values[-1] >= 5


def test_annealing_batches_are_distinct_unseen_neighbours_of_the_current_architecture() -> None:
    strategy = SimulatedAnnealing(NB201, 0, 40)
    first = strategy.ask(4)
    strategy.tell(first, [agreement(arch) for arch in first])
    assert strategy.current == max(first, key=agreement)
    batch = strategy.ask(8)
    assert len(set(batch)) == 8 and set(batch).isdisjoint(first)


def test_annealing_refresh_re_ranks_the_current_architecture() -> None:
    strategy = SimulatedAnnealing(NB201, 0, 40, {"initial_temperature": 1e-12})
    first = strategy.ask(4)
    strategy.tell(first, [1.0, 2.0, 3.0, 4.0])
    assert strategy.current == first[3]
    strategy.refresh({arch: -value for arch, value in zip(first, [1.0, 2.0, 3.0, 4.0], strict=True)})
    assert strategy.archive[first[3]] == -4.0
    (neighbour,) = strategy.ask(1)
    strategy.tell([neighbour], [-2.5])  # better than the current under refreshed values only
    assert strategy.current == neighbour


# -- constraints ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILT_INS)
def test_every_ask_is_feasible_under_a_flops_limit(name: str) -> None:
    feasible = Feasibility(NB201, SearchLimits(max_flops=40_000_000))
    asked = run(get_strategy(name, NB201, seed=4, budget=40, feasible=feasible), agreement)
    assert all(NB201.cost(arch).flops <= 40_000_000 for arch in asked)
