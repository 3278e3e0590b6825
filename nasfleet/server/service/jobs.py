"""One search job as the orchestrator runs it: options, strategy, archive, one step at a time, resumable.

A step keeps `nasfleet.search`'s order of operations, the contract a strategy relies on: ask; check
every asked arch is valid and feasible (a breach is the strategy's error and fails the job, never a
silent skip); find raw values for the archs new to the job's archive (the orchestrator answers them from
the evaluation cache or the workers); recompute the aggregate over the whole archive (FG-NAS ranks are
relative to the population); tell the asked archs' current fitness; refresh every archive member's.

After every step, `JobRun.finish_step` stores, in one registry transaction (`Registry.checkpoint`), the
step's evaluations, the job state (the strategy's `state_dict`, the archive's arch order and the history)
and the count told, so the stored state never runs ahead of its evaluations. `JobRun` built from a record
with a stored state resumes there: the strategy from its state, the archive from the job's evaluations in
the stored order. The next ask is then the one an uninterrupted run would have made, so the search ends
the same (raw values are bit-identical wherever they are computed: one torch thread, fixed seeds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nasfleet.clients.device import latency_model
from nasfleet.protocol.checks import check_integer, known_keys, safe_name, text
from nasfleet.protocol.messages import DataCharacteristics, DeviceProfile, ResourceConstraints
from nasfleet.search import (
    ArchiveEntry,
    HistoryEntry,
    SearchConfig,
    SearchError,
    SearchResult,
    archive_fitness,
    check_asked,
    timed,
)
from nasfleet.search.limits import search_constraints
from nasfleet.server.registry import (
    CacheEntry,
    CacheKey,
    EvaluationRecord,
    JobRecord,
    Registry,
    ResultRecord,
)
from nasfleet.server.service.tasks import (
    ScoringSpec,
    decode_characteristics,
    encode_characteristics,
)
from nasfleet.spaces import Genome, get_space
from nasfleet.strategies.base import Feasibility
from nasfleet.strategies.discovery import get_strategy

STATE_VERSION = 1
CACHE_WORKER = "cache"
MAX_ASK_SIZE = 1024
MAX_PROBE_BATCH = 4096
MAX_SEED = 2**32 - 1
SPACE_OPTIONS = {"channels": (1, 1024), "cells_per_stage": (1, 16)}
#: The keys `submit_job` stores in a job's options: `JobOptions`' fields and what travels beside them.
STORED_OPTIONS = ("ask_size", "aggregate", "batch_size", "probe_batch", "scoring_seed", "space_options",
                  "probe_data", "labeled", "characteristics", "profile")  # fmt: skip


@dataclass(frozen=True)
class JobOptions:
    """A job's search settings beyond the registry's columns, stored in its ``options``.

    ``batch_size`` and ``scoring_seed`` fix the probe batch and the network initialisation; ``probe_data``
    is "" for the synthetic batch rebuilt from the job's characteristics, or a dataset spec (``cifar10``,
    ``digits``, ``synthetic:N``...) whose train split gives a seeded real-data probe batch, as ``nasfleet
    search --data`` scores. All three are part of the cache key (`ScoringSpec`), so jobs that share them
    (and the characteristics) share evaluations, whatever their strategies and seeds.

    Ranges, checked on construction (a `MessageError` naming the field, the rule and the value):
    ``ask_size`` in [1, 1024]; ``batch_size`` in [2, 4096]; ``scoring_seed`` in [0, 2**32 - 1];
    ``aggregate`` 1-64 characters of [A-Za-z0-9_.-]; ``probe_data`` "" or 1-4096 printable characters;
    ``space_options`` only ``channels`` in [1, 1024] and ``cells_per_stage`` in [1, 16].
    """

    ask_size: int = 8
    aggregate: str = "fgnas"
    batch_size: int = 16
    scoring_seed: int = 0
    space_options: Mapping[str, Any] = field(default_factory=dict)
    probe_data: str = ""

    def __post_init__(self) -> None:
        check_integer("ask_size", self.ask_size, 1, MAX_ASK_SIZE)
        check_integer("batch_size", self.batch_size, 2, MAX_PROBE_BATCH)
        check_integer("scoring_seed", self.scoring_seed, 0, MAX_SEED)
        safe_name({"aggregate": self.aggregate}, "aggregate")
        if self.probe_data != "":
            text({"probe_data": self.probe_data}, "probe_data", 4096)
        known_keys(self.space_options, SPACE_OPTIONS, "space_options")
        for key, (low, high) in SPACE_OPTIONS.items():
            if key in self.space_options:
                check_integer(f"space_options.{key}", self.space_options[key], low, high)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> JobOptions:
        """The options a job stored (`submit_job`): no other keys, no coercion, every range checked."""
        known_keys(options, STORED_OPTIONS, "options")
        defaults = cls()
        return cls(
            options.get("ask_size", defaults.ask_size),
            options.get("aggregate", defaults.aggregate),
            options.get("batch_size", options.get("probe_batch", defaults.batch_size)),
            options.get("scoring_seed", defaults.scoring_seed),
            dict(options.get("space_options") or {}),
            options.get("probe_data") or "",
        )


def submit_job(
    registry: Registry, tenant: str, characteristics: DataCharacteristics, *, space: str = "nb201",
    strategy: str = "evolution", budget: int = 24, seed: int = 0,
    strategy_config: Mapping[str, Any] | None = None, constraints: ResourceConstraints | None = None,
    profile: DeviceProfile | None = None, options: JobOptions | None = None, device: str | None = None,
) -> JobRecord:  # fmt: skip
    """Open a queued job for *tenant* with everything a worker and a resuming orchestrator need."""
    registry.create_tenant(tenant, exist_ok=True)
    stored: dict[str, Any] = {
        **asdict(options or JobOptions()),
        "labeled": characteristics.labeled,
        "characteristics": encode_characteristics(characteristics),
    }
    if profile is not None:
        stored["profile"] = profile.to_wire()[0]
    return registry.create_job(
        tenant, space=space, strategy=strategy, characteristics_hash=characteristics.digest(),
        budget=budget, seed=seed, strategy_config=strategy_config,
        constraints=(constraints or ResourceConstraints()).to_wire()[0], options=stored, device=device,
    )  # fmt: skip


@dataclass
class Step:
    """One step in flight: the asked archs and the raw values found so far for the new ones."""

    genomes: list[Genome]
    archs: list[str]
    keys: dict[str, CacheKey]
    entries: dict[str, CacheEntry] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return [arch for arch in self.keys if arch not in self.entries]


class Archive:
    """The job's scored archs in the order first evaluated, with raw values: what the aggregate ranks."""

    def __init__(self, proxy_names: Sequence[str]) -> None:
        self.proxy_names = tuple(proxy_names)
        self.archs: list[str] = []
        self.genomes: list[Genome] = []
        self.entries: list[CacheEntry] = []
        self.steps: list[int] = []
        self.index: dict[str, int] = {}

    def __contains__(self, arch: str) -> bool:
        return arch in self.index

    def add(self, arch: str, genome: Genome, entry: CacheEntry, step: int) -> None:
        self.index[arch] = len(self.archs)
        self.archs.append(arch)
        self.genomes.append(genome)
        self.entries.append(entry)
        self.steps.append(step)

    def fitness(self, aggregate: str, labeled: bool) -> np.ndarray:
        """The aggregate over the whole archive, one value per member in archive order."""
        values = {name: [e.values[name] for e in self.entries] for name in self.proxy_names}
        return archive_fitness(self.archs, values, aggregate, labeled)


