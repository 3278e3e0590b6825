"""The closed loop for a fleet: rounds of zero-cost search, SubNets sent, reports back, a per-device model
that drives the next round's search.

Each device has its own search (`SearchLoop`: its strategy, archive and limits). A round is:

1. **search**: the device's search takes zero-cost steps, ``first_budget`` evaluations in round 1 and
   ``round_budget`` in each later round, until its budget is spent. Round 1 ranks by the zero-cost
   aggregate; from round 2 on the device's model ranks (`DeviceModel.predict`), so the reports steer
   where the strategy looks next;
2. **send**: the ``per_round`` archive members of highest acquisition that no device of the fleet was
   sent yet (``spread``: the fleet spreads its reports; the others' reports reach each model as the
   fleet prior), or, with ``spread`` False, that this device was not sent yet (as the service's rounds);
3. **report**: the device trains each and reports (`Report`, checked by `check_report`);
4. **fit**: every device's model is refitted to all reports of the fleet (its own with weight 1, the
   others' with ``fleet_weight``).

A device's SubNet after any round is the one it reported best (or, with ``keep`` "model", the reported
arch of highest model mean); before any report it is the zero-cost best. Rounds are synchronous: every
device searches, then every device reports, then all models refit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from nasfleet.personalization.model import DeviceModel, Observation, check_regressor, priors
from nasfleet.personalization.reports import Report, ReportError, check_report
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.search.config import SearchConfig, SearchError
from nasfleet.search.local import LocalScorer, ProxyCache, feasibility, make_strategy
from nasfleet.search.loop import Archive, SearchLoop
from nasfleet.spaces import SearchSpace


class ReportSource(Protocol):
    """A device that trains what it is sent and reports: a real client, or `BenchmarkDevice`."""

    name: str
    tenant: str

    def report(self, arch: str, round: int = 1) -> Report: ...


KEEP_RULES = ("report", "model")
"""How a device picks its SubNet among what it reported: its best report, or its model's best mean."""


@dataclass(frozen=True)
class LoopSettings:
    """How a fleet's closed loop runs; see the module docstring."""

    rounds: int = 10
    per_round: int = 1
    first_budget: int = 200
    round_budget: int = 8
    fleet_weight: float = 1.0
    kappa: float = 0.0
    regressor: str = "bayesian-ridge"
    spread: bool = True
    keep: str = "report"

    def __post_init__(self) -> None:
        check_regressor(self.regressor)
        if self.keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, but got {self.keep!r}")
        for name, low in (("rounds", 1), ("per_round", 1), ("first_budget", 1), ("round_budget", 0)):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= low):
                raise ValueError(f"{name} must be an integer >= {low}, but got {value!r}")


@dataclass(frozen=True)
class RoundRecord:
    """One device after one round: reports and zero-cost evaluations so far, its SubNet and its report."""

    round: int
    reports: int
    evaluations: int
    arch: str
    reported: float | None


@dataclass
class DeviceRun:
    """One device's search, model, what it was sent, what it reported, and its record per round."""

    source: ReportSource
    loop: SearchLoop
    scorer: LocalScorer
    model: DeviceModel
    sent: list[str] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    rounds: list[RoundRecord] = field(default_factory=list)
    error: str = ""

    def zero_cost_priors(self) -> dict[str, float]:
        """Every archive member's zero-cost prior: its rank under the aggregate in this archive."""
        archive, config = self.loop.archive, self.loop.config
        return dict(priors(archive.archs, archive.fitness(config.aggregate, config.labeled)))

    def subnet(self, keep: str = "report") -> tuple[str, float | None]:
        """The SubNet this device would get now, among the archs it reported: the one it reported best
        (``keep`` "report"), or the one of highest model mean (``keep`` "model": a single noisy report
        is shrunk toward what the device's other reports and the fleet's say); with no report yet, the
        zero-cost best. Ties go to the first reported."""
        if not self.reports:
            prior = self.zero_cost_priors()
            return max(prior, key=lambda arch: prior[arch]), None
        best = max(self.reports, key=lambda r: r.accuracy)
        if keep == "model":
            prior, archs = self.zero_cost_priors(), [r.arch for r in self.reports]
            best = self.reports[int(np.argmax(self.model.predict(archs, [prior[a] for a in archs])[0]))]
        return best.arch, best.accuracy


