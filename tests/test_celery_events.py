"""Celery's own monitoring tools on a nasfleet deployment: ``celery inspect`` and ``celery events``.

A real ``nasfleet worker`` serves a Redis broker and an SQLite registry, started as on another machine.
``celery -A nasfleet.server.service.celery_app inspect ping``, given only the worker's environment
variables, must name that worker; ``celery ... events --dump`` must show every scoring task that an
orchestrator in this process sends go through sent, received, started and succeeded, on that worker.
The worker's start-up output must carry no warning (issue 17 found Celery's SecurityWarning there).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from service_support import child_process, sqlite_url, submit_plan, wait_for, worker_command

from nasfleet.server.registry import Registry
from nasfleet.server.service.celery_app import CelerySettings, make_app
from nasfleet.server.service.runtime import Service, ServiceOptions
from nasfleet.server.service.tasks import TASK_NAME

REDIS_DB = 15
APP = "nasfleet.server.service.celery_app"
TASK_EVENTS = ("task sent", "task received", "task started", "task succeeded")
PROBE = "nasfleet-probe"
# One task event as `celery events --dump` prints it: "<node> [<time>] task started: <name>(<id>) ..."
_TASK_LINE = re.compile(rf"^(\S+) \[[^\]]*\] (task \w+):? {re.escape(TASK_NAME)}\(([0-9a-f-]+)\)")


def celery(*args: str) -> list[str]:
    """The ``celery`` command line with nasfleet's app, as the docs (docs/monitoring.md) show it."""
    return [sys.executable, "-m", "celery", "-A", APP, *args]


def task_events(dump: Path) -> dict[str, dict[str, str]]:
    """The task events in *dump*: for each task id, each event type and the node that sent it."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    for line in dump.read_text(errors="replace").splitlines():
        if match := _TASK_LINE.match(line):
            node, kind, task_id = match.groups()
            found[task_id][kind] = node
    return found


def wait_until_dumping(settings: CelerySettings, dump: Path, proc: subprocess.Popen[bytes]) -> None:
    """Publish probe events until the dump prints one: then it listens (Redis events are pub/sub, lost
    by a monitor that has not subscribed yet)."""
    app = make_app(settings)
    try:
        with app.events.default_dispatcher() as dispatcher:

            def printed() -> bool:
                assert proc.poll() is None, dump.read_text(errors="replace")
                dispatcher.send(PROBE)
                return PROBE.replace("-", " ") in dump.read_text(errors="replace")

            wait_for(printed, 30, f"`celery events --dump` to print a probe event (see {dump})")
    finally:
        app.close()


def worker_name(registry_url: str, proc: subprocess.Popen[bytes], log: Path) -> str:
    """The Celery node name of the only worker, once it beats in the registry (it consumes by then)."""
    with Registry(registry_url) as registry:

        def beating() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")
            return len(registry.workers()) == 1

        wait_for(beating, 60, f"the worker's heartbeat (see {log})")
        return registry.workers()[0].name


@pytest.mark.timeout(150)
def test_celery_inspect_and_events_see_a_nasfleet_worker_and_its_tasks(
    tmp_path: Path, redis_broker: str
) -> None:
    # Prepare: a job in the registry, a `nasfleet worker`, and the monitors' environment (the worker's)
    registry_url = sqlite_url(tmp_path)
    settings = CelerySettings(broker=redis_broker, registry=registry_url)
    monitor_env = {"NASFLEET_BROKER": redis_broker, "NASFLEET_REGISTRY": registry_url}
    with Registry(registry_url) as registry:
        [job] = submit_plan(registry, [("acme", 1, 8, 0)])
    worker_log, dump_log = tmp_path / "worker.log", tmp_path / "events.log"
    with child_process(worker_command(redis_broker, registry_url), worker_log) as worker:
        name = worker_name(registry_url, worker, worker_log)

        # Execute: inspect ping, then run the job with the event dump listening
        ping = subprocess.run(celery("inspect", "ping", "--timeout", "5"), capture_output=True, text=True,
                              timeout=60, env={**os.environ, **monitor_env})  # fmt: skip
        with child_process(celery("events", "--dump"), dump_log, monitor_env) as dump:
            wait_until_dumping(settings, dump_log, dump)
            with Service(settings, tmp_path / "state", ServiceOptions(local_workers=0)) as service:
                service.run([job.id])

            def all_succeeded() -> bool:
                events = task_events(dump_log)
                return bool(events) and all("task succeeded" in kinds for kinds in events.values())

            wait_for(all_succeeded, 30, f"every task's task-succeeded event (see {dump_log})")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, worker_log.read_text(errors="replace")

    # Assert: the worker answered by name; every task was seen from its sending to its success
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert f"-> {name}: OK" in " ".join(ping.stdout.split()), ping.stdout
    events = task_events(dump_log)
    with Registry(registry_url) as registry:
        assert len(events) >= len({e.arch for e in registry.evaluations(job.id)}) > 0
    sender = f"gen{os.getpid()}@"
    for task_id, kinds in events.items():
        assert sorted(kinds) == sorted(TASK_EVENTS), (task_id, kinds)
        assert kinds.pop("task sent").startswith(sender), (task_id, sender)
        assert set(kinds.values()) == {name}, (task_id, kinds)
    # ... and its start-up said no warning (Celery's SecurityWarning as root is the one issue 17 saw)
    assert "Warning" not in worker_log.read_text(errors="replace")
