"""One search through the service, as ``nasfleet search`` runs it: submit a job, run it, report it.

The job goes to the registry under a tenant (created if new), the service runs it (the embedded broker
lives in a temporary directory), and the finished job is reported as `nasfleet.search.SearchResult`, as
the in-process `nasfleet.search.run_search` reports a search.

Probe data: a job with ``JobOptions.probe_data`` scores on a seeded mini-batch of that dataset's train
split (real images for ``cifar10``), not on a synthetic batch; the spec, the batch size and the scoring
seed are part of the evaluation cache key, so an identical search a second time is answered from the
cache, and a search on other data never is. Every worker must be able to read the dataset.

Names: the job takes a name, and a search with a name the tenant used already resumes that job
(`nasfleet.server.service.named_jobs`): a done job answers from its stored result without starting any
worker; a cancelled or interrupted one goes on from its checkpoint with the evaluations it kept.

Failing fast: with a broker URL, the broker must accept a connection within ``BROKER_TIMEOUT_S``, and
with no local worker, some worker must beat in the registry on the deployment's queue within
*wait_for_workers_s*; else `ServiceUnavailableError`, one line, before anything is written.

Interrupts: a ``KeyboardInterrupt`` (Ctrl-C) while the job runs cancels the job in the registry (its
evaluations and checkpoint stay), stops the local workers (a second Ctrl-C is ignored meanwhile) and
raises `SearchInterruptedError` with the cancelled job.

Timing: ``wall_seconds`` is the orchestration (workers already started; their start is reported apart as
``startup_seconds``), ``scoring_seconds`` the part of it the orchestrator spent waiting for the workers,
so the overhead is the orchestrator's own time: strategy, aggregation, registry, dispatch.
"""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

from kombu.utils.url import maybe_sanitize_url

from nasfleet.protocol.messages import DataCharacteristics, ResourceConstraints
from nasfleet.search import SearchError, SearchResult, search_progress
from nasfleet.server.registry import JobFinishedError, JobRecord, Registry
from nasfleet.server.service.jobs import JobOptions, JobRun, job_settings
from nasfleet.server.service.liveness import DEAD_AFTER_S
from nasfleet.server.service.named_jobs import find_named_job, open_named_job
from nasfleet.server.service.orchestrator import Orchestrator
from nasfleet.server.service.runtime import Service, make_service

BROKER_TIMEOUT_S = 2.0
INTERRUPTED = "interrupted (Ctrl-C)"


@dataclass(frozen=True)
class ServiceSearch:
    """A finished search job: the result as `run_search` reports one, and how the service ran it."""

    result: SearchResult
    service: dict[str, Any]


class ServiceUnavailableError(RuntimeError):
    """The broker does not answer, or no worker consumes the queue; nothing was written."""


class SearchInterruptedError(Exception):
    """Ctrl-C stopped the search; ``job`` is its record, cancelled (or finished meanwhile); ``kept`` the
    evaluations it has stored (scored, some perhaps not yet told to the strategy)."""

    def __init__(self, job: JobRecord, kept: int) -> None:
        super().__init__(f"job {job.id} {job.status} with {kept} of {job.budget} evaluations kept")
        self.job, self.kept = job, kept


def search_through_service(
    characteristics: DataCharacteristics, *, tenant: str, name: str, space: str, strategy: str,
    budget: int, seed: int, strategy_config: Mapping[str, Any], constraints: ResourceConstraints,
    options: JobOptions, registry: str, broker: str = "", workers: int = 1, progress: bool = True,
    wait_for_workers_s: float = 10.0,
) -> ServiceSearch:  # fmt: skip
    """Run *tenant*'s search job named *name* to the end through the service (creating or resuming it,
    see the module docstring), and report it.

    Raises `JobSettingsError` if the named job was stored with other settings, `SearchError` with the
    job's reason if it failed (e.g. no architecture meets *constraints*), `ServiceUnavailableError`
    (broker or workers away), `SearchInterruptedError` on Ctrl-C, and what `make_service` raises if the
    service cannot start (`SettingsError`, `RegistryError`, or a ``RuntimeError`` naming a worker that
    did not start).
    """
    settings = job_settings(
        characteristics, space=space, strategy=strategy, budget=budget, seed=seed,
        strategy_config=strategy_config, constraints=constraints, options=options,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="nasfleet-search-") as state:
        started = time.perf_counter()
        service = make_service(state, broker=broker, registry=registry, workers=workers)
        with closing(service):
            where = {
                "mode": "distributed" if broker else "embedded", "registry": maybe_sanitize_url(registry),
                "broker": maybe_sanitize_url(broker) if broker else "", "local_workers": workers,
                "startup_seconds": 0.0, "done_before": True,
            }  # fmt: skip
            stored = find_named_job(service.registry, tenant, name, settings)
            if stored is not None and stored.status == "done":  # answered from the registry alone
                return _report(service.registry, stored, JobRun(stored, service.registry), None, where)
            if broker and (problem := service.broker_problem(BROKER_TIMEOUT_S)):
                raise ServiceUnavailableError(problem)
            try:
                with _cleanup_ignores_interrupts(), service:
                    if not workers:
                        _wait_for_workers(service, wait_for_workers_s)
                    where.update(startup_seconds=time.perf_counter() - started, done_before=False)
                    job = open_named_job(service.registry, tenant, name, settings)
                    orchestrator, run = _run(service, job, progress)
                    return _report(service.registry, job, run, orchestrator, where)
            except SearchInterruptedError as interrupted:  # the local workers have stopped: count again
                interrupted.kept = len(service.registry.evaluations(interrupted.job.id))
                raise


