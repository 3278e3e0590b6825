"""The service end to end through real Celery workers: embedded (SQLite broker), Redis + PostgreSQL, RabbitMQ.

Each test starts its own worker processes (and stops them, with their pool children, also on failure),
uses its own queue name, Redis database number and registry, and checks the jobs reach the results of
the in-process reference run with exactly one evaluation per (job, arch).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import typer
from kombu import Connection
from service_support import (
    TWO_JOBS,
    check_outcomes,
    child_process,
    descendants,
    process_group,
    python,
    sqlite_url,
    submit_plan,
)
from typer.testing import CliRunner

from nasfleet.cli.service import orchestrate, worker
from nasfleet.server.registry import Registry
from nasfleet.server.service.celery_app import CelerySettings, SettingsError
from nasfleet.server.service.dispatch import FairShare
from nasfleet.server.service.runtime import (
    LocalWorkers,
    Service,
    ServiceOptions,
    embedded_settings,
    make_service,
)

REDIS_DB = 11
THREE_BY_THREE = [(tenant, seed, 8, seed % 2) for tenant in ("a", "b", "c") for seed in (1, 2, 3)]


def _queue() -> str:
    return f"nasfleet-test-{uuid.uuid4().hex[:8]}"


def _run_and_check(service: Service, tmp_path: Path, plan: list[tuple[str, int, int, int]]) -> None:
    jobs = submit_plan(service.registry, plan)
    orchestrator = service.orchestrator(fair=FairShare(max_in_flight=4))
    orchestrator.run(timeout_s=150)
    check_outcomes(service.registry, tmp_path, jobs, plan)
    evaluations = [e for job in jobs for e in service.registry.evaluations(job.id)]
    # Scored by pool processes (host:pid), or answered by the cache (scored for another job): no worker
    scorers = {e.worker for e in evaluations if not e.cached}
    assert scorers and all(name.count(":") == 1 for name in scorers), scorers
    assert {e.worker for e in evaluations if e.cached} <= {""}
    assert orchestrator.stats.dispatched > 0


def test_embedded_mode_runs_two_jobs_through_real_workers(tmp_path: Path) -> None:
    with make_service(tmp_path / "state", workers=2) as service:
        assert service.settings.embedded and service.workers is not None
        pids = service.workers.pids
        assert [len(process_group(pid)) for pid in pids] == [2, 2]  # each worker and its pool process
        _run_and_check(service, tmp_path, TWO_JOBS)
    assert [process_group(pid) for pid in pids] == [[], []]


def test_processes_opening_new_embedded_brokers_at_once_do_not_race(tmp_path: Path) -> None:
    """The workers of an embedded service start together on a new broker file: each creates kombu's
    tables and the queue's row on first use, which must not fail any of them (it once did: "table
    kombu_queue already exists", or the queue name's unique constraint, and the worker exited)."""
    opener = python(
        "import sys, time",
        "from nasfleet.server.service.celery_app import CelerySettings, make_app",
        f"directory, start = {str(tmp_path)!r}, float(sys.argv[1])",
        "for trial in range(8):",
        "    settings = CelerySettings(broker=f'sqlite:///{directory}/broker-{trial}.sqlite')",
        "    app = make_app(settings)",
        "    while time.time() < start + trial * 0.4:",
        "        pass",
        "    with app.connection_for_write() as connection:",  # kombu's tables, then the queue's row
        "        connection.default_channel._get_or_create(settings.queue)",
    )
    start = str(time.time() + 10.0)  # every process has imported by then, even on a busy machine
    logs = [tmp_path / f"opener-{index}.log" for index in range(4)]
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(child_process([*opener, start], log)) for log in logs]
        codes = [proc.wait(timeout=60) for proc in procs]
    assert codes == [0] * 4, "\n".join(log.read_text() for log in logs)


def test_embedded_mode_runs_three_tenants_with_three_jobs_each(tmp_path: Path) -> None:
    with make_service(tmp_path / "state", workers=2) as service:
        _run_and_check(service, tmp_path, THREE_BY_THREE)


def test_redis_broker_and_postgresql_registry_run_three_tenants_with_three_jobs_each(
    tmp_path: Path, redis_broker: str, postgres_url: str
) -> None:
    settings = CelerySettings(broker=redis_broker, registry=postgres_url, queue=_queue())
    with Service(settings, tmp_path, ServiceOptions(local_workers=1, concurrency=2)) as service:
        _run_and_check(service, tmp_path, THREE_BY_THREE)


