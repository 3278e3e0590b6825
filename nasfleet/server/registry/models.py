"""The registry's tables, their records and boundary checks, engines and schema migrations.

Rows never leave `nasfleet.server.registry`; what leaves is their plain frozen records. The tables use
their own SQLAlchemy registry (and so their own ``MetaData``): another package's SQLModel tables never
end up in this schema, nor these in theirs. The checks (`check_name` and friends) sit beside the columns
whose limits they enforce; each raises `RegistryError` naming the field, the rule and the value.

SQLite is made safe for several writing processes by (1) WAL journal mode, so readers never block the
writer; (2) a busy timeout, so a writer waits for the lock instead of failing with "database is locked";
(3) ``BEGIN IMMEDIATE`` for every write transaction, taking the write lock up front: a deferred
transaction that reads and then writes cannot wait for the lock (SQLite fails it at once to avoid a
deadlock), however long the busy timeout.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Engine, Text, UniqueConstraint, event, inspect, text
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import registry
from sqlalchemy.pool import StaticPool
from sqlmodel import Field, SQLModel, select

SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 60_000
NAME_LENGTH = 64
DEVICE_NAME_LENGTH = 128
HASH_LENGTH = 128
ARCH_LENGTH = 2000
WORKER_LENGTH = 200
ERROR_LENGTH = 10_000
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL_JOB_STATUSES = ("done", "failed", "cancelled")
DEVICE_STATUSES = ("ok", "timeout", "error")
BACKENDS = ("sqlite", "postgresql")
QUIET = {"hide_parameters": True}  # errors and logs never show bound values: key hashes, large states
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Any 64-bit value: PostgreSQL has no unsigned integers; the advisory lock serializes concurrent migrations.
MIGRATION_LOCK_ID = 0x6E617366_6C656574 - 2**63


class RegistryError(Exception):
    """A registry operation that failed; nothing it would have written was kept."""


class SchemaVersionError(RegistryError):
    """The stored schema is newer than this code understands (or cannot be upgraded)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """*moment* as an aware UTC datetime (SQLite hands back naive ones)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- boundary checks -----------------------------------------------------------------------------------------
def require(ok: bool, field: str, rule: str, value: object) -> None:
    """Raise `RegistryError` unless *ok*: ``"<field> must be <rule>, but got <value>"``."""
    if not ok:
        raise RegistryError(f"{field} must be {rule}, but got {repr(value)[:200]}")


def check_name(field: str, value: object, max_length: int = NAME_LENGTH) -> str:
    ok = isinstance(value, str) and _NAME.fullmatch(value) is not None and len(value) <= max_length
    require(ok, field, f"1-{max_length} characters of [A-Za-z0-9_.-]", value)
    return str(value)


def check_text(field: str, value: object, max_length: int, empty: bool = False) -> str:
    ok = (
        isinstance(value, str) and (empty or bool(value)) and len(value) <= max_length and value.isprintable()
    )
    require(ok, field, f"a printable string of {0 if empty else 1}-{max_length} characters", value)
    return str(value)


def check_choice(field: str, value: object, choices: Sequence[str]) -> str:
    require(value in choices, field, f"one of {list(choices)}", value)
    return str(value)


def check_int(field: str, value: object, low: int = 0, high: int = 2**63 - 1) -> int:
    """An integer (numpy's too, not a bool) in [low, high], as a plain ``int``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and low <= int(value) <= high
    require(ok, field, f"an integer in [{low}, {high}]", value)
    assert isinstance(value, numbers.Integral)
    return int(value)


def check_float(field: str, value: object, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite real number (numpy's too, not a bool) in [low, high], as a plain ``float``."""
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    ok = math.isfinite(number) and low <= number <= high
    require(ok, field, f"a finite number in [{low}, {high}]", value)
    return number


def check_json(field: str, value: object, mapping: bool = True) -> Any:
    """A deep, plain copy of JSON data *value* with finite numbers only; a mapping unless not *mapping*."""
    require(not mapping or isinstance(value, Mapping), field, "a mapping", type(value).__name__)
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise RegistryError(
            f"{field} must be JSON data with finite numbers, but got {repr(value)[:200]} ({error})"
        ) from None


def check_values(field: str, value: object) -> dict[str, float]:
    """Raw proxy values: proxy names mapped to finite numbers."""
    require(isinstance(value, Mapping) and bool(value), field, "a non-empty mapping", value)
    assert isinstance(value, Mapping)
    return {
        check_text(f"{field} key", k, NAME_LENGTH): check_float(f"{field}[{k!r}]", v)
        for k, v in value.items()
    }


def _timestamp(**options: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), **options)


class _Table(SQLModel, registry=registry()):
    """Base of the registry's tables, with a metadata of its own."""


class SchemaVersionRow(_Table, table=True):
    __tablename__ = "schema_version"

    id: int = Field(default=1, primary_key=True)
    version: int
    migrated_at: datetime = _timestamp()


class TenantRow(_Table, table=True):
    __tablename__ = "tenants"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=NAME_LENGTH, unique=True)
    created_at: datetime = _timestamp()


class DeviceRow(_Table, table=True):
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


class JobRow(_Table, table=True):
    __tablename__ = "jobs"

    id: str = Field(primary_key=True, max_length=32)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE", index=True)
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


class EvaluationRow(_Table, table=True):
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
    created_at: datetime = _timestamp()


class CacheRow(_Table, table=True):
    __tablename__ = "evaluation_cache"

    arch: str = Field(primary_key=True, max_length=ARCH_LENGTH)
    characteristics_hash: str = Field(primary_key=True, max_length=HASH_LENGTH)
    proxy_config_hash: str = Field(primary_key=True, max_length=HASH_LENGTH)
    values: dict[str, float] = Field(sa_type=JSON)
    params: int = Field(sa_type=BigInteger)
    flops: int = Field(sa_type=BigInteger)
    created_at: datetime = _timestamp()


class ResultRow(_Table, table=True):
    __tablename__ = "results"

    job_id: str = Field(primary_key=True, foreign_key="jobs.id", ondelete="CASCADE", max_length=32)
    arch: str = Field(max_length=ARCH_LENGTH)
    score: float
    values: dict[str, float] = Field(sa_type=JSON)
    params: int = Field(sa_type=BigInteger)
    flops: int = Field(sa_type=BigInteger)
    history: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    created_at: datetime = _timestamp()


class ReportRow(_Table, table=True):
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
    created_at: datetime = _timestamp()


class WorkerRow(_Table, table=True):
    """A live scoring worker's heartbeat: its main process writes ``beat_at`` every few seconds."""

    __tablename__ = "workers"

    name: str = Field(primary_key=True, max_length=WORKER_LENGTH)
    queue: str = Field(max_length=NAME_LENGTH + 40)
    pid: int
    started_at: datetime = _timestamp()
    beat_at: datetime = _timestamp()


class RegistryInfoRow(_Table, table=True):
    """One row: the registry's random deployment id, which names its task queue and travels in tasks."""

    __tablename__ = "registry_info"

    id: int = Field(default=1, primary_key=True)
    deployment_id: str = Field(max_length=32)


class ApiKeyRow(_Table, table=True):
    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    key_id: str = Field(max_length=32, unique=True)
    tenant_id: int = Field(foreign_key="tenants.id", ondelete="CASCADE", index=True)
    salt: str = Field(max_length=64)
    key_hash: str = Field(max_length=128)
    created_at: datetime = _timestamp()
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


# -- records: the plain, frozen copies of rows that the package hands out ---------------------------------
@dataclass(frozen=True)
class TenantRecord:
    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True)