def _run(service: Service, job: JobRecord, progress: bool) -> tuple[Orchestrator, JobRun]:
    """Run *job* to the end; the orchestrator and the finished run. Ctrl-C cancels the job."""
    runs: dict[str, JobRun] = {}
    try:
        with search_progress(job.budget, progress) as show:

            def on_step(run: JobRun) -> None:
                runs[run.id] = run
                show(run.told, run.loop.history[-1].score, run.loop.history[-1].best_percentile)

            orchestrator = service.run_together([job.id], on_step)
    except KeyboardInterrupt:
        cancelled = _cancel(service.registry, job.id)
        raise SearchInterruptedError(cancelled, len(service.registry.evaluations(job.id))) from None
    record = service.registry.get_job(job.id)
    if record is None or record.status != "done":
        reason = orchestrator.failed.get(job.id) or (record.error if record else None)
        raise SearchError(f"job {job.id} {record.status if record else 'vanished'}: {reason}")
    # A job resumed after its last checkpoint finishes without a step: rebuild its run from the record.
    return orchestrator, runs.get(job.id) or JobRun(record, service.registry)


def _cancel(registry: Registry, job_id: str) -> JobRecord:
    """Cancel the interrupted job as the HTTP API cancels one; the job's record (finished meanwhile?)."""
    signal_ignored = threading.current_thread() is threading.main_thread()
    if signal_ignored:  # a second Ctrl-C must not leave the job running or the workers behind
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return registry.cancel_job(job_id, INTERRUPTED)
    except JobFinishedError:
        record = registry.get_job(job_id)
        assert record is not None
        return record


@contextmanager
def _cleanup_ignores_interrupts() -> Iterator[None]:
    """Restore the SIGINT handler `_cancel` may replace, once the workers are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def _wait_for_workers(service: Service, wait_s: float) -> None:
    """Return once a worker of the service's queue beats; `ServiceUnavailableError` after *wait_s* seconds."""
    queue, deadline = service.settings.queue, time.monotonic() + wait_s
    while not any(w.age_s() <= DEAD_AFTER_S for w in service.registry.workers(queue)):
        if time.monotonic() >= deadline:
            raise ServiceUnavailableError(
                f"no worker consumes queue {queue!r} of broker {maybe_sanitize_url(service.settings.broker)}"
                f": none beat in the registry within {wait_s:g} s; start `nasfleet worker` with the same "
                "--broker and --registry, or give --local-workers"
            )
        time.sleep(0.2)


def _report(
    registry: Registry, job: JobRecord, run: JobRun, orchestrator: Orchestrator | None,
    where: dict[str, Any],
) -> ServiceSearch:  # fmt: skip
    """The finished job as `run_search` reports a search, and how the service ran it; *where* says
    which service (*orchestrator* None: the job was done before, and nothing ran)."""
    stats = orchestrator.stats if orchestrator is not None else None
    wall = stats.wall_seconds if stats else 0.0
    busy = min(stats.busy_seconds, wall) if stats else 0.0
    result = run.search_result(wall, wall - busy)
    evaluations = registry.evaluations(job.id)
    scored = [e.seconds for e in evaluations if not e.cached]
    return ServiceSearch(result, {
        "job_id": job.id, "job_name": job.name, "tenant": job.tenant, **where,
        "resumed_from": job.evaluations_done, "orchestrator_busy_seconds": busy,
        "worker_scoring_seconds": sum(scored), "scored": len(scored),
        "cache_hits": stats.cache_hits if stats else 0, "dispatched": stats.dispatched if stats else 0,
        "workers": sorted({e.worker for e in evaluations if not e.cached}),
    })  # fmt: skip
