"""Worker liveness and the deployment id: what lets the orchestrator see that a worker died.

Each scoring worker's main process beats (`WorkerBoard.beat`) every few seconds while it runs and
removes its row when it stops cleanly (`WorkerBoard.worker_stopped`). A worker whose beat is older than
the orchestrator's ``dead_after_s`` died (SIGKILL, a lost machine): the tasks it held are sent again.
The deployment id is a random id stored once per registry; it names the deployment's task queue and
travels in every task, so a worker never scores for a registry other than its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete
from sqlmodel import Session, col, select

from nasfleet.server.registry.checks import NAME_LENGTH, WORKER_LENGTH, check_int, check_text
from nasfleet.server.registry.sessions import Sessions
from nasfleet.server.registry.tables import RegistryInfoRow, WorkerRow, as_utc, utcnow


@dataclass(frozen=True)
class WorkerRecord:
    """A worker's last heartbeat: its Celery node name, queue, main process id, start and last beat."""

    name: str
    queue: str
    pid: int
    started_at: datetime
    beat_at: datetime

    def age_s(self, now: datetime | None = None) -> float:
        """Seconds since the last beat."""
        return ((now or utcnow()) - self.beat_at).total_seconds()


class WorkerBoard(Sessions):
    """The `Registry` methods about workers and the deployment id (a mixin of `Registry`)."""

    _deployment: str | None = None

    @property
    def deployment_id(self) -> str:
        """This registry's random deployment id (32 hex digits), read once."""
        if self._deployment is None:
            with self._session() as session:
                row = session.get(RegistryInfoRow, 1)
                assert row is not None, "the schema migration stores the deployment id"
                self._deployment = row.deployment_id
        return str(self._deployment)

    def beat(self, name: str, queue: str, pid: int) -> None:
        """Record that worker *name* (consuming *queue*, main process *pid*) is alive now."""
        name = check_text("worker name", name, WORKER_LENGTH)
        queue = check_text("queue", queue, NAME_LENGTH + 40)
        pid = check_int("pid", pid, 1)
        with self._session(write=True) as session:
            row = session.get(WorkerRow, name)
            now = utcnow()
            if row is None:
                row = WorkerRow(name=name, queue=queue, pid=pid, started_at=now, beat_at=now)
            else:
                if row.pid != pid:  # another process under the same name: a new life
                    row.started_at = now
                row.queue, row.pid, row.beat_at = queue, pid, now
            session.add(row)

    def worker_stopped(self, name: str) -> None:
        """Forget worker *name*: it stopped cleanly (its unfinished tasks went back to the broker)."""
        with self._session(write=True) as session:
            session.exec(delete(WorkerRow).where(col(WorkerRow.name) == name))

    def workers(self, queue: str | None = None) -> list[WorkerRecord]:
        """The workers that beat (of *queue*), by name; dead ones too until `worker_stopped`."""
        with self._session() as session:
            return list(_workers(session, queue))


def _workers(session: Session, queue: str | None) -> Iterator[WorkerRecord]:
    statement = select(WorkerRow).order_by(col(WorkerRow.name))
    if queue is not None:
        statement = statement.where(WorkerRow.queue == queue)
    for row in session.exec(statement):
        yield WorkerRecord(row.name, row.queue, row.pid, as_utc(row.started_at), as_utc(row.beat_at))
