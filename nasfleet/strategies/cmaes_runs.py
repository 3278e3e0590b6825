"""The bookkeeping of `CMAESStrategy`'s CMA-ES runs: runs, open generations, and their JSON state.

A `Run` is one pycma ``CMAEvolutionStrategy`` with its start (mean, seed) and a log of its ``ask``/``tell``
calls; a `Generation` is the open samples of one run, their architectures and their ask/tell status.
Each run draws its normal samples from its own numpy Generator (pycma's ``randn`` option,
`GaussianSource`), so pycma's global ``np.random`` seeding is never used. `replay` rebuilds a run from
its log on a fresh ``CMAEvolutionStrategy``: pycma is deterministic given its samples, so the replay
rebuilds the run bit for bit, and the open generations' vectors are checked against it. This keeps the
state plain JSON with no pickles, at the cost of a replay of a few milliseconds per generation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cma
import numpy as np

from nasfleet.spaces.base import Genome
from nasfleet.strategies.base import Strategy, StrategyError
from nasfleet.strategies.common import genomes_from_state

STATUSES = ("pending", "asked", "told", "known")
LogEvent = int | list[float]  # an ask (0: a whole generation, k > 0: k extra samples) or the values told


class GaussianSource:
    """pycma's ``randn`` option: standard normal samples of shape ``(number, dimension)`` from a seeded
    numpy Generator."""

    def __init__(self, seed: int) -> None:
        self.generator = np.random.default_rng(seed)

    def __call__(self, *shape: int) -> np.ndarray:
        return self.generator.standard_normal(shape)


def new_cma(mean0: Sequence[float], seed: int, sigma0: float, popsize: int) -> Any:
    """A silent pycma run from ``mean0`` with step size ``sigma0``, sampling from `GaussianSource`
    (``seed``); ``popsize`` 0 keeps pycma's default."""
    options: dict[str, Any] = {"randn": GaussianSource(seed), "seed": np.nan, "verbose": -9}
    options |= {"verb_disp": 0, "verb_log": 0}
    if popsize:
        options["popsize"] = popsize
    return cma.CMAEvolutionStrategy(np.asarray(mean0, dtype=float), sigma0, options)


@dataclass
class Run:
    """One CMA-ES run: its start, the log that replays it, and the live pycma object."""

    mean0: list[float]
    seed: int
    epoch: int  # restarts of this run so far: generations of an older epoch are never told to cma
    log: list[LogEvent] = field(default_factory=list)
    es: Any = None

    def to_state(self) -> dict[str, Any]:
        return {"mean0": self.mean0, "seed": self.seed, "epoch": self.epoch, "log": self.log}

    @classmethod
    def from_state(cls, entry: Mapping[str, Any]) -> Run:
        """A run of `to_state` output, not yet replayed; KeyError, TypeError or ValueError if malformed."""
        return cls(
            [float(x) for x in entry["mean0"]], int(entry["seed"]), int(entry["epoch"]), list(entry["log"])
        )


@dataclass
class Generation:
    """The samples of one run's open generation, their architectures and their ask/tell status."""

    run: int
    epoch: int
    incumbent: Genome | None
    vectors: list[np.ndarray] = field(default_factory=list)
    archs: list[Genome] = field(default_factory=list)
    status: list[str] = field(default_factory=list)  # pending -> asked -> told; known: no evaluation
    restart: bool = False  # restart the run once this generation is told

    def slot(self, status: str, arch: Genome | None = None) -> int | None:
        """The index of the first sample with ``status`` (and architecture ``arch``, if given)."""
        for index, (candidate, current) in enumerate(zip(self.archs, self.status, strict=True)):
            if current == status and arch in (None, candidate):
                return index
        return None

    def waiting(self) -> set[Genome]:
        """The architectures handed out or about to be, whose fitness has not been told."""
        return {a for a, s in zip(self.archs, self.status, strict=True) if s in ("pending", "asked")}

    def complete(self, archive: Mapping[Genome, float]) -> bool:
        """True once every sample has fitness: told, or known and in ``archive``."""
        return all(
            status == "told" or (status == "known" and arch in archive)
            for arch, status in zip(self.archs, self.status, strict=True)
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "epoch": self.epoch,
            "incumbent": None if self.incumbent is None else list(self.incumbent),
            "vectors": [vector.tolist() for vector in self.vectors],
            "archs": [list(arch) for arch in self.archs],
            "status": list(self.status),
            "restart": self.restart,
        }

    @classmethod
    def from_state(cls, strategy: Strategy, entry: Mapping[str, Any]) -> Generation:
        """A generation of `to_state` output, its genomes checked against ``strategy``'s space."""
        status = [str(s) for s in entry["status"]]
        if any(s not in STATUSES for s in status):
            raise ValueError(f"a status must be one of {STATUSES}, but got {status}")
        incumbent = entry["incumbent"]
        return cls(
            int(entry["run"]),
            int(entry["epoch"]),
            None if incumbent is None else genomes_from_state(strategy, [incumbent], "incumbent")[0],
            [np.asarray(vector, dtype=float) for vector in entry["vectors"]],
            genomes_from_state(strategy, entry["archs"], "archs"),
            status,
            bool(entry["restart"]),
        )


def replay(name: str, run: Run, es: Any, open_generations: list[Generation]) -> None:
    """Rebuild ``run`` on the fresh pycma object ``es`` from its log; the samples still open must come out
    exactly as saved (else a `StrategyError` of strategy ``name``)."""
    run.es = es
    pending: list[np.ndarray] = []
    for event in run.log:
        if isinstance(event, list):
            run.es.tell(pending, event)
            run.es.stop()
            pending = []
        else:
            pending += list(run.es.ask() if event == 0 else run.es.ask(number=event))
    saved = [vector for generation in open_generations for vector in generation.vectors]
    if len(saved) != len(pending) or not all(map(np.array_equal, saved, pending)):
        raise StrategyError(
            f"{name}: the saved CMA-ES log does not replay to the saved samples "
            "(a different pycma or numpy version?)"
        )
    for generation in open_generations:  # hand pycma back its own sample objects
        generation.vectors, pending = pending[: len(generation.vectors)], pending[len(generation.vectors) :]
