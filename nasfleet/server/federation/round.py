"""What one federation round learns about each device, how its searches run, and how it is recorded.

`DeviceOutcome` follows one device through the round. `RoundRecorder` is the round's side effects: the
registry writes (tenant, device, training reports), the search jobs, the progress display and the
per-device summary table.

Each ok device's search job is submitted with its characteristics, constraints and calibrated profile
(in a named run, opened by name: done, resumed or refused, see `nasfleet.server.federation.names`),
then all the round's jobs run at once through the service (`Service.run_together`; the embedded broker
lives in a temporary directory). A job that failed (e.g. constraints no architecture meets) fails only
its device.

The summary table fits 100 columns: archs and job ids are shortened (`nasfleet.display`), a failed
device's reason is printed under it, and its caption names the shared baseline's job and SubNet; the
registry keeps everything whole (``nasfleet registry list --what results --format json``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any

from rich.console import Console
from rich.table import Table

from nasfleet.bounds import SHARED_BASELINE_ROLE
from nasfleet.display import compact, make_table, short_arch, short_id, table_console
from nasfleet.protocol.messages import (
    DataCharacteristics,
    DeviceIdentity,
    DeviceProfile,
    ResourceConstraints,
    TrainingReport,
)
from nasfleet.proxies.engine import progress_bar
from nasfleet.search.limits import predicted_latency_ms
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.names import device_job_name, shared_job_name, started_profile
from nasfleet.server.registry import Registry, RegistryError, ReportRecord, ResultRecord
from nasfleet.server.service.celery_app import SettingsError
from nasfleet.server.service.jobs import JobRun, job_settings
from nasfleet.server.service.named_jobs import JobSettingsError, open_named_job
from nasfleet.server.service.runtime import make_service


@dataclass
class DeviceOutcome:
    """One device in one round: its messages, its job, its reports, and its status with the reason.

    ``space`` is the round's search space (set by `RoundRecorder.register`), whose archs ``predict`` reads.
    """

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
    refinement_rounds: list[int] = field(default_factory=list)  # each refinement's round (2, 3, ...)
    cost: tuple[int, int] | None = None  # the SubNet's (params, FLOPs)
    predicted_latency_ms: float | None = None
    predicted: dict[str, float] = field(default_factory=dict)  # arch -> predicted latency (ms)
    space: str = "nb201"

    @property
    def trained(self) -> list[TrainingReport]:
        """Every report on the device's own SubNets: round 1's, then the later rounds'."""
        return ([self.report] if self.report is not None else []) + self.refinements

    @property
    def rounds(self) -> list[tuple[int, TrainingReport]]:
        """Every report with its federation round: round 1's, the later rounds' (a device may sit one out,
        having no arch left to train), and round 1's on the shared baseline."""
        found = [(1, self.report)] if self.report is not None else []
        found += zip(self.refinement_rounds, self.refinements, strict=True)
        return found + ([(1, self.shared_report)] if self.shared_report is not None else [])

    def refined(self, round_number: int, report: TrainingReport) -> None:
        """Add the report of the SubNet the device trained in round *round_number* (2, 3, ...)."""
        self.refinements.append(report)
        self.refinement_rounds.append(round_number)

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

    def predict(self, arch: str) -> float | None:
        """*arch*'s latency on this device as its profile predicts it (`predicted_latency_ms`: its layer
        table, else its FLOPs model), remembered for its reports."""
        chars = self.characteristics
        if self.profile is None or chars is None:
            return None
        self.predicted[arch] = predicted_latency_ms(
            self.profile, self.space, arch, chars.num_classes, chars.input_shape
        )
        return self.predicted[arch]

    def settle(self, arch: str, params: int, flops: int) -> None:
        """The device's SubNet: its cost and predicted latency."""
        self.cost, self.predicted_latency_ms = (params, flops), self.predict(arch)


