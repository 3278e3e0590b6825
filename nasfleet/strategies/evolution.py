"""Regularized (aging) evolution: Real, Aggarwal, Huang and Le, "Regularized Evolution for Image
Classifier Architecture Search", AAAI 2019, Algorithm 1.

The population starts as ``population_size`` random feasible architectures. Every further child is a
mutation of the fittest of ``sample_size`` members drawn at random from the population; once told, the
child joins the population and the *oldest* member leaves, whatever its fitness.

Interpretations:

- Tournament members are drawn *with* replacement, as in Algorithm 1 (a sample member is any random
  element of the population, which is left unchanged); ties go to the first drawn.
- A batched ``ask(n)`` breeds ``n`` children from independent tournaments on the same population (the
  asynchronous, many-workers setting of the paper); each joins the population when it is told.
- A child that breaks the constraints is replaced by another mutation of the same parent, and after
  bounded attempts by a random feasible architecture (`Strategy.repair`).
- If every initial architecture is still awaiting its fitness, a child cannot be bred: a random feasible
  architecture is proposed instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nasfleet.spaces.base import Genome
from nasfleet.strategies.base import Strategy, StrategyError, register_strategy
from nasfleet.strategies.common import (
    check_header,
    checked_fitness,
    checked_tell,
    count_field,
    restore_header,
    scored_from_state,
    scored_to_state,
    state_field,
    state_header,
)
from nasfleet.strategies.options import option, require


@dataclass(frozen=True)
class EvolutionOptions:
    """Options of `RegularizedEvolution`.

    Attributes
    ----------
    population_size:
        P, the number of architectures kept, and of random ones the search starts from (default 20).
    sample_size:
        S, the tournament size: members drawn to pick a parent, at most P (default 5).
    """

    population_size: int = option(20, "an integer >= 2", lambda v: v >= 2)
    sample_size: int = option(5, "an integer >= 1", lambda v: v >= 1)

    def __post_init__(self) -> None:
        require(
            "sample_size",
            self.sample_size,
            self.sample_size <= self.population_size,
            f"<= population_size ({self.population_size})",
        )


@register_strategy
class RegularizedEvolution(Strategy):
    """Regularized (aging) evolution: tournament parents, mutated children, the oldest member removed.

    Re-ranked fitness: ``refresh`` replaces the fitness of every population member with its refreshed
    value, and ``tell`` updates members equal to a told architecture, so tournaments always compare
    values of the latest aggregation. Ageing never depends on fitness.
    """

    name = "evolution"

    options_type = EvolutionOptions
    options: EvolutionOptions

    def setup(self) -> None:
        self.population: list[tuple[Genome, float]] = []  # oldest first
        self.initial_asked = 0

    def ask(self, n: int) -> list[Genome]:
        return [self._propose() for _ in range(self.remaining(n))]

    def _propose(self) -> Genome:
        if self.initial_asked < self.options.population_size:
            self.initial_asked += 1
            return self.feasible_sample()
        if not self.population:
            return self.feasible_sample()
        parent = self.tournament()
        return self.repair(self.space.mutate(parent, self.rng), lambda: self.space.mutate(parent, self.rng))

    def tournament(self) -> Genome:
        """The fittest of ``sample_size`` population members drawn with replacement (first on ties)."""
        if not self.population:
            raise StrategyError(f"{self.name}: a tournament needs a population, but it is empty")
        drawn: list[int] = self.rng.integers(len(self.population), size=self.options.sample_size).tolist()
        best = max(drawn, key=lambda index: self.population[index][1])
        return self.population[best][0]

    def tell(self, archs: Sequence[Genome], fitness: Sequence[float]) -> None:
        for genome, value in checked_tell(self, archs, fitness):
            self._update({genome: value})
            self.population.append((genome, value))
            if len(self.population) > self.options.population_size:
                self.population.pop(0)
            self.told += 1

    def refresh(self, fitness: Mapping[Genome, float]) -> None:
        self._update(checked_fitness(self, fitness))

    def _update(self, fitness: Mapping[Genome, float]) -> None:
        """Replace the fitness of members found in ``fitness``; the others keep theirs."""
        self.population = [(genome, fitness.get(genome, value)) for genome, value in self.population]

    def state_dict(self) -> dict[str, Any]:
        return {
            **state_header(self),
            "population": scored_to_state(self.population),
            "initial_asked": self.initial_asked,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_header(self, state)
        population = scored_from_state(self, state_field(self, state, "population"), "population")
        initial_asked = count_field(self, state, "initial_asked")
        restore_header(self, state)
        self.population = population
        self.initial_asked = initial_asked
