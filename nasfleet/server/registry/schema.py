"""The registry's schema version and its migrations: create the tables, or upgrade older ones in place.

Each version's step changes only what is missing, so it is safe on a database that a later step's code
created. A database written by newer code is refused (`SchemaVersionError`): opening it could corrupt it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import Connection
from sqlmodel import select

from nasfleet.server.registry.checks import SchemaVersionError
from nasfleet.server.registry.engines import shown_url
from nasfleet.server.registry.tables import (
    JOB_NAME_INDEX,
    EvaluationRow,
    JobRow,
    RegistryInfoRow,
    SchemaVersionRow,
    Table,
    utcnow,
)

SCHEMA_VERSION = 6
# Any 64-bit value: PostgreSQL has no unsigned integers; the advisory lock serializes concurrent migrations.
MIGRATION_LOCK_ID = 0x6E617366_6C656574 - 2**63
LEGACY_BATCH_OPTION = "probe_batch"  # the job option batch_size as versions 1 and 2 could store it
LEGACY_CACHE_WORKER = "cache"  # how schema versions 1 and 2 marked a cache hit: as its worker's name


def _create_tables(connection: Connection) -> None:
    Table.metadata.create_all(connection)


def _add_liveness(connection: Connection) -> None:
    """Version 2: the workers and registry_info tables, ``jobs.note`` and ``reports.public_id``.

    On a new database version 1's step already created the current tables; each change is made only
    where it is missing.
    """
    Table.metadata.create_all(connection)
    if "note" not in _columns(connection, "jobs"):
        connection.execute(text("ALTER TABLE jobs ADD COLUMN note TEXT"))
    if "public_id" not in _columns(connection, "reports"):
        connection.execute(text("ALTER TABLE reports ADD COLUMN public_id VARCHAR(32)"))
        for (row_id,) in connection.execute(text("SELECT id FROM reports")).all():
            connection.execute(text("UPDATE reports SET public_id = :p WHERE id = :i"),
                               {"p": uuid.uuid4().hex, "i": row_id})  # fmt: skip
        connection.execute(text("CREATE UNIQUE INDEX ix_reports_public_id ON reports (public_id)"))
    info = RegistryInfoRow.__table__  # type: ignore[attr-defined]
    if connection.execute(select(info.c.id)).first() is None:
        connection.execute(info.insert().values(id=1, deployment_id=uuid.uuid4().hex))


def _add_cached(connection: Connection) -> None:
    """Version 3: ``evaluations.cached``; before it, a cache hit was stored with the worker name "cache".

    Those rows become ``cached`` with no worker, as a cache hit is stored now.
    """
    if "cached" in _columns(connection, "evaluations"):
        return
    default = "false" if connection.dialect.name == "postgresql" else "0"
    connection.execute(text(f"ALTER TABLE evaluations ADD COLUMN cached BOOLEAN NOT NULL DEFAULT {default}"))
    evaluations = EvaluationRow.__table__  # type: ignore[attr-defined]
    hits = evaluations.update().where(evaluations.c.worker == LEGACY_CACHE_WORKER)
    connection.execute(hits.values(cached=True, worker=""))


def _rename_probe_batch(connection: Connection) -> None:
    """Version 3 also renames the job option ``probe_batch`` (written by early versions) to ``batch_size``,
    so a job stored then still resumes: the option no longer has two names."""
    jobs = JobRow.__table__  # type: ignore[attr-defined]
    for row_id, options in connection.execute(select(jobs.c.id, jobs.c.options)).all():
        if isinstance(options, dict) and LEGACY_BATCH_OPTION in options:
            renamed = {k: v for k, v in options.items() if k != LEGACY_BATCH_OPTION}
            renamed.setdefault("batch_size", options[LEGACY_BATCH_OPTION])
            connection.execute(jobs.update().where(jobs.c.id == row_id).values(options=renamed))


def _version_3(connection: Connection) -> None:
    _add_cached(connection)
    _rename_probe_batch(connection)


def _add_job_names(connection: Connection) -> None:
    """Version 4: ``jobs.name``, nullable (every older job stays unnamed), unique within a tenant."""
    if "name" not in _columns(connection, "jobs"):
        connection.execute(text("ALTER TABLE jobs ADD COLUMN name VARCHAR(64)"))
    if JOB_NAME_INDEX not in {index["name"] for index in inspect(connection).get_indexes("jobs")}:
        connection.execute(text(f"CREATE UNIQUE INDEX {JOB_NAME_INDEX} ON jobs (tenant_id, name)"))


def _add_report_runs(connection: Connection) -> None:
    """Version 5: ``reports.run`` and ``reports.round``, nullable: every older report stays valid, with
    neither (they were stored before reports said which run and round trained them)."""
    present = _columns(connection, "reports")
    if "run" not in present:
        connection.execute(text("ALTER TABLE reports ADD COLUMN run VARCHAR(64)"))
    if "round" not in present:
        connection.execute(text("ALTER TABLE reports ADD COLUMN round INTEGER"))


def _add_report_epochs(connection: Connection) -> None:
    """Version 6: ``reports.epochs_done``, nullable: every older report stays valid, without it."""
    if "epochs_done" not in _columns(connection, "reports"):
        connection.execute(text("ALTER TABLE reports ADD COLUMN epochs_done INTEGER"))


def _columns(connection: Connection, table: str) -> set[str]:
    return {column["name"] for column in inspect(connection).get_columns(table)}


# Step to version v from v - 1, run in order. Version 0 is "no schema yet"; version 1 is the first schema.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _create_tables, 2: _add_liveness, 3: _version_3, 4: _add_job_names, 5: _add_report_runs,
    6: _add_report_epochs,
}  # fmt: skip


def stored_version(connection: Connection) -> int:
    """The schema version recorded in the database; 0 when none is recorded yet."""
    if not connection.dialect.has_table(connection, SchemaVersionRow.__tablename__):
        return 0
    row = connection.execute(select(SchemaVersionRow.version).where(SchemaVersionRow.id == 1)).first()
    return 0 if row is None else int(row[0])


def migrate(engine: Engine) -> int:
    """Create the tables, or upgrade them to `SCHEMA_VERSION`, in one transaction; return the version.

    Concurrent callers are serialized (an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite).
    Raises `SchemaVersionError` for a database written by newer code: opening it could corrupt it.
    """
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_ID})
        version = stored_version(connection)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"registry schema version must be at most {SCHEMA_VERSION} (this code's), but the database "
                f"at {shown_url(engine)} has version {version}: upgrade nasfleet to open it"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[step](connection)
        if version < SCHEMA_VERSION:
            _record_version(connection, version)
    return SCHEMA_VERSION


def _record_version(connection: Connection, previous: int) -> None:
    table = SchemaVersionRow.__table__  # type: ignore[attr-defined]
    values = {"version": SCHEMA_VERSION, "migrated_at": utcnow()}
    if previous == 0:
        connection.execute(table.delete())
        connection.execute(table.insert().values(id=1, **values))
    else:
        connection.execute(table.update().where(table.c.id == 1).values(**values))
