"""COER-NAS's decoupled, segment-wise GA operators on DEAP, and the options of `GeneticStrategy` they read.

Decoupled operators: the genome is split into the space's ``segments`` (NB201's nodes, MobileNetV2's
width, depth, expansion and kernel genes), and each operator works on every segment on its own.

- Crossover (for a child with probability ``crossover_prob``): each segment is cut with probability
  ``segment_crossover_prob``, by DEAP's two-point crossover with probability ``two_point_prob`` and by its
  one-point crossover otherwise. The child takes the segment from one of the two results, or whole from
  one parent when it is not cut. Genes never move between segments. DEAP's cut points are at least 1, so
  a one-gene segment is never cut; it is only inherited whole.
- Mutation is adaptive per segment: segment ``s`` is mutated with its own rate ``r_s``, and then at least
  one of its genes changes to another option. If no segment's rate comes up, one segment is drawn with
  probability proportional to the rates (uniformly if all are 0), so every child differs from the parent
  it was copied from.

Adaptation rule: Rechenberg's 1/5th success rule, applied per segment. After each generation a child
*succeeds* when its fitness beats both parents'. For each segment mutated in at least one child, ``r_s``
is multiplied by ``RATE_STEP`` when more than 1/5 of those children succeeded, and divided by it when
fewer did. It is then clipped to ``[min_mutation_prob, max_mutation_prob]``.

Randomness: DEAP's operators draw from the global ``random`` module. While they run, `deap_random` points
the ``random`` name inside DEAP's selection and crossover modules at a `GeneratorRandom`: a
`random.Random` whose ``random`` and ``getrandbits`` draw from the strategy's numpy Generator, under a
lock. All randomness thus comes from one seeded stream, and the process-wide ``random`` state is never
read or changed.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from deap import base, creator, tools
from deap.tools import crossover as deap_crossover
from deap.tools import selection as deap_selection

from nasfleet.spaces.base import Genome, SearchSpace, Segment
from nasfleet.strategies.options import option, require

RATE_STEP = 1.25
TARGET_SUCCESS = 0.2

if not hasattr(creator, "NasfleetFitnessMax"):
    creator.create("NasfleetFitnessMax", base.Fitness, weights=(1.0,))
    creator.create("NasfleetIndividual", list, fitness=creator.NasfleetFitnessMax)


def _probability(default: float) -> Any:
    return option(default, "a probability in [0, 1]", lambda v: 0.0 <= v <= 1.0)


@dataclass(frozen=True)
class GAOptions:
    """Options of `GeneticStrategy`.

    Attributes
    ----------
    population_size:
        Architectures kept per generation, and random ones in the first (default 10: on synthetic NB201
        objectives at budgets of 60 to 120 evaluations, 10 clearly beat 20).
    elitism:
        The best parents carried over unchanged, fewer than ``population_size`` (default 2).
    tournament_size:
        Members drawn (with replacement) per parent tournament, at most ``population_size`` (default 3).
    crossover_prob:
        Probability that a child is a crossover of two parents rather than a copy of one (default 0.9).
    segment_crossover_prob:
        Probability that crossover cuts a given segment (default 0.5).
    two_point_prob:
        Probability that a cut segment uses two-point rather than one-point crossover (default 0.5).
    mutation_prob:
        Initial per-segment mutation rate, and its floor after stagnation (default 0.3).
    min_mutation_prob, max_mutation_prob:
        Bounds of the adapted per-segment rates (defaults 0.05 and 0.8).
    stagnation_patience:
        Generations without a new best before the rates are raised again (default 3).
    """

    population_size: int = option(10, "an integer >= 2", lambda v: v >= 2)
    elitism: int = option(2, "an integer >= 0", lambda v: v >= 0)
    tournament_size: int = option(3, "an integer >= 1", lambda v: v >= 1)
    crossover_prob: float = _probability(0.9)
    segment_crossover_prob: float = _probability(0.5)
    two_point_prob: float = _probability(0.5)
    mutation_prob: float = _probability(0.3)
    min_mutation_prob: float = _probability(0.05)
    max_mutation_prob: float = _probability(0.8)
    stagnation_patience: int = option(3, "an integer >= 1", lambda v: v >= 1)

    def __post_init__(self) -> None:
        size = self.population_size
        require("elitism", self.elitism, self.elitism < size, f"< population_size ({size})")
        require(
            "tournament_size",
            self.tournament_size,
            self.tournament_size <= size,
            f"<= population_size ({size})",
        )
        low, high = self.min_mutation_prob, self.max_mutation_prob
        require("max_mutation_prob", high, low <= high, f">= min_mutation_prob ({low})")
        require("mutation_prob", self.mutation_prob, low <= self.mutation_prob <= high, f"in [{low}, {high}]")


# -- DEAP driven by a numpy Generator ------------------------------------------------------------------------
class GeneratorRandom(random.Random):
    """A `random.Random` whose draws all come from a numpy Generator."""

    def __init__(self, generator: np.random.Generator) -> None:
        super().__init__(0)
        self.generator = generator

    def random(self) -> float:
        return float(self.generator.random())

    def getrandbits(self, k: int) -> int:
        if k < 0:
            raise ValueError(f"number of bits must be >= 0, but got {k}")
        nbytes = (k + 7) // 8
        return int.from_bytes(self.generator.bytes(nbytes), "little") >> (8 * nbytes - k)


_DEAP_LOCK = threading.RLock()


@contextmanager
def deap_random(generator: np.random.Generator) -> Iterator[None]:
    """Route the draws of DEAP's selection and crossover operators to ``generator`` within the block."""
    with _DEAP_LOCK:
        saved = deap_selection.random, deap_crossover.random
        deap_selection.random = deap_crossover.random = GeneratorRandom(generator)
        try:
            yield
        finally:
            deap_selection.random, deap_crossover.random = saved