def test_rabbitmq_broker_runs_two_jobs(tmp_path: Path, amqp_url: str) -> None:
    queue = _queue()
    settings = CelerySettings(broker=amqp_url, registry=sqlite_url(tmp_path), queue=queue)
    try:
        with Service(settings, tmp_path, ServiceOptions(local_workers=1, concurrency=2)) as service:
            _run_and_check(service, tmp_path, TWO_JOBS)
    finally:
        with Connection(amqp_url) as connection:
            connection.default_channel.queue_delete(queue)


def test_remote_workers_serve_an_orchestrator_that_starts_none(tmp_path: Path) -> None:
    # Prepare: the workers are started apart, as `nasfleet worker` would be on another machine
    settings = embedded_settings(tmp_path / "state")
    workers = LocalWorkers(settings, tmp_path / "remote", concurrency=1)
    with workers, Service(settings, tmp_path, ServiceOptions(local_workers=0)) as service:
        assert service.workers is None
        _run_and_check(service, tmp_path, [("acme", 4, 8, 0)])


def test_settings_come_from_the_environment_and_are_checked() -> None:
    settings = CelerySettings(broker="redis://127.0.0.1:6379/3", registry="sqlite:///x.db", queue="q1")
    assert CelerySettings.from_env(settings.to_env()) == settings
    assert not settings.embedded and CelerySettings().embedded
    with pytest.raises(SettingsError, match="broker must be a URL"):
        CelerySettings(broker="kafka://x")
    with pytest.raises(SettingsError, match="time limits"):
        CelerySettings(soft_time_limit=10, time_limit=5)
    assert os.environ.get("NASFLEET_BROKER") is None or CelerySettings.from_env()


def test_two_worker_commands_serve_the_orchestrate_command(tmp_path: Path) -> None:
    # Prepare: `nasfleet worker` twice (as on two machines) and queued jobs in the registry
    settings = embedded_settings(tmp_path / "state")
    with Registry(settings.registry) as registry:
        jobs = submit_plan(registry, TWO_JOBS)
    urls = ["--broker", settings.broker, "--registry", settings.registry, "--queue", settings.queue]
    command = python("import typer", "from nasfleet.cli.service import worker", "typer.run(worker)")
    with (
        child_process([*command, *urls], tmp_path / "w1.log") as first,
        child_process([*command, *urls], tmp_path / "w2.log") as second,
    ):
        # Execute: the orchestrator starts no worker of its own
        cli = typer.Typer()
        cli.command()(orchestrate)
        cli.command()(worker)
        result = CliRunner().invoke(cli, ["orchestrate", *urls, "--local-workers", "0"])
        # Assert
        assert result.exit_code == 0, result.output
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert sorted(line["job_id"] for line in lines) == sorted(job.id for job in jobs)
        assert {line["status"] for line in lines} == {"done"}
        for proc in (first, second):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            assert process_group(proc.pid) == []
    with Registry(settings.registry) as registry:
        check_outcomes(registry, tmp_path, jobs, TWO_JOBS)
        evaluations = [e for job in jobs for e in registry.evaluations(job.id)]
        assert len({e.worker.split(":")[1] for e in evaluations if not e.cached}) >= 2


def test_sigterm_stops_the_orchestrate_command_and_its_local_workers(tmp_path: Path) -> None:
    # Prepare: a queued job and `nasfleet orchestrate` with one local worker
    settings = embedded_settings(tmp_path / "state")
    with Registry(settings.registry) as registry:
        (job,) = submit_plan(registry, [("acme", 1, 400, 0)])
    urls = ["--broker", settings.broker, "--registry", settings.registry, "--queue", settings.queue]
    program = python("import typer", "from nasfleet.cli.service import orchestrate", "typer.run(orchestrate)")
    command = [*program, *urls, "--state-dir", str(tmp_path / "logs")]
    with child_process(command, tmp_path / "o.log") as proc:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(workers := descendants(proc.pid)) < 2:
            time.sleep(0.2)
        assert len(workers) >= 2, "the local worker and its pool process never started"
        # Execute
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        # Assert: no worker outlives the command, and the job is left to resume, not lost
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (left := [p for p in workers if Path(f"/proc/{p}").exists()]):
            time.sleep(0.2)
        assert left == [], (tmp_path / "o.log").read_text()
    with Registry(settings.registry) as registry:
        record = registry.get_job(job.id)
        assert record is not None and record.status in {"queued", "running"}, record


def test_the_worker_command_rejects_a_bad_broker() -> None:
    cli = typer.Typer()
    cli.command()(worker)
    cli.command()(orchestrate)
    result = CliRunner().invoke(cli, ["worker", "--broker", "kafka://x"])
    assert result.exit_code != 0 and "broker must be a URL" in result.output
