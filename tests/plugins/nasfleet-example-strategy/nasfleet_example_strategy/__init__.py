"""Stochastic hill climbing: an example third-party nasfleet search strategy.

It is published through the ``nasfleet.strategies`` entry point in ``pyproject.toml`` (the entry point's
name equals ``HillClimb.name``) and is never registered by import. Everything the contract asks of a
strategy is here: validated options, feasible asks, resumable state and refreshed fitness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nasfleet.spaces.base import Genome
from nasfleet.strategies import Strategy
from nasfleet.strategies.common import (
    check_header,
    checked_fitness,
    checked_tell,
    restore_header,
    scored_from_state,
    scored_to_state,
    state_field,
    state_header,
)
from nasfleet.strategies.options import option

__all__ = ["HillClimb", "HillClimbOptions"]


@dataclass(frozen=True)
class HillClimbOptions:
    """Options of `HillClimb`.

    Attributes
    ----------
    expected_mutations:
        Genes changed per proposal on average (default 1).
    """

    expected_mutations: int = option(1, "an integer >= 1", lambda v: v >= 1)


class HillClimb(Strategy):
    """Stochastic hill climbing: mutations of the best architecture told so far.

    Re-ranked fitness: every told value is kept, ``refresh`` replaces them, and the incumbent is always
    the best architecture under the latest values.
    """

    name = "hillclimb"

    options_type = HillClimbOptions
    options: HillClimbOptions

    def setup(self) -> None:
        self.archive: dict[Genome, float] = {}

    @property
    def incumbent(self) -> Genome | None:
        """The best architecture under current fitness (the first told among equals)."""
        return max(self.archive, key=self.archive.__getitem__) if self.archive else None

    def ask(self, n: int) -> list[Genome]:
        count, incumbent = self.remaining(n), self.incumbent
        if incumbent is None:
            return [self.feasible_sample() for _ in range(count)]
        rate = min(1.0, self.options.expected_mutations / len(self.space.choices))

        def mutation() -> Genome:
            return self.space.mutate(incumbent, self.rng, rate)

        return [self.repair(mutation(), mutation) for _ in range(count)]

    def tell(self, archs: Sequence[Genome], fitness: Sequence[float]) -> None:
        for genome, value in checked_tell(self, archs, fitness):
            self.archive[genome] = value
            self.told += 1

    def refresh(self, fitness: Mapping[Genome, float]) -> None:
        for genome, value in checked_fitness(self, fitness).items():
            if genome in self.archive:
                self.archive[genome] = value

    def state_dict(self) -> dict[str, Any]:
        return {**state_header(self), "archive": scored_to_state(self.archive.items())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_header(self, state)
        archive = dict(scored_from_state(self, state_field(self, state, "archive"), "archive"))
        restore_header(self, state)
        self.archive = archive
