"""Checks and state helpers shared by the built-in strategies (plug-ins may use them too).

- `checked_tell` / `checked_fitness`: what ``tell`` and ``refresh`` receive, validated once: one finite
  fitness per architecture, every architecture valid for the space and in canonical form.
- `record_told` / `refresh_archive`: told and refreshed values entered into a strategy's archive.
- `state_header` / `check_header` / `restore_header`: the part of every state that identifies the
  search (strategy, format version, space, config) and resumes it (evaluations told, generator state).
- `genomes_to_state` / `genomes_from_state` and `state_field`: JSON-friendly genomes and named, checked
  access to the fields of a state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nasfleet.spaces.base import ArchitectureError, Genome
from nasfleet.strategies.base import Strategy, StrategyError

STATE_VERSION = 1


def checked_genome(strategy: Strategy, arch: Sequence[int]) -> Genome:
    """``arch`` validated against the strategy's space, in canonical form."""
    try:
        return strategy.space.validate(arch)
    except (ArchitectureError, TypeError, ValueError) as error:
        raise StrategyError(f"{strategy.name}: an architecture must belong to the space: {error}") from None


def checked_value(strategy: Strategy, arch: Genome, value: object) -> float:
    """``value`` as a float, which must be finite (fitness is compared and ranked)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StrategyError(f"{strategy.name}: fitness must be a finite number, but got {value!r} for {arch}")
    return float(value)


def checked_tell(
    strategy: Strategy, archs: Sequence[Sequence[int]], fitness: Sequence[float]
) -> list[tuple[Genome, float]]:
    """Pairs of canonical genome and finite fitness; the two sequences must have equal lengths."""
    if len(archs) != len(fitness):
        raise StrategyError(
            f"{strategy.name}: tell needs one fitness per architecture, "
            f"but got {len(archs)} architectures and {len(fitness)} values"
        )
    pairs = []
    for arch, value in zip(archs, fitness, strict=True):
        genome = checked_genome(strategy, arch)
        pairs.append((genome, checked_value(strategy, genome, value)))
    return pairs


def checked_fitness(strategy: Strategy, fitness: Mapping[Genome, float]) -> dict[Genome, float]:
    """A refresh mapping with canonical genomes and finite values."""
    checked: dict[Genome, float] = {}
    for arch, value in fitness.items():
        genome = checked_genome(strategy, arch)
        checked[genome] = checked_value(strategy, genome, value)
    return checked


def record_told(
    strategy: Strategy, archive: dict[Genome, float], archs: Sequence[Sequence[int]], fitness: Sequence[float]
) -> list[Genome]:
    """`checked_tell`, each value entered into ``archive`` and counted in ``told``; the genomes, in order."""
    genomes = []
    for genome, value in checked_tell(strategy, archs, fitness):
        archive[genome] = value
        strategy.told += 1
        genomes.append(genome)
    return genomes


def refresh_archive(
    strategy: Strategy, archive: dict[Genome, float], fitness: Mapping[Genome, float]
) -> None:
    """Replace the values of ``archive``'s architectures by their refreshed ones (`checked_fitness`)."""
    for genome, value in checked_fitness(strategy, fitness).items():
        if genome in archive:
            archive[genome] = value


def state_header(strategy: Strategy) -> dict[str, Any]:
    """What identifies a search and how far it got: include it in every ``state_dict``."""
    return {
        "strategy": strategy.name,
        "version": STATE_VERSION,
        "space": strategy.space.name,
        "genes": len(strategy.space.choices),
        "config": dict(strategy.config),
        "told": strategy.told,
        "rng": strategy.rng_state(),
    }


def check_header(strategy: Strategy, state: Mapping[str, Any]) -> None:
    """Check that ``state`` was saved by the same kind of search (strategy, format, space, config)."""
    expected = state_header(strategy)
    for key in ("strategy", "version", "space", "genes", "config"):
        found = state_field(strategy, state, key)
        if found != expected[key]:
            raise StrategyError(
                f"{strategy.name}: state field {key!r} must equal {expected[key]!r} "
                f"to resume this search, but got {found!r}"
            )
    count_field(strategy, state, "told")
    state_field(strategy, state, "rng")


def restore_header(strategy: Strategy, state: Mapping[str, Any]) -> None:
    """`check_header`, then restore ``told`` and the generator's state.

    Call `check_header` before reading a strategy's own fields (so that a state of another search is
    reported as such), and this once they are all read, so that a bad state changes nothing. The budget
    is the restored strategy's own, so a resumed search may be given a larger one.
    """
    check_header(strategy, state)
    try:
        strategy.set_rng_state(state["rng"])
    except (TypeError, ValueError, KeyError) as error:
        raise StrategyError(f"{strategy.name}: state field 'rng' is not a generator state: {error}") from None
    strategy.told = state["told"]


def state_field(strategy: Strategy, state: Mapping[str, Any], key: str) -> Any:
    """``state[key]``, or a `StrategyError` naming the missing field."""
    if not isinstance(state, Mapping) or key not in state:
        raise StrategyError(f"{strategy.name}: state must have a field {key!r}, but it is missing")
    return state[key]


def count_field(strategy: Strategy, state: Mapping[str, Any], key: str) -> int:
    """``state[key]``, which must be an integer >= 0."""
    value = state_field(strategy, state, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StrategyError(
            f"{strategy.name}: state field {key!r} must be an integer >= 0, but got {value!r}"
        )
    return value


def genomes_to_state(genomes: Iterable[Genome]) -> list[list[int]]:
    """Genomes as JSON lists."""
    return [list(genome) for genome in genomes]


def genomes_from_state(strategy: Strategy, values: object, key: str) -> list[Genome]:
    """Genomes of state field ``key``, each checked against the space."""
    if not isinstance(values, list):
        raise StrategyError(f"{strategy.name}: state field {key!r} must be a list, but got {values!r}")
    return [checked_genome(strategy, value) for value in values]


def scored_to_state(pairs: Iterable[tuple[Genome, float]]) -> list[list[Any]]:
    """(genome, fitness) pairs as JSON lists ``[[gene, ...], fitness]``."""
    return [[list(genome), value] for genome, value in pairs]


def scored_from_state(strategy: Strategy, values: object, key: str) -> list[tuple[Genome, float]]:
    """(genome, fitness) pairs of state field ``key``, each checked."""
    if not isinstance(values, list) or not all(isinstance(v, list) and len(v) == 2 for v in values):
        raise StrategyError(
            f"{strategy.name}: state field {key!r} must be a list of [genome, fitness] pairs, "
            f"but got {values!r}"
        )
    pairs = []
    for arch, value in values:
        genome = checked_genome(strategy, arch)
        pairs.append((genome, checked_value(strategy, genome, value)))
    return pairs
