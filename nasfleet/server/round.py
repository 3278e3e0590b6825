"""What one federation round learns about each device, and how it is recorded and shown.

`DeviceOutcome` follows one device through the round. `RoundRecorder` is the round's side effects:
the registry writes (tenant, device, job, evaluations, result, training reports), the progress display
and the per-device summary table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from nasfleet.clients.messages import (
    DataCharacteristics,
    DeviceIdentity,
    DeviceProfile,
    ResourceConstraints,
    TrainingReport,
)
from nasfleet.proxies.engine import progress_bar
from nasfleet.search import SearchError, SearchResult
from nasfleet.server.personalize import personalized_search
from nasfleet.server.registry import EvaluationRecord, Registry, ReportRecord, ResultRecord
from nasfleet.spaces import get_space
from nasfleet.strategies.base import InfeasibleSearchError, StrategyError

if TYPE_CHECKING:
    from nasfleet.server.app import RoundConfig


@dataclass
class DeviceOutcome:
    """One device in one round: its messages, its job, its reports, and its status with the reason."""

    node: int
    status: str = "ok"
    error: str = ""
    identity: DeviceIdentity | None = None
    characteristics: DataCharacteristics | None = None
    constraints: ResourceConstraints | None = None
    profile: DeviceProfile | None = None
    job_id: str = ""
    report: TrainingReport | None = None
    shared_report: TrainingReport | None = None
    predicted_latency_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def name(self) -> str:
        return self.identity.device if self.identity else f"node-{self.node}"

    def fail(self, status: str, reason: str) -> None:
        self.status, self.error = status, reason


class RoundRecorder:
    """Registry writes, progress and the summary of a round; ``console=None`` prints to stdout."""

    def __init__(self, registry_url: str, console: Console | None = None) -> None:
        self.registry = Registry(registry_url)
        self.console = console or Console(width=None if sys.stdout.isatty() else 220)
        self.outcomes: list[DeviceOutcome] = []

    def progress(self, outcomes: Sequence[DeviceOutcome], label: str) -> Iterator[DeviceOutcome]:
        with progress_bar(len(outcomes), label, enabled=True) as advance:
            for outcome in outcomes:
                yield outcome
                advance()

    def register(self, outcome: DeviceOutcome, config: RoundConfig) -> None:
        """Tenant, device and (for an ok device) its search job; the job id goes onto the outcome."""
        identity = outcome.identity or DeviceIdentity("unknown", outcome.name)
        self.registry.create_tenant(identity.tenant, exist_ok=True)
        chars = outcome.characteristics
        self.registry.upsert_device(
            identity.tenant,
            identity.device,
            tier=outcome.profile.tier if outcome.profile else "unknown",
            constraints=_wire(outcome.constraints),
            profile=_wire(outcome.profile),
            characteristics_hash=chars.digest() if chars else None,
            status=outcome.status,
            error=outcome.error or None,
        )
        if outcome.ok and chars is not None:
            outcome.job_id = self._create_job(identity, chars, outcome.constraints, config)

    def _create_job(
        self,
        identity: DeviceIdentity,
        chars: DataCharacteristics,
        limits: ResourceConstraints | None,
        config: RoundConfig,
        device: bool = True,
    ) -> str:
        job = self.registry.create_job(
            identity.tenant,
            space=config.space,
            strategy=config.strategy,
            characteristics_hash=chars.digest(),
            budget=config.budget,
            seed=config.seed,
            constraints=_wire(limits),
            options={
                "ask_size": config.ask_size,
                "probe_batch": config.probe_batch,
                "labeled": chars.labeled,
            },
            device=identity.device if device else None,
        )
        return job.id

    def search(self, outcome: DeviceOutcome, config: RoundConfig) -> SearchResult | None:
        """The device's personalized search, recorded; a search that cannot run fails the device."""
        assert outcome.characteristics is not None and outcome.constraints is not None
        result = self._run(
            outcome.job_id, config, outcome.characteristics, outcome.constraints, outcome.profile
        )
        if result is None:
            outcome.fail("error", f"search failed: {self.registry.get_job(outcome.job_id).error}")  # type: ignore[union-attr]
        elif outcome.profile is not None:
            outcome.predicted_latency_ms = outcome.profile.predict_latency_ms(result.best_flops)
        return result

    def search_shared(
        self, outcomes: Sequence[DeviceOutcome], config: RoundConfig
    ) -> tuple[str, SearchResult] | None:
        """The one-size-fits-all baseline job: data-agnostic, under the tightest limits of all ok devices."""
        ok = [o for o in outcomes if o.ok and o.characteristics is not None and o.identity is not None]
        if not ok:
            return None
        limits = [o.constraints for o in ok if o.constraints is not None]
        tightest = ResourceConstraints(
            **{f.name: _min(getattr(c, f.name) for c in limits) for f in fields(ResourceConstraints)}  # type: ignore[arg-type]
        )
        first = ok[0].characteristics
        assert first is not None and ok[0].identity is not None
        generic = replace(first, class_means=None, class_bases=None, epsilon=None, delta=None)
        job_id = self._create_job(ok[0].identity, generic, tightest, config, device=False)
        result = self._run(job_id, config, generic, tightest, None)
        return None if result is None else (job_id, result)

    def _run(
        self,
        job_id: str,
        config: RoundConfig,
        chars: DataCharacteristics,
        limits: ResourceConstraints,
        profile: DeviceProfile | None,
    ) -> SearchResult | None:
        self.registry.update_job(job_id, status="running")
        try:
            result = personalized_search(config.plan, chars, limits, profile)
        except (InfeasibleSearchError, SearchError, StrategyError) as error:
            self.registry.update_job(job_id, status="failed", error=str(error))
            return None
        record_search(self.registry, job_id, result)
        return result

    def finish(self, outcomes: Sequence[DeviceOutcome], results: Mapping[str, SearchResult]) -> None:
        """Record the reports and final statuses, keep the outcomes, print the summary table."""
        self.outcomes = list(outcomes)
        for outcome in outcomes:
            device = outcome.identity.device if outcome.identity else None
            for report in (outcome.report, outcome.shared_report):
                if report is not None:
                    self.registry.add_report(report_record(report, device, outcome.predicted_latency_ms))
            if not outcome.ok and outcome.identity is not None:
                self.registry.upsert_device(
                    outcome.identity.tenant,
                    outcome.identity.device,
                    tier=outcome.profile.tier if outcome.profile else "unknown",
                    status=outcome.status,
                    error=outcome.error,
                )
        self.console.print(summary_table(outcomes, results))
        for outcome in outcomes:
            if not outcome.ok:
                self.console.print(
                    f"[red]{outcome.name}: {outcome.status}[/]: {outcome.error}", highlight=False
                )


