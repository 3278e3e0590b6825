"""Random search: uniformly random feasible architectures, without repeats while the space allows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nasfleet.spaces.base import Genome
from nasfleet.strategies.base import Strategy, register_strategy
from nasfleet.strategies.common import (
    check_header,
    checked_tell,
    genomes_from_state,
    genomes_to_state,
    restore_header,
    state_field,
    state_header,
)
from nasfleet.strategies.options import option


@dataclass(frozen=True)
class RandomOptions:
    """Options of `RandomSearch`.

    Attributes
    ----------
    avoid_repeats:
        Never propose an architecture already asked or told while unseen feasible ones turn up
        (default true). Without it, draws are independent and may repeat.
    repeat_attempts:
        Feasible draws tried for an unseen architecture before a repeat is accepted, which happens
        only once the feasible part of the space is (nearly) exhausted (default 100).
    """

    avoid_repeats: bool = option(True)
    repeat_attempts: int = option(100, "an integer >= 1", lambda v: v >= 1)


@register_strategy
class RandomSearch(Strategy):
    """Uniformly random feasible architectures, none proposed twice while the space allows.

    Fitness is never used, so ``tell`` and ``refresh`` change nothing but the count of evaluations (and
    the set of architectures seen). The seen set is part of the state, so a resumed search does not
    repeat what was asked before the interruption.
    """

    name = "random"

    options_type = RandomOptions
    options: RandomOptions

    def setup(self) -> None:
        self.seen: set[Genome] = set()

    def ask(self, n: int) -> list[Genome]:
        archs = []
        for _ in range(self.remaining(n)):
            arch = self._draw()
            self.seen.add(arch)
            archs.append(arch)
        return archs

    def _draw(self) -> Genome:
        """A feasible architecture, unseen unless ``repeat_attempts`` draws all hit seen ones."""
        arch = self.feasible_sample()
        if not self.options.avoid_repeats:
            return arch
        for _ in range(self.options.repeat_attempts - 1):
            if arch not in self.seen:
                break
            arch = self.feasible_sample()
        return arch

    def tell(self, archs: Sequence[Genome], fitness: Sequence[float]) -> None:
        pairs = checked_tell(self, archs, fitness)
        self.seen.update(genome for genome, _ in pairs)
        self.told += len(pairs)

    def state_dict(self) -> dict[str, Any]:
        return {**state_header(self), "seen": genomes_to_state(sorted(self.seen))}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_header(self, state)
        seen = genomes_from_state(self, state_field(self, state, "seen"), "seen")
        restore_header(self, state)
        self.seen = set(seen)
