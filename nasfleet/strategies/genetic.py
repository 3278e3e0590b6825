"""A genetic algorithm on DEAP with COER-NAS's decoupled, segment-wise operators.

The first generation is ``population_size`` random feasible architectures; each later generation breeds
``population_size - elitism`` children from the population. ``ask`` hands out the current generation's
children in breeding order, ``tell`` records them, and once every child of the generation is told,
selection forms the next population: the ``elitism`` best parents, then the best children.

Decoupled operators: the genome is split into the space's ``segments`` (NB201's nodes, MobileNetV2's
width, depth, expansion and kernel genes), and each operator works on every segment on its own.

- Crossover (for a child with probability ``crossover_prob``): each segment is cut with probability
  ``segment_crossover_prob``, by DEAP's two-point crossover with probability ``two_point_prob`` and by its
  one-point crossover otherwise. The child takes the segment from one of the two results, or whole from
  one parent when it is not cut. Genes never move between segments.
- Mutation is adaptive per segment: segment ``s`` is mutated with its own rate ``r_s``, and then at least
  one of its genes changes to another option.

Adaptation rule: Rechenberg's 1/5th success rule, applied per segment. After each generation a child
*succeeds* when its fitness beats both parents'. For each segment mutated in at least one child, ``r_s``
is multiplied by ``RATE_STEP`` when more than 1/5 of those children succeeded, and divided by it when
fewer did. It is then clipped to ``[min_mutation_prob, max_mutation_prob]``. Segments whose mutations pay
off are mutated more. When the best architecture has not improved for ``stagnation_patience``
generations, every rate is raised back to at least ``mutation_prob`` (a kick towards exploration).

Interpretations:

- DEAP's cut points are at least 1, so a one-gene segment is never cut; it is only inherited whole.
- If no segment's rate comes up, one segment is drawn with probability proportional to the rates
  (uniformly if all are 0), so every child differs from the parent it was copied from.
- A child equal to an architecture of the archive or of its generation is bred again, up to
  ``NOVELTY_ATTEMPTS`` times; only when nothing new turns up is the duplicate accepted (and evaluated
  again). The archive keeps the fitness of everything told, and `refresh` replaces it. Parents,
  population and incumbent read their fitness from the archive, so a refresh reaches all of them.
- Children are canonicalised and repaired for feasibility (`Strategy.repair`, by mutation of the child).
- A batched ``ask(n)`` that goes past the generation's children breeds extra children from the same
  parents. Selection then keeps the best of all the children.

Randomness: DEAP's operators draw from the global ``random`` module. While they run, `deap_random` points
the ``random`` name inside DEAP's selection and crossover modules at a `GeneratorRandom`: a
`random.Random` whose ``random`` and ``getrandbits`` draw from the strategy's numpy Generator, under a
lock. All randomness thus comes from one seeded stream, and the state in `state_dict` already carries it.
Runs are deterministic and resume exactly, and the process-wide ``random`` state is never read or
changed.
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
from nasfleet.strategies.base import Strategy, StrategyError, register_strategy
from nasfleet.strategies.common import (
    checked_fitness,
    checked_tell,
    count_field,
    genomes_from_state,
    genomes_to_state,
    restore_header,
    scored_from_state,
    scored_to_state,
    state_field,
    state_header,
)
from nasfleet.strategies.options import option, require

NOVELTY_ATTEMPTS = 20
RATE_STEP = 1.25
TARGET_SUCCESS = 0.2
STATUSES = ("pending", "asked", "told")

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


@dataclass
class Child:
    """A child of the current generation: its parents, its mutated segments and its ask/tell status."""

    arch: Genome
    parents: tuple[Genome, ...] = ()
    mutated: tuple[int, ...] = ()
    status: str = "pending"  # pending -> asked -> told


@register_strategy
class GeneticStrategy(Strategy):
    """Generational GA: tournament selection, elitism, decoupled segment crossover and adaptive mutation."""

    name = "ga"

    options_type = GAOptions
    options: GAOptions

    def setup(self) -> None:
        self.archive: dict[Genome, float] = {}
        self.population: list[Genome] = []
        self.children: list[Child] = []
        self.generation = 0
        self.rates = [float(self.options.mutation_prob)] * len(self.space.segments)
        self.best_arch: Genome | None = None
        self.stagnant = 0

    # -- ask / tell / refresh ----------------------------------------------------------------------------
    def ask(self, n: int) -> list[Genome]:
        wanted = self.remaining(n)
        if wanted and not self.children:
            elites = self.options.elitism if self.population else 0
            for _ in range(self.options.population_size - elites):
                self._breed()
        asked: list[Genome] = []
        while len(asked) < wanted:
            child = next((c for c in self.children if c.status == "pending"), None) or self._breed()
            child.status = "asked"
            asked.append(child.arch)
        return asked

    def tell(self, archs: Sequence[Genome], fitness: Sequence[float]) -> None:
        """Record fitness; an architecture that is not an asked child only enters the archive."""
        for genome, value in checked_tell(self, archs, fitness):
            child = next((c for c in self.children if c.status == "asked" and c.arch == genome), None)
            if child is not None:
                child.status = "told"
            self.archive[genome] = value
            self.told += 1
        if self.children and all(child.status == "told" for child in self.children):
            self._select()

    def refresh(self, fitness: Mapping[Genome, float]) -> None:
        """Replace the archive's fitness values; population, parents and incumbent all read them."""
        for genome, value in checked_fitness(self, fitness).items():
            if genome in self.archive:
                self.archive[genome] = value

    # -- breeding ----------------------------------------------------------------------------------------
    def _breed(self) -> Child:
        """A new child of the current generation, novel where possible, appended as pending."""
        taken = set(self.archive) | {child.arch for child in self.children}
        child = self._offspring() if self.population else Child(self.feasible_sample())
        for _ in range(NOVELTY_ATTEMPTS - 1):
            if child.arch not in taken:
                break
            child = self._offspring() if self.population else Child(self.feasible_sample())
        self.children.append(child)
        return child

    def _parents(self) -> tuple[Genome, Genome]:
        """Two tournament winners (DEAP's selTournament on the population)."""
        individuals = []
        for arch in self.population:
            individual = creator.NasfleetIndividual(arch)
            individual.fitness.values = (self.archive[arch],)
            individuals.append(individual)
        with deap_random(self.rng):
            mother, father = tools.selTournament(individuals, 2, tournsize=self.options.tournament_size)
        return tuple(int(g) for g in mother), tuple(int(g) for g in father)

    def _offspring(self) -> Child:
        mother, father = self._parents()
        crossed = mother
        if self.rng.random() < self.options.crossover_prob:
            crossed, _ = segment_crossover(mother, father, self.space.segments, self.rng, self.options)
        mutant, mutated = segment_mutation(crossed, self.space, self.rates, self.rng)
        arch = self.space.canonical(mutant)
        repaired = self.repair(arch, lambda: self.space.mutate(arch, self.rng))
        return Child(repaired, (mother, father), tuple(mutated) if repaired == arch else ())

    # -- selection ---------------------------------------------------------------------------------------
    def _select(self) -> None:
        self._adapt()
        size, taken = self.options.population_size, set[Genome]()
        chosen = best_distinct(self.population, self.archive, self.options.elitism, taken)
        chosen += best_distinct(
            [child.arch for child in self.children], self.archive, size - len(chosen), taken
        )
        chosen += best_distinct(self.population, self.archive, size - len(chosen), taken)
        self.population, self.children = chosen, []
        self.generation += 1

    def _adapt(self) -> None:
        """Per-segment rates from the generation's mutation successes, and the stagnation kick."""
        trials, successes = [0] * len(self.rates), [0] * len(self.rates)
        for child in self.children:
            if child.parents:
                won = self.archive[child.arch] > max(self.archive[parent] for parent in child.parents)
                for s in child.mutated:
                    trials[s] += 1
                    successes[s] += won
        self.rates = adapt_rates(self.rates, successes, trials, self.options)
        best = max(self.archive, key=lambda arch: self.archive[arch])
        if self.best_arch is None or self.archive[best] > self.archive[self.best_arch]:
            self.best_arch, self.stagnant = best, 0
        else:
            self.stagnant += 1
        if self.stagnant >= self.options.stagnation_patience:
            self.rates = [max(rate, float(self.options.mutation_prob)) for rate in self.rates]
            self.stagnant = 0

    # -- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **state_header(self),
            "generation": self.generation,
            "archive": scored_to_state(self.archive.items()),
            "population": genomes_to_state(self.population),
            "children": [
                [list(c.arch), genomes_to_state(c.parents), list(c.mutated), c.status] for c in self.children
            ],
            "rates": list(self.rates),
            "best_arch": None if self.best_arch is None else list(self.best_arch),
            "stagnant": self.stagnant,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        archive = dict(scored_from_state(self, state_field(self, state, "archive"), "archive"))
        population = genomes_from_state(self, state_field(self, state, "population"), "population")
        children = [self._child_from_state(entry) for entry in state_field(self, state, "children")]
        rates = state_field(self, state, "rates")
        if not isinstance(rates, list) or len(rates) != len(self.space.segments):
            raise StrategyError(
                f"{self.name}: state field 'rates' must hold one rate per segment, but got {rates!r}"
            )
        best = state_field(self, state, "best_arch")
        generation, stagnant = count_field(self, state, "generation"), count_field(self, state, "stagnant")
        restore_header(self, state)
        self.archive, self.population, self.children = archive, population, children
        self.rates, self.generation, self.stagnant = [float(rate) for rate in rates], generation, stagnant
        self.best_arch = None if best is None else genomes_from_state(self, [best], "best_arch")[0]

    def _child_from_state(self, entry: Any) -> Child:
        if not (isinstance(entry, list) and len(entry) == 4 and entry[3] in STATUSES):
            raise StrategyError(
                f"{self.name}: a child in state must be [arch, parents, mutated segments, status], "
                f"but got {entry!r}"
            )
        arch, parents, mutated, status = entry
        genome = genomes_from_state(self, [arch], "children")[0]
        return Child(
            genome, tuple(genomes_from_state(self, parents, "children")), tuple(map(int, mutated)), status
        )
