"""Row access shared by the registry's concerns: rows found by key, and the dialect's idempotent INSERT.

Rows are sorted by key before a multi-row insert, so two concurrent writers on PostgreSQL take row locks
in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from nasfleet.server.registry.checks import is_job_id, require
from nasfleet.server.registry.tables import DeviceRow, JobRow, TenantRow, utcnow

CHUNK = 500  # rows per multi-row insert, well under SQLite's limit on bound parameters


def table_of(model: type[Any]) -> Table:
    table: Table = model.__table__
    return table


def insert(session: Session, model: type[Any]) -> Any:
    """A Core INSERT into *model*'s table with ``on_conflict_do_nothing/do_update``, for the dialect."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table_of(model))


def rowcount(result: Any) -> int:
    """Rows a Core UPDATE matched (ORM-enabled statements add RETURNING and report -1 on PostgreSQL)."""
    return int(result.rowcount)


def insert_new(session: Session, model: type[Any], rows: list[dict[str, Any]], keys: Sequence[str]) -> int:
    """Insert *rows* (sorted by key), skipping those whose *keys* exist already; count the new ones."""
    added, now = 0, utcnow()
    for start in range(0, len(rows), CHUNK):
        chunk = [{**row, "created_at": now} for row in rows[start : start + CHUNK]]
        statement = insert(session, model).values(chunk).on_conflict_do_nothing(index_elements=list(keys))
        # RETURNING counts what was inserted on every backend; a multi-row rowcount is not portable.
        added += len(session.exec(statement.returning(table_of(model).c.arch)).all())
    return added


def id_of(row: TenantRow) -> int:
    assert row.id is not None, "a stored row has an id"
    return row.id


def tenant_row(session: Session, name: str) -> TenantRow:
    row = session.exec(select(TenantRow).where(TenantRow.name == name)).first()
    require(row is not None, "tenant", "a registered tenant name", name)
    assert row is not None
    return row


def device_row(session: Session, tenant: TenantRow, name: str) -> DeviceRow:
    statement = select(DeviceRow).where(DeviceRow.tenant_id == tenant.id, DeviceRow.name == name)
    row = session.exec(statement).first()
    require(row is not None, "device", f"a registered device of tenant {tenant.name!r}", name)
    assert row is not None
    return row


def job_row(session: Session, job_id: str, lock: bool = False) -> JobRow:
    require(is_job_id(job_id), "job_id", "the id of a registered job", job_id)
    statement = select(JobRow).where(JobRow.id == job_id)
    row = session.exec(statement.with_for_update() if lock else statement).first()
    require(row is not None, "job_id", "the id of a registered job", job_id)
    assert row is not None
    return row
