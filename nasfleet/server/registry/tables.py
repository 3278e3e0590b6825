"""The registry's SQLModel tables: the ORM rows, which never leave `nasfleet.server.registry`.

The tables use their own SQLAlchemy registry (and so their own ``MetaData``): another package's SQLModel
tables never end up in this schema, nor these in theirs. Column limits come from
`nasfleet.server.registry.checks`, which enforces them before anything is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Text, UniqueConstraint, false
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from nasfleet.server.registry.checks import (
    ARCH_LENGTH,
    DEVICE_NAME_LENGTH,
    HASH_LENGTH,
    NAME_LENGTH,
    WORKER_LENGTH,
)

JOB_NAME_INDEX = "ix_jobs_tenant_id_name"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """*moment* as an aware UTC datetime (SQLite hands back naive ones)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _timestamp(**options: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), **options)


class Table(SQLModel, registry=registry()):
    """Base of the registry's tables, with a metadata of its own."""


class SchemaVersionRow(Table, table=True):
    __tablename__ = "schema_version"

    id: int = Field(default=1, primary_key=True)
    version: int
    migrated_at: datetime = _timestamp()


class TenantRow(Table, table=True):
    __tablename__ = "tenants"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=NAME_LENGTH, unique=True)
    created_at: datetime = _timestamp()


class DeviceRow(Table, table=True):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE", index=True)
    name: str = Field(max_length=DEVICE_NAME_LENGTH)
    tier: str = Field(max_length=NAME_LENGTH)
    constraints: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    profile: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    characteristics_hash: str | None = Field(default=None, max_length=HASH_LENGTH)
    status: str = Field(default="ok", max_length=16)
    error: str | None = Field(default=None, sa_type=Text)
    updated_at: datetime = _timestamp()


class JobRow(Table, table=True):
    __tablename__ = "jobs"
    # A name is unique within its tenant; unnamed jobs (NULL) are not compared, on either backend.
    __table_args__ = (Index(JOB_NAME_INDEX, "tenant_id", "name", unique=True),)

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE", index=True)
    name: str | None = Field(default=None, max_length=NAME_LENGTH)
    device_id: int | None = Field(default=None, foreign_key="devices.id", ondelete="SET NULL")
    space: str = Field(max_length=NAME_LENGTH)
    strategy: str = Field(max_length=NAME_LENGTH)
    strategy_config: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    options: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    constraints: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    characteristics_hash: str = Field(max_length=HASH_LENGTH)
    budget: int
    seed: int = Field(sa_type=BigInteger)
    status: str = Field(default="queued", max_length=16, index=True)
    # Text, not JSON: a strategy's state can be large and may hold non-finite floats.
    strategy_state: str | None = Field(default=None, sa_type=Text)
    evaluations_done: int = 0
    best_arch: str | None = Field(default=None, sa_type=Text)
    best_score: float | None = None
    error: str | None = Field(default=None, sa_type=Text)
    # Why a running job does not advance (no live worker, broker unreachable); None while it advances.
    note: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class EvaluationRow(Table, table=True):
    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("job_id", "arch"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", ondelete="CASCADE", max_length=32)
    arch: str = Field(max_length=ARCH_LENGTH)
    values: dict[str, float] = Field(sa_type=JSON)
    params: int = Field(sa_type=BigInteger)
    flops: int = Field(sa_type=BigInteger)
    seconds: float
    worker: str = Field(default="", max_length=WORKER_LENGTH)
    cached: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    created_at: datetime = _timestamp()


class CacheRow(Table, table=True):
    __tablename__ = "evaluation_cache"

    arch: str = Field(primary_key=True, max_length=ARCH_LENGTH)
    characteristics_hash: str = Field(primary_key=True, max_length=HASH_LENGTH)
    proxy_config_hash: str = Field(primary_key=True, max_length=HASH_LENGTH)
    values: dict[str, float] = Field(sa_type=JSON)
    params: int = Field(sa_type=BigInteger)
    flops: int = Field(sa_type=BigInteger)
    created_at: datetime = _timestamp()


class ResultRow(Table, table=True):
    __tablename__ = "results"

    job_id: str = Field(primary_key=True, foreign_key="jobs.id", ondelete="CASCADE", max_length=32)
    arch: str = Field(max_length=ARCH_LENGTH)
    score: float
    values: dict[str, float] = Field(sa_type=JSON)
    params: int = Field(sa_type=BigInteger)
    flops: int = Field(sa_type=BigInteger)
    history: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    created_at: datetime = _timestamp()


class ReportRow(Table, table=True):
    __tablename__ = "reports"

    id: int | None = Field(default=None, primary_key=True)
    # What a tenant sees: random, so that it reveals nothing of other tenants' reports (``id`` would).
    public_id: str | None = Field(default=None, max_length=32, unique=True)
    job_id: str = Field(foreign_key="jobs.id", ondelete="CASCADE", max_length=32, index=True)
    device_id: int | None = Field(default=None, foreign_key="devices.id", ondelete="SET NULL")
    arch: str = Field(max_length=ARCH_LENGTH)
    accuracy: float
    loss: float
    train_seconds: float
    latency_ms_predicted: float | None = None
    latency_ms_measured: float | None = None
    num_train: int
    num_test: int
    # The named run (``nasfleet simulate --name``) and the federation round (1, 2, ...) that trained it;
    # None where unknown: a report from outside a round (or an unnamed one), or stored before version 5.
    run: str | None = Field(default=None, max_length=NAME_LENGTH)
    round: int | None = None
    # Epochs the device trained (fewer than asked when early stopping or the time cap ended it); None where
    # unknown: a report that did not say, or one stored before version 6.
    epochs_done: int | None = None
    created_at: datetime = _timestamp()


class WorkerRow(Table, table=True):
    """A live scoring worker's heartbeat: its main process writes ``beat_at`` every few seconds."""

    __tablename__ = "workers"

    name: str = Field(primary_key=True, max_length=WORKER_LENGTH)
    queue: str = Field(max_length=NAME_LENGTH + 40)
    pid: int
    started_at: datetime = _timestamp()
    beat_at: datetime = _timestamp()


class RegistryInfoRow(Table, table=True):
    """One row: the registry's random deployment id, which names its task queue and travels in tasks."""

    __tablename__ = "registry_info"

    id: int = Field(default=1, primary_key=True)
    deployment_id: str = Field(max_length=32)


class ApiKeyRow(Table, table=True):
    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    key_id: str = Field(max_length=32, unique=True)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE", index=True)
    salt: str = Field(max_length=64)
    key_hash: str = Field(max_length=128)
    created_at: datetime = _timestamp()
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
