"""Search jobs: creating, claiming, updating and checkpointing them; what a resuming orchestrator reads.

Resuming a crashed job: `Jobs.unfinished_jobs` lists queued and running jobs; `Jobs.checkpoint` stores a
step's new evaluations together with the strategy state, the count told and the best so far in one
transaction, so a stored state never runs ahead of its evaluations; `Jobs.claim_job` moves a queued job
to running for exactly one of several orchestrators. A done, failed or cancelled job is final.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from nasfleet.server.registry.checks import (
    ARCH_LENGTH,
    DEVICE_NAME_LENGTH,
    FINAL_JOB_STATUSES,
    HASH_LENGTH,
    JOB_STATUSES,
    JobFinishedError,
    check_choice,
    check_error_text,
    check_float,
    check_int,
    check_json,
    check_name,
    check_state,
    check_text,
    is_job_id,
    require,
)
from nasfleet.server.registry.evaluations import evaluation_values, insert_evaluations
from nasfleet.server.registry.records import EvaluationRecord, JobRecord
from nasfleet.server.registry.rows import device_row, id_of, job_row, rowcount, table_of, tenant_row
from nasfleet.server.registry.sessions import Sessions
from nasfleet.server.registry.tables import (
    DeviceRow,
    EvaluationRow,
    JobRow,
    ReportRow,
    ResultRow,
    TenantRow,
    as_utc,
    utcnow,
)


class Jobs(Sessions):
    """The `Registry` methods about search jobs (a mixin of `Registry`)."""

    def create_job(
        self, tenant: str, *, space: str, strategy: str, characteristics_hash: str, budget: int,
        seed: int = 0, strategy_config: Mapping[str, Any] | None = None,
        constraints: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
        device: str | None = None, name: str | None = None,
    ) -> JobRecord:  # fmt: skip
        """Open a queued search job for *tenant* (and one of its devices); its id is a fresh UUID hex.

        *name*, if given, must be unused among the tenant's jobs (`find_job` finds the job by it).
        """
        values = {
            "name": None if name is None else check_name("name", name),
            "space": check_name("space", space),
            "strategy": check_name("strategy", strategy),
            "characteristics_hash": check_name("characteristics_hash", characteristics_hash, HASH_LENGTH),
            "budget": check_int("budget", budget, 1, 10**9),
            "seed": check_int("seed", seed),
            "strategy_config": check_json("strategy_config", strategy_config or {}),
            "constraints": check_json("constraints", constraints or {}),
            "options": check_json("options", options or {}),
        }
        with self._session(write=True) as session:
            owner = tenant_row(session, check_name("tenant", tenant))
            if name is not None:
                taken = bool(read_jobs(session, tenant=owner.name, name=name))
                require(not taken, "name", f"a name no other job of tenant {owner.name!r} has", name)
            device_id = None
            if device is not None:
                device_id = device_row(session, owner, check_name("device", device, DEVICE_NAME_LENGTH)).id
            row = JobRow(id=uuid.uuid4().hex, tenant_id=id_of(owner), device_id=device_id, **values)
            session.add(row)
            session.flush()
            return read_jobs(session, job_id=row.id)[0]

    def get_job(self, job_id: str) -> JobRecord | None:
        if not is_job_id(job_id):
            return None
        with self._session() as session:
            found = read_jobs(session, job_id=job_id)
            return found[0] if found else None

    def find_job(self, tenant: str, name: str) -> JobRecord | None:
        """The job of *tenant* named *name*, or None."""
        with self._session() as session:
            found = read_jobs(session, tenant=check_name("tenant", tenant), name=check_name("name", name))
            return found[0] if found else None

    def list_jobs(
        self, *, tenant: str | None = None, status: str | Iterable[str] | None = None
    ) -> list[JobRecord]:
        """Jobs, oldest first, of one tenant and/or with one of the given statuses."""
        statuses = None
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            statuses = [check_choice("status", value, JOB_STATUSES) for value in statuses]
        with self._session() as session:
            return read_jobs(session, tenant=tenant, statuses=statuses)

    def unfinished_jobs(self, *, tenant: str | None = None) -> list[JobRecord]:
        """Queued and running jobs: what an orchestrator resumes after a crash."""
        return self.list_jobs(tenant=tenant, status=("queued", "running"))

    def claim_job(self, job_id: str) -> bool:
        """Move a queued job to running; True for exactly one caller, False if it was not queued."""
        with self._session(write=True) as session:
            job_row(session, job_id)
            jobs = table_of(JobRow)
            claim = update(jobs).where(jobs.c.id == job_id, jobs.c.status == "queued")
            return rowcount(session.exec(claim.values(status="running", updated_at=utcnow()))) == 1

    def update_job(
        self, job_id: str, *, status: str | None = None, state: Mapping[str, Any] | None = None,
        evaluations_done: int | None = None, best: tuple[str, float] | None = None, error: str | None = None,
        note: str | None = None,
    ) -> JobRecord:  # fmt: skip
        """Change the given fields (None leaves one as it is); a done, failed or cancelled job is final.

        *note* says why a running job does not advance; "" clears it.
        """
        changes = _job_changes(status, state, evaluations_done, best, error)
        if note is not None:
            changes["note"] = check_error_text(note) or None
        with self._session(write=True) as session:
            update_job_row(session, job_id, changes)
            return read_jobs(session, job_id=job_id)[0]

    def checkpoint(
        self, job_id: str, evaluations: Iterable[EvaluationRecord], *, state: Mapping[str, Any],
        evaluations_done: int, best: tuple[str, float] | None = None,
    ) -> int:  # fmt: skip
        """Store a step atomically: its new evaluations, the strategy state, the count told and the best.

        Returns how many evaluations were new, as `add_evaluations` does.
        """
        rows = evaluation_values(evaluations)
        changes = _job_changes(None, state, evaluations_done, best, None)
        with self._session(write=True) as session:
            job_row(session, job_id)
            added = insert_evaluations(session, job_id, rows)
            update_job_row(session, job_id, changes)
            return added

    def cancel_job(self, job_id: str, reason: str) -> JobRecord:
        """Cancel a queued or running job with *reason* as its error; a cancelled one is returned as it is.

        Raises `JobFinishedError` if the job is done or failed: those are final.
        """
        with self._session(write=True) as session:
            row = job_row(session, job_id, lock=True)
            if row.status in ("done", "failed"):
                raise JobFinishedError(job_id, row.status)
            if row.status != "cancelled":
                update_job_row(session, job_id, {"status": "cancelled", "error": check_error_text(reason)})
            return read_jobs(session, job_id=job_id)[0]

    def reopen_job(self, job_id: str) -> JobRecord:
        """Queue a cancelled or failed job again, to resume from its checkpoint (evaluations are kept);
        a queued or running job is returned as it is, a done one refused."""
        with self._session(write=True) as session:
            row = job_row(session, job_id, lock=True)
            require(row.status != "done", "status", "not done to resume the job", row.status)
            if row.status in FINAL_JOB_STATUSES:
                row.status, row.error, row.note, row.updated_at = "queued", None, None, utcnow()
                session.add(row)
                session.flush()
            return read_jobs(session, job_id=job_id)[0]

    def delete_job(self, job_id: str) -> dict[str, int]:
        """Delete a finished (done, failed or cancelled) job with its evaluations, result and reports, in
        one transaction; how many rows of each went. Refused while it is queued or running."""
        with self._session(write=True) as session:
            row = job_row(session, job_id, lock=True)
            rule = "done, failed or cancelled to delete the job (cancel it first)"
            require(row.status in FINAL_JOB_STATUSES, "status", rule, row.status)
            counts = {}
            owned = {"reports": ReportRow, "results": ResultRow, "evaluations": EvaluationRow}
            for name, model in owned.items():
                table = table_of(model)
                counts[name] = rowcount(session.exec(delete(table).where(table.c.job_id == job_id)))
            session.exec(delete(table_of(JobRow)).where(table_of(JobRow).c.id == job_id))
            return counts


def update_job_row(session: Session, job_id: str, changes: Mapping[str, Any]) -> None:
    """Apply checked *changes* to a job, locking its row; a final status is never left."""
    row = job_row(session, job_id, lock=True)
    status = changes.get("status", row.status)
    final = row.status in FINAL_JOB_STATUSES
    require(not final or status == row.status, "status", f"unchanged once the job is {row.status!r}", status)
    done = changes.get("evaluations_done", row.evaluations_done)
    require(done <= row.budget, "evaluations_done", f"at most the job's budget {row.budget}", done)
    for name, value in changes.items():
        setattr(row, name, value)
    if status in FINAL_JOB_STATUSES:
        row.note = None  # nothing is awaited any more
    row.updated_at = utcnow()
    session.add(row)
    session.flush()


def _job_changes(
    status: str | None, state: Mapping[str, Any] | None, evaluations_done: int | None,
    best: tuple[str, float] | None, error: str | None,
) -> dict[str, Any]:  # fmt: skip
    changes: dict[str, Any] = {}
    if status is not None:
        changes["status"] = check_choice("status", status, JOB_STATUSES)
    if state is not None:
        changes["strategy_state"] = check_state(state)
    if evaluations_done is not None:
        changes["evaluations_done"] = check_int("evaluations_done", evaluations_done)
    if best is not None:
        require(isinstance(best, tuple | list) and len(best) == 2, "best", "a pair (arch, score)", best)
        changes["best_arch"] = check_text("best arch", best[0], ARCH_LENGTH)
        changes["best_score"] = check_float("best score", best[1])
    if error is not None:
        changes["error"] = check_error_text(error)
    return changes


# -- reading: rows become records here, inside the session ---------------------------------------------------
def read_jobs(
    session: Session, tenant: str | None = None, statuses: list[str] | None = None,
    job_id: str | None = None, name: str | None = None,
) -> list[JobRecord]:  # fmt: skip
    statement = (
        select(JobRow, TenantRow.name, DeviceRow.name)
        .join(TenantRow, col(JobRow.tenant_id) == col(TenantRow.id))
        .outerjoin(DeviceRow, col(JobRow.device_id) == col(DeviceRow.id))
    )
    if tenant is not None:
        statement = statement.where(TenantRow.name == tenant)
    if statuses is not None:
        statement = statement.where(col(JobRow.status).in_(statuses))
    if job_id is not None:
        statement = statement.where(JobRow.id == job_id)
    if name is not None:
        statement = statement.where(JobRow.name == name)
    return [
        JobRecord(
            row.id,
            tenant_name,
            device_name,
            row.space,
            row.strategy,
            row.strategy_config,
            row.options,
            row.constraints,
            row.characteristics_hash,
            row.budget,
            row.seed,
            row.status,
            None if row.strategy_state is None else json.loads(row.strategy_state),
            row.evaluations_done,
            row.best_arch,
            row.best_score,
            row.error,
            as_utc(row.created_at),
            as_utc(row.updated_at),
            row.note,
            row.name,
        )
        for row, tenant_name, device_name in session.exec(
            statement.order_by(col(JobRow.created_at), col(JobRow.id))
        )
    ]