# -- decoupled operators -------------------------------------------------------------------------------------
def segment_crossover(
    a: Genome, b: Genome, segments: Sequence[Segment], rng: np.random.Generator, options: GAOptions
) -> tuple[Genome, list[str]]:
    """One child of ``a`` and ``b`` crossed segment by segment, and the operator applied to each segment
    (``"none"``, ``"one_point"`` or ``"two_point"``); genes stay within their segment."""
    child: list[int] = []
    applied: list[str] = []
    with deap_random(rng):
        for segment in segments:
            left, right = list(a[segment.start : segment.stop]), list(b[segment.start : segment.stop])
            operator = "none"
            if len(left) > 1 and rng.random() < options.segment_crossover_prob:
                operator = "two_point" if rng.random() < options.two_point_prob else "one_point"
                (tools.cxTwoPoint if operator == "two_point" else tools.cxOnePoint)(left, right)
            child += left if rng.random() < 0.5 else right
            applied.append(operator)
    return tuple(child), applied


def segment_mutation(
    arch: Genome, space: SearchSpace, rates: Sequence[float], rng: np.random.Generator
) -> tuple[Genome, list[int]]:
    """``arch`` with segment ``s`` mutated with probability ``rates[s]`` (at least one segment always), and
    the indices of the mutated segments; genes outside them are untouched. Not canonicalised."""
    mutable = [[g for g in segment.genes if space.choices[g] > 1] for segment in space.segments]
    if not any(mutable):
        return arch, []
    drawn = [s for s, genes in enumerate(mutable) if genes and rng.random() < rates[s]]
    if not drawn:  # pick one segment in proportion to the rates (uniformly if they are all 0)
        weights = np.array(
            [rate + 1e-12 if genes else 0.0 for rate, genes in zip(rates, mutable, strict=True)]
        )
        drawn = [int(rng.choice(len(weights), p=weights / weights.sum()))]
    child = list(arch)
    for s in drawn:
        genes = mutable[s]
        picked = [g for g in genes if rng.random() < 1.0 / len(genes)] or [
            genes[int(rng.integers(len(genes)))]
        ]
        for g in picked:
            child[g] = (child[g] + 1 + int(rng.integers(space.choices[g] - 1))) % space.choices[g]
    return tuple(child), drawn


def adapt_rates(
    rates: Sequence[float], successes: Sequence[int], trials: Sequence[int], options: GAOptions
) -> list[float]:
    """The per-segment 1/5th success rule of the module docstring, clipped to the configured bounds."""
    adapted = []
    for rate, won, tried in zip(rates, successes, trials, strict=True):
        if tried and won / tried > TARGET_SUCCESS:
            rate *= RATE_STEP
        elif tried and won / tried < TARGET_SUCCESS:
            rate /= RATE_STEP
        adapted.append(min(max(rate, options.min_mutation_prob), options.max_mutation_prob))
    return adapted


def best_distinct(
    archs: Sequence[Genome], fitness: Mapping[Genome, float], k: int, taken: set[Genome]
) -> list[Genome]:
    """Up to ``k`` distinct architectures of ``archs`` not in ``taken`` (which grows), best first."""
    chosen: list[Genome] = []
    for arch in sorted(dict.fromkeys(archs), key=lambda g: -fitness[g]):
        if len(chosen) < k and arch not in taken:
            chosen.append(arch)
            taken.add(arch)
    return chosen


def tournament_parents(
    population: Sequence[Genome], fitness: Mapping[Genome, float], size: int, rng: np.random.Generator
) -> tuple[Genome, Genome]:
    """Two winners of tournaments of ``size`` members of ``population`` (DEAP's selTournament)."""
    individuals = []
    for arch in population:
        individual = creator.NasfleetIndividual(arch)
        individual.fitness.values = (fitness[arch],)
        individuals.append(individual)
    with deap_random(rng):
        mother, father = tools.selTournament(individuals, 2, tournsize=size)
    return tuple(int(g) for g in mother), tuple(int(g) for g in father)
