"""The ``cmaes`` strategy: options, EG-NAS's compound fitness, determinism, replayed state, constraints,
refresh and search quality on synthetic fitness (no network is built)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from strategy_helpers import best_found_and_sampled, drive
from torch import nn

from nasfleet.spaces import Cost, Genome, InputShape, MBV2Space, NB201Space, SearchSpace, Segment
from nasfleet.strategies.base import Feasibility, InfeasibleSearchError, SearchLimits, StrategyError
from nasfleet.strategies.cmaes import CMAESStrategy, compound_fitness, direction_similarity
from nasfleet.testing import check_strategy, synthetic_fitness

Fitness = Callable[[Genome], float]


def test_cmaes_follows_the_strategy_contract() -> None:
    check_strategy(CMAESStrategy, spaces=[NB201Space()], invalid_configs=[{"popsize": 1}, {"sigma0": 0.0}])


def test_defaults_and_invalid_options() -> None:
    assert CMAESStrategy.validate_config({}) == {
        "popsize": 0,
        "starts": 1,
        "sigma0": 1.0,
        "zeta": 1.0,
        "eta": 0.4,
    }
    bad: list[tuple[dict[str, Any], str]] = [
        ({"sigma": 1.0}, "sigma"),
        ({"popsize": 1}, "popsize"),
        ({"popsize": 8.5}, "popsize"),
        ({"starts": 0}, "starts"),
        ({"sigma0": -1.0}, "sigma0"),
        ({"zeta": 0}, "zeta"),
        ({"eta": -0.1}, "eta"),
        ({"eta": float("nan")}, "eta"),
        ({"eta": "0.4"}, "eta"),
    ]
    for config, key in bad:
        with pytest.raises(StrategyError, match=key):
            CMAESStrategy(NB201Space(), 0, 10, config)


# -- EG-NAS compound fitness ---------------------------------------------------------------------------------
def test_similarity_is_the_rescaled_cosine_per_decision() -> None:
    choices = (2, 3)
    incumbent = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    assert direction_similarity(incumbent, incumbent, choices) == pytest.approx(1.0)
    opposite = np.array([-1.0, 0.0, 0.0, -2.0, 0.0])
    assert direction_similarity(opposite, incumbent, choices) == pytest.approx(0.0)
    orthogonal = np.array([0.0, 1.0, 1.0, 0.0, 0.0])
    assert direction_similarity(orthogonal, incumbent, choices) == pytest.approx(0.5)
    half = np.array([1.0, 0.0, 0.0, 0.0, 1.0])  # first decision agrees, second is orthogonal
    assert direction_similarity(half, incumbent, choices) == pytest.approx(0.75)
    assert direction_similarity(np.zeros(5), incumbent, choices) == pytest.approx(0.5)


def test_compound_fitness_pulls_worse_and_pushes_better_candidates() -> None:
    zeta, eta = 1.0, 0.4
    # Worse than the incumbent (score 1 < 2): similarity is rewarded, a pull toward the incumbent.
    assert compound_fitness(1.0, 2.0, 1.0, zeta, eta) == pytest.approx(1.4)
    assert compound_fitness(1.0, 2.0, 0.9, zeta, eta) > compound_fitness(1.0, 2.0, 0.1, zeta, eta)
    # Better (3 > 2) or equal: similarity is penalised, a push away for diversity.
    assert compound_fitness(3.0, 2.0, 1.0, zeta, eta) == pytest.approx(2.6)
    assert compound_fitness(3.0, 2.0, 0.9, zeta, eta) < compound_fitness(3.0, 2.0, 0.1, zeta, eta)
    assert compound_fitness(2.0, 2.0, 1.0, zeta, eta) == pytest.approx(1.6)
    # No incumbent yet: the told fitness alone, weighted by zeta.
    assert compound_fitness(3.0, None, 1.0, 2.0, eta) == pytest.approx(6.0)


def test_cma_is_told_its_samples_with_the_repaired_architectures_fitness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a tight limit some samples decode to infeasible architectures; cma still gets its own
    vectors, scored by the negated compound fitness of the (repaired) architectures evaluated."""
    space = NB201Space()
    feasible = Feasibility(space, SearchLimits(max_params=110_000))
    fitness = synthetic_fitness(space, 11)
    strategy = CMAESStrategy(space, 3, 60, feasible=feasible)
    told: list[tuple[list[np.ndarray], list[float], list[Genome], Genome | None]] = []
    make = strategy._cma

    def spied_cma(mean0: Any, seed: int) -> Any:
        es = make(mean0, seed)
        real_tell = es.tell

        def tell(solutions: list[np.ndarray], values: list[float]) -> None:
            generation = next(g for g in strategy.generations if g.vectors is solutions)
            told.append(
                ([v.copy() for v in solutions], list(values), list(generation.archs), generation.incumbent)
            )
            real_tell(solutions, values)

        es.tell = tell
        return es

    monkeypatch.setattr(strategy, "_cma", spied_cma)
    drive(strategy, fitness)
    repaired = 0
    for vectors, values, archs, incumbent in told:
        for vector, value, arch in zip(vectors, values, archs, strict=True):
            assert feasible(arch)
            repaired += space.from_vector(vector) != arch
            if incumbent is None:
                expected = fitness(arch)
            else:
                similarity = direction_similarity(vector, space.to_vector(incumbent), space.choices)
                expected = compound_fitness(fitness(arch), fitness(incumbent), similarity, 1.0, 0.4)
            assert value == pytest.approx(-expected)
    assert len(told) >= 3 and repaired > 0


