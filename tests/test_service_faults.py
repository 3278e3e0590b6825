"""Faults, through real Celery workers: a pool process or a whole worker killed with SIGKILL mid-batch,
the orchestrator killed and restarted, the (Redis) broker restarted mid-job, a task that raises, a
malformed task. For each, the jobs complete, reach the result of an undisturbed run, and the registry
holds exactly one evaluation per (job, arch).

Workers run `fault_app` (the nasfleet app with injected delays and failures); every process a test
starts is stopped by its id (with its process group), also when the test fails.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from service_support import (
    TWO_JOBS,
    check_outcomes,
    child_process,
    fault_workers,
    free_port,
    orchestrator_side,
    python,
    submit_plan,
    wait_for,
)

from nasfleet.server.service.celery_app import CelerySettings
from nasfleet.server.service.dispatch import FairShare
from nasfleet.server.service.jobs import JobRun
from nasfleet.server.service.runtime import Service, ServiceOptions
from nasfleet.server.service.tasks import PAYLOAD_VERSION, TASK_NAME


@contextmanager
def killer(marks: Path, kill: Callable[[int], None], after: int = 3) -> Iterator[list[int]]:
    """A thread that, once *after* archs have started, calls *kill* with a pool process's pid while that
    process is busy scoring (it started an arch less than 0.3 s ago, and each takes 0.5 s or more)."""
    killed: list[int] = []
    errors: list[BaseException] = []

    def busy() -> bool:
        started = list(marks.glob("started-*"))
        now = time.time()
        fresh = [p for p in started if now - p.stat().st_mtime < 0.3]
        if len(started) >= after and fresh:
            killed.append(int(fresh[-1].name.split("-")[1]))
        return bool(killed)

    def run() -> None:
        try:
            wait_for(busy, 60, "a pool process busy scoring")
            kill(killed[0])
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield killed
    thread.join(timeout=60)
    if errors:
        raise errors[0]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """An orchestrator's side of the embedded service; the tests start the workers themselves."""
    with orchestrator_side(tmp_path) as started:
        yield started


def test_a_pool_process_killed_mid_batch_has_its_archs_redone(tmp_path: Path, service: Service) -> None:
    jobs = submit_plan(service.registry, TWO_JOBS)
    with (
        fault_workers(service.settings, tmp_path, "delay=0.5") as workers,
        killer(tmp_path / "marks", lambda pid: os.kill(pid, signal.SIGKILL)) as killed,
    ):
        service.orchestrator(housekeeping=workers.revive).run(timeout_s=120)
    # The worker lived on (its pool replaced the child); the child's task was redelivered and redone
    assert killed and workers.revived == 0
    check_outcomes(service.registry, tmp_path, jobs, TWO_JOBS)


def test_a_whole_worker_killed_mid_batch_is_revived_and_its_tasks_sent_again(
    tmp_path: Path, service: Service
) -> None:
    # The SQLite broker forgets the tasks its dead consumer had taken: the orchestrator sends them again.
    jobs = submit_plan(service.registry, TWO_JOBS)
    with fault_workers(service.settings, tmp_path, "delay=0.5") as workers:
        kill = lambda _: os.killpg(workers.pids[0], signal.SIGKILL)  # noqa: E731
        with killer(tmp_path / "marks", kill):
            orchestrator = service.orchestrator(housekeeping=workers.revive, lost_after_s=4.0)
            orchestrator.run(timeout_s=120)
    assert workers.revived == 1 and orchestrator.stats.resent > 0
    check_outcomes(service.registry, tmp_path, jobs, TWO_JOBS)