class DeviceRecord:
    """A tenant's device: hardware tier, constraints and profile (wire scalars), last characteristics."""

    tenant: str
    name: str
    tier: str
    constraints: dict[str, Any]
    profile: dict[str, Any]
    characteristics_hash: str | None
    status: str
    error: str | None
    updated_at: datetime


@dataclass(frozen=True)
class JobRecord:
    """One personalized search. ``options`` holds further search settings (ask size, aggregate, ...)."""

    id: str
    tenant: str
    device: str | None
    space: str
    strategy: str
    strategy_config: dict[str, Any]
    options: dict[str, Any]
    constraints: dict[str, Any]
    characteristics_hash: str
    budget: int
    seed: int
    status: str
    strategy_state: dict[str, Any] | None
    evaluations_done: int
    best_arch: str | None
    best_score: float | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    note: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_JOB_STATUSES


@dataclass(frozen=True)
class EvaluationRecord:
    """One scored architecture of a job: raw proxy values, exact costs, scoring time and who scored it."""

    arch: str
    values: dict[str, float]
    params: int
    flops: int
    seconds: float
    worker: str = ""


@dataclass(frozen=True)
class CacheKey:
    """What makes two evaluations interchangeable across jobs and tenants."""

    arch: str
    characteristics_hash: str
    proxy_config_hash: str