# -- determinism, state, constraints -------------------------------------------------------------------------
def test_equal_seeds_ask_alike_and_leave_numpy_global_random_alone() -> None:
    space = NB201Space()
    fitness = synthetic_fitness(space, 21)
    np.random.seed(5)
    before = np.random.get_state(legacy=False)["state"]
    first = drive(CMAESStrategy(space, 1, 60), fitness)
    after = np.random.get_state(legacy=False)["state"]
    assert np.array_equal(after["key"], before["key"]) and after["pos"] == before["pos"]
    assert first == drive(CMAESStrategy(space, 1, 60), fitness)
    assert first != drive(CMAESStrategy(space, 2, 60), fitness)


@pytest.mark.parametrize(("config", "stop"), [({}, 17), ({"starts": 3, "popsize": 6}, 31)])
def test_resume_replays_the_runs_and_continues_exactly(config: dict[str, Any], stop: int) -> None:
    space = NB201Space()
    fitness = synthetic_fitness(space, 5)
    reference = CMAESStrategy(space, 4, 90, config)
    while reference.told < stop:
        archs = reference.ask(4)
        reference.tell(archs, [fitness(arch) for arch in archs])
    outstanding = reference.ask(5)  # asked, not yet told, when the state is saved
    state = json.loads(json.dumps(reference.state_dict(), allow_nan=False))
    restored = CMAESStrategy(space, 4, 90, config)
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    for strategy in (reference, restored):
        strategy.tell(outstanding, [fitness(arch) for arch in outstanding])
    assert drive(restored, fitness) == drive(reference, fitness)


def test_a_state_that_does_not_replay_is_rejected() -> None:
    space = NB201Space()
    strategy = CMAESStrategy(space, 0, 40)
    strategy.ask(3)
    state = json.loads(json.dumps(strategy.state_dict()))
    state["generations"][0]["vectors"][0][0] += 1e-9
    fresh = CMAESStrategy(space, 0, 40)
    with pytest.raises(StrategyError, match="replay"):
        fresh.load_state_dict(state)
    assert fresh.told == 0 and not fresh.runs


