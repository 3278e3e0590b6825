"""Recovery and isolation through real Celery workers: heartbeats, a killed worker main process, orphans,
per-deployment queues, a missing worker or broker said in the job's note and in /v1/health.

Every process a test starts is stopped by its id (with its process group), also when the test fails.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from service_support import (
    TWO_JOBS,
    alive,
    check_outcomes,
    child_process,
    fault_workers,
    free_port,
    orchestrator_side,
    python,
    submit_plan,
    wait_for,
    worker_command,
)

from nasfleet.server.api.app import create_app
from nasfleet.server.api.runner import ServiceProblems
from nasfleet.server.registry import Registry
from nasfleet.server.service import tasks
from nasfleet.server.service.celery_app import CelerySettings, deployment_queue
from nasfleet.server.service.liveness import WorkerWatch
from nasfleet.server.service.runtime import (
    BROKER_FILE,
    LocalWorkers,
    Service,
    ServiceOptions,
    embedded_settings,
)
from nasfleet.server.service.tasks import make_payload
from nasfleet.spaces import get_space


def test_a_worker_main_process_killed_is_found_silent_and_its_tasks_are_sent_again(tmp_path: Path) -> None:
    # Only the main process is killed (as a crash or the OOM killer would): nothing acknowledges or gives
    # back the tasks it reserved, and the SQLite broker never redelivers them. lost_after_s stays at its
    # default (900 s): the job finishes because the orchestrator sees the worker stop beating.
    with orchestrator_side(tmp_path) as service:
        jobs = submit_plan(service.registry, TWO_JOBS)
        with fault_workers(service.settings, tmp_path, "delay=0.5") as workers:
            started = lambda: len(list((tmp_path / "marks").glob("started-*"))) >= 3  # noqa: E731
            killed: list[int] = []

            def housekeeping() -> None:
                if not killed and started():
                    killed.append(workers.pids[0])
                    os.kill(workers.pids[0], signal.SIGKILL)
                workers.revive()

            orchestrator = service.orchestrator(housekeeping=housekeeping)
            orchestrator.run(timeout_s=180)
        assert killed and workers.revived == 1
        assert isinstance(orchestrator.watch, WorkerWatch) and orchestrator.watch.deaths == 1
        assert orchestrator.stats.resent > 0
        check_outcomes(service.registry, tmp_path, jobs, TWO_JOBS)
        assert all(service.registry.get_job(job.id).note is None for job in jobs)  # type: ignore[union-attr]


def test_a_worker_beats_while_it_runs_and_leaves_when_stopped_cleanly(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path / "state")
    with Registry(settings.registry) as registry, LocalWorkers(settings, tmp_path) as workers:
        queue = deployment_queue(registry.deployment_id)
        assert workers.settings.queue == queue
        wait_for(lambda: len(registry.workers(queue)) == 1, 30, "the worker's first beat")
        first = registry.workers(queue)[0]
        wait_for(lambda: registry.workers(queue)[0].beat_at > first.beat_at, 30, "a second beat")
        workers.stop()
        assert registry.workers(queue) == []


def test_a_worker_whose_launcher_died_stops_by_itself(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path / "state")
    launcher = python(
        "import time",
        "from nasfleet.server.service.celery_app import CelerySettings",
        "from nasfleet.server.service.runtime import LocalWorkers",
        f"workers = LocalWorkers(CelerySettings.from_env(), {str(tmp_path)!r}).start()",
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(workers.pids[0]))",
        "time.sleep(600)",
    )
    with child_process(launcher, tmp_path / "launcher.log", settings.to_env()) as proc:
        wait_for(lambda: (tmp_path / "pid").exists(), 60, "the launcher to start its worker")
        worker = int((tmp_path / "pid").read_text())
        try:
            os.kill(proc.pid, signal.SIGKILL)  # the launcher only: its worker is in a session of its own
            proc.wait()
            wait_for(lambda: not alive(worker), 60, "the orphaned worker to stop")
        finally:
            if alive(worker):
                os.killpg(worker, signal.SIGKILL)


def test_registries_have_their_own_queues_and_refuse_each_others_tasks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Registry(f"sqlite:///{tmp_path}/a.db") as ours, Registry(f"sqlite:///{tmp_path}/b.db") as theirs:
        assert deployment_queue(ours.deployment_id) != deployment_queue(theirs.deployment_id)
        job = submit_plan(ours, TWO_JOBS[:1])[0]
        space = get_space("nb201", {"channels": 8, "cells_per_stage": 1})
        arch = space.encode(space.sample(np.random.default_rng(0)))
        scoring = tasks.ScoringSpec("nb201", ("fg_fi",), 8, 0, {"channels": 8, "cells_per_stage": 1})
        payload = make_payload(job.id, job.characteristics_hash, scoring, theirs.deployment_id)
        with caplog.at_level(logging.ERROR):
            tasks.score_locally(ours, payload, [arch])
        assert "payload.deployment must be the deployment id of this worker's registry" in caplog.text
        assert ours.evaluations(job.id) == [] and ours.get_job(job.id).status == "queued"  # type: ignore[union-attr]
        tasks.score_locally(ours, {**payload, "deployment": ours.deployment_id}, [arch])
        assert [e.arch for e in ours.evaluations(job.id)] == [arch]


def test_no_live_worker_is_said_in_the_jobs_note_until_one_comes(tmp_path: Path) -> None:
    with orchestrator_side(tmp_path) as service:
        jobs = submit_plan(service.registry, TWO_JOBS)
        with pytest.raises(TimeoutError):
            service.orchestrator().run(timeout_s=3)
        notes = {service.registry.get_job(job.id).note for job in jobs}  # type: ignore[union-attr]
        assert len(notes) == 1
        (note,) = notes
        assert note is not None and note.startswith(
            f"waiting for workers: none on queue {service.settings.queue!r}"
        )
        assert any("no worker on queue" in line for line in ServiceProblems(service)())
        with LocalWorkers(service.settings, tmp_path):
            service.orchestrator().run(timeout_s=180)
        assert all(service.registry.get_job(job.id).note is None for job in jobs)  # type: ignore[union-attr]


def test_an_unreachable_broker_is_said_in_the_note_and_in_health(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    settings = CelerySettings(broker=f"redis://127.0.0.1:{port}/0", registry=f"sqlite:///{tmp_path}/r.db")
    with Service(settings, tmp_path, ServiceOptions(local_workers=0)) as service:
        job = submit_plan(service.registry, TWO_JOBS[:1])[0]
        with pytest.raises(TimeoutError):
            service.orchestrator().run(timeout_s=12)
        note = service.registry.get_job(job.id).note  # type: ignore[union-attr]
        assert note is not None and note.startswith(
            f"broker unreachable: Error 111 connecting to 127.0.0.1:{port}"
        )
        app = create_app(service.registry, problems=ServiceProblems(service))
        transport = httpx.ASGITransport(app=app)

        async def get() -> httpx.Response:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.get("/v1/health")

        body = anyio.run(get).json()
        assert body["status"] == "degraded"
        assert any(f"broker redis://127.0.0.1:{port}/0 unreachable" in line for line in body["problems"])


def test_nasfleet_worker_on_a_dead_broker_says_so_in_one_line_and_exits_1(tmp_path: Path) -> None:
    port = free_port()
    command = worker_command(f"redis://127.0.0.1:{port}/9", f"sqlite:///{tmp_path}/r.db", "--wait", "3")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 2 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"nasfleet worker: broker redis://127.0.0.1:{port}/9 unreachable: ")
    assert lines[0].endswith("retrying for up to 3 s (--wait)") and lines[1].startswith(
        "nasfleet worker: giving up"
    )


def test_the_embedded_broker_keeps_no_consumed_message(tmp_path: Path) -> None:
    with orchestrator_side(tmp_path) as service:
        jobs = submit_plan(service.registry, TWO_JOBS)
        with LocalWorkers(service.settings, tmp_path) as workers:
            service.orchestrator(housekeeping=workers.revive).run(timeout_s=180)
        assert {service.registry.get_job(job.id).status for job in jobs} == {"done"}  # type: ignore[union-attr]
    with sqlite3.connect(tmp_path / "state" / BROKER_FILE) as broker:
        assert broker.execute("SELECT COUNT(*) FROM kombu_message").fetchone() == (0,)


def test_the_watch_reports_a_restart_under_the_same_name_and_a_silence_once(tmp_path: Path) -> None:
    with Registry(f"sqlite:///{tmp_path}/r.db") as registry:
        watch = WorkerWatch(registry, "q", dead_after_s=2.5)
        registry.beat("w1", "q", 100)
        registry.beat("w2", "q", 200)
        assert watch.look().died == () and watch.look().alive == 2
        registry.beat("w1", "q", 101)  # the same name, another process: the first one died
        assert watch.look().died == ("w1",)
        assert watch.look().died == ()
        time.sleep(3.0)
        registry.beat("w1", "q", 101)
        look = watch.look()
        assert look.died == ("w2",) and look.alive == 1 and watch.deaths == 2
        assert [worker.name for worker in registry.workers("q")] == ["w1"]
