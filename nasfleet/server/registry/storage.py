"""The `Registry`: the registry's one entrance, composed of one mixin per concern, and its export.

Each concern lives in its own module (`tenants`, `jobs`, `evaluations`, `results`, `workers`); all go
through the one session scope of `nasfleet.server.registry.sessions`, and every argument is checked before
anything is written (`nasfleet.server.registry.checks`).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from nasfleet.bounds import DEFAULT_REGISTRY_URL
from nasfleet.server.registry.evaluations import Evaluations, read_evaluations
from nasfleet.server.registry.jobs import Jobs, read_jobs
from nasfleet.server.registry.results import Results, read_reports, read_results
from nasfleet.server.registry.schema import SCHEMA_VERSION
from nasfleet.server.registry.tables import utcnow
from nasfleet.server.registry.tenants import Tenants, read_api_keys, read_devices, read_tenants
from nasfleet.server.registry.workers import WorkerBoard

__all__ = ["DEFAULT_REGISTRY_URL", "EXPORT_VERSION", "Registry"]

EXPORT_VERSION = 1


class Registry(Tenants, Jobs, Evaluations, Results, WorkerBoard):
    """Tenants, devices, search jobs, evaluations, the evaluation cache, results, reports and API keys.

    Parameters
    ----------
    url
        An SQLAlchemy URL: ``sqlite:///path/registry.db`` (the default, `DEFAULT_REGISTRY_URL`, in the current
        directory) or ``postgresql+psycopg://user@host:port/database``. Opening creates or upgrades the
        schema and raises `SchemaVersionError` for a database written by newer code.
    """

    def export(self) -> dict[str, Any]:
        """Everything but the cache and key hashes, as JSON-ready data, read in one transaction.

        A job's ``strategy_state`` is exported as stored, so it may hold non-finite floats, which
        ``json.dumps`` writes as ``Infinity``/``NaN``.
        """
        with self._session() as session:
            return {
                "format": "nasfleet-registry", "version": EXPORT_VERSION, "schema_version": SCHEMA_VERSION,
                "exported_at": utcnow().isoformat(),
                "tenants": [_plain(record) for record in read_tenants(session)],
                "devices": [_plain(record) for record in read_devices(session)],
                "jobs": [_plain(record) for record in read_jobs(session)],
                "evaluations": [_plain(record, job_id=job) for job, record in read_evaluations(session)],
                "results": [_plain(record) for record in read_results(session)],
                "reports": [_plain(record) for record in read_reports(session)],
                "api_keys": [_plain(record) for record in read_api_keys(session)],
            }  # fmt: skip


def _plain(record: Any, **extra: Any) -> dict[str, Any]:
    """A record as JSON-ready data: datetimes become ISO 8601 strings, tuples lists."""
    data = {**extra, **asdict(record)}
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat()
        elif isinstance(value, tuple):
            data[key] = list(value)
    return data
