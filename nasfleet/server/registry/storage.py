"""The `Registry`: what the server, the orchestrator and the CLI store, handed out as plain frozen records.

Every write goes through one session scope (`Registry._session` with ``write=True``): it commits, or
rolls back and re-raises as `RegistryError`, so a failed call leaves nothing half-written. Arguments are
checked before anything is written; the error names the field, the rule and the value. Writes are
idempotent where a retry is natural: an evaluation (job, arch) or a cache entry stored twice is stored
once, and the second call counts 0 new rows. Rows are sorted by key before a multi-row insert, so two
concurrent writers on PostgreSQL take row locks in the same order and cannot deadlock.

Resuming a crashed job (the orchestrator's view): `Registry.unfinished_jobs` lists queued and running
jobs; `Registry.checkpoint` stores a step's new evaluations together with the strategy state, the count
told and the best so far in one transaction, so a stored state never runs ahead of its evaluations;
`Registry.claim_job` moves a queued job to running for exactly one of several orchestrators.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from nasfleet.server.registry.models import (
    ARCH_LENGTH,
    DEVICE_NAME_LENGTH,
    DEVICE_STATUSES,
    ERROR_LENGTH,
    FINAL_JOB_STATUSES,
    HASH_LENGTH,
    JOB_STATUSES,
    NAME_LENGTH,
    SCHEMA_VERSION,
    WORKER_LENGTH,
    ApiKeyRecord,
    ApiKeyRow,
    CacheEntry,
    CacheKey,
    CacheRow,
    DeviceRecord,
    DeviceRow,
    EvaluationRecord,
    EvaluationRow,
    JobRecord,
    JobRow,
    RegistryError,
    ReportRecord,
    ReportRow,
    ResultRecord,
    ResultRow,
    TenantRecord,
    TenantRow,
    as_utc,
    check_choice,
    check_float,
    check_int,
    check_json,
    check_name,
    check_text,
    check_values,
    create_engines,
    migrate,
    require,
    utcnow,
)
from nasfleet.server.registry.workers import WorkerBoard

DEFAULT_URL = "sqlite:///nasfleet-registry.db"
EXPORT_VERSION = 1
API_KEY_PREFIX = "nfk"
_CHUNK = 500  # rows per multi-row insert, well under SQLite's limit on bound parameters
_JOB_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex; anything else (a NUL byte included) is no job's id


def is_job_id(value: object) -> bool:
    """Whether *value* can be a job id at all; lookups answer "not found" for others without a query."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


