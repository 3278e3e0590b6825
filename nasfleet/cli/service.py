"""``nasfleet worker`` and ``nasfleet orchestrate``, and the checks of the service options all commands share.

``nasfleet worker`` runs ``--local-workers`` Celery scoring workers on this machine for a broker and a
registry (start it on any number of machines) and keeps them alive (one that exits is restarted) until
SIGINT or SIGTERM. ``nasfleet orchestrate`` runs the registry's unfinished jobs to the end, with Celery
workers of its own (``--local-workers``) and any ``nasfleet worker``s on the same broker.
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nasfleet.bounds import DEFAULT_BROKER_URL, DEFAULT_QUEUE, DEFAULT_REGISTRY_URL
from nasfleet.cli.options import (
    BrokerOption,
    ConcurrencyOption,
    LocalWorkersOption,
    MaxInFlightOption,
    MaxJobsPerTenantOption,
    QueueOption,
    RegistryOption,
    StateDirOption,
    WaitOption,
)  # fmt: skip

if TYPE_CHECKING:
    from nasfleet.server.service.celery_app import CelerySettings
    from nasfleet.server.service.orchestrator import Orchestrator
    from nasfleet.server.service.runtime import Service, ServiceOptions

RETRY_S = 2.0
TEMPORARY_BROKER = "sqlite:///temporary.sqlite"  # stands for the file `make_service` makes, to check URLs

PoolOption = Annotated[str, typer.Option("--pool", help="Celery pool: prefork | solo.")]


def celery_settings(broker: str, registry: str, queue: str = DEFAULT_QUEUE) -> CelerySettings:
    """The service's settings; a URL or queue that cannot work is a usage error naming it."""
    from nasfleet.server.service.celery_app import CelerySettings, SettingsError

    try:
        return CelerySettings(broker=broker, registry=registry, queue=queue)
    except SettingsError as error:
        raise typer.BadParameter(str(error)) from None


def service_options(
    local_workers: int, concurrency: int, max_jobs_per_tenant: int, max_in_flight: int
) -> ServiceOptions:
    """The service options of ``serve`` and ``orchestrate``: local workers and the fair share of jobs."""
    from nasfleet.server.service.dispatch import FairShare
    from nasfleet.server.service.runtime import ServiceOptions

    fair = FairShare(max_jobs_per_tenant=max_jobs_per_tenant, max_in_flight=max_in_flight)
    return ServiceOptions(local_workers=local_workers, concurrency=concurrency, fair=fair)


def check_service_options(broker: str, registry: str, local_workers: int) -> None:
    """Usage errors before ``search`` or ``simulate`` starts anything: a URL that cannot work, or no
    local worker for the temporary broker (no --broker), which no other worker can reach."""
    if not broker and local_workers < 1:
        raise typer.BadParameter(
            "must be at least 1 without --broker (no other worker can reach this command's temporary "
            f"broker), but got {local_workers}",
            param_hint="--local-workers",
        )
    celery_settings(broker or TEMPORARY_BROKER, registry)


def _reachable(settings: CelerySettings, wait_s: float, stopping: list[int]) -> CelerySettings | None:
    """*settings* with the deployment's queue once the registry and the broker answer, or None after
    *wait_s* seconds (one line said on the first failure and one on giving up)."""
    from nasfleet.server.registry import RegistryError
    from nasfleet.server.service.celery_app import make_app, resolve_queue
    from nasfleet.server.service.runtime import broker_problem

    deadline, said = time.monotonic() + wait_s, False
    while not stopping:
        resolved: CelerySettings | None = None
        try:
            resolved = resolve_queue(settings)
            app = make_app(resolved)
            problem = broker_problem(app)
            app.close()
        except RegistryError as error:
            problem = f"registry unreachable: {str(error).splitlines()[0]}"
        if problem is None and resolved is not None:
            return resolved
        if not said:
            said = True
            typer.echo(f"nasfleet worker: {problem}; retrying for up to {wait_s:g} s (--wait)", err=True)
        if time.monotonic() >= deadline:
            typer.echo(f"nasfleet worker: giving up after {wait_s:g} s: {problem}", err=True)
            return None
        time.sleep(min(RETRY_S, max(0.0, deadline - time.monotonic())))
    return None


