"""Reports keep the epochs the device trained (registry schema version 6), on SQLite and PostgreSQL: stored
and checked, added in place to a version 5 database (older reports keep none), and exported whole."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from nasfleet.bounds import MAX_EPOCHS
from nasfleet.server.registry import SCHEMA_VERSION, EvaluationRecord, Registry, RegistryError, ReportRecord
from nasfleet.server.registry import ResultRecord as Result


def _done_job(registry: Registry) -> str:
    """A job of tenant acme with one scored arch and its result: reports name that arch."""
    registry.create_tenant("acme", exist_ok=True)
    job = registry.create_job(
        "acme", space="nb201", strategy="random", characteristics_hash="c" * 64, budget=1
    )
    registry.add_evaluations(job.id, [EvaluationRecord("x", {"synflow": 1.0}, 10, 100, 0.1)])
    registry.set_result(Result(job.id, "x", 1.0, {"synflow": 1.0}, 10, 100))
    return job.id


def _sql(url: str, statement: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def test_a_report_keeps_its_epochs_and_bad_counts_are_refused(registry: Registry) -> None:
    # Prepare
    job_id = _done_job(registry)
    # Execute
    stored = [registry.add_report(ReportRecord(job_id, "x", 0.9, 0.1, 1.0, 10, 10, epochs_done=e))
              for e in (0, 7, MAX_EPOCHS, None)]  # fmt: skip
    # Assert: kept as given, and read back; every count outside [0, MAX_EPOCHS] is refused naming the field
    assert [r.epochs_done for r in stored] == [0, 7, MAX_EPOCHS, None]
    assert [r.epochs_done for r in registry.list_reports(job_id=job_id)] == [0, 7, MAX_EPOCHS, None]
    assert [r["epochs_done"] for r in registry.export()["reports"]] == [0, 7, MAX_EPOCHS, None]
    for bad in (-1, MAX_EPOCHS + 1, True, 2.5):
        message = f"epochs_done must be an integer in [0, {MAX_EPOCHS}], but got {bad!r}"
        with pytest.raises(RegistryError, match=f"^{re.escape(message)}"):
            registry.add_report(ReportRecord(job_id, "x", 0.9, 0.1, 1.0, 10, 10, epochs_done=bad))  # type: ignore[arg-type]
    assert len(registry.list_reports()) == 4, "a refused report stores nothing"


def test_a_version_5_database_gets_report_epochs_in_place(registry: Registry, url: str) -> None:
    # Prepare: a report, then the database as version 5 left it (reports without epochs_done)
    job_id = _done_job(registry)
    old = registry.add_report(ReportRecord(job_id, "x", 0.9, 0.1, 1.0, 10, 10, run="nightly", round=1))
    registry.close()
    _sql(url, "ALTER TABLE reports DROP COLUMN epochs_done")
    _sql(url, "UPDATE schema_version SET version = 5")
    # Execute
    with Registry(url) as reopened:
        kept = reopened.list_reports(job_id=job_id)
        new = reopened.add_report(ReportRecord(job_id, "x", 0.8, 0.2, 1.0, 10, 10, epochs_done=3))
    # Assert: the old report is whole, with no epochs; new ones keep theirs; version 6 recorded
    assert kept == [old] and (old.run, old.round, old.epochs_done) == ("nightly", 1, None)
    assert new.epochs_done == 3
    assert _sql(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 6
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            columns = {c["name"]: c for c in inspect(connection).get_columns("reports")}
    finally:
        engine.dispose()
    assert columns["epochs_done"]["nullable"]
    with Registry(url) as again:  # opening an up-to-date database changes nothing
        assert [r.epochs_done for r in again.list_reports()] == [None, 3]
