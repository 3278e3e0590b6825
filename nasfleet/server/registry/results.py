"""A job's result and the devices' training reports: the `Registry` methods about a search's outcome.

Storing a result can finish its job in the same transaction; a report's public id is random, so it
reveals nothing of other tenants' reports.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Session, col, select

from nasfleet.bounds import MAX_EPOCHS
from nasfleet.server.registry.checks import (
    ARCH_LENGTH,
    DEVICE_NAME_LENGTH,
    MAX_ROUND,
    check_float,
    check_int,
    check_json,
    check_name,
    check_text,
    check_values,
    is_job_id,
    require,
)
from nasfleet.server.registry.jobs import update_job_row
from nasfleet.server.registry.records import ReportRecord, ResultRecord
from nasfleet.server.registry.rows import device_row, insert, job_row
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


class Results(Sessions):
    """The `Registry` methods about results and reports (a mixin of `Registry`)."""

    def set_result(self, result: ResultRecord, *, finish: bool = True) -> None:
        """Store (or replace) a job's result; with *finish*, mark the job done with this best, atomically."""
        values = _result_values(result)
        with self._session(write=True) as session:
            job_row(session, result.job_id)
            statement = insert(session, ResultRow).values(**values)
            changes = {key: statement.excluded[key] for key in values if key != "job_id"}
            session.exec(statement.on_conflict_do_update(index_elements=["job_id"], set_=changes))
            if finish:
                best = {"best_arch": values["arch"], "best_score": values["score"]}
                update_job_row(session, result.job_id, {"status": "done", **best})

    def get_result(self, job_id: str) -> ResultRecord | None:
        if not is_job_id(job_id):
            return None
        with self._session() as session:
            found = read_results(session, job_id=job_id)
            return found[0] if found else None

    def list_results(self, *, tenant: str | None = None) -> list[ResultRecord]:
        with self._session() as session:
            return read_results(session, tenant=tenant)

    def add_report(self, report: ReportRecord) -> ReportRecord:
        """Store a device's training report; returns it with its id, device and time filled in.

        Refused (a `RegistryError` naming the field, the rule and the value; nothing is stored): values out of
        range, a job with no result, an arch the job cannot have sent (neither its result nor an arch it
        scored), a device not of the job's tenant, or another device than the one the job searched for.
        """
        values = _report_values(report)
        with self._session(write=True) as session:
            job = job_row(session, report.job_id)
            result = session.get(ResultRow, job.id)
            evaluated = select(EvaluationRow.id).where(
                EvaluationRow.job_id == job.id, EvaluationRow.arch == report.arch
            )
            sent = result is not None and (
                report.arch == result.arch or session.exec(evaluated).first() is not None
            )
            require(sent, "arch", f"a SubNet job {job.id} can have sent (its result or an arch it scored)",
                    report.arch)  # fmt: skip
            device_id = job.device_id
            if report.device is not None:
                tenant = session.get_one(TenantRow, job.tenant_id)
                device_name = check_name("device", report.device, DEVICE_NAME_LENGTH)
                device_id = device_row(session, tenant, device_name).id
                require(job.device_id in (None, device_id), "device",
                        f"the device job {job.id} searched for (or any, for a fleet's shared job)",
                        report.device)  # fmt: skip
            row = ReportRow(device_id=device_id, public_id=uuid.uuid4().hex, **values)
            session.add(row)
            session.flush()
            stored = read_reports(session, job_id=report.job_id)
            return next(found for found in stored if found.id == row.public_id)

    def list_reports(self, *, job_id: str | None = None, tenant: str | None = None) -> list[ReportRecord]:
        if job_id is not None and not is_job_id(job_id):
            return []
        with self._session() as session:
            return read_reports(session, job_id=job_id, tenant=tenant)


def _result_values(result: ResultRecord) -> dict[str, Any]:
    require(isinstance(result, ResultRecord), "result", "a ResultRecord", result)
    history = check_json("history", list(result.history), mapping=False)
    require(all(isinstance(entry, dict) for entry in history), "history", "a list of mappings", history)
    return {
        "job_id": check_text("job_id", result.job_id, 32),
        "arch": check_text("arch", result.arch, ARCH_LENGTH),
        "score": check_float("score", result.score),
        "values": check_values("values", result.values),
        "params": check_int("params", result.params),
        "flops": check_int("flops", result.flops),
        "history": history,
        "created_at": utcnow(),
    }


def _report_values(report: ReportRecord) -> dict[str, Any]:
    require(isinstance(report, ReportRecord), "report", "a ReportRecord", report)
    latencies = {
        name: None if value is None else check_float(name, value, 0.0)
        for name, value in (
            ("latency_ms_predicted", report.latency_ms_predicted),
            ("latency_ms_measured", report.latency_ms_measured),
        )
    }
    epochs = report.epochs_done
    return {
        "job_id": check_text("job_id", report.job_id, 32),
        "arch": check_text("arch", report.arch, ARCH_LENGTH),
        "accuracy": check_float("accuracy", report.accuracy, 0.0, 1.0),
        "loss": check_float("loss", report.loss, 0.0),
        "train_seconds": check_float("train_seconds", report.train_seconds, 0.0),
        "num_train": check_int("num_train", report.num_train),
        "num_test": check_int("num_test", report.num_test),
        "run": None if report.run is None else check_name("run", report.run),
        "round": None if report.round is None else check_int("round", report.round, 1, MAX_ROUND),
        "epochs_done": None if epochs is None else check_int("epochs_done", epochs, 0, MAX_EPOCHS),
        **latencies,
    }


# -- reading: rows become records here, inside the session ---------------------------------------------------
def read_results(
    session: Session, tenant: str | None = None, job_id: str | None = None
) -> list[ResultRecord]:
    statement = select(ResultRow).join(JobRow).join(TenantRow)
    if tenant is not None:
        statement = statement.where(TenantRow.name == tenant)
    if job_id is not None:
        statement = statement.where(ResultRow.job_id == job_id)
    return [
        ResultRecord(row.job_id, row.arch, row.score, row.values, row.params, row.flops, tuple(row.history))
        for row in session.exec(statement.order_by(col(ResultRow.created_at), col(ResultRow.job_id)))
    ]


def read_reports(
    session: Session, job_id: str | None = None, tenant: str | None = None
) -> list[ReportRecord]:
    statement = (
        select(ReportRow, DeviceRow.name)
        .join(JobRow, col(ReportRow.job_id) == col(JobRow.id))
        .join(TenantRow, col(JobRow.tenant_id) == col(TenantRow.id))
        .outerjoin(DeviceRow, col(ReportRow.device_id) == col(DeviceRow.id))
    )
    if job_id is not None:
        statement = statement.where(ReportRow.job_id == job_id)
    if tenant is not None:
        statement = statement.where(TenantRow.name == tenant)
    return [
        ReportRecord(
            row.job_id,
            row.arch,
            row.accuracy,
            row.loss,
            row.train_seconds,
            row.num_train,
            row.num_test,
            row.latency_ms_predicted,
            row.latency_ms_measured,
            device_name,
            row.public_id,
            as_utc(row.created_at),
            run=row.run,
            round=row.round,
            epochs_done=row.epochs_done,
        )
        for row, device_name in session.exec(statement.order_by(col(ReportRow.id)))
    ]