class RoundRecorder:
    """Registry writes, progress and the summary of a round; ``console=None`` prints to stdout."""

    def __init__(self, registry_url: str, console: Console | None = None) -> None:
        self.registry = Registry(registry_url)
        self.console = console or table_console()
        self.outcomes: list[DeviceOutcome] = []
        self.shared_jobs: dict[str, str] = {}  # the round's shared-baseline jobs by tier, once submitted

    def register(self, outcome: DeviceOutcome, config: RoundConfig) -> None:
        """Tenant, device and (for an ok device) its search job; the job id goes onto the outcome."""
        identity = outcome.identity or DeviceIdentity("unknown", outcome.name)
        outcome.space = config.space
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
            name = device_job_name(config.name, identity.device) if config.name else None
            profile = outcome.profile
            if name is not None:
                profile = started_profile(self.registry, identity.tenant, name, profile)
            try:
                outcome.job_id = self._submit(
                    identity.tenant, chars, outcome.constraints, profile, config, identity.device, name
                )
            except JobSettingsError as error:  # this device's job of the run was another search
                outcome.fail("error", str(error))

    def _submit(
        self,
        tenant: str,
        chars: DataCharacteristics,
        limits: ResourceConstraints | None,
        profile: DeviceProfile | None,
        config: RoundConfig,
        device: str | None,
        name: str | None,
        role: str = "",
    ) -> str:
        """A job holding all a worker and the orchestrator need (the profile: the latency model): a new
        queued one, or with a *name*, the run's job of that name (`open_named_job`: done, or to resume)."""
        settings = job_settings(
            chars,
            space=config.space,
            strategy=config.strategy,
            budget=config.budget,
            seed=config.seed,
            constraints=limits,
            profile=profile,
            options=config.job_options,
            device=device,
            role=role,
        )
        if name is not None:
            return open_named_job(self.registry, tenant, name, settings).id
        return self.registry.create_job(tenant, **settings).id

    def submit_shared(self, outcomes: Sequence[DeviceOutcome], config: RoundConfig) -> dict[str, str]:
        """The one-size-fits-all baselines, one job per hardware tier: data-agnostic, under the tightest
        limits of the tier's ok devices. By tier, the job ids (a refused job is left out, said why).

        No device's profile: its latency limit cannot be predicted for the whole tier, so it is left out.
        """
        ok = [o for o in outcomes if o.ok and o.characteristics is not None and o.identity is not None]
        jobs = {}
        for tier in sorted({tier_of(o) for o in ok}):
            members = [o for o in ok if tier_of(o) == tier]
            try:
                jobs[tier] = self._submit_tier(tier, members, config)
            except JobSettingsError as error:
                self.console.print(f"[red]shared baseline {tier}: refused[/]: {error}", highlight=False)
        return jobs

    def _submit_tier(self, tier: str, members: Sequence[DeviceOutcome], config: RoundConfig) -> str:
        limits = [o.constraints for o in members if o.constraints is not None]
        tightest = ResourceConstraints(
            **{f.name: _min(getattr(c, f.name) for c in limits) for f in fields(ResourceConstraints)}  # type: ignore[arg-type]
        )
        first, identity = members[0].characteristics, members[0].identity
        assert first is not None and identity is not None
        # Data-agnostic: no sketches and uniform labels, so no device's data (or order) shapes the batch.
        classes = first.num_classes
        generic = replace(
            first, num_samples=classes, label_histogram=(1,) * classes if first.labeled else (),
            class_means=None, class_bases=None, epsilon=None, delta=None,
        )  # fmt: skip
        name = shared_job_name(config.name, tier) if config.name else None
        return self._submit(
            identity.tenant, generic, tightest, None, config, None, name, SHARED_BASELINE_ROLE
        )

    def search(
        self, outcomes: Sequence[DeviceOutcome], config: RoundConfig
    ) -> tuple[dict[str, ResultRecord], dict[str, str]]:
        """Run the devices' jobs at once through the service, then (with ``shared_baseline``) one shared
        job per tier, under the tightest limits of the tier's devices whose search succeeded; the results
        by job id, read from the registry, and the shared jobs by tier. A device whose job failed fails
        with the reason; an ok device gets its predicted latency. If the service itself cannot run (a
        worker that does not start, a bad broker or registry), every job fails with why.
        """
        devices = [o.job_id for o in outcomes if o.ok and o.job_id]
        submitted, shared = list(devices), {}
        tiers = len({tier_of(o) for o in outcomes if o.ok and o.job_id}) if config.shared_baseline else 0
        if devices:
            try:
                with self._service(config, len(devices) + tiers) as run:
                    run(devices)
                    self._settle(outcomes)
                    if config.shared_baseline and (shared := self.submit_shared(outcomes, config)):
                        submitted.extend(shared.values())
                        run(list(shared.values()))
            except (RuntimeError, SettingsError, RegistryError) as error:
                for job_id in submitted:
                    record = self.registry.get_job(job_id)
                    if record is not None and not record.finished:
                        self.registry.update_job(
                            job_id, status="failed", error=f"the service failed: {error}"
                        )
        results = {job_id: result for job_id in submitted if (result := self._result(job_id)) is not None}
        self._settle(outcomes)
        self.shared_jobs = shared
        for tier, job_id in shared.items():
            if job_id not in results:
                self.console.print(f"[red]shared baseline {tier}: search failed[/]: {self._failure(job_id)}")
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

    def finish(
        self, outcomes: Sequence[DeviceOutcome], results: Mapping[str, ResultRecord], run: str | None = None
    ) -> None:
        """Record the reports (each with the *run*'s name and its round) and final statuses, keep the
        outcomes, print the summary table."""
        self.outcomes = list(outcomes)
        for outcome in outcomes:
            device = outcome.identity.device if outcome.identity else None
            for round_number, report in outcome.rounds:
                try:
                    predicted = outcome.predicted.get(report.arch)
                    self.registry.add_report(report_record(report, device, predicted, run, round_number))
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
        self.console.print(summary_table(outcomes, results, self.shared_jobs))
        for outcome in outcomes:
            if not outcome.ok:
                self.console.print(
                    f"[red]{outcome.name}: {outcome.status}[/]: {outcome.error}", highlight=False
                )