class TinySpace(SearchSpace):
    """27 architectures: small enough for a search to run out of new ones."""

    name = "tiny"

    @property
    def choices(self) -> tuple[int, ...]:
        return (3, 3, 3)

    @property
    def segments(self) -> tuple[Segment, ...]:
        return (Segment("all", 0, 3),)

    def encode(self, arch: Genome) -> str:
        return "-".join(map(str, self.validate(arch)))

    def decode(self, text: str) -> Genome:
        return self.validate([int(gene) for gene in text.split("-")])

    def build(self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> nn.Module:
        raise NotImplementedError("the tiny space has no networks")

    def cost(self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> Cost:
        return Cost(params=1 + sum(arch), flops=0)


def test_an_exhausted_space_restarts_runs_and_stays_resumable() -> None:
    """Once all 27 architectures are known, samples stall: runs restart (epochs > 0), some architectures
    are evaluated again so every ask completes, and a restored search replays restarted runs exactly."""
    space = TinySpace()
    fitness = synthetic_fitness(space, 8)
    strategy = CMAESStrategy(space, 0, 90, {"popsize": 4})
    head = []
    while strategy.told < 60:
        archs = strategy.ask(5)
        strategy.tell(archs, [fitness(arch) for arch in archs])
        head += archs
    assert len(set(head)) == 27 and len(head) == 60
    assert strategy.runs[0].epoch > 0
    restored = CMAESStrategy(space, 0, 90, {"popsize": 4})
    restored.load_state_dict(json.loads(json.dumps(strategy.state_dict())))
    assert drive(restored, fitness) == drive(strategy, fitness)


def test_every_ask_is_feasible_under_a_tight_limit() -> None:
    space = NB201Space()
    feasible = Feasibility(space, SearchLimits(max_params=110_000))
    asks = [
        a
        for batch in drive(CMAESStrategy(space, 0, 80, feasible=feasible), synthetic_fitness(space, 1))
        for a in batch
    ]
    assert len(asks) == 80 and all(feasible(arch) and space.validate(arch) == arch for arch in asks)


def test_nothing_feasible_raises() -> None:
    space = NB201Space()
    strategy = CMAESStrategy(space, 0, 10, feasible=Feasibility(space, SearchLimits(max_params=1000)))
    with pytest.raises(InfeasibleSearchError):
        strategy.ask(2)


def test_known_architectures_are_not_asked_again() -> None:
    space = NB201Space()
    asks = [a for batch in drive(CMAESStrategy(space, 2, 120), synthetic_fitness(space, 3)) for a in batch]
    assert len(set(asks)) == len(asks) == 120


def test_beats_random_sampling_on_a_synthetic_optimum() -> None:
    space = NB201Space()
    found, sampled = best_found_and_sampled(
        space, lambda seed: CMAESStrategy(space, seed, 100), 100, range(8)
    )
    assert found > sampled + 0.75


# -- refresh and the MobileNetV2 space ---------------------------------------------------------------------
def test_refresh_replaces_stored_fitness_for_future_tells_only() -> None:
    space = NB201Space()
    fitness = synthetic_fitness(space, 6)
    strategy = CMAESStrategy(space, 0, 100, {"popsize": 6})
    first = strategy.ask(6)
    strategy.tell(first, [fitness(arch) for arch in first])  # the first generation goes to cma
    past = json.loads(json.dumps(strategy.runs[0].log))
    second = strategy.ask(6)
    generation = strategy.generations[0]
    assert generation.incumbent == max(first, key=fitness)
    strategy.tell(second[:-1], [fitness(arch) for arch in second[:-1]])
    strategy.refresh({arch: -fitness(arch) for arch in first + second[:-1]})
    assert all(strategy.archive[arch] == -fitness(arch) for arch in first + second[:-1])
    strategy.tell(second[-1:], [-fitness(second[-1])])  # completes the second generation
    assert strategy.runs[0].log[: len(past)] == past  # what cma was told before stays as it was
    incumbent = generation.incumbent
    assert incumbent is not None
    expected = [
        -compound_fitness(
            -fitness(arch),
            -fitness(incumbent),
            direction_similarity(vector, space.to_vector(incumbent), space.choices),
            1.0,
            0.4,
        )
        for vector, arch in zip(generation.vectors, generation.archs, strict=True)
    ]
    assert strategy.runs[0].log[-1] == pytest.approx(expected)  # scored with the refreshed values


def test_searches_the_mobilenet_space() -> None:
    space = MBV2Space()
    weights = np.random.default_rng(0).random((len(space.choices), 3))

    def fitness(arch: Genome) -> float:
        return float(sum(weights[i, gene] for i, gene in enumerate(arch)))

    feasible = Feasibility(space, SearchLimits(max_params=1_500_000))
    strategy = CMAESStrategy(space, 1, 80, feasible=feasible)
    asks = [arch for batch in drive(strategy, fitness) for arch in batch]
    assert all(space.validate(arch) == arch and feasible(arch) for arch in asks)
    assert max(map(fitness, asks[-20:])) > max(map(fitness, asks[:19]))
    state = json.loads(json.dumps(strategy.state_dict(), allow_nan=False))
    restored = CMAESStrategy(space, 1, 80, feasible=feasible)
    restored.load_state_dict(state)
    assert restored.state_dict() == state
