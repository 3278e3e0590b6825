"""Worker liveness: workers beat in the registry, the orchestrator reads the beats, and orphans stop.

Why: a scoring task is acknowledged late, so a worker that dies mid-task leaves it unacknowledged, and
brokers give such a task back slowly or never (the SQLite broker never; Redis after its visibility
timeout, minutes). Instead of waiting for the broker, the orchestrator watches the workers:

- `Heartbeat` runs in each worker's main process: it writes the worker's row (`Registry.beat`) every
  `BEAT_S` seconds, removes it when the worker stops cleanly, and stops the worker (SIGTERM, a warm
  shutdown) when the process that launched it has died, so no orphan keeps consuming a queue.
- `WorkerWatch` runs in the orchestrator: a worker of its queue whose beat is older than
  ``dead_after_s`` died, and everything sent and unanswered is sent again at once (tasks are
  idempotent: an arch already stored is not scored again and never stored twice). With no live worker
  at all, the watch says so, and the orchestrator writes it in the jobs' ``note``.
- The watch also reads the broker's epoch (Redis's ``run_id``): a Redis restarted without persistence
  lost its queues while every worker lived on, so a new epoch also means "send everything again".
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from nasfleet.server.registry import Registry, RegistryError

log = logging.getLogger(__name__)
BEAT_S = 2.0
DEAD_AFTER_S = 10.0
PARENT_ENV = "NASFLEET_PARENT_PID"


class Heartbeat:
    """A daemon thread in a worker's main process: beat, and stop the worker if its parent died."""

    def __init__(self, registry_url: str, name: str, queue: str, every_s: float = BEAT_S) -> None:
        self.registry_url, self.name, self.queue, self.every_s = registry_url, name, queue, every_s
        parent = os.environ.get(PARENT_ENV, "")
        self.parent = int(parent) if parent.isdigit() else None
        self._stop = threading.Event()
        self._registry: Registry | None = None
        self._thread = threading.Thread(target=self._run, name="nasfleet-heartbeat", daemon=True)
        # A pool process forked from this one must not reuse (and later close) this one's connections.
        os.register_at_fork(after_in_child=self._forget_connections)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and remove the worker's row: it stopped cleanly."""
        self._stop.set()
        self._thread.join(self.every_s + 5)
        try:
            self._open().worker_stopped(self.name)
        except RegistryError as error:
            log.warning("nasfleet worker %s: could not remove its heartbeat: %s", self.name, error)

    def _open(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.registry_url)
        return self._registry

    def _forget_connections(self) -> None:
        if self._registry is not None:
            self._registry.forget_connections()
            self._registry = None

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.parent is not None and os.getppid() != self.parent:
                log.warning(
                    "nasfleet worker %s: its launcher (pid %d) died; stopping", self.name, self.parent
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                self._open().beat(self.name, self.queue, os.getpid())
            except (RegistryError, OSError) as error:
                log.warning("nasfleet worker %s: heartbeat failed: %s", self.name, error)
            self._stop.wait(self.every_s)


@dataclass(frozen=True)
class Liveness:
    """One look at the workers of a queue: who died since the last look, how many are alive, and whether
    the broker restarted meanwhile."""

    died: tuple[str, ...]
    alive: int
    silent_s: float | None  # seconds since any worker of the queue beat; None if none ever did
    broker_restarted: bool = False


class WorkerWatch:
    """The orchestrator's view of its queue's workers (see the module docstring)."""

    def __init__(
        self, registry: Registry, queue: str, dead_after_s: float = DEAD_AFTER_S,
        broker_epoch: Callable[[], str | None] | None = None,
    ) -> None:  # fmt: skip
        if not dead_after_s > BEAT_S:
            raise ValueError(f"dead_after_s must be > {BEAT_S} (the beat period), but got {dead_after_s!r}")
        self.registry, self.queue, self.dead_after_s = registry, queue, dead_after_s
        self.deaths = 0
        self._lives: dict[str, tuple[int, datetime]] = {}  # name -> (pid, started_at) when last seen
        self.broker_epoch, self._epoch = broker_epoch, ""
        self.broker_restarts = 0

    def look(self) -> Liveness:
        """Read the beats. A worker died if it is silent for more than ``dead_after_s`` (its row is then
        deleted, so the death is reported once) or if its name now beats from another process (it was
        restarted under a fixed name before it fell silent long enough)."""
        workers = self.registry.workers(self.queue)
        died: list[str] = []
        for worker in workers:
            age, life = worker.age_s(), (worker.pid, worker.started_at)
            seen = self._lives.pop(worker.name, None)
            if age > self.dead_after_s:
                log.warning("nasfleet: worker %s silent for %.0f s; resending its tasks", worker.name, age)
                self.registry.worker_stopped(worker.name)
                died.append(worker.name)
                continue
            if seen is not None and seen != life:
                log.warning(
                    "nasfleet: worker %s restarted as pid %d; resending its tasks", worker.name, life[0]
                )
                died.append(worker.name)
            self._lives[worker.name] = life
        self.deaths += len(died)
        ages = [worker.age_s() for worker in workers]
        alive = sum(age <= self.dead_after_s for age in ages)
        return Liveness(tuple(died), alive, min(ages) if ages else None, self._broker_restarted())

    def _broker_restarted(self) -> bool:
        """Whether the broker restarted since the last look (a broker without persistence lost its queue)."""
        epoch = self.broker_epoch() if self.broker_epoch is not None else None
        if not epoch:
            return False
        restarted, self._epoch = bool(self._epoch) and epoch != self._epoch, epoch
        if restarted:
            log.warning("nasfleet: the broker restarted; resending every unanswered task")
            self.broker_restarts += 1
        return restarted