def worker(
    broker: BrokerOption = DEFAULT_BROKER_URL,
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    queue: QueueOption = DEFAULT_QUEUE,
    local_workers: LocalWorkersOption = 1,
    concurrency: ConcurrencyOption = 1,
    pool: PoolOption = "prefork",
    wait: WaitOption = 60.0,
) -> None:
    """Run scoring workers for a broker and a registry until interrupted (restarting any that exit).

    It starts --local-workers Celery worker processes (at least 1), each with --concurrency pool
    processes. An unreachable broker or registry is said in one line and retried; after --wait seconds
    the command exits with status 1.
    """
    from nasfleet.server.service.runtime import LocalWorkers

    if local_workers < 1:
        raise typer.BadParameter(
            f"must be at least 1 (the workers this command runs), but got {local_workers}",
            param_hint="--local-workers",
        )
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        found = _reachable(celery_settings(broker, registry, queue), wait, stopping)
        if found is None:
            raise typer.Exit(0 if stopping else 1)
        settings = found
        with tempfile.TemporaryDirectory(prefix="nasfleet-worker-") as state:
            workers = LocalWorkers(settings, state, processes=local_workers, concurrency=concurrency,
                                   pool=pool, log_dir="-")  # fmt: skip
            with workers:
                shown = f"{local_workers} x {concurrency} on queue {settings.queue!r}, pids {workers.pids}"
                typer.echo(f"nasfleet worker: {shown}", err=True)
                while not stopping:
                    if workers.revive():
                        typer.echo(f"nasfleet worker: restarted, pids {workers.pids}", err=True)
                    time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_until_done(service: Service, wait_s: float) -> Orchestrator:
    """Orchestrators run one after another while the registry is unreachable, for up to *wait_s* seconds
    of unreachability in a row (one line said when it goes away); the one that finished."""
    from nasfleet.server.registry import RegistryError
    from nasfleet.server.service.containment import registry_unreachable

    failing_since: float | None = None
    while True:
        orchestrator = service.orchestrator()
        try:
            orchestrator.run()
            return orchestrator
        except RegistryError as error:
            if not registry_unreachable(error):
                raise
            if orchestrator.stats.steps or orchestrator.stats.dispatched:  # it had come back meanwhile
                failing_since = None
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
                reason = str(error).splitlines()[0]
                typer.echo(f"nasfleet orchestrate: {reason}; retrying for up to {wait_s:g} s", err=True)
            elif now - failing_since > wait_s:
                raise
            time.sleep(RETRY_S)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def orchestrate(
    broker: BrokerOption = DEFAULT_BROKER_URL,
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    queue: QueueOption = DEFAULT_QUEUE,
    local_workers: LocalWorkersOption = 1,
    concurrency: ConcurrencyOption = 1,
    max_jobs_per_tenant: MaxJobsPerTenantOption = 4,
    max_in_flight: MaxInFlightOption = 8,
    state_dir: StateDirOption = Path(".nasfleet"),
    wait: WaitOption = 60.0,
) -> None:
    """Run the registry's unfinished jobs to the end through Celery; print each result as JSON lines.

    Without --broker, the broker is a lasting SQLite file in the current directory (see --broker).

    A registry that goes away (a database restart) stops the orchestrator, which is started again every
    2 s for up to --wait seconds and resumes every job from its checkpoint; then the command exits 1.
    """
    from nasfleet.server.registry import RegistryError
    from nasfleet.server.service.runtime import Service

    settings = celery_settings(broker, registry, queue)
    options = service_options(local_workers, concurrency, max_jobs_per_tenant, max_in_flight)
    # SIGTERM unwinds like Ctrl-C, so the local workers are stopped; every job resumes from its stored state.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Service(settings, state_dir, options) as service:
            orchestrator = _run_until_done(service, wait)
            results = orchestrator.results
            for job_id, error in orchestrator.failed.items():
                typer.echo(json.dumps({"job_id": job_id, "status": "failed", "error": error}))
    except RegistryError as error:
        raise typer.BadParameter(str(error)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    for result in results.values():
        done = {"job_id": result.job_id, "status": "done", "arch": result.arch, "score": result.score}
        typer.echo(json.dumps({**done, "params": result.params, "flops": result.flops}))