def test_a_killed_orchestrator_restarted_reaches_the_uninterrupted_result(
    tmp_path: Path, service: Service
) -> None:
    jobs = submit_plan(service.registry, TWO_JOBS)
    script = python(
        "from nasfleet.server.service.celery_app import CelerySettings",
        "from nasfleet.server.service.runtime import Service, ServiceOptions",
        "settings = CelerySettings.from_env()",
        f"Service(settings, {str(tmp_path)!r}, ServiceOptions(local_workers=0)).run()",
    )
    with fault_workers(service.settings, tmp_path, "delay=0.2"):
        with child_process(script, tmp_path / "orchestrator.log", service.settings.to_env()) as proc:
            done = lambda: sum(j.evaluations_done for j in service.registry.list_jobs()) >= 8  # noqa: E731
            wait_for(done, 90, "the first orchestrator to make progress")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert {job.status for job in service.registry.list_jobs()} == {"running"}
        service.orchestrator().run(timeout_s=120)
    check_outcomes(service.registry, tmp_path, jobs, TWO_JOBS)


def test_a_task_that_raises_is_retried_and_its_job_completes(tmp_path: Path, service: Service) -> None:
    jobs = submit_plan(service.registry, TWO_JOBS)
    with fault_workers(service.settings, tmp_path, "raise-once"):
        service.orchestrator(fair=FairShare(max_in_flight=8)).run(timeout_s=120)
    raised = list((tmp_path / "marks").glob("raised-*"))
    assert len(raised) == sum(len(service.registry.evaluations(job.id)) for job in jobs)
    check_outcomes(service.registry, tmp_path, jobs, TWO_JOBS)


def test_a_malformed_task_is_rejected_once_and_the_worker_goes_on(tmp_path: Path, service: Service) -> None:
    malformed = [((), {}), (({"version": PAYLOAD_VERSION, "job_id": "zz"}, ["x"]), {}), (("a", "b", "c"), {})]
    for args, kwargs in malformed:
        service.app.send_task(TASK_NAME, args=args, kwargs=kwargs, queue=service.settings.queue)
    jobs = submit_plan(service.registry, TWO_JOBS)
    with fault_workers(service.settings, tmp_path, concurrency=1):
        service.orchestrator().run(timeout_s=120)
        time.sleep(2.0)  # a retried task would come back within this
    log = (tmp_path / "worker-0.log").read_text()
    assert log.count("rejected a malformed task") == len(malformed), log[-3000:]
    assert "task arguments must be (payload, archs)" in log and "payload.job_id must be" in log
    check_outcomes(service.registry, tmp_path, jobs, TWO_JOBS)


def test_the_redis_broker_restarted_mid_job_loses_no_evaluation(tmp_path: Path, redis_url: str) -> None:
    # A Redis server of this test's own (the shared one is never restarted), without persistence: the
    # tasks queued at the restart are lost, and the orchestrator, seeing a new run_id, sends them again.
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    settings = CelerySettings(broker=f"redis://127.0.0.1:{port}/0", registry=f"sqlite:///{tmp_path}/r.sqlite")
    ready = lambda: (tmp_path / "redis.log").read_text().count("Ready to accept")  # noqa: E731
    with ExitStack() as processes:
        broker = processes.enter_context(child_process(command, tmp_path / "redis.log"))
        wait_for(lambda: ready() == 1, 20, "Redis")
        restarts: list[int] = []

        def restart_broker(_: JobRun) -> None:
            if not restarts:
                os.kill(broker.pid, signal.SIGKILL)
                broker.wait()
                time.sleep(1.0)
                restarts.append(processes.enter_context(child_process(command, tmp_path / "redis.log")).pid)
                wait_for(lambda: ready() == 2, 20, "Redis to restart")

        service = processes.enter_context(Service(settings, tmp_path, ServiceOptions(local_workers=0)))
        jobs = submit_plan(service.registry, TWO_JOBS)
        with fault_workers(settings, tmp_path, "delay=0.2") as workers:
            # lost_after_s stays at its default (900 s): the orchestrator sees Redis's new run_id instead
            orchestrator = service.orchestrator(on_step=restart_broker, housekeeping=workers.revive)
            orchestrator.run(timeout_s=150)
        assert restarts and orchestrator.watch is not None and orchestrator.watch.broker_restarts == 1
        check_outcomes(service.registry, tmp_path, jobs, TWO_JOBS)
