"""Simulated annealing on a rank scale with a geometric temperature schedule (SA-rk style).

The search keeps a *current* architecture and proposes mutations of it. A proposal is accepted when it
is at least as good as the current one, and otherwise with probability ``exp(delta / T_k)`` (Metropolis),
where ``delta`` is the difference of the two architectures' normalized ranks and ``T_k = T0 * alpha**k``.

Interpretations:

- Fitness enters only through normalized mid-ranks over every architecture told so far,
  ``r(f) = (#{g < f} + #{g = f} / 2) / N`` in [0, 1]: FG-NAS fitness is itself a rank aggregate whose
  scale changes with the archive, so a scale-free ``delta`` in (-1, 1) keeps ``T0`` meaningful. With the
  defaults, a proposal 10 percentile points worse is accepted with probability 1/e at first.
- ``k`` counts evaluations told before the decision, so the schedule depends on the budget spent, not on
  the batch size: ``T0 = 0.1`` and ``alpha = 0.98`` give ``T = 0.013`` after 100 evaluations (a
  1-point drop then passes with probability 0.47) and ``0.0018`` after 200 (a near-greedy search).
- The first told batch sets the current architecture to its best. A batched ``ask(n)`` proposes ``n``
  neighbours of the current architecture (distinct from each other and from every architecture told,
  while bounded attempts find such); when the batch is told, its best member is the one proposal that
  competes with the current architecture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasfleet.spaces.base import Genome
from nasfleet.strategies.base import Strategy, StrategyError, register_strategy
from nasfleet.strategies.common import (
    check_header,
    checked_fitness,
    checked_genome,
    checked_tell,
    restore_header,
    scored_from_state,
    scored_to_state,
    state_field,
    state_header,
)
from nasfleet.strategies.options import option

NEIGHBOUR_ATTEMPTS = 20


@dataclass(frozen=True)
class AnnealingOptions:
    """Options of `SimulatedAnnealing`.

    Attributes
    ----------
    initial_temperature:
        T0, on the rank scale of (-1, 1) fitness differences (default 0.1).
    cooling:
        alpha, the factor applied to the temperature after every evaluation; 1 keeps it constant
        (default 0.98).
    """

    initial_temperature: float = option(0.1, "a number > 0", lambda v: v > 0)
    cooling: float = option(0.98, "a number in (0, 1]", lambda v: 0 < v <= 1)


def normalized_rank(value: float, values: np.ndarray) -> float:
    """Mid-rank of ``value`` among ``values`` scaled to [0, 1]: ``(#below + #equal / 2) / N``."""
    below = int(np.count_nonzero(values < value))
    equal = int(np.count_nonzero(values == value))
    return (below + equal / 2) / len(values)


@register_strategy
class SimulatedAnnealing(Strategy):
    """Simulated annealing over mutations, Metropolis acceptance on normalized ranks, geometric cooling.

    Re-ranked fitness: every told value is kept in an archive that ``refresh`` updates, and ranks (hence
    every later acceptance decision, including the current architecture's standing) are computed from the
    archive's latest values.
    """

    name = "annealing"

    options_type = AnnealingOptions
    options: AnnealingOptions

    def setup(self) -> None:
        self.current: Genome | None = None
        self.archive: dict[Genome, float] = {}

    def temperature_at(self, evaluations: int) -> float:
        """``T_k = T0 * alpha**k`` after ``k`` evaluations."""
        return self.options.initial_temperature * self.options.cooling**evaluations

    @property
    def temperature(self) -> float:
        """The temperature at which the next told batch is judged."""
        return self.temperature_at(self.told)

    def ask(self, n: int) -> list[Genome]:
        count = self.remaining(n)
        if self.current is None:
            return [self.feasible_sample() for _ in range(count)]
        batch: list[Genome] = []
        for _ in range(count):
            batch.append(self._neighbour(self.current, set(batch)))
        return batch

    def _neighbour(self, current: Genome, batch: set[Genome]) -> Genome:
        """A feasible mutation of ``current``, preferably neither in ``batch`` nor told before."""

        def mutation() -> Genome:
            return self.space.mutate(current, self.rng)

        arch = self.repair(mutation(), mutation)
        for _ in range(NEIGHBOUR_ATTEMPTS):
            if arch not in batch and arch not in self.archive:
                break
            arch = self.repair(mutation(), mutation)
        return arch

    def tell(self, archs: Sequence[Genome], fitness: Sequence[float]) -> None:
        pairs = checked_tell(self, archs, fitness)
        if not pairs:
            return
        temperature = self.temperature
        self.archive.update(pairs)
        self.told += len(pairs)
        candidate = max(pairs, key=lambda pair: pair[1])[0]
        if self.current is None or self.accepts(candidate, temperature):
            self.current = candidate

    def accepts(self, candidate: Genome, temperature: float) -> bool:
        """Metropolis rule on normalized ranks; draws from the generator only for a worse candidate."""
        if self.current is None:
            raise StrategyError(f"{self.name}: acceptance needs a current architecture, but there is none")
        values = np.fromiter(self.archive.values(), dtype=float, count=len(self.archive))
        delta = normalized_rank(self.archive[candidate], values) - normalized_rank(
            self.archive[self.current], values
        )
        if delta >= 0:
            return True
        if temperature <= 0:  # alpha**k underflowed: the search has become greedy
            return False
        return bool(self.rng.random() < math.exp(delta / temperature))

    def refresh(self, fitness: Mapping[Genome, float]) -> None:
        for genome, value in checked_fitness(self, fitness).items():
            if genome in self.archive:
                self.archive[genome] = value

    def state_dict(self) -> dict[str, Any]:
        return {
            **state_header(self),
            "current": None if self.current is None else list(self.current),
            "archive": scored_to_state(self.archive.items()),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_header(self, state)
        archive = dict(scored_from_state(self, state_field(self, state, "archive"), "archive"))
        current = state_field(self, state, "current")
        genome = None if current is None else checked_genome(self, current)
        if genome is not None and genome not in archive:
            raise StrategyError(
                f"{self.name}: state field 'current' must be an architecture of the archive, "
                f"but got {current!r}"
            )
        restore_header(self, state)
        self.current, self.archive = genome, archive
