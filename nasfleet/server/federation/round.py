"""What one federation round learns about each device, how its searches run, and how it is recorded.

`DeviceOutcome` follows one device through the round. `RoundRecorder` is the round's side effects: the
registry writes (tenant, device, training reports), the search jobs, the progress display and the
per-device summary table.

Each ok device's search job is submitted with its characteristics, constraints and calibrated profile,
then all the round's jobs run at once through the service (`Service.run_together`; the embedded broker
lives in a temporary directory). A job that failed (e.g. constraints no architecture meets) fails only
its device.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any

from rich.console import Console
from rich.table import Table

from nasfleet.protocol.messages import (
    DataCharacteristics,
    DeviceIdentity,
    DeviceProfile,
    ResourceConstraints,
    TrainingReport,
)
from nasfleet.proxies.engine import progress_bar
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.registry import Registry, RegistryError, ReportRecord, ResultRecord
from nasfleet.server.service.celery_app import SettingsError
from nasfleet.server.service.jobs import JobRun, submit_job
from nasfleet.server.service.runtime import make_service


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
    refinements: list[TrainingReport] = field(default_factory=list)
    cost: tuple[int, int] | None = None  # the SubNet's (params, FLOPs)
    predicted_latency_ms: float | None = None
    predicted: dict[str, float] = field(default_factory=dict)  # arch -> predicted latency (ms)

    @property
    def trained(self) -> list[TrainingReport]:
        """Every report on the device's own SubNets: round 1's, then the later rounds'."""
        return ([self.report] if self.report is not None else []) + self.refinements

    @property
    def best(self) -> TrainingReport | None:
        """The report of the device's SubNet at the end: the one it reported best (the first of ties)."""
        return max(self.trained, key=lambda r: r.accuracy, default=None)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def name(self) -> str:
        return self.identity.device if self.identity else f"node-{self.node}"

    def fail(self, status: str, reason: str) -> None:
        self.status, self.error = status, reason

    def predict(self, arch: str, flops: int) -> float | None:
        """*arch*'s latency on this device as its profile predicts it (remembered for its reports)."""
        if self.profile is None:
            return None
        self.predicted[arch] = self.profile.predict_latency_ms(flops)
        return self.predicted[arch]

    def settle(self, arch: str, params: int, flops: int) -> None:
        """The device's SubNet: its cost and predicted latency."""
        self.cost, self.predicted_latency_ms = (params, flops), self.predict(arch, flops)


