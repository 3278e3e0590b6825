"""Running submitted jobs behind the API: the service's orchestrator, again and again, in a background thread.

`Orchestrator.run` returns once no admissible job is left, so `OrchestratorLoop` starts a fresh one
every ``idle_s`` while the server is up (a job submitted while one runs is admitted within its 0.5 s
admission period). A fresh orchestrator per round keeps nothing from finished jobs in memory. An
orchestrator that fails (the registry or the broker away, a job cancelled at the instant it finishes)
is logged and replaced after ``restart_s``: the new one resumes the running jobs from their checkpoints,
as after a crash. Stopping is asked through the orchestrator's housekeeping hook (called every second
while jobs run), so it never waits for the jobs to end; they stay running in the registry and the next
server resumes them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from nasfleet.server.registry import RegistryError
from nasfleet.server.service.celery_app import CelerySettings
from nasfleet.server.service.runtime import Service, ServiceOptions

log = logging.getLogger(__name__)
JOIN_TIMEOUT_S = 30.0


class _StopRequestedError(Exception):
    """Raised from the housekeeping hook to leave `Orchestrator.run` when the loop is stopped."""


class OrchestratorLoop:
    """Runs *service*'s unfinished jobs until `stop`; ``overrides`` go to `Service.orchestrator`."""

    def __init__(self, service: Service, *, idle_s: float = 0.2, restart_s: float = 1.0, **overrides: Any):
        self.service, self.idle_s, self.restart_s, self.overrides = service, idle_s, restart_s, overrides
        self.restarts = 0
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="nasfleet-orchestrator", daemon=True)

    @property
    def state(self) -> Literal["running", "restarting", "off"]:
        if not self._thread.is_alive():
            return "off"
        return "restarting" if self._failing else "running"

    def start(self) -> OrchestratorLoop:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def __enter__(self) -> OrchestratorLoop:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _housekeeping(self) -> None:
        if self._stop.is_set():
            raise _StopRequestedError
        if self.service.workers is not None:
            self.service.workers.revive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                orchestrator = self.service.orchestrator(housekeeping=self._housekeeping, **self.overrides)
                self._failing = False
                orchestrator.run()
                self._stop.wait(self.idle_s)
            except _StopRequestedError:
                return
            except Exception:  # the loop must outlive any one orchestrator
                log.exception("nasfleet serve: the orchestrator failed; restarting in %s s", self.restart_s)
                self._failing = True
                self.restarts += 1
                self._stop.wait(self.restart_s)


class ServiceProblems:
    """What keeps *service*'s jobs from advancing, one line each, looked up at most every *every_s*:
    the broker unreachable, or no worker of its queue beating (`nasfleet.server.service.liveness`)."""

    def __init__(self, service: Service, every_s: float = 5.0) -> None:
        self.service, self.every_s = service, every_s
        self._lock = threading.Lock()
        self._at, self._found = -math.inf, list[str]()

    def __call__(self) -> list[str]:
        with self._lock:
            if time.monotonic() - self._at >= self.every_s:
                self._found, self._at = self._look(), time.monotonic()
            return list(self._found)

    def _look(self) -> list[str]:
        problems = []
        if broker := self.service.broker_problem():
            problems.append(broker)
        queue, dead_after_s = self.service.settings.queue, self.service.options.dead_after_s
        try:
            alive = [w for w in self.service.registry.workers(queue) if w.age_s() <= dead_after_s]
        except RegistryError as error:
            return [*problems, f"registry unreachable: {error}"]
        if not alive:
            problems.append(f"no worker on queue {queue!r} has beaten in the last {dead_after_s:g} s")
        return problems


@contextmanager
def running_service(
    settings: CelerySettings, state_dir: str | Path, options: ServiceOptions, *, orchestrate: bool = True
) -> Iterator[tuple[Service, OrchestratorLoop | None]]:
    """The service (with its local workers) and, if *orchestrate*, its loop; both stopped on leaving."""
    with Service(settings, state_dir, options) as service:
        if not orchestrate:
            yield service, None
            return
        with OrchestratorLoop(service) as loop:
            yield service, loop