class JobRun:
    """A job being searched: built from its registry record (resuming a stored state), stepped, finished."""

    def __init__(self, record: JobRecord, registry: Registry) -> None:
        self.record, self.registry = record, registry
        self.options = JobOptions.from_options(record.options)
        self.characteristics = decode_characteristics(record.options.get("characteristics"))
        digest = self.characteristics.digest()
        if digest != record.characteristics_hash:
            raise SearchError(f"job {record.id}: stored characteristics hash to {digest}, "
                              f"but the job names {record.characteristics_hash}")  # fmt: skip
        self.space = get_space(record.space, self.options.space_options)
        self.feasible = self._feasibility()
        scoring_seed = None if self.options.scoring_seed == record.seed else self.options.scoring_seed
        self.config = SearchConfig(
            record.space, record.strategy, record.budget, record.seed, self.options.ask_size,
            record.strategy_config, self.characteristics.labeled, self.options.aggregate,
            self.feasible.constraints, scoring_seed,
        )  # fmt: skip
        self.strategy = get_strategy(
            record.strategy,
            self.space,
            record.seed,
            record.budget,
            self.config.strategy_config,
            self.feasible,
        )
        self.scoring = ScoringSpec(record.space, self.config.proxy_names, self.options.batch_size,
                                   self.options.scoring_seed, dict(self.options.space_options),
                                   self.options.probe_data)  # fmt: skip
        self.proxy_config_hash = self.scoring.digest()
        self.archive = Archive(self.config.proxy_names)
        self.history: list[HistoryEntry] = []
        self.told = 0
        self.step: Step | None = None
        self.seconds = {"strategy": 0.0, "aggregation": 0.0}  # this process's share, for `search_result`
        if record.strategy_state is not None:
            self._resume(record.strategy_state)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def tenant(self) -> str:
        return self.record.tenant

    @property
    def done(self) -> bool:
        return self.strategy.done

    def _feasibility(self) -> Feasibility:
        shape, classes = self.characteristics.input_shape, self.characteristics.num_classes
        wire = self.record.options.get("profile")
        if wire is None and self.record.device is not None:
            devices = self.registry.list_devices(self.record.tenant)
            wire = next((d.profile for d in devices if d.name == self.record.device and d.profile), None)
        profile = DeviceProfile.from_wire(wire) if wire else None
        stored = self.record.constraints
        limits = search_constraints(
            ResourceConstraints.from_wire(stored) if stored else ResourceConstraints(), profile
        )
        latency = latency_model(profile, self.space, classes, shape) if profile is not None else None
        return Feasibility(self.space, limits, classes, shape, latency)

    def _resume(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise SearchError(f"job state version must be {STATE_VERSION}, but got {state.get('version')!r}")
        stored = {e.arch: e for e in self.registry.evaluations(self.id)}
        for arch, step in zip(state["archive"], state["steps"], strict=True):
            if arch not in stored:
                raise SearchError(f"job {self.id}: its state lists {arch}, which has no stored evaluation")
            evaluation = stored[arch]
            entry = CacheEntry(self.key(arch), evaluation.values, evaluation.params, evaluation.flops)
            self.archive.add(arch, self.space.decode(arch), entry, step)
        self.history = [HistoryEntry(**entry) for entry in state["history"]]
        self.strategy.load_state_dict(state["strategy"])
        self.told = self.record.evaluations_done

    def key(self, arch: str) -> CacheKey:
        return CacheKey(arch, self.record.characteristics_hash, self.proxy_config_hash)

    # -- one step --------------------------------------------------------------------------------------------
    def begin_step(self) -> Step:
        """Ask the strategy; the step's new archs (in ask order, once each) still need raw values."""
        with timed(self.seconds, "strategy"):
            asked = self.strategy.ask(self.config.ask_size)
            left = self.config.budget - self.told
            genomes = check_asked(self.strategy, asked, self.feasible, self.config.ask_size, left)
        archs = [self.space.encode(genome) for genome in genomes]
        new = dict.fromkeys(arch for arch in archs if arch not in self.archive)
        self.step = Step(genomes, archs, {arch: self.key(arch) for arch in new})
        return self.step

    def finish_step(self) -> HistoryEntry:
        """Aggregate over the archive, tell, refresh and checkpoint; the step must have every value."""
        step = self.step
        assert step is not None and not step.missing, "a step finishes once every new arch has values"
        added = []
        for arch in step.keys:
            self.archive.add(arch, self.space.decode(arch), step.entries[arch], len(self.history) + 1)
            added.append(step.entries[arch])
        with timed(self.seconds, "aggregation"):
            fitness = self.archive.fitness(self.config.aggregate, self.config.labeled)
        with timed(self.seconds, "strategy"):
            told = [float(fitness[self.archive.index[arch]]) for arch in step.archs]
            self.strategy.tell(step.genomes, told)
            self.strategy.refresh(dict(zip(self.archive.genomes, fitness.tolist(), strict=True)))
        self.told += len(step.genomes)
        best = int(np.argmax(fitness))  # the first of equal scores: the earliest evaluated
        entry = HistoryEntry(len(self.history) + 1, self.told, self.archive.archs[best], float(fitness[best]))
        self.history.append(entry)
        records = [
            EvaluationRecord(e.key.arch, e.values, e.params, e.flops, 0.0, CACHE_WORKER) for e in added
        ]
        self.registry.checkpoint(self.id, records, state=self.state_dict(), evaluations_done=self.told,
                                 best=(entry.arch, entry.score))  # fmt: skip
        self.step = None
        return entry

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "strategy": self.strategy.state_dict(),
            "archive": list(self.archive.archs),
            "steps": list(self.archive.steps),
            "history": [asdict(entry) for entry in self.history],
        }

    # -- the end ---------------------------------------------------------------------------------------------
    def archive_entries(self) -> list[ArchiveEntry]:
        """The archive with the final aggregate, each evaluation's stored seconds and its first step."""
        fitness = self.archive.fitness(self.config.aggregate, self.config.labeled)
        seconds = {e.arch: e.seconds for e in self.registry.evaluations(self.id)}
        members = zip(self.archive.archs, self.archive.entries, self.archive.steps, strict=True)
        return [
            ArchiveEntry(arch, dict(entry.values), float(fitness[i]), seconds.get(arch, 0.0), step)
            for i, (arch, entry, step) in enumerate(members)
        ]

    def result(self) -> ResultRecord:
        """The best arch by the final aggregate, with its raw values, costs and the best-so-far history."""
        fitness = self.archive.fitness(self.config.aggregate, self.config.labeled)
        best = int(np.argmax(fitness))
        entry = self.archive.entries[best]
        history = tuple(asdict(h) for h in self.history)
        return ResultRecord(self.id, self.archive.archs[best], float(fitness[best]), dict(entry.values),
                            entry.params, entry.flops, history)  # fmt: skip

    def finish(self) -> ResultRecord:
        """Store the result and mark the job done, atomically."""
        result = self.result()
        self.registry.set_result(result)
        return result

    def search_result(self, wall_seconds: float, scoring_seconds: float) -> SearchResult:
        """The finished job as `nasfleet.search.run_search` reports a search (``nasfleet search``'s JSON).

        The caller measures the two times: *wall_seconds* of the orchestration, and *scoring_seconds*,
        the part of it spent waiting for the workers (scoring, broker and polling latency), so that the
        overhead is the orchestrator's own time. Strategy and aggregation seconds are this object's (the
        steps taken in this process). Evaluations answered from the cache (scored for another job) count
        as cached; their original seconds are not in the cache, so ``cached_scoring_seconds`` is 0.
        """
        result, chars = self.result(), self.characteristics
        evaluations = self.registry.evaluations(self.id)
        cached = sum(1 for e in evaluations if e.worker == CACHE_WORKER)
        probe = {"batch_size": self.options.batch_size, "input_shape": list(chars.input_shape),
                 "num_classes": chars.num_classes, "labeled": chars.labeled}  # fmt: skip
        return SearchResult(
            self.config, result.arch, result.score, dict(result.values), result.params, result.flops,
            self.told, len(self.archive.archs), len(self.history), wall_seconds, scoring_seconds,
            self.seconds["strategy"], self.seconds["aggregation"], tuple(self.history),
            tuple(self.archive_entries()), self.strategy.state_dict(), probe, cached, 0.0,
        )  # fmt: skip