def record_search(registry: Registry, job_id: str, result: SearchResult) -> None:
    """Store a finished search: every evaluation, then the result (which marks the job done)."""
    costs = {entry.arch: entry for entry in result.archive}
    space = get_space(result.config.space)
    evaluations = []
    for entry in costs.values():
        cost = space.cost(
            space.decode(entry.arch), result.probe["num_classes"], tuple(result.probe["input_shape"])
        )
        evaluations.append(
            EvaluationRecord(entry.arch, entry.values, cost.params, cost.flops, entry.seconds, "in-process")
        )
    registry.add_evaluations(job_id, evaluations)
    history = tuple(asdict(h) for h in result.history)
    registry.update_job(job_id, state=result.strategy_state, evaluations_done=result.evaluations)
    registry.set_result(
        ResultRecord(
            job_id,
            result.best_arch,
            result.best_score,
            result.best_values,
            result.best_params,
            result.best_flops,
            history,
        )
    )


def report_record(report: TrainingReport, device: str | None, predicted_ms: float | None) -> ReportRecord:
    return ReportRecord(
        report.job_id,
        report.arch,
        report.accuracy,
        report.loss,
        report.train_seconds,
        report.num_train,
        report.num_test,
        predicted_ms,
        report.latency_ms,
        device,
    )


def _min(values: Iterable[float | int | None]) -> float | int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _wire(message: Any) -> dict[str, Any]:
    return {} if message is None else json.loads(json.dumps(message.to_wire()[0]))


def summary_table(outcomes: Sequence[DeviceOutcome], results: Mapping[str, SearchResult]) -> Table:
    """Per device: tier, limits, SubNet, cost, predicted vs measured latency, local accuracy."""
    table = Table(title="nasfleet round: one personalized SubNet per device")
    columns = (
        "device",
        "tier",
        "status",
        "limits (params / MFLOPs / ms)",
        "SubNet",
        "params",
        "MFLOPs",
        "latency pred/meas ms",
        "local acc",
        "shared acc",
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    for o in outcomes:
        result, c = results.get(o.job_id), o.constraints
        limits = (
            "-"
            if c is None
            else f"{_num(c.effective_max_params())} / {_num(c.max_flops, 1e6)} / {_num(c.max_latency_ms)}"
        )
        meas = o.report.latency_ms if o.report else None
        table.add_row(
            o.name,
            o.profile.tier if o.profile else "-",
            o.status if o.ok else f"{o.status}: {o.error}",
            limits,
            result.best_arch if result else "-",
            _num(result.best_params if result else None),
            _num(result.best_flops if result else None, 1e6),
            f"{_num(o.predicted_latency_ms)} / {_num(meas)}",
            _num(o.report.accuracy if o.report else None),
            _num(o.shared_report.accuracy if o.shared_report else None),
        )
    return table


def _num(value: float | int | None, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    scaled = value / scale
    return f"{scaled:,.0f}" if isinstance(value, int) and scale == 1.0 else f"{scaled:.3g}"