@dataclass(frozen=True)
class CacheEntry:
    key: CacheKey
    values: dict[str, float]
    params: int
    flops: int


@dataclass(frozen=True)
class ResultRecord:
    """A job's outcome: the best SubNet, its raw proxy values and costs, and the best-so-far history."""

    job_id: str
    arch: str
    score: float
    values: dict[str, float]
    params: int
    flops: int
    history: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ReportRecord:
    """A device's training report; ``device`` defaults to the job's; storing sets ``id``, ``created_at``."""

    job_id: str
    arch: str
    accuracy: float
    loss: float
    train_seconds: float
    num_train: int
    num_test: int
    latency_ms_predicted: float | None = None
    latency_ms_measured: float | None = None
    device: str | None = None
    id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key's public part; the secret and its hash never leave the registry."""

    key_id: str
    tenant: str
    created_at: datetime
    revoked: bool


# -- engines -------------------------------------------------------------------------------------------------
def create_engines(url: str) -> tuple[Engine, Engine]:
    """A (read, write) pair of engines for *url*; they are one engine except for file-backed SQLite."""
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        shown = parsed.render_as_string(hide_password=True)
        require(backend in BACKENDS, "registry url", f"a URL of one of {list(BACKENDS)}", shown)
        if backend == "postgresql":
            engine = sa_create_engine(
                parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10}, **QUIET
            )
            return engine, engine
        # Sessions hand pooled connections between threads, each used by one thread at a time.
        threads = {"check_same_thread": False}
        if parsed.database in (None, "", ":memory:"):
            memory = sa_create_engine(parsed, poolclass=StaticPool, connect_args=threads, **QUIET)
            _configure_sqlite(memory, "BEGIN IMMEDIATE")
            return memory, memory
        read = sa_create_engine(parsed, connect_args=threads, **QUIET)
        write = sa_create_engine(parsed, connect_args=threads, **QUIET)
    except (SQLAlchemyError, ValueError, ImportError) as error:
        shown = _redacted(url)
        raise RegistryError(
            f"registry url must be a usable SQLAlchemy URL, but got {shown!r} ({error})"
        ) from None
    _configure_sqlite(read, "BEGIN")
    _configure_sqlite(write, "BEGIN IMMEDIATE")
    return read, write


def _redacted(url: str) -> str:
    """*url* with its password hidden, when it parses at all."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return url


def _configure_sqlite(engine: Engine, begin: str) -> None:
    """WAL, a busy timeout and foreign keys on each connection; transactions opened with *begin*."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver must not open transactions itself
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # first, so the WAL switch may wait
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(begin)


# -- migrations ----------------------------------------------------------------------------------------------
def _create_tables(connection: Connection) -> None:
    _Table.metadata.create_all(connection)


def _add_liveness(connection: Connection) -> None:
    """Version 2: the workers and registry_info tables, ``jobs.note`` and ``reports.public_id``.

    On a new database version 1's step already created the current tables; each change is made only
    where it is missing.
    """
    _Table.metadata.create_all(connection)
    inspector = inspect(connection)
    if "note" not in {column["name"] for column in inspector.get_columns("jobs")}:
        connection.execute(text("ALTER TABLE jobs ADD COLUMN note TEXT"))
    if "public_id" not in {column["name"] for column in inspector.get_columns("reports")}:
        connection.execute(text("ALTER TABLE reports ADD COLUMN public_id VARCHAR(32)"))
        for (row_id,) in connection.execute(text("SELECT id FROM reports")).all():
            connection.execute(text("UPDATE reports SET public_id = :p WHERE id = :i"),
                               {"p": uuid.uuid4().hex, "i": row_id})  # fmt: skip
        connection.execute(text("CREATE UNIQUE INDEX ix_reports_public_id ON reports (public_id)"))
    info = RegistryInfoRow.__table__  # type: ignore[attr-defined]
    if connection.execute(select(info.c.id)).first() is None:
        connection.execute(info.insert().values(id=1, deployment_id=uuid.uuid4().hex))


# Step to version v from v - 1, run in order. Version 0 is "no schema yet"; version 1 is the first schema.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _create_tables, 2: _add_liveness}


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
                f"at {engine.url.render_as_string(hide_password=True)} has version {version}: "
                "upgrade nasfleet to open it"
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
