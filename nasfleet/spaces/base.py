"""The search-space contract every space implements.

An architecture is a *genome*: a tuple of integers, one per decision, where decision ``i`` has
``choices[i]`` options. Genomes are what strategies manipulate; canonical strings (``encode``/``decode``)
are what crosses the wire and what the registry stores. The generic operators here (``sample``,
``mutate``, ``crossover``, ``to_vector``/``from_vector``) work for any space from its ``choices``
and ``segments``; a space overrides ``canonical`` when some genes can be inactive (e.g. blocks beyond
a stage's depth), so that two genomes describing the same network compare equal after it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import nn

Genome = tuple[int, ...]
InputShape = tuple[int, int, int]


class ArchitectureError(ValueError):
    """An architecture string or genome that does not belong to a space."""


@dataclass(frozen=True)
class Cost:
    """Exact size of a network: parameters and multiply-accumulates for one input sample."""

    params: int
    flops: int


@dataclass(frozen=True)
class Segment:
    """A named, contiguous range of genes that segment-wise genetic operators treat as one unit."""

    name: str
    start: int
    stop: int

    @property
    def genes(self) -> range:
        return range(self.start, self.stop)


class SearchSpace(ABC):
    """Contract of a search space: genome layout, canonical strings, builder and exact cost."""

    name: ClassVar[str]
    #: Bumped whenever a change of definition (or of a default option) changes the network an existing
    #: arch string denotes: cached proxy values are keyed on it, so they are never reused across the change.
    revision: ClassVar[int] = 1

    @property
    @abstractmethod
    def choices(self) -> tuple[int, ...]:
        """Number of options of each decision, in genome order."""

    @property
    @abstractmethod
    def segments(self) -> tuple[Segment, ...]:
        """Partition of the genome into named segments, in genome order."""

    @abstractmethod
    def encode(self, arch: Genome) -> str:
        """Canonical string of a genome; ``decode(encode(a)) == canonical(a)``."""

    @abstractmethod
    def decode(self, text: str) -> Genome:
        """Genome of a canonical string; raises `ArchitectureError` saying what is wrong."""

    @abstractmethod
    def build(self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> nn.Module:
        """A freshly initialised network for ``arch``; its ``main_blocks`` lists the blocks proxies read."""

    @abstractmethod
    def cost(self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> Cost:
        """Exact parameter and FLOP (multiply-accumulate) counts, without building the network."""

    def cheapest(self, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> Genome:
        """The architecture of least cost, (params, FLOPs) in that order, found by coordinate descent.

        From the all-zero genome, each pass sets every gene in turn to its cheapest option given the
        others, until a pass changes nothing. Exact when each gene's cheapest option does not depend on the
        others, as in both built-in spaces (narrowest width, fewest blocks, smallest expansion and kernel;
        the ``none`` op); a space where it does should override this, since errors call it the cheapest.
        """

        def key(arch: Genome) -> tuple[int, int]:
            cost = self.cost(arch, num_classes, input_shape)
            return cost.params, cost.flops

        best = self.canonical((0,) * len(self.choices))
        best_key, changed = key(best), True
        while changed:
            changed = False
            for index, options in enumerate(self.choices):
                for option in range(options):
                    candidate = self.canonical((*best[:index], option, *best[index + 1 :]))
                    if candidate != best and (candidate_key := key(candidate)) < best_key:
                        best, best_key, changed = candidate, candidate_key, True
        return best

    def canonical(self, arch: Genome) -> Genome:
        """The representative genome of ``arch``'s network; spaces with inactive genes override this."""
        return arch

    def validate(self, arch: Sequence[int]) -> Genome:
        """Check a genome's length and gene ranges and return its canonical form."""
        genome = tuple(int(g) for g in arch)
        if len(genome) != len(self.choices):
            raise ArchitectureError(
                f"{self.name}: a genome has {len(self.choices)} genes, but got {len(genome)}: {genome}"
            )
        for index, (gene, n) in enumerate(zip(genome, self.choices, strict=True)):
            if not 0 <= gene < n:
                raise ArchitectureError(f"{self.name}: gene {index} must lie in [0, {n}), but got {gene}")
        return self.canonical(genome)

    def sample(self, rng: np.random.Generator) -> Genome:
        """A uniformly random genome (uniform per decision), in canonical form."""
        return self.canonical(tuple(int(rng.integers(n)) for n in self.choices))

    def mutate(self, arch: Genome, rng: np.random.Generator, rate: float | None = None) -> Genome:
        """Resample each gene with probability ``rate`` (default 1/len); the result always differs.

        Genes are resampled to a *different* option, and mutation repeats until the canonical genome
        changes, so a mutation never silently returns its parent.
        """
        rate = 1.0 / len(self.choices) if rate is None else rate
        parent = self.canonical(arch)
        mutable = [i for i, n in enumerate(self.choices) if n > 1]
        while True:
            child = list(parent)
            chosen = [i for i in mutable if rng.random() < rate] or [mutable[int(rng.integers(len(mutable)))]]
            for i in chosen:
                child[i] = (child[i] + 1 + int(rng.integers(self.choices[i] - 1))) % self.choices[i]
            result = self.canonical(tuple(child))
            if result != parent:
                return result

    def crossover(self, a: Genome, b: Genome, rng: np.random.Generator) -> tuple[Genome, Genome]:
        """Segment-wise uniform crossover: each segment of the children comes whole from one parent."""
        child_a, child_b = list(a), list(b)
        for segment in self.segments:
            if rng.random() < 0.5:
                child_a[segment.start : segment.stop] = b[segment.start : segment.stop]
                child_b[segment.start : segment.stop] = a[segment.start : segment.stop]
        return self.canonical(tuple(child_a)), self.canonical(tuple(child_b))

    @property
    def vector_size(self) -> int:
        """Length of the continuous relaxation: one coordinate per option of every decision."""
        return int(sum(self.choices))

    def to_vector(self, arch: Genome) -> np.ndarray:
        """One-hot relaxation: for each decision a block of ``choices[i]`` coordinates."""
        vector = np.zeros(self.vector_size)
        offset = 0
        for gene, n in zip(arch, self.choices, strict=True):
            vector[offset + gene] = 1.0
            offset += n
        return vector

    def from_vector(self, vector: np.ndarray) -> Genome:
        """Decode a relaxation by taking the arg-max of each decision's block (first index on ties)."""
        values = np.asarray(vector, dtype=float)
        if values.shape != (self.vector_size,) or not np.all(np.isfinite(values)):
            raise ArchitectureError(
                f"{self.name}: a vector must hold {self.vector_size} finite values, "
                f"but got shape {values.shape}"
            )
        genes, offset = [], 0
        for n in self.choices:
            genes.append(int(np.argmax(values[offset : offset + n])))
            offset += n
        return self.canonical(tuple(genes))


def check_input_shape(input_shape: Sequence[int], num_classes: int) -> InputShape:
    """Validate the (channels, height, width) of an input and a class count."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"input_shape must be three positive integers (C, H, W), but got {tuple(input_shape)}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, but got {num_classes}")
    return shape[0], shape[1], shape[2]
