"""One search job of the service: its stored options, and the search loop driven through the registry.

`JobRun` drives `nasfleet.search.loop.SearchLoop` (the loop `run_search` drives in-process) for the
orchestrator: `begin_step` asks; the orchestrator answers the step's new archs from the evaluation cache
or the workers (`PendingStep`); `finish_step` aggregates, tells, refreshes and stores, in one registry
transaction (`Registry.checkpoint`), the step's evaluations, the loop's state and the count told, so the
stored state never runs ahead of its evaluations. A `JobRun` built from a record with a stored state
resumes there; the next ask is the one an uninterrupted run would have made, so the search ends the same
(raw values are bit-identical wherever they are computed: one torch thread, fixed seeds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from nasfleet.bounds import DEFAULT_AGGREGATE
from nasfleet.protocol.checks import check_integer, known_keys, safe_name, text
from nasfleet.protocol.codecs import decode_characteristics, encode_characteristics
from nasfleet.protocol.messages import DataCharacteristics, DeviceProfile, ResourceConstraints
from nasfleet.search.config import SearchConfig, SearchError
from nasfleet.search.limits import device_feasibility
from nasfleet.search.loop import Evaluation, SearchLoop, Step
from nasfleet.search.result import HistoryEntry, SearchResult
from nasfleet.server.registry import CacheEntry, CacheKey, EvaluationRecord, JobRecord, Registry, ResultRecord
from nasfleet.server.service.tasks import ScoringSpec
from nasfleet.spaces import get_space
from nasfleet.strategies.discovery import get_strategy

MAX_ASK_SIZE = 1024
MAX_PROBE_BATCH = 4096
MAX_SEED = 2**32 - 1
SPACE_OPTIONS = {"channels": (1, 1024), "cells_per_stage": (1, 16)}
#: The keys `submit_job` stores in a job's options: `JobOptions`' fields and what travels beside them.
STORED_OPTIONS = ("ask_size", "aggregate", "batch_size", "scoring_seed", "space_options", "probe_data",
                  "labeled", "characteristics", "profile", "role", "space_revision")  # fmt: skip


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
    aggregate: str = DEFAULT_AGGREGATE
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
            options.get("batch_size", defaults.batch_size),
            options.get("scoring_seed", defaults.scoring_seed),
            dict(options.get("space_options") or {}),
            options.get("probe_data") or "",
        )


def job_settings(
    characteristics: DataCharacteristics, *, space: str = "nb201", strategy: str = "evolution",
    budget: int = 24, seed: int = 0, strategy_config: Mapping[str, Any] | None = None,
    constraints: ResourceConstraints | None = None, profile: DeviceProfile | None = None,
    options: JobOptions | None = None, device: str | None = None, role: str = "",
) -> dict[str, Any]:  # fmt: skip
    """What `Registry.create_job` stores of a job (its keyword arguments, by the job record's names):
    everything a worker and a resuming orchestrator need. *role*, if given, goes to ``options["role"]``
    to say what a job without a device is for ("shared-baseline": a round's one-size-fits-all search).
    The space's `revision` is stored too: a job resumed by a nasfleet whose space means other networks
    is refused (`JobRun`)."""
    options = options or JobOptions()
    stored: dict[str, Any] = {
        **asdict(options),
        "space_revision": get_space(space, options.space_options).revision,
        "labeled": characteristics.labeled,
        "characteristics": encode_characteristics(characteristics),
    }
    if profile is not None:
        stored["profile"] = profile.to_wire()[0]
    if role:
        stored["role"] = role
    return {
        "space": space, "strategy": strategy, "characteristics_hash": characteristics.digest(),
        "budget": budget, "seed": seed, "strategy_config": dict(strategy_config or {}),
        "constraints": (constraints or ResourceConstraints()).to_wire()[0], "options": stored,
        "device": device,
    }  # fmt: skip


def submit_job(
    registry: Registry, tenant: str, characteristics: DataCharacteristics, *, name: str | None = None,
    **settings: Any,
) -> JobRecord:  # fmt: skip
    """Open a queued job for *tenant* (named *name*, if given) with *settings* (`job_settings`)."""
    registry.create_tenant(tenant, exist_ok=True)
    return registry.create_job(tenant, name=name, **job_settings(characteristics, **settings))


@dataclass
class PendingStep:
    """A step of the loop in flight: its new archs' cache keys and the raw values found so far."""

    step: Step
    keys: dict[str, CacheKey]
    entries: dict[str, CacheEntry] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return [arch for arch in self.keys if arch not in self.entries]


def _evaluation(record: EvaluationRecord) -> Evaluation:
    return Evaluation(record.arch, record.values, record.params, record.flops, record.seconds, record.cached)


class JobRun:
    """A job being searched: built from its registry record (resuming a stored state), stepped, finished."""

    def __init__(self, record: JobRecord, registry: Registry) -> None:
        self.record, self.registry = record, registry
        self.id, self.tenant = record.id, record.tenant
        self.options = JobOptions.from_options(record.options)
        self.characteristics = chars = decode_characteristics(record.options.get("characteristics"))
        if chars.digest() != record.characteristics_hash:
            raise SearchError(f"job {record.id}: stored characteristics hash to {chars.digest()}, "
                              f"but the job names {record.characteristics_hash}")  # fmt: skip
        space = get_space(record.space, self.options.space_options)
        # jobs created before revisions were stored have none
        revision = record.options.get("space_revision", space.revision)
        if revision != space.revision:
            raise SearchError(f"job {record.id}: created with space {record.space} revision {revision}, but "
                              f"{record.space} is revision {space.revision} here: its archive and checkpoint "
                              "describe other networks, so it cannot go on; submit it again")  # fmt: skip
        stored = record.constraints
        constraints = ResourceConstraints.from_wire(stored) if stored else ResourceConstraints()
        feasible = device_feasibility(
            space, constraints, self._profile(), chars.num_classes, chars.input_shape
        )
        scoring_seed = None if self.options.scoring_seed == record.seed else self.options.scoring_seed
        config = SearchConfig(
            record.space, record.strategy, record.budget, record.seed, self.options.ask_size,
            record.strategy_config, chars.labeled, self.options.aggregate, feasible.constraints, scoring_seed,
        )  # fmt: skip
        strategy = get_strategy(
            record.strategy, space, record.seed, record.budget, config.strategy_config, feasible
        )
        self.loop = SearchLoop(space, strategy, feasible, config)
        self.scoring = ScoringSpec(record.space, config.proxy_names, self.options.batch_size,
                                   self.options.scoring_seed, dict(self.options.space_options),
                                   self.options.probe_data)  # fmt: skip
        self.proxy_config_hash = self.scoring.digest()
        self.step: PendingStep | None = None
        if record.strategy_state is not None:
            stored_evaluations = {e.arch: _evaluation(e) for e in registry.evaluations(record.id)}
            try:
                self.loop.load_state_dict(record.strategy_state, stored_evaluations, record.evaluations_done)
            except SearchError as error:
                raise SearchError(f"job {record.id}: {error}") from None

    @property
    def done(self) -> bool:
        return self.loop.done

    @property
    def told(self) -> int:
        return self.loop.told

    def _profile(self) -> DeviceProfile | None:
        """The job's device profile: stored with the job, else its registered device's, else none."""
        wire = self.record.options.get("profile")
        if wire is None and self.record.device is not None:
            devices = self.registry.list_devices(self.record.tenant)
            wire = next((d.profile for d in devices if d.name == self.record.device and d.profile), None)
        return DeviceProfile.from_wire(wire) if wire else None

    def key(self, arch: str) -> CacheKey:
        return CacheKey(arch, self.record.characteristics_hash, self.proxy_config_hash)

    def begin_step(self) -> PendingStep:
        """Ask the strategy; the step's new archs (in ask order, once each) still need raw values."""
        step = self.loop.begin_step()
        self.step = PendingStep(step, {arch: self.key(arch) for arch in step.new})
        return self.step

    def finish_step(self) -> HistoryEntry:
        """Aggregate over the archive, tell, refresh and checkpoint; the step must have every value."""
        pending = self.step
        assert pending is not None and not pending.missing, "a step finishes once every new arch has values"
        found = {arch: Evaluation(arch, e.values, e.params, e.flops) for arch, e in pending.entries.items()}
        entry = self.loop.finish_step(pending.step, found)
        # The workers stored this job's own evaluations; what the cache answered is stored here, marked.
        records = [EvaluationRecord(e.arch, dict(e.values), e.params, e.flops, 0.0, cached=True)
                   for e in found.values()]  # fmt: skip
        self.registry.checkpoint(self.id, records, state=self.loop.state_dict(), evaluations_done=self.told,
                                 best=(entry.arch, entry.score))  # fmt: skip
        self.step = None
        return entry

    def result(self) -> ResultRecord:
        """The best arch by the final aggregate, with its raw values, costs and the best-so-far history."""
        best, score = self.loop.best()
        history = tuple(asdict(h) for h in self.loop.history)
        return ResultRecord(self.id, best.arch, score, dict(best.values), best.params, best.flops, history)

    def finish(self) -> ResultRecord:
        """Store the result and mark the job done, atomically."""
        result = self.result()
        self.registry.set_result(result)
        return result

    def search_result(self, wall_seconds: float, scoring_seconds: float) -> SearchResult:
        """The finished job as `run_search` reports a search (``nasfleet search``'s JSON).

        The caller measures *wall_seconds* of the orchestration and *scoring_seconds*, the part of it
        spent waiting for the workers, so that the overhead is the orchestrator's own time. Archive
        seconds and cache flags are the stored evaluations'; a cache hit's original seconds are not
        stored with it, so ``cached_scoring_seconds`` is 0.
        """
        chars = self.characteristics
        probe = {"batch_size": self.options.batch_size, "input_shape": list(chars.input_shape),
                 "num_classes": chars.num_classes, "labeled": chars.labeled}  # fmt: skip
        recorded = {e.arch: _evaluation(e) for e in self.registry.evaluations(self.id)}
        return self.loop.result(wall_seconds, scoring_seconds, probe, recorded)
