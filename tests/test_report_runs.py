"""Reports carry the run and round that trained them (registry schema version 5) and the epochs the device
trained (version 6), on SQLite and PostgreSQL: stored and checked, added in place to a version 4 or 5
database (older reports keep none), and shown by ``nasfleet registry list --what reports`` within 100
columns, whole in JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from nasfleet.bounds import MAX_EPOCHS
from nasfleet.cli import app
from nasfleet.server.registry import SCHEMA_VERSION, EvaluationRecord, Registry, RegistryError, ReportRecord
from nasfleet.server.registry import ResultRecord as Result

RUN = "sim-0123456789ab"


def _done_job(registry: Registry) -> str:
    """A job of tenant acme with two scored archs and a result: reports may name either arch."""
    registry.create_tenant("acme", exist_ok=True)
    job = registry.create_job(
        "acme", space="nb201", strategy="random", characteristics_hash="c" * 64, budget=2
    )
    registry.add_evaluations(job.id, [EvaluationRecord(a, {"synflow": 1.0}, 10, 100, 0.1) for a in "xy"])
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


def _report_columns(url: str) -> dict[str, Any]:
    """The reports table's columns, by name, as the database describes them."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {c["name"]: c for c in inspect(connection).get_columns("reports")}
    finally:
        engine.dispose()


def test_a_report_keeps_its_run_and_round_and_bad_ones_are_refused(registry: Registry) -> None:
    # Prepare
    job_id = _done_job(registry)
    # Execute
    first = registry.add_report(ReportRecord(job_id, "x", 0.9, 0.1, 1.0, 10, 10, run=RUN, round=1))
    second = registry.add_report(ReportRecord(job_id, "y", 0.8, 0.2, 1.0, 10, 10, run=RUN, round=2))
    plain = registry.add_report(ReportRecord(job_id, "x", 0.7, 0.3, 1.0, 10, 10))
    # Assert: kept as given; a report outside a named round has neither
    assert [(r.run, r.round) for r in registry.list_reports(job_id=job_id)] == [
        (RUN, 1),
        (RUN, 2),
        (None, None),
    ]
    assert (first.run, first.round, second.round, plain.run, plain.round) == (RUN, 1, 2, None, None)
    refused = [
        (ReportRecord(job_id, "x", 0.9, 0.1, 1.0, 10, 10, run=RUN, round=0),
         "round must be an integer in [1, "),
        (ReportRecord(job_id, "x", 0.9, 0.1, 1.0, 10, 10, run="a run", round=1),
         "run must be 1-64 characters of [A-Za-z0-9_.-], but got 'a run'"),
        (ReportRecord(job_id, "x", 0.9, 0.1, 1.0, 10, 10, round=True), "round must be an integer"),  # type: ignore[arg-type]
    ]  # fmt: skip
    for report, message in refused:
        with pytest.raises(RegistryError, match=f"^{re.escape(message)}"):
            registry.add_report(report)
    assert len(registry.list_reports()) == 3, "a refused report stores nothing"


def test_a_version_4_database_gets_report_runs_in_place(registry: Registry, url: str) -> None:
    # Prepare: a report, then the database as version 4 left it (reports without run and round)
    job_id = _done_job(registry)
    old = registry.add_report(ReportRecord(job_id, "x", 0.9, 0.1, 1.0, 10, 10))
    registry.close()
    _sql(url, "ALTER TABLE reports DROP COLUMN run")
    _sql(url, "ALTER TABLE reports DROP COLUMN round")
    _sql(url, "UPDATE schema_version SET version = 4")
    # Execute
    with Registry(url) as reopened:
        kept = reopened.list_reports(job_id=job_id)
        new = reopened.add_report(ReportRecord(job_id, "y", 0.8, 0.2, 1.0, 10, 10, run=RUN, round=2))
    # Assert: the old report is whole, with no run or round; new ones keep theirs; version 5 recorded
    assert kept == [old] and (old.run, old.round) == (None, None)
    assert (new.run, new.round) == (RUN, 2)
    assert _sql(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)] and SCHEMA_VERSION >= 5
    columns = _report_columns(url)
    assert columns["run"]["nullable"] and columns["round"]["nullable"]
    with Registry(url) as again:  # opening an up-to-date database changes nothing
        assert len(again.list_reports()) == 2


def test_the_reports_listing_shows_run_and_round_within_100_columns(tmp_path: Path) -> None:
    # Prepare: reports of two rounds of a run, and one with neither
    url, run = f"sqlite:///{tmp_path / 'registry.db'}", RUN
    with Registry(url) as registry:
        job_id = _done_job(registry)
        registry.upsert_device("acme", "orin-garage", tier="edge-gpu")
        for arch, round_number in (("x", 1), ("y", 2)):
            report = ReportRecord(job_id, arch, 0.9512, 0.1234, 3.0, 90, 10, 15.25, 12.5, "orin-garage",
                                  run=run, round=round_number)  # fmt: skip
            registry.add_report(report)
        registry.add_report(ReportRecord(job_id, "x", 0.5, 1.0, 3.0, 90, 10))
    runner = CliRunner()
    # Execute
    listed = runner.invoke(
        app, ["registry", "list", "--registry", url, "--what", "reports"], env={"COLUMNS": "240"}
    )
    shown = runner.invoke(app, ["registry", "show", job_id[:8], "--registry", url], env={"COLUMNS": "240"})
    data = runner.invoke(
        app, ["registry", "list", "--registry", url, "--what", "reports", "--format", "json"]
    )
    # Assert: within 100 columns, a header naming run and round; JSON has the whole values
    for result in (listed, shown):
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= 100, max(lines, key=len)
        assert any(line.split()[:4] == ["report", "job", "run", "rd"] for line in lines), result.stdout
        rows = [line.split() for line in lines if job_id[:8] in line and "orin-garage" in line]
        assert [row[2:4] for row in rows] == [[run, "1"], [run, "2"]], "one line per report"
        assert any("15.25/12.5" in line for line in lines), "latency as predicted/measured"
    reports = json.loads(data.stdout)
    assert [(r["run"], r["round"]) for r in reports] == [(run, 1), (run, 2), (None, None)]


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
    columns = _report_columns(url)
    assert columns["epochs_done"]["nullable"]
    with Registry(url) as again:  # opening an up-to-date database changes nothing
        assert [r.epochs_done for r in again.list_reports()] == [None, 3]