class RoundRecorder:
    """Registry writes, progress and the summary of a round; ``console=None`` prints to stdout."""

    def __init__(self, registry_url: str, console: Console | None = None) -> None:
        self.registry = Registry(registry_url)
        self.console = console or Console(width=None if sys.stdout.isatty() else 220)
        self.outcomes: list[DeviceOutcome] = []

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
            outcome.job_id = self._submit(
                identity.tenant, chars, outcome.constraints, outcome.profile, config, identity.device
            )

    def _submit(
        self,
        tenant: str,
        chars: DataCharacteristics,
        limits: ResourceConstraints | None,
        profile: DeviceProfile | None,
        config: RoundConfig,
        device: str | None,
    ) -> str:
        """A queued job holding all a worker and the orchestrator need (the profile: the latency model)."""
        job = submit_job(
            self.registry,
            tenant,
            chars,
            space=config.space,
            strategy=config.strategy,
            budget=config.budget,
            seed=config.seed,
            constraints=limits,
            profile=profile,
            options=config.job_options,
            device=device,
        )
        return job.id

    def submit_shared(self, outcomes: Sequence[DeviceOutcome], config: RoundConfig) -> str | None:
        """The one-size-fits-all baseline job: data-agnostic, under the tightest limits of all ok devices.

        No device's profile: its latency limit cannot be predicted for the whole fleet, so it is left out.
        """
        ok = [o for o in outcomes if o.ok and o.characteristics is not None and o.identity is not None]
        if not ok:
            return None
        limits = [o.constraints for o in ok if o.constraints is not None]
        tightest = ResourceConstraints(
            **{f.name: _min(getattr(c, f.name) for c in limits) for f in fields(ResourceConstraints)}  # type: ignore[arg-type]
        )
        first = ok[0].characteristics
        assert first is not None and ok[0].identity is not None
        # Data-agnostic: no sketches and uniform labels, so no device's data (or order) shapes the batch.
        classes = first.num_classes
        generic = replace(
            first, num_samples=classes, label_histogram=(1,) * classes if first.labeled else (),
            class_means=None, class_bases=None, epsilon=None, delta=None,
        )  # fmt: skip
        return self._submit(ok[0].identity.tenant, generic, tightest, None, config, None)

    def search(
        self, outcomes: Sequence[DeviceOutcome], config: RoundConfig
    ) -> tuple[dict[str, ResultRecord], str | None]:
        """Run the devices' jobs at once through the service, then (with ``shared_baseline``) the shared
        job under the tightest limits of the devices whose search succeeded; the results by job id, read
        from the registry, and the shared job's id. A device whose job failed fails with the reason; an
        ok device gets its predicted latency. If the service itself cannot run (a worker that does not
        start, a bad broker or registry), every job fails with why.
        """
        devices = [o.job_id for o in outcomes if o.ok and o.job_id]
        submitted, shared = list(devices), None
        if devices:
            try:
                with self._service(config, len(devices) + int(config.shared_baseline)) as run:
                    run(devices)
                    self._settle(outcomes)
                    if config.shared_baseline and (shared := self.submit_shared(outcomes, config)):
                        submitted.append(shared)
                        run([shared])
            except (RuntimeError, SettingsError, RegistryError) as error:
                for job_id in submitted:
                    record = self.registry.get_job(job_id)
                    if record is not None and not record.finished:
                        self.registry.update_job(
                            job_id, status="failed", error=f"the service failed: {error}"
                        )
        results = {job_id: result for job_id in submitted if (result := self._result(job_id)) is not None}
        self._settle(outcomes)
        if shared and shared not in results:
            self.console.print(f"[red]shared baseline: search failed[/]: {self._failure(shared)}")
        return results, shared

    @contextmanager
    def _service(self, config: RoundConfig, jobs: int) -> Iterator[Callable[[Sequence[str]], object]]:
        """The round's service, started: yields ``run(job_ids)``, with a progress bar of evaluations."""
        told: dict[str, int] = {}
        with (
            progress_bar(config.budget * jobs, "personalized searches", enabled=True) as advance,
            tempfile.TemporaryDirectory(prefix="nasfleet-round-") as state,
            make_service(
                state, broker=config.broker, registry=config.registry, workers=config.workers
            ) as service,
        ):

            def on_step(job: JobRun) -> None:
                for _ in range(job.told - told.get(job.id, 0)):
                    advance()
                told[job.id] = job.told

            yield lambda job_ids: service.run_together(job_ids, on_step)

    def _settle(self, outcomes: Sequence[DeviceOutcome]) -> None:
        """Fail every ok device whose job did not finish with a result; predict the others' latency."""
        for outcome in outcomes:
            if outcome.ok and outcome.job_id:
                result = self._result(outcome.job_id)
                if result is None:
                    outcome.fail("error", f"search failed: {self._failure(outcome.job_id)}")
                else:
                    outcome.settle(result.arch, result.params, result.flops)

    def _result(self, job_id: str) -> ResultRecord | None:
        record = self.registry.get_job(job_id)
        return self.registry.get_result(job_id) if record is not None and record.status == "done" else None

    def _failure(self, job_id: str) -> str:
        record = self.registry.get_job(job_id)
        if record is None:
            return "the job is gone from the registry"
        return record.error or f"the job ended {record.status}"

    def finish(self, outcomes: Sequence[DeviceOutcome], results: Mapping[str, ResultRecord]) -> None:
        """Record the reports and final statuses, keep the outcomes, print the summary table."""
        self.outcomes = list(outcomes)
        for outcome in outcomes:
            device = outcome.identity.device if outcome.identity else None
            for report in (*outcome.trained, outcome.shared_report):
                if report is None:
                    continue
                try:
                    predicted = outcome.predicted.get(report.arch)
                    self.registry.add_report(report_record(report, device, predicted))
                except RegistryError as error:  # this device's report only; the others are still stored
                    outcome.fail("error", f"its training report could not be stored: {error}")
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


def summary_table(outcomes: Sequence[DeviceOutcome], results: Mapping[str, ResultRecord]) -> Table:
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
        "round-1 acc",
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
        best = o.best
        meas = best.latency_ms if best else None
        table.add_row(
            o.name,
            o.profile.tier if o.profile else "-",
            o.status if o.ok else f"{o.status}: {o.error}",
            limits,
            best.arch if best else result.arch if result else "-",
            _num(o.cost[0] if o.cost else None),
            _num(o.cost[1] if o.cost else None, 1e6),
            f"{_num(o.predicted_latency_ms)} / {_num(meas)}",
            _num(o.report.accuracy if o.report else None),
            _num(best.accuracy if best else None),
            _num(o.shared_report.accuracy if o.shared_report else None),
        )
    return table


def _num(value: float | int | None, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    scaled = value / scale
    return f"{scaled:,.0f}" if isinstance(value, int) and scale == 1.0 else f"{scaled:.3g}"
