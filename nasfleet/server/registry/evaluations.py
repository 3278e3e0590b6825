"""A job's evaluations and the evaluation cache shared by every job of every tenant.

Writes are idempotent: an evaluation (job, arch) or a cache entry stored twice is stored once, and the
second call counts 0 new rows. An evaluation answered from the cache is stored with ``cached`` set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlmodel import Session, col, select

from nasfleet.server.registry.checks import (
    ARCH_LENGTH,
    HASH_LENGTH,
    WORKER_LENGTH,
    check_bool,
    check_float,
    check_int,
    check_name,
    check_text,
    check_values,
    require,
)
from nasfleet.server.registry.records import CacheEntry, CacheKey, EvaluationRecord
from nasfleet.server.registry.rows import CHUNK, insert_new, job_row
from nasfleet.server.registry.sessions import Sessions
from nasfleet.server.registry.tables import CacheRow, EvaluationRow

EVALUATION_KEYS = ("job_id", "arch")
CACHE_KEYS = ("arch", "characteristics_hash", "proxy_config_hash")


class Evaluations(Sessions):
    """The `Registry` methods about evaluations and the evaluation cache (a mixin of `Registry`)."""

    def add_evaluations(self, job_id: str, evaluations: Iterable[EvaluationRecord]) -> int:
        """Store a job's evaluations; an arch the job already has is skipped. Returns how many were new."""
        rows = evaluation_values(evaluations)
        with self._session(write=True) as session:
            job_row(session, job_id)
            return insert_evaluations(session, job_id, rows)

    def evaluations(self, job_id: str) -> list[EvaluationRecord]:
        """A job's evaluations in the order they were stored."""
        with self._session() as session:
            job_row(session, job_id)
            return [record for _, record in read_evaluations(session, job_id)]

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
                for start in range(0, len(ordered), CHUNK):
                    statement = select(CacheRow).where(
                        CacheRow.characteristics_hash == characteristics,
                        CacheRow.proxy_config_hash == proxies,
                        col(CacheRow.arch).in_(ordered[start : start + CHUNK]),
                    )
                    found.update((entry.key, entry) for entry in map(_cache_entry, session.exec(statement)))
        return found

    def cache_put(self, entries: Iterable[CacheEntry]) -> int:
        """Cache evaluations; a key already cached keeps its first values. Returns how many were new."""
        rows = _cache_values(entries)
        with self._session(write=True) as session:
            return insert_new(session, CacheRow, rows, CACHE_KEYS)


def insert_evaluations(session: Session, job_id: str, rows: list[dict[str, Any]]) -> int:
    """Insert a job's checked evaluation *rows*, skipping archs it has; count the new ones."""
    return insert_new(session, EvaluationRow, [{"job_id": job_id, **row} for row in rows], EVALUATION_KEYS)


def evaluation_values(evaluations: Iterable[EvaluationRecord]) -> list[dict[str, Any]]:
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
            "cached": check_bool(f"{where}.cached", evaluation.cached),
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


# -- reading: rows become records here, inside the session ---------------------------------------------------
def read_evaluations(session: Session, job_id: str | None = None) -> list[tuple[str, EvaluationRecord]]:
    """(job id, evaluation) pairs, of one job or of all, in the order they were stored."""
    statement = select(EvaluationRow)
    if job_id is not None:
        statement = statement.where(EvaluationRow.job_id == job_id)
    return [
        (
            row.job_id,
            EvaluationRecord(
                row.arch, row.values, row.params, row.flops, row.seconds, row.worker, row.cached
            ),
        )
        for row in session.exec(statement.order_by(col(EvaluationRow.id)))
    ]


def _cache_entry(row: CacheRow) -> CacheEntry:
    key = CacheKey(row.arch, row.characteristics_hash, row.proxy_config_hash)
    return CacheEntry(key, row.values, row.params, row.flops)
