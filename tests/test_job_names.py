"""Job names, cancel, reopen and delete in the registry, on SQLite and PostgreSQL; schema version 4's
migration; and how a named job is found or refused (`nasfleet.server.service.named_jobs`)."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from service_support import OPTIONS, characteristics
from sqlalchemy import create_engine, inspect, text

from nasfleet.server.registry import (
    SCHEMA_VERSION,
    EvaluationRecord,
    JobFinishedError,
    JobRecord,
    Registry,
    RegistryError,
    ReportRecord,
    ResultRecord,
)
from nasfleet.server.registry.tables import JOB_NAME_INDEX
from nasfleet.server.service.jobs import job_settings, submit_job
from nasfleet.server.service.named_jobs import JobSettingsError, open_named_job


def _job(registry: Registry, tenant: str = "acme", name: str | None = None) -> JobRecord:
    registry.create_tenant(tenant, exist_ok=True)
    return registry.create_job(tenant, space="nb201", strategy="random", characteristics_hash="c" * 64,
                               budget=4, name=name)  # fmt: skip


def _sql(url: str, statement: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def _evaluation(arch: str) -> EvaluationRecord:
    return EvaluationRecord(arch, {"synflow": 1.0}, 10, 100, 0.1, worker="w0")


def test_names_are_unique_per_tenant_and_found(registry: Registry) -> None:
    # Execute
    first = _job(registry, "acme", "run-1")
    other_tenant = _job(registry, "globex", "run-1")
    unnamed = [_job(registry), _job(registry)]  # any number of unnamed jobs
    # Assert
    assert first.name == "run-1" and registry.find_job("acme", "run-1") == first
    assert registry.find_job("globex", "run-1") == other_tenant and registry.find_job("acme", "x") is None
    assert [job.name for job in unnamed] == [None, None]
    rule = "name must be a name no other job of tenant 'acme' has, but got 'run-1'"
    with pytest.raises(RegistryError, match=re.escape(rule)):
        _job(registry, "acme", "run-1")
    with pytest.raises(RegistryError, match=re.escape("name must be 1-64 characters of [A-Za-z0-9_.-]")):
        _job(registry, "acme", "bad name")
    assert len(registry.list_jobs(tenant="acme")) == 3  # the refused ones left nothing


def test_cancel_reopen_and_delete(registry: Registry) -> None:
    # Prepare: a running job with two evaluations, and a done one with a result and a report
    running, done = _job(registry, name="a"), _job(registry, name="b")
    assert registry.claim_job(running.id)
    registry.checkpoint(running.id, [_evaluation("x"), _evaluation("y")], state={"s": 1}, evaluations_done=2)
    registry.add_evaluations(done.id, [_evaluation("x")])
    registry.set_result(ResultRecord(done.id, "x", 1.0, {"synflow": 1.0}, 10, 100))
    registry.add_report(ReportRecord(done.id, "x", 0.9, 0.1, 1.0, 10, 10))
    # Execute / Assert: cancel keeps the checkpoint; again is no change; a done job refuses
    cancelled = registry.cancel_job(running.id, "stop")
    assert (cancelled.status, cancelled.error, cancelled.evaluations_done) == ("cancelled", "stop", 2)
    assert registry.cancel_job(running.id, "again") == cancelled
    with pytest.raises(JobFinishedError, match=f"job {done.id} cannot be cancelled: it is done"):
        registry.cancel_job(done.id, "stop")
    with pytest.raises(RegistryError, match="status must be done, failed or cancelled to delete the job"):
        registry.delete_job(registry.reopen_job(running.id).id)
    reopened = registry.get_job(running.id)
    assert reopened is not None and (reopened.status, reopened.error) == ("queued", None)
    assert reopened.strategy_state == {"s": 1} and len(registry.evaluations(running.id)) == 2
    with pytest.raises(RegistryError, match="status must be not done to resume the job, but got 'done'"):
        registry.reopen_job(done.id)
    # delete: the job with its evaluations, result and report; the other job untouched
    assert registry.delete_job(done.id) == {"reports": 1, "results": 1, "evaluations": 1}
    left = registry.export()
    assert [job["id"] for job in left["jobs"]] == [running.id] and registry.get_job(done.id) is None
    assert {row["job_id"] for row in left["evaluations"]} == {running.id}
    assert left["results"] == [] and left["reports"] == []


def test_a_version_3_database_gets_job_names_in_place(registry: Registry, url: str) -> None:
    # Prepare: a job, then the database as version 3 left it (no name column, no index)
    job = _job(registry)
    registry.close()
    _sql(url, f"DROP INDEX {JOB_NAME_INDEX}")
    _sql(url, "ALTER TABLE jobs DROP COLUMN name")
    _sql(url, "UPDATE schema_version SET version = 3")
    # Execute
    with Registry(url) as reopened:
        old = reopened.get_job(job.id)
        named = _job(reopened, name="run-1")
        with pytest.raises(RegistryError, match="name must be a name no other job"):
            _job(reopened, name="run-1")
    # Assert: the old job kept, unnamed; names work; version 4 recorded; the index is unique
    assert old is not None and old.name is None and old.id == job.id and named.name == "run-1"
    assert _sql(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)] and SCHEMA_VERSION >= 4
    columns, indexes = _inspect(url)
    index = next(index for index in indexes if index["name"] == JOB_NAME_INDEX)
    assert index["unique"] and index["column_names"] == ["tenant_id", "name"]
    copy = ", ".join(f"'{'f' * 32}'" if column == "id" else column for column in columns)
    with pytest.raises(Exception, match=r"(?i)unique"):  # the database itself refuses a second "run-1"
        _sql(url, f"INSERT INTO jobs ({', '.join(columns)}) SELECT {copy} FROM jobs WHERE id = '{named.id}'")


def _inspect(url: str) -> tuple[list[str], list[Any]]:
    """The jobs table's column names and indexes, as the database reports them."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            found = inspect(connection)
            return [column["name"] for column in found.get_columns("jobs")], list(found.get_indexes("jobs"))
    finally:
        engine.dispose()


def test_a_named_job_is_created_resumed_or_refused(registry: Registry) -> None:
    # Prepare
    chars = characteristics(0, sketches=False)
    settings = job_settings(chars, budget=8, seed=1, options=OPTIONS)
    # Execute / Assert: created, then found again; a cancelled one is queued again
    job = open_named_job(registry, "acme", "run-1", settings)
    assert (job.name, job.status, job.budget) == ("run-1", "queued", 8)
    registry.cancel_job(job.id, "interrupted")
    assert open_named_job(registry, "acme", "run-1", settings).status == "queued"
    # other settings: refused, naming each
    other = job_settings(chars, budget=9, seed=1, options=replace(OPTIONS, ask_size=5))
    with pytest.raises(JobSettingsError) as refused:
        open_named_job(registry, "acme", "run-1", other)
    assert "budget: stored 8, asked 9" in str(refused.value)
    assert "options.ask_size: stored 4, asked 5" in str(refused.value)
    assert len(registry.list_jobs()) == 1  # nothing created
    # the same name under another tenant is another job
    assert open_named_job(registry, "globex", "run-1", settings).id != job.id
    plain = submit_job(registry, "acme", chars, budget=8, options=OPTIONS)
    assert plain.name is None
