"""The ``ga`` strategy: options, decoupled segment operators, adaptive rates, determinism, resumption,
constraints, refresh and search quality on synthetic fitness (no network is built)."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable

import numpy as np
import pytest
from deap.tools import crossover as deap_crossover
from deap.tools import selection as deap_selection
from strategy_helpers import best_found_and_sampled, drive

from nasfleet.spaces import Genome, MBV2Space, NB201Space, SearchSpace, Segment
from nasfleet.strategies import genetic
from nasfleet.strategies.base import Feasibility, InfeasibleSearchError, SearchLimits, StrategyError
from nasfleet.strategies.genetic import (
    GAOptions,
    GeneticStrategy,
    adapt_rates,
    deap_random,
    segment_crossover,
    segment_mutation,
)
from nasfleet.testing import check_strategy, synthetic_fitness

Fitness = Callable[[Genome], float]


def test_ga_follows_the_strategy_contract() -> None:
    check_strategy(GeneticStrategy, invalid_configs=[{"population_size": 1}, {"elitism": 10}])


def test_defaults_are_filled_and_json_ready() -> None:
    config = GeneticStrategy.validate_config({})
    assert config == {
        "population_size": 10,
        "elitism": 2,
        "tournament_size": 3,
        "crossover_prob": 0.9,
        "segment_crossover_prob": 0.5,
        "two_point_prob": 0.5,
        "mutation_prob": 0.3,
        "min_mutation_prob": 0.05,
        "max_mutation_prob": 0.8,
        "stagnation_patience": 3,
    }
    assert json.loads(json.dumps(config)) == config
    assert GeneticStrategy.validate_config({"crossover_prob": 1})["crossover_prob"] == 1.0


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"populaton_size": 10}, "populaton_size"),
        ({"population_size": 1}, "population_size"),
        ({"population_size": 4.0}, "population_size"),
        ({"elitism": 10}, "elitism"),
        ({"elitism": -1}, "elitism"),
        ({"tournament_size": 11}, "tournament_size"),
        ({"crossover_prob": 1.5}, "crossover_prob"),
        ({"two_point_prob": "half"}, "two_point_prob"),
        ({"segment_crossover_prob": True}, "segment_crossover_prob"),
        ({"mutation_prob": 0.9}, "mutation_prob"),
        ({"min_mutation_prob": 0.5, "max_mutation_prob": 0.4, "mutation_prob": 0.45}, "max_mutation_prob"),
        ({"stagnation_patience": 0}, "stagnation_patience"),
    ],
)
def test_invalid_options_name_the_key_and_value(config: dict[str, object], named: str) -> None:
    with pytest.raises(StrategyError, match=named) as raised:
        GeneticStrategy(NB201Space(), 0, 10, config)
    assert repr(config[named]) in str(raised.value) or named == "populaton_size"


def test_equal_seeds_ask_alike_and_leave_global_random_alone() -> None:
    space = NB201Space()
    fitness = synthetic_fitness(space, 3)
    random.seed(123)
    before = random.getstate()
    first = drive(GeneticStrategy(space, 5, 70), fitness)
    assert random.getstate() == before
    assert first == drive(GeneticStrategy(space, 5, 70), fitness)
    assert first != drive(GeneticStrategy(space, 6, 70), fitness)
    assert deap_selection.random is random and deap_crossover.random is random


@pytest.mark.parametrize("stop", [7, 23, 41])
def test_resume_with_asks_outstanding_continues_exactly(stop: int) -> None:
    space = NB201Space()
    fitness = synthetic_fitness(space, 1)
    config = {"population_size": 8, "elitism": 1}
    reference = GeneticStrategy(space, 2, 80, config)
    restored = GeneticStrategy(space, 2, 80, config)
    head: list[Genome] = []
    while reference.told < stop:
        archs = reference.ask(3)
        reference.tell(archs, [fitness(arch) for arch in archs])
        head += archs
    outstanding = reference.ask(4)  # asked, not yet told, when the state is saved
    state = json.loads(json.dumps(reference.state_dict(), allow_nan=False))
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    for strategy in (reference, restored):
        strategy.tell(outstanding, [fitness(arch) for arch in outstanding])
    assert drive(restored, fitness) == drive(reference, fitness)


def test_every_ask_is_feasible_under_a_tight_limit() -> None:
    space = NB201Space()
    feasible = Feasibility(space, SearchLimits(max_params=110_000))
    strategy = GeneticStrategy(space, 0, 90, {"population_size": 10}, feasible)
    asks = [arch for batch in drive(strategy, synthetic_fitness(space, 0)) for arch in batch]
    assert len(asks) == 90
    assert all(feasible(arch) and space.validate(arch) == arch for arch in asks)


def test_nothing_feasible_raises() -> None:
    space = NB201Space()
    strategy = GeneticStrategy(space, 0, 10, feasible=Feasibility(space, SearchLimits(max_params=1000)))
    with pytest.raises(InfeasibleSearchError):
        strategy.ask(1)


def test_few_feasible_architectures_still_fill_the_budget() -> None:
    """125 feasible architectures and a budget of 140: novelty runs out, duplicates are asked again."""
    space = NB201Space()
    allowed = Feasibility(space, SearchLimits(max_latency_ms=1.0), latency_model=lambda a: 10.0 * any(a[:3]))
    strategy = GeneticStrategy(space, 0, 140, {"population_size": 10}, allowed)
    asks = [arch for batch in drive(strategy, synthetic_fitness(space, 1)) for arch in batch]
    assert len(asks) == 140 and all(arch[:3] == (0, 0, 0) for arch in asks)
    assert 100 <= len(set(asks)) <= 125


def test_no_architecture_is_evaluated_twice_while_new_ones_exist() -> None:
    space = NB201Space()
    asks = [
        arch for batch in drive(GeneticStrategy(space, 4, 150), synthetic_fitness(space, 5)) for arch in batch
    ]
    assert len(set(asks)) == len(asks) == 150


def test_beats_random_sampling_on_a_synthetic_optimum() -> None:
    space = NB201Space()
    found, sampled = best_found_and_sampled(
        space, lambda seed: GeneticStrategy(space, seed, 80), 80, range(4)
    )
    assert found > sampled + 0.75


# -- decoupled operators -------------------------------------------------------------------------------------
def test_segment_crossover_cuts_inside_segments_only() -> None:
    space = MBV2Space()
    rng = np.random.default_rng(0)
    options = GAOptions(segment_crossover_prob=0.7)
    seen = set()
    for _ in range(200):
        a, b = space.sample(rng), space.sample(rng)
        child, applied = segment_crossover(a, b, space.segments, rng, options)
        seen.update(applied)
        for segment, operator in zip(space.segments, applied, strict=True):
            genes = child[segment.start : segment.stop]
            sources = [(a, b), (b, a)]
            shapes = {
                "none": [x[segment.start : segment.stop] for x, _ in sources],
                "one_point": [
                    _cut(x, y, segment.start, c, segment.stop) for x, y in sources for c in _inner(segment)
                ],
                "two_point": [
                    _cut(x, y, segment.start, c, d, segment.stop)
                    for x, y in sources
                    for c in _inner(segment)
                    for d in range(c + 1, segment.stop + 1)
                ],
            }
            assert genes in shapes[operator], (segment.name, operator)
    assert seen == {"none", "one_point", "two_point"}


def _inner(segment: Segment) -> range:
    return range(segment.start + 1, segment.stop)


def _cut(x: Genome, y: Genome, *points: int) -> Genome:
    """Genes of x and y alternating between consecutive ``points``, starting with x."""
    parts: list[int] = []
    for index, (start, stop) in enumerate(itertools.pairwise(points)):
        parts += (x if index % 2 == 0 else y)[start:stop]
    return tuple(parts)


def test_one_gene_segments_are_inherited_whole() -> None:
    space = NB201Space()  # node1 is a one-gene segment
    rng = np.random.default_rng(1)
    for _ in range(50):
        child, applied = segment_crossover(
            (0,) * 6, (1,) * 6, space.segments, rng, GAOptions(segment_crossover_prob=1.0)
        )
        assert applied[0] == "none" and child[0] in (0, 1)


def test_segment_mutation_changes_only_the_drawn_segments() -> None:
    space = MBV2Space()
    rng = np.random.default_rng(2)
    counts = np.zeros(len(space.segments))
    for _ in range(300):
        arch = space.sample(rng)
        child, mutated = segment_mutation(arch, space, [0.1, 0.1, 0.1, 0.6], rng)
        assert mutated
        for s, segment in enumerate(space.segments):
            changed = child[segment.start : segment.stop] != arch[segment.start : segment.stop]
            assert changed == (s in mutated)
            counts[s] += s in mutated
    assert counts[3] > 3 * counts[0]  # the rates steer which segments mutate


def test_strategy_children_change_only_their_mutated_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spy on the strategy's mutation: every child differs from its crossover only where it says."""
    space = NB201Space()
    calls: list[tuple[Genome, Genome, list[int]]] = []
    real = genetic.segment_mutation

    def spy(
        arch: Genome, space_: SearchSpace, rates: list[float], rng: np.random.Generator
    ) -> tuple[Genome, list[int]]:
        child, mutated = real(arch, space_, rates, rng)
        calls.append((arch, child, mutated))
        return child, mutated

    monkeypatch.setattr(genetic, "segment_mutation", spy)
    drive(GeneticStrategy(space, 0, 60), synthetic_fitness(space, 0))
    assert len(calls) >= 40
    for before, after, mutated in calls:
        for s, segment in enumerate(space.segments):
            touched = before[segment.start : segment.stop] != after[segment.start : segment.stop]
            assert touched == (s in mutated)