class Registry(WorkerBoard):
    """Tenants, devices, search jobs, evaluations, the evaluation cache, results, reports and API keys.

    Parameters
    ----------
    url
        An SQLAlchemy URL: ``sqlite:///path/registry.db`` (the default, in the current directory) or
        ``postgresql+psycopg://user@host:port/database``. Opening creates or upgrades the schema and
        raises `SchemaVersionError` for a database written by newer code.
    """

    def __init__(self, url: str = DEFAULT_URL) -> None:
        self.url = url
        self._read, self._write = create_engines(url)
        try:
            migrate(self._write)
        except RegistryError:
            self.close()
            raise
        except Exception as error:
            self.close()
            raise RegistryError(f"cannot open the registry at {self._shown_url}: {error}") from error

    @property
    def _shown_url(self) -> str:
        return self._write.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Release the registry's connections."""
        self._read.dispose()
        self._write.dispose()

    def forget_connections(self) -> None:
        """Drop the pooled connections without closing them: in a forked child, they are the parent's."""
        self._read.dispose(close=False)
        self._write.dispose(close=False)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        """The session scope: commit a write on success; on any failure roll back, raise `RegistryError`."""
        engine: Engine = self._write if write else self._read
        session = Session(engine, expire_on_commit=False)
        try:
            yield session
            if write:
                session.commit()
        except RegistryError:
            session.rollback()
            raise
        except Exception as error:
            session.rollback()
            action, detail = "write to" if write else "read from", getattr(error, "orig", None) or error
            raise RegistryError(f"could not {action} the registry at {self._shown_url}: {detail}") from error
        finally:
            session.close()

    # -- tenants and devices ---------------------------------------------------------------------------------
    def create_tenant(self, name: str, *, exist_ok: bool = False) -> TenantRecord:
        """Add tenant *name*; an existing name is an error unless *exist_ok*, which returns that tenant."""
        name = check_name("tenant", name)
        with self._session(write=True) as session:
            insert = _insert(session, TenantRow).values(name=name, created_at=utcnow())
            ignoring = insert.on_conflict_do_nothing(index_elements=["name"])
            created = len(session.exec(ignoring.returning(_table(TenantRow).c.id)).all())
            require(created == 1 or exist_ok, "tenant", "a name not yet registered", name)
            return _tenant(_tenant_row(session, name))

    def get_tenant(self, name: str) -> TenantRecord | None:
        with self._session() as session:
            row = session.exec(select(TenantRow).where(TenantRow.name == name)).first()
            return None if row is None else _tenant(row)

    def list_tenants(self) -> list[TenantRecord]:
        with self._session() as session:
            return _tenants(session)

    def upsert_device(
        self, tenant: str, name: str, *, tier: str, constraints: Mapping[str, Any] | None = None,
        profile: Mapping[str, Any] | None = None, characteristics_hash: str | None = None,
        status: str = "ok", error: str | None = None,
    ) -> DeviceRecord:  # fmt: skip
        """Add a tenant's device, or replace every field of the one with that name."""
        values = {
            "name": check_name("device", name, DEVICE_NAME_LENGTH),
            "tier": check_text("tier", tier, NAME_LENGTH),
            "constraints": check_json("constraints", constraints or {}),
            "profile": check_json("profile", profile or {}),
            "characteristics_hash": _optional_hash("characteristics_hash", characteristics_hash),
            "status": check_choice("status", status, DEVICE_STATUSES),
            "error": _error_text(error),
            "updated_at": utcnow(),
        }
        with self._session(write=True) as session:
            tenant_id = _id(_tenant_row(session, check_name("tenant", tenant)))
            statement = _insert(session, DeviceRow).values(tenant_id=tenant_id, **values)
            changes = {key: statement.excluded[key] for key in values if key != "name"}
            session.exec(statement.on_conflict_do_update(index_elements=["tenant_id", "name"], set_=changes))
            return _devices(session, tenant, values["name"])[0]

    def list_devices(self, tenant: str | None = None) -> list[DeviceRecord]:
        with self._session() as session:
            return _devices(session, tenant)

    # -- jobs ------------------------------------------------------------------------------------------------
    def create_job(
        self, tenant: str, *, space: str, strategy: str, characteristics_hash: str, budget: int,
        seed: int = 0, strategy_config: Mapping[str, Any] | None = None,
        constraints: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
        device: str | None = None,
    ) -> JobRecord:  # fmt: skip
        """Open a queued search job for *tenant* (and one of its devices); its id is a fresh UUID hex."""
        values = {
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
            tenant_row = _tenant_row(session, check_name("tenant", tenant))
            device_id = None
            if device is not None:
                device_id = _device_row(
                    session, tenant_row, check_name("device", device, DEVICE_NAME_LENGTH)
                ).id
            row = JobRow(id=uuid.uuid4().hex, tenant_id=_id(tenant_row), device_id=device_id, **values)
            session.add(row)
            session.flush()
            return _jobs(session, job_id=row.id)[0]

    def get_job(self, job_id: str) -> JobRecord | None:
        if not is_job_id(job_id):
            return None
        with self._session() as session:
            found = _jobs(session, job_id=job_id)
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
            return _jobs(session, tenant=tenant, statuses=statuses)

    def unfinished_jobs(self, *, tenant: str | None = None) -> list[JobRecord]:
        """Queued and running jobs: what an orchestrator resumes after a crash."""
        return self.list_jobs(tenant=tenant, status=("queued", "running"))

    def claim_job(self, job_id: str) -> bool:
        """Move a queued job to running; True for exactly one caller, False if it was not queued."""
        with self._session(write=True) as session:
            _job_row(session, job_id)
            jobs = _table(JobRow)
            claim = update(jobs).where(jobs.c.id == job_id, jobs.c.status == "queued")
            return _rowcount(session.exec(claim.values(status="running", updated_at=utcnow()))) == 1

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
            changes["note"] = _error_text(note) or None
        with self._session(write=True) as session:
            _update_job_row(session, job_id, changes)
            return _jobs(session, job_id=job_id)[0]

    def checkpoint(
        self, job_id: str, evaluations: Iterable[EvaluationRecord], *, state: Mapping[str, Any],
        evaluations_done: int, best: tuple[str, float] | None = None,
    ) -> int:  # fmt: skip
        """Store a step atomically: its new evaluations, the strategy state, the count told and the best.

        Returns how many evaluations were new, as `add_evaluations` does.
        """
        rows = _evaluation_values(evaluations)
        changes = _job_changes(None, state, evaluations_done, best, None)
        with self._session(write=True) as session:
            _job_row(session, job_id)
            added = _insert_new(session, EvaluationRow, [{"job_id": job_id, **row} for row in rows])
            _update_job_row(session, job_id, changes)
            return added

    # -- evaluations and the evaluation cache ----------------------------------------------------------------
    def add_evaluations(self, job_id: str, evaluations: Iterable[EvaluationRecord]) -> int:
        """Store a job's evaluations; an arch the job already has is skipped. Returns how many were new."""
        rows = _evaluation_values(evaluations)
        with self._session(write=True) as session:
            _job_row(session, job_id)
            return _insert_new(session, EvaluationRow, [{"job_id": job_id, **row} for row in rows])

    def evaluations(self, job_id: str) -> list[EvaluationRecord]:
        """A job's evaluations in the order they were stored."""
        with self._session() as session:
            _job_row(session, job_id)
            return [record for _, record in _evaluations(session, job_id)]

    def cache_get(self, keys: Iterable[CacheKey]) -> dict[CacheKey, CacheEntry]:
        """The cached evaluations among *keys* (from any job of any tenant), by key."""
        groups: dict[tuple[str, str], set[str]] = {}
        for index, key in enumerate(keys):
            arch, characteristics, proxies = _cache_key(f"keys[{index}]", key)
            groups.setdefault((characteristics, proxies), set()).add(arch)
        found: dict[CacheKey, CacheEntry] = {}
        with self._session() as session:
            for (characteristics, proxies), archs in groups.items():
                ordered = sorted(archs)
                for start in range(0, len(ordered), _CHUNK):
                    statement = select(CacheRow).where(
                        CacheRow.characteristics_hash == characteristics,
                        CacheRow.proxy_config_hash == proxies,
                        col(CacheRow.arch).in_(ordered[start : start + _CHUNK]),
                    )
                    found.update((entry.key, entry) for entry in map(_cache_entry, session.exec(statement)))
        return found

    def cache_put(self, entries: Iterable[CacheEntry]) -> int:
        """Cache evaluations; a key already cached keeps its first values. Returns how many were new."""
        rows = _cache_values(entries)
        with self._session(write=True) as session:
            return _insert_new(session, CacheRow, rows)

    # -- results and reports ---------------------------------------------------------------------------------
    def set_result(self, result: ResultRecord, *, finish: bool = True) -> None:
        """Store (or replace) a job's result; with *finish*, mark the job done with this best, atomically."""
        values = _result_values(result)
        with self._session(write=True) as session:
            _job_row(session, result.job_id)
            statement = _insert(session, ResultRow).values(**values)
            changes = {key: statement.excluded[key] for key in values if key != "job_id"}
            session.exec(statement.on_conflict_do_update(index_elements=["job_id"], set_=changes))
            if finish:
                best = {"best_arch": values["arch"], "best_score": values["score"]}
                _update_job_row(session, result.job_id, {"status": "done", **best})

    def get_result(self, job_id: str) -> ResultRecord | None:
        if not is_job_id(job_id):
            return None
        with self._session() as session:
            found = _results(session, job_id=job_id)
            return found[0] if found else None

    def list_results(self, *, tenant: str | None = None) -> list[ResultRecord]:
        with self._session() as session:
            return _results(session, tenant=tenant)

    def add_report(self, report: ReportRecord) -> ReportRecord:
        """Store a device's training report; returns it with its id, device and time filled in."""
        values = _report_values(report)
        with self._session(write=True) as session:
            job = _job_row(session, report.job_id)
            device_id = job.device_id
            if report.device is not None:
                tenant = session.get_one(TenantRow, job.tenant_id)
                device_name = check_name("device", report.device, DEVICE_NAME_LENGTH)
                device_id = _device_row(session, tenant, device_name).id
            row = ReportRow(device_id=device_id, public_id=uuid.uuid4().hex, **values)
            session.add(row)
            session.flush()
            stored = _reports(session, job_id=report.job_id)
            return next(found for found in stored if found.id == row.public_id)

    def list_reports(self, *, job_id: str | None = None, tenant: str | None = None) -> list[ReportRecord]:
        if job_id is not None and not is_job_id(job_id):
            return []
        with self._session() as session:
            return _reports(session, job_id=job_id, tenant=tenant)

    # -- API keys --------------------------------------------------------------------------------------------
    def create_api_key(self, tenant: str) -> str:
        """A new API key for *tenant*: returned in plain text this once; only a salted hash is stored.

        The key is ``nfk_<key id>_<secret>`` with a 256-bit random secret. Such a secret cannot be
        guessed, so a salted SHA-256 suffices; a slow password hash only protects low-entropy secrets.
        """
        key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
        with self._session(write=True) as session:
            tenant_id = _id(_tenant_row(session, check_name("tenant", tenant)))
            session.add(
                ApiKeyRow(key_id=key_id, tenant_id=tenant_id, salt=salt, key_hash=_hash(salt, secret))
            )
        return f"{API_KEY_PREFIX}_{key_id}_{secret}"

    def verify_api_key(self, key: str) -> TenantRecord | None:
        """The tenant whose valid, unrevoked key *key* is; None for any other string."""
        parts = key.split("_", 2) if isinstance(key, str) else []
        if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
            return None
        with self._session() as session:
            statement = select(ApiKeyRow, TenantRow).join(TenantRow).where(ApiKeyRow.key_id == parts[1])
            found = session.exec(statement).first()
            if found is None or found[0].revoked_at is not None:
                return None
            return (
                _tenant(found[1])
                if hmac.compare_digest(found[0].key_hash, _hash(found[0].salt, parts[2]))
                else None
            )

    def revoke_api_key(self, key: str) -> bool:
        """Revoke a key, given in full or by its key id; False if there is no such unrevoked key."""
        parts = key.split("_", 2) if isinstance(key, str) else []
        key_id = parts[1] if len(parts) == 3 and parts[0] == API_KEY_PREFIX else key
        with self._session(write=True) as session:
            revoke = update(ApiKeyRow).where(
                col(ApiKeyRow.key_id) == key_id, col(ApiKeyRow.revoked_at).is_(None)
            )
            return _rowcount(session.exec(revoke.values(revoked_at=utcnow()))) == 1

    def list_api_keys(self, tenant: str | None = None) -> list[ApiKeyRecord]:
        with self._session() as session:
            return _api_keys(session, tenant)

    # -- export ----------------------------------------------------------------------------------------------
    def export(self) -> dict[str, Any]:
        """Everything but the cache and key hashes, as JSON-ready data, read in one transaction.

        A job's ``strategy_state`` is exported as stored, so it may hold non-finite floats, which
        ``json.dumps`` writes as ``Infinity``/``NaN``.
        """
        with self._session() as session:
            return {
                "format": "nasfleet-registry", "version": EXPORT_VERSION, "schema_version": SCHEMA_VERSION,
                "exported_at": utcnow().isoformat(),
                "tenants": [_plain(record) for record in _tenants(session)],
                "devices": [_plain(record) for record in _devices(session)],
                "jobs": [_plain(record) for record in _jobs(session)],
                "evaluations": [_plain(record, job_id=job) for job, record in _evaluations(session)],
                "results": [_plain(record) for record in _results(session)],
                "reports": [_plain(record) for record in _reports(session)],
                "api_keys": [_plain(record) for record in _api_keys(session)],
            }  # fmt: skip


# -- writing -------------------------------------------------------------------------------------------------
def _table(model: type[Any]) -> Table:
    table: Table = model.__table__
    return table


def _insert(session: Session, model: type[Any]) -> Any:
    """A Core INSERT into *model*'s table with ``on_conflict_do_nothing/do_update``, for the dialect."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_table(model))


def _rowcount(result: Any) -> int:
    """Rows a Core UPDATE matched (ORM-enabled statements add RETURNING and report -1 on PostgreSQL)."""
    return int(result.rowcount)


def _insert_new(session: Session, table: type[Any], rows: list[dict[str, Any]]) -> int:
    """Insert *rows* (sorted by key), skipping those whose primary or unique key exists; count the new."""
    keys = ["arch", "characteristics_hash", "proxy_config_hash"] if table is CacheRow else ["job_id", "arch"]
    added, now = 0, utcnow()
    for start in range(0, len(rows), _CHUNK):
        chunk = [{**row, "created_at": now} for row in rows[start : start + _CHUNK]]
        statement = _insert(session, table).values(chunk).on_conflict_do_nothing(index_elements=keys)
        # RETURNING counts what was inserted on every backend; a multi-row rowcount is not portable.
        added += len(session.exec(statement.returning(_table(table).c.arch)).all())
    return added


def _id(row: TenantRow) -> int:
    assert row.id is not None, "a stored row has an id"
    return row.id


def _tenant_row(session: Session, name: str) -> TenantRow:
    row = session.exec(select(TenantRow).where(TenantRow.name == name)).first()
    require(row is not None, "tenant", "a registered tenant name", name)
    assert row is not None
    return row


def _device_row(session: Session, tenant: TenantRow, name: str) -> DeviceRow:
    statement = select(DeviceRow).where(DeviceRow.tenant_id == tenant.id, DeviceRow.name == name)
    row = session.exec(statement).first()
    require(row is not None, "device", f"a registered device of tenant {tenant.name!r}", name)
    assert row is not None
    return row


def _job_row(session: Session, job_id: str, lock: bool = False) -> JobRow:
    require(is_job_id(job_id), "job_id", "the id of a registered job", job_id)
    statement = select(JobRow).where(JobRow.id == job_id)
    row = session.exec(statement.with_for_update() if lock else statement).first()
    require(row is not None, "job_id", "the id of a registered job", job_id)
    assert row is not None
    return row


def _update_job_row(session: Session, job_id: str, changes: Mapping[str, Any]) -> None:
    """Apply checked *changes* to a job, locking its row; a final status is never left."""
    row = _job_row(session, job_id, lock=True)
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


# -- checking arguments --------------------------------------------------------------------------------------
def _job_changes(
    status: str | None, state: Mapping[str, Any] | None, evaluations_done: int | None,
    best: tuple[str, float] | None, error: str | None,
) -> dict[str, Any]:  # fmt: skip
    changes: dict[str, Any] = {}
    if status is not None:
        changes["status"] = check_choice("status", status, JOB_STATUSES)
    if state is not None:
        changes["strategy_state"] = _state_text(state)
    if evaluations_done is not None:
        changes["evaluations_done"] = check_int("evaluations_done", evaluations_done)
    if best is not None:
        require(isinstance(best, tuple | list) and len(best) == 2, "best", "a pair (arch, score)", best)
        changes["best_arch"] = check_text("best arch", best[0], ARCH_LENGTH)
        changes["best_score"] = check_float("best score", best[1])
    if error is not None:
        changes["error"] = _error_text(error)
    return changes


def _state_text(state: object) -> str:
    """A strategy state as JSON text; non-finite floats are kept (as Python's JSON writes them)."""
    require(isinstance(state, Mapping), "state", "a mapping", type(state).__name__)
    try:
        return json.dumps(state)
    except (TypeError, ValueError) as error:
        raise RegistryError(f"state must be JSON data, but got {repr(state)[:200]} ({error})") from None


def _error_text(error: object) -> str | None:
    """An error message, cut to `ERROR_LENGTH` characters: a long traceback is no reason to lose the write."""
    require(error is None or isinstance(error, str), "error", "a string or None", error)
    return None if error is None else str(error)[:ERROR_LENGTH]


def _optional_hash(field: str, value: object) -> str | None:
    return None if value is None else check_name(field, value, HASH_LENGTH)


def _evaluation_values(evaluations: Iterable[EvaluationRecord]) -> list[dict[str, Any]]:
    """Checked column values, one per distinct arch (the first kept), sorted by arch."""
    rows: dict[str, dict[str, Any]] = {}
    for index, evaluation in enumerate(evaluations):
        where = f"evaluations[{index}]"
        require(isinstance(evaluation, EvaluationRecord), where, "an EvaluationRecord", evaluation)
        row = {
            "arch": check_text(f"{where}.arch", evaluation.arch, ARCH_LENGTH),
            "values": check_values(f"{where}.values", evaluation.values),
            "params": check_int(f"{where}.params", evaluation.params),
            "flops": check_int(f"{where}.flops", evaluation.flops),
            "seconds": check_float(f"{where}.seconds", evaluation.seconds, 0.0),
            "worker": check_text(f"{where}.worker", evaluation.worker, WORKER_LENGTH, empty=True),
        }
        rows.setdefault(str(row["arch"]), row)
    return [rows[arch] for arch in sorted(rows)]


def _cache_key(where: str, key: object) -> tuple[str, str, str]:
    require(isinstance(key, CacheKey), where, "a CacheKey", key)
    assert isinstance(key, CacheKey)
    return (
        check_text(f"{where}.arch", key.arch, ARCH_LENGTH),
        check_name(f"{where}.characteristics_hash", key.characteristics_hash, HASH_LENGTH),
        check_name(f"{where}.proxy_config_hash", key.proxy_config_hash, HASH_LENGTH),
    )


def _cache_values(entries: Iterable[CacheEntry]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        where = f"entries[{index}]"
        require(isinstance(entry, CacheEntry), where, "a CacheEntry", entry)
        key = _cache_key(f"{where}.key", entry.key)
        row = {
            "arch": key[0],
            "characteristics_hash": key[1],
            "proxy_config_hash": key[2],
            "values": check_values(f"{where}.values", entry.values),
            "params": check_int(f"{where}.params", entry.params),
            "flops": check_int(f"{where}.flops", entry.flops),
        }
        rows.setdefault(key, row)
    return [rows[key] for key in sorted(rows)]


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
    return {
        "job_id": check_text("job_id", report.job_id, 32),
        "arch": check_text("arch", report.arch, ARCH_LENGTH),
        "accuracy": check_float("accuracy", report.accuracy, 0.0, 1.0),
        "loss": check_float("loss", report.loss, 0.0),
        "train_seconds": check_float("train_seconds", report.train_seconds, 0.0),
        "num_train": check_int("num_train", report.num_train),
        "num_test": check_int("num_test", report.num_test),
        **latencies,
    }


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


# -- reading: rows become records here, inside the session ---------------------------------------------------
def _tenant(row: TenantRow) -> TenantRecord:
    assert row.id is not None
    return TenantRecord(row.id, row.name, as_utc(row.created_at))


def _tenants(session: Session) -> list[TenantRecord]:
    return [_tenant(row) for row in session.exec(select(TenantRow).order_by(col(TenantRow.name)))]


def _devices(session: Session, tenant: str | None = None, name: str | None = None) -> list[DeviceRecord]:
    statement = select(DeviceRow, TenantRow.name).join(TenantRow)
    if tenant is not None:
        statement = statement.where(TenantRow.name == tenant)
    if name is not None:
        statement = statement.where(DeviceRow.name == name)
    return [
        DeviceRecord(
            tenant_name,
            row.name,
            row.tier,
            row.constraints,
            row.profile,
            row.characteristics_hash,
            row.status,
            row.error,
            as_utc(row.updated_at),
        )
        for row, tenant_name in session.exec(statement.order_by(col(TenantRow.name), col(DeviceRow.name)))
    ]


def _jobs(
    session: Session, tenant: str | None = None, statuses: list[str] | None = None, job_id: str | None = None
) -> list[JobRecord]:
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
        )
        for row, tenant_name, device_name in session.exec(
            statement.order_by(col(JobRow.created_at), col(JobRow.id))
        )
    ]


def _evaluations(session: Session, job_id: str | None = None) -> list[tuple[str, EvaluationRecord]]:
    statement = select(EvaluationRow)
    if job_id is not None:
        statement = statement.where(EvaluationRow.job_id == job_id)
    return [
        (row.job_id, EvaluationRecord(row.arch, row.values, row.params, row.flops, row.seconds, row.worker))
        for row in session.exec(statement.order_by(col(EvaluationRow.id)))
    ]


def _cache_entry(row: CacheRow) -> CacheEntry:
    key = CacheKey(row.arch, row.characteristics_hash, row.proxy_config_hash)
    return CacheEntry(key, row.values, row.params, row.flops)


def _results(session: Session, tenant: str | None = None, job_id: str | None = None) -> list[ResultRecord]:
    statement = select(ResultRow).join(JobRow).join(TenantRow)
    if tenant is not None:
        statement = statement.where(TenantRow.name == tenant)
    if job_id is not None:
        statement = statement.where(ResultRow.job_id == job_id)
    return [
        ResultRecord(row.job_id, row.arch, row.score, row.values, row.params, row.flops, tuple(row.history))
        for row in session.exec(statement.order_by(col(ResultRow.created_at), col(ResultRow.job_id)))
    ]


def _reports(session: Session, job_id: str | None = None, tenant: str | None = None) -> list[ReportRecord]:
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
        )
        for row, device_name in session.exec(statement.order_by(col(ReportRow.id)))
    ]


def _api_keys(session: Session, tenant: str | None = None) -> list[ApiKeyRecord]:
    statement = select(ApiKeyRow, TenantRow.name).join(TenantRow)
    if tenant is not None:
        statement = statement.where(TenantRow.name == tenant)
    return [
        ApiKeyRecord(row.key_id, tenant_name, as_utc(row.created_at), row.revoked_at is not None)
        for row, tenant_name in session.exec(statement.order_by(col(ApiKeyRow.id)))
    ]


def _plain(record: Any, **extra: Any) -> dict[str, Any]:
    """A record as JSON-ready data: datetimes become ISO 8601 strings, tuples lists."""
    data = {**extra, **asdict(record)}
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
        elif isinstance(value, tuple):
            data[key] = list(value)
    return data
