"""CMA-ES (pycma) over the space's one-hot relaxation, with EG-NAS's compound fitness.

Reference: Cai, Chen, Liu, Ling and Lai, "EG-NAS: Neural Architecture Search with Fast Evolutionary
Exploration", AAAI 2024, compound fitness (eqs. 6-7). The paper's text was not at hand: the equation
numbers are as cited in issue #4, and the reading below follows the authors' code (``CFF`` in
``train_search.py`` of caicaicheng/EG-NAS), where ``mon`` = 0.4 is eta and the loss has weight 1.

Each CMA-ES run samples vectors of ``space.vector_size`` coordinates. A vector is decoded by
``space.from_vector`` (arg-max per decision), canonicalised, and repaired for feasibility by mutation
(`Strategy.repair`). cma is then told the vector it sampled, scored with the fitness of the architecture
actually evaluated: after a repair the two differ, and cma learns "this sample led to that result". cma
minimises, so it is told the negated `compound_fitness`.

Interpretations:

- Incumbent: the best architecture of the archive when a generation is sampled. It stays fixed for that
  generation; its fitness is read when the generation is told, so it is current. Its direction is its
  one-hot vector ``space.to_vector(incumbent)``. The candidate's direction is the vector cma sampled.
- Similarity (L2): the cosine similarity per decision, rescaled to [0, 1] by ``(1 + cos) / 2``
  and averaged over the decisions, as EG-NAS's code averages it per edge (`direction_similarity`).
- Sign: a candidate at least as good as the incumbent is pushed away (``- eta * L2``: diversity).
  A worse one is pulled toward it (``+ eta * L2``). The first generation has no incumbent and is scored
  ``zeta * s`` alone.
- N sampled starting directions (``starts``): ``starts`` independent CMA-ES runs, each started from the
  one-hot vector of a random feasible architecture with step size ``sigma0``. Runs take turns producing
  generations. A run restarts from a fresh sampled direction when cma's ``stop()`` fires, or when its
  samples keep decoding to evaluated architectures (``RESTART_AFTER``). EG-NAS explores from 3 samples,
  but the default here is one run. With N runs, the feedback from a generation reaches its run's next
  generation only N generations later, and at a per-device budget of tens to hundreds of evaluations a
  single run learns faster. Restarts still bring in further sampled directions.
- Duplicates: a sample that decodes to an architecture already evaluated (or already waiting for
  evaluation) is not handed out again; it is scored with the archive's fitness. If nothing new turns up
  for ``FORCE_AFTER`` batches of samples in a row, one of them is evaluated again, so ``ask`` always
  completes.
- A batched ``ask(n)`` that goes past every run's current generation adds samples to a generation
  (``es.ask(number=1)``). cma accepts a generation of more than ``popsize`` vectors.
- Re-ranked fitness: `refresh` replaces the archive's values, which reach the incumbent and every
  generation not yet told to cma. What cma has already been told stays as it was: the refresh only
  affects future tells.

Randomness and state: each run draws its samples from its own Generator, seeded from the strategy's,
and is stored as its start and a log that `nasfleet.strategies.cmaes_runs.replay` rebuilds it from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasfleet.spaces.base import Genome
from nasfleet.strategies.base import Strategy, StrategyError, register_strategy
from nasfleet.strategies.cmaes_runs import (
    STATUSES,
    GaussianSource,
    Generation,
    LogEvent,
    Run,
    new_cma,
    replay,
)
from nasfleet.strategies.common import (
    count_field,
    record_told,
    refresh_archive,
    restore_header,
    scored_from_state,
    scored_to_state,
    state_field,
    state_header,
)
from nasfleet.strategies.options import option

__all__ = [
    "FORCE_AFTER",
    "RESTART_AFTER",
    "STATUSES",
    "CMAESOptions",
    "CMAESStrategy",
    "GaussianSource",
    "Generation",
    "LogEvent",
    "Run",
    "compound_fitness",
    "direction_similarity",
]

RESTART_AFTER = 10
FORCE_AFTER = 30


@dataclass(frozen=True)
class CMAESOptions:
    """Options of `CMAESStrategy`.

    Attributes
    ----------
    popsize:
        lambda, the samples per generation; 0 takes pycma's default ``4 + floor(3 ln D)`` (default 0).
    starts:
        N, the independent runs started from sampled directions (default 1; see the module docstring).
    sigma0:
        The initial step size on the one-hot scale (default 1.0: on synthetic NB201 objectives at budgets
        of 60 to 100 evaluations it beat 0.3, 0.5 and 0.7).
    zeta:
        The weight of the told fitness in the compound fitness (default 1.0).
    eta:
        The weight of the similarity term (default 0.4, as EG-NAS), in units of fitness.
    """

    popsize: int = option(0, "0 (pycma's default) or an integer >= 2", lambda v: v == 0 or v >= 2)
    starts: int = option(1, "an integer >= 1", lambda v: v >= 1)
    sigma0: float = option(1.0, "a number > 0", lambda v: v > 0)
    zeta: float = option(1.0, "a number > 0", lambda v: v > 0)
    eta: float = option(0.4, "a number >= 0", lambda v: v >= 0)


def direction_similarity(candidate: np.ndarray, incumbent: np.ndarray, choices: Sequence[int]) -> float:
    """L2 of EG-NAS's compound fitness (eqs. 6-7): the cosine similarity of each decision's block of
    coordinates, rescaled to [0, 1] as ``(1 + cos) / 2`` and averaged over decisions with two or more
    options. A zero block has cosine 0 (similarity 1/2). With no decision to compare, it is 1/2."""
    total, count, offset = 0.0, 0, 0
    for n in choices:
        a, b = candidate[offset : offset + n], incumbent[offset : offset + n]
        offset += n
        if n < 2:
            continue
        norms = float(np.linalg.norm(a) * np.linalg.norm(b))
        total += (1.0 + (float(a @ b) / norms if norms > 0 else 0.0)) / 2.0
        count += 1
    return total / count if count else 0.5


def compound_fitness(
    score: float, incumbent_score: float | None, similarity: float, zeta: float, eta: float
) -> float:
    """EG-NAS's compound fitness (eqs. 6-7), higher is better: ``zeta * s - eta * L2`` for a candidate at
    least as good as the incumbent (a push away, for diversity), and ``zeta * s + eta * L2`` for a worse
    one (a pull toward it). Without an incumbent it is ``zeta * s``."""
    if incumbent_score is None:
        return zeta * score
    return zeta * score - eta * similarity if score >= incumbent_score else zeta * score + eta * similarity


@register_strategy
class CMAESStrategy(Strategy):
    """CMA-ES on the one-hot relaxation with EG-NAS's compound fitness and several sampled starts."""

    name = "cmaes"

    options_type = CMAESOptions
    options: CMAESOptions

    def setup(self) -> None:
        self.archive: dict[Genome, float] = {}
        self.runs: list[Run] = []
        self.generations: list[Generation] = []
        self.turn = 0  # the run whose turn it is to open a generation
        self.stale = 0  # batches of samples in a row that brought nothing new

    # -- ask / tell / refresh ----------------------------------------------------------------------------
    def ask(self, n: int) -> list[Genome]:
        wanted = self.remaining(n)
        if wanted and not self.runs:
            self.runs = [self._new_run(epoch=0) for _ in range(self.options.starts)]
        asked: list[Genome] = []
        while len(asked) < wanted:
            slot = self._slot("pending")
            if slot is None:
                self._supply()
                continue
            generation, index = slot
            generation.status[index] = "asked"
            asked.append(generation.archs[index])
        return asked

    def tell(self, archs: Sequence[Genome], fitness: Sequence[float]) -> None:
        """Record fitness; an architecture that is not an asked sample only enters the archive."""
        for genome in record_told(self, self.archive, archs, fitness):
            slot = self._slot("asked", genome)
            if slot is not None:
                slot[0].status[slot[1]] = "told"
        self._flush()

    def refresh(self, fitness: Mapping[Genome, float]) -> None:
        """Replace the archive's values; only generations not yet told to cma see them."""
        refresh_archive(self, self.archive, fitness)

    def _slot(self, status: str, arch: Genome | None = None) -> tuple[Generation, int] | None:
        """The first sample with ``status`` (and architecture ``arch``, if given) of the open generations."""
        for generation in self.generations:
            index = generation.slot(status, arch)
            if index is not None:
                return generation, index
        return None

    # -- sampling ----------------------------------------------------------------------------------------
    def _new_run(self, epoch: int) -> Run:
        mean0 = self.space.to_vector(self.feasible_sample()).tolist()
        seed = int(self.rng.integers(2**63))
        return Run(mean0, seed, epoch, [], self._cma(mean0, seed))

    def _cma(self, mean0: Sequence[float], seed: int) -> Any:
        return new_cma(mean0, seed, self.options.sigma0, self.options.popsize)

    def _supply(self) -> None:
        """Open a generation for the next idle run, or add a sample to the oldest open generation."""
        busy = {generation.run for generation in self.generations}
        idle = [(self.turn + k) % len(self.runs) for k in range(len(self.runs))]
        idle = [index for index in idle if index not in busy]
        if idle:
            run = self.runs[idle[0]]
            self.turn = (idle[0] + 1) % len(self.runs)
            incumbent = max(self.archive, key=self.archive.__getitem__) if self.archive else None
            generation = Generation(idle[0], run.epoch, incumbent)
            self.generations.append(generation)
            self._add_samples(generation, run, 0)
        else:
            generation = self.generations[0]
            self._add_samples(generation, self.runs[generation.run], 1)
        self._flush()

    def _add_samples(self, generation: Generation, run: Run, number: int) -> None:
        """Ask ``run`` for a whole generation (``number`` 0) or ``number`` more samples, and decode them."""
        vectors = run.es.ask() if number == 0 else run.es.ask(number=number)
        run.log.append(number)
        waiting = set[Genome]().union(*(g.waiting() for g in self.generations))
        first = len(generation.archs)
        for vector in vectors:
            arch = self._decode(vector)
            known = arch in self.archive or arch in waiting or arch in generation.archs
            generation.vectors.append(np.asarray(vector, dtype=float))
            generation.archs.append(arch)
            generation.status.append("known" if known else "pending")
        if "pending" in generation.status[first:]:
            self.stale = 0
            return
        self.stale += 1
        if self.stale >= FORCE_AFTER:  # nothing new to find: evaluate one sample again
            generation.status[first], self.stale = "pending", 0
        elif self.stale % RESTART_AFTER == 0:
            generation.restart = True

    def _decode(self, vector: np.ndarray) -> Genome:
        """The canonical arg-max architecture of ``vector``, repaired for feasibility by mutation."""
        arch = self.space.from_vector(vector)
        return self.repair(arch, lambda: self.space.mutate(arch, self.rng))

    def _flush(self) -> None:
        """Tell cma every open generation whose samples all have fitness, then restart runs that stopped."""
        for generation in [g for g in self.generations if g.complete(self.archive)]:
            run = self.runs[generation.run]
            if generation.epoch == run.epoch:
                values = [-self._compound(generation, i) for i in range(len(generation.archs))]
                run.es.tell(generation.vectors, values)
                run.log.append(values)
                if generation.restart or run.es.stop():
                    self.runs[generation.run] = self._new_run(run.epoch + 1)
            self.generations.remove(generation)

    def _compound(self, generation: Generation, index: int) -> float:
        score, incumbent = self.archive[generation.archs[index]], generation.incumbent
        if incumbent is None:
            return compound_fitness(score, None, 0.0, self.options.zeta, self.options.eta)
        similarity = direction_similarity(
            generation.vectors[index], self.space.to_vector(incumbent), self.space.choices
        )
        return compound_fitness(
            score, self.archive[incumbent], similarity, self.options.zeta, self.options.eta
        )

    # -- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **state_header(self),
            "archive": scored_to_state(self.archive.items()),
            "turn": self.turn,
            "stale": self.stale,
            "runs": [run.to_state() for run in self.runs],
            "generations": [generation.to_state() for generation in self.generations],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        archive = dict(scored_from_state(self, state_field(self, state, "archive"), "archive"))
        turn, stale = count_field(self, state, "turn"), count_field(self, state, "stale")
        try:
            runs = [Run.from_state(entry) for entry in state_field(self, state, "runs")]
            generations = [
                Generation.from_state(self, entry) for entry in state_field(self, state, "generations")
            ]
        except (KeyError, TypeError, ValueError) as error:
            raise StrategyError(
                f"{self.name}: state field 'runs' or 'generations' is malformed: {error}"
            ) from None
        if any(g.run >= len(runs) for g in generations):
            raise StrategyError(f"{self.name}: state field 'generations' names a run that 'runs' lacks")
        told, rng = self.told, self.rng_state()
        restore_header(self, state)
        try:
            for index, run in enumerate(runs):
                opened = [g for g in generations if g.run == index and g.epoch == run.epoch]
                replay(self.name, run, self._cma(run.mean0, run.seed), opened)
        except StrategyError:
            self.told = told
            self.set_rng_state(rng)
            raise
        self.archive, self.runs, self.generations, self.turn, self.stale = (
            archive,
            runs,
            generations,
            turn,
            stale,
        )