def test_rates_follow_the_one_fifth_rule_within_bounds() -> None:
    options = GAOptions()
    rates = adapt_rates([0.3, 0.3, 0.3, 0.79], [3, 0, 0, 5], [5, 5, 0, 5], options)
    assert rates == pytest.approx([0.375, 0.24, 0.3, 0.8])
    assert adapt_rates([0.05], [0], [4], options) == [0.05]


def test_rates_adapt_during_a_search() -> None:
    space = NB201Space()
    strategy = GeneticStrategy(space, 0, 120, {"stagnation_patience": 50})
    drive(strategy, synthetic_fitness(space, 1))
    assert strategy.generation >= 10
    assert strategy.rates != [0.3, 0.3, 0.3]
    assert all(0.05 <= rate <= 0.8 for rate in strategy.rates)


def test_deap_random_draws_from_the_generator() -> None:
    first, second = np.random.default_rng(9), np.random.default_rng(9)
    with deap_random(first):
        drawn = [deap_selection.random.randint(1, 6) for _ in range(20)]
    with deap_random(second):
        assert drawn == [deap_crossover.random.randint(1, 6) for _ in range(20)]
    assert first.bit_generator.state == second.bit_generator.state


# -- refresh and the MobileNetV2 space ---------------------------------------------------------------------
def test_refresh_replaces_stored_fitness_and_steers_elitism() -> None:
    space = NB201Space()
    fitness = synthetic_fitness(space, 0)
    strategy = GeneticStrategy(space, 0, 100, {"population_size": 6, "elitism": 1})
    archs = strategy.ask(6)
    strategy.tell(archs, [fitness(arch) for arch in archs])
    worst = min(archs, key=fitness)
    strategy.refresh({arch: -fitness(arch) for arch in archs})
    assert strategy.archive[worst] == -fitness(worst)
    assert max(strategy.archive, key=strategy.archive.__getitem__) == worst
    children = strategy.ask(5)
    strategy.tell(children, [-100.0] * 5)
    assert strategy.population[0] == worst  # the elite is chosen on the refreshed values


def test_searches_the_mobilenet_space() -> None:
    space = MBV2Space()
    weights = np.random.default_rng(0).random((len(space.choices), 3))

    def fitness(arch: Genome) -> float:
        return float(sum(weights[i, gene] for i, gene in enumerate(arch)))

    feasible = Feasibility(space, SearchLimits(max_params=1_500_000))
    strategy = GeneticStrategy(space, 1, 100, {"population_size": 10}, feasible)
    asks = [arch for batch in drive(strategy, fitness) for arch in batch]
    assert all(space.validate(arch) == arch and feasible(arch) for arch in asks)
    assert max(map(fitness, asks[-40:])) > max(map(fitness, asks[:10]))