def model_rank(run: DeviceRun) -> Callable[[Archive], np.ndarray]:
    """The fitness a device's search ranks by from round 2 on: its model's mean over the archive."""

    def rank(archive: Archive) -> np.ndarray:
        prior = run.zero_cost_priors()
        return run.model.predict(archive.archs, [prior[a] for a in archive.archs])[0]

    return rank


def search_until(run: DeviceRun, evaluations: int) -> None:
    """Step the device's search until it has told *evaluations* archs or spent its budget."""
    loop = run.loop
    while not loop.done and loop.told < evaluations:
        step = loop.begin_step()
        loop.finish_step(step, run.scorer(step.new))


def send(run: DeviceRun, count: int, taken: set[str]) -> list[tuple[str, float]]:
    """The *count* archive members of highest acquisition that no device of the fleet was sent yet
    (*taken*, which grows by the choice), with their priors: a fleet spreads its reports."""
    prior = run.zero_cost_priors()
    archs = [a for a in prior if a not in taken]
    if not archs:
        return []
    score = run.model.acquisition(archs, [prior[a] for a in archs])
    chosen = [archs[int(i)] for i in np.argsort(-score, kind="stable")[:count]]
    run.sent.extend(chosen)
    taken.update(chosen)
    return [(arch, prior[arch]) for arch in chosen]


def run_fleet(
    space: SearchSpace,
    sources: Mapping[str, ReportSource],
    batch: ProbeBatch,
    config: SearchConfig,
    settings: LoopSettings,
    *,
    tenant: str,
    cache: ProxyCache | None = None,
) -> dict[str, DeviceRun]:
    """The closed loop for every device in *sources* (one search each, all with *config*); see the module
    docstring. A device whose report is refused (`check_report`) is left out of the later rounds, with
    the reason in its ``error``; its refused report is not used, and the other devices go on.
    """
    if config.budget < settings.first_budget:
        raise SearchError(f"budget must be >= first_budget ({settings.first_budget}), got {config.budget}")
    runs: dict[str, DeviceRun] = {}
    for name, source in sources.items():
        strategy = make_strategy(space, config, batch)
        loop = SearchLoop(space, strategy, feasibility(space, config, batch), config)
        weights = {"fleet_weight": settings.fleet_weight, "kappa": settings.kappa}
        model = DeviceModel(space, name, **weights, regressor=settings.regressor)
        runs[name] = DeviceRun(source, loop, LocalScorer(loop, batch, 1, cache), model)
    observations: list[Observation] = []
    for number in range(1, settings.rounds + 1):
        for run in runs.values():
            if not run.error:
                search_until(run, settings.first_budget + (number - 1) * settings.round_budget)
        fresh, taken = [], {o.arch for o in observations}
        for name, run in runs.items():
            taken = taken if settings.spread else set(run.sent)
            for arch, prior in [] if run.error else send(run, settings.per_round, taken):
                try:
                    report = check_report(run.source.report(arch, number), tenant, run.sent)
                except ReportError as error:  # this device only; nothing of its round is kept
                    run.error = f"round {number}: {error}"
                    break
                run.reports.append(report)
                fresh.append(Observation(name, arch, report.accuracy, prior))
        observations.extend(fresh)
        for run in runs.values():
            run.model.fit(observations)
            run.loop.rank = model_rank(run)
            arch, reported = run.subnet(settings.keep)
            run.rounds.append(RoundRecord(number, len(run.reports), run.loop.told, arch, reported))
    return runs
