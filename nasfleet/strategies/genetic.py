"""A genetic algorithm on DEAP with COER-NAS's decoupled, segment-wise operators.

The first generation is ``population_size`` random feasible architectures; each later generation breeds
``population_size - elitism`` children from the population. ``ask`` hands out the current generation's
children in breeding order, ``tell`` records them, and once every child of the generation is told,
selection forms the next population: the ``elitism`` best parents, then the best children.

Operators (`nasfleet.strategies.genetic_operators`): segment-wise crossover and mutation, each segment's
mutation rate adapted by the 1/5th success rule. When the best architecture has not improved for
``stagnation_patience`` generations, every rate is raised back to at least ``mutation_prob`` (a kick
towards exploration). All randomness comes from the strategy's one seeded Generator, so the state in
`state_dict` carries it: runs are deterministic and resume exactly.

Interpretations:

- A child equal to an architecture of the archive or of its generation is bred again, up to
  ``NOVELTY_ATTEMPTS`` times; only when nothing new turns up is the duplicate accepted (and evaluated
  again). The archive keeps the fitness of everything told, and `refresh` replaces it. Parents,
  population and incumbent read their fitness from the archive, so a refresh reaches all of them.
- Children are canonicalised and repaired for feasibility (`Strategy.repair`, by mutation of the child).
- A batched ``ask(n)`` that goes past the generation's children breeds extra children from the same
  parents. Selection then keeps the best of all the children.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nasfleet.spaces.base import Genome
from nasfleet.strategies.base import Strategy, StrategyError, register_strategy
from nasfleet.strategies.common import (
    count_field,
    genomes_from_state,
    genomes_to_state,
    record_told,
    refresh_archive,
    restore_header,
    scored_from_state,
    scored_to_state,
    state_field,
    state_header,
)
from nasfleet.strategies.genetic_operators import (
    RATE_STEP,
    TARGET_SUCCESS,
    GAOptions,
    GeneratorRandom,
    adapt_rates,
    best_distinct,
    deap_random,
    segment_crossover,
    segment_mutation,
    tournament_parents,
)

__all__ = [
    "NOVELTY_ATTEMPTS",
    "RATE_STEP",
    "STATUSES",
    "TARGET_SUCCESS",
    "Child",
    "GAOptions",
    "GeneratorRandom",
    "GeneticStrategy",
    "adapt_rates",
    "best_distinct",
    "deap_random",
    "segment_crossover",
    "segment_mutation",
]

NOVELTY_ATTEMPTS = 20
STATUSES = ("pending", "asked", "told")


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
        for genome in record_told(self, self.archive, archs, fitness):
            child = next((c for c in self.children if c.status == "asked" and c.arch == genome), None)
            if child is not None:
                child.status = "told"
        if self.children and all(child.status == "told" for child in self.children):
            self._select()

    def refresh(self, fitness: Mapping[Genome, float]) -> None:
        """Replace the archive's fitness values; population, parents and incumbent all read them."""
        refresh_archive(self, self.archive, fitness)

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

    def _offspring(self) -> Child:
        mother, father = tournament_parents(
            self.population, self.archive, self.options.tournament_size, self.rng
        )
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