def report_record(
    report: TrainingReport, device: str | None, predicted_ms: float | None, run: str | None, round_number: int
) -> ReportRecord:
    return ReportRecord(
        report.job_id, report.arch, report.accuracy, report.loss, report.train_seconds, report.num_train,
        report.num_test, predicted_ms, report.latency_ms, device, run=run, round=round_number,
        epochs_done=report.epochs_done,
    )  # fmt: skip


def tier_of(outcome: DeviceOutcome) -> str:
    """The device's hardware tier ("unknown" without a profile): its shared baseline's group."""
    return outcome.profile.tier if outcome.profile else "unknown"


def _min(values: Iterable[float | int | None]) -> float | int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _wire(message: Any) -> dict[str, Any]:
    return {} if message is None else json.loads(json.dumps(message.to_wire()[0]))


SUMMARY_COLUMNS = [
    "device", "tier: limits\nparams/FLOPs/ms", "SubNet", "cost\nparams/FLOPs", "latency ms\npred/meas",
    "accuracy %\nr1/best/shared",
]  # fmt: skip


def summary_table(
    outcomes: Sequence[DeviceOutcome],
    results: Mapping[str, ResultRecord],
    shared_jobs: Mapping[str, str] | None = None,
) -> Table:
    """Per device: tier and limits, SubNet, its cost, predicted vs measured latency, and the held-out
    accuracy of its round-1 SubNet, of the one it reported best, and of its tier's shared SubNet."""
    table = make_table("nasfleet round: one personalized SubNet per device", SUMMARY_COLUMNS, gap=1)
    for o in outcomes:
        result, c, best = results.get(o.job_id), o.constraints, o.best
        limits = "-" if c is None else _joined(c.effective_max_params(), c.max_flops, c.max_latency_ms)
        tier = o.profile.tier if o.profile else "-"
        cost = "-" if o.cost is None else _joined(*o.cost)
        accuracies = (o.report, best, o.shared_report)
        table.add_row(
            o.name if o.ok else f"{o.name} ({o.status})",
            f"{tier}: {limits}",
            short_arch(best.arch if best else result.arch if result else "") or "-",
            cost,
            _joined(o.predicted_latency_ms, best.latency_ms if best else None),
            "/".join(_percent(r.accuracy if r else None) for r in accuracies),
        )
    shared = {tier: results[job] for tier, job in (shared_jobs or {}).items() if job in results}
    if shared:
        table.caption = "shared baselines: " + ", ".join(
            f"{tier} job {short_id(r.job_id)} {short_arch(r.arch)}" for tier, r in shared.items()
        )
    return table


def _joined(*values: float | int | None) -> str:
    return "/".join(f"{v:.3g}" if isinstance(v, float) else compact(v) for v in values)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
