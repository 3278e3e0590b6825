"""The SQLModel registry: tenants, devices, search jobs, evaluations and their cache, results and reports.

`Registry` is the only way in. It hands out plain frozen records (`records`); the ORM rows of `tables`
never leave this package. The modules, by concern: `checks` (errors, limits, boundary checks), `engines`
(URLs and engines), `schema` (version and migrations), `sessions` (the one session scope), `rows`
(shared row access), then `Registry`'s mixins `tenants`, `jobs`, `evaluations`, `results`, `workers`,
composed in `storage`.
"""

from __future__ import annotations

from nasfleet.bounds import DEFAULT_REGISTRY_URL
from nasfleet.server.registry.checks import (
    DEVICE_STATUSES,
    FINAL_JOB_STATUSES,
    JOB_STATUSES,
    JobFinishedError,
    RegistryError,
    SchemaVersionError,
)
from nasfleet.server.registry.records import (
    ApiKeyRecord,
    CacheEntry,
    CacheKey,
    DeviceRecord,
    EvaluationRecord,
    JobRecord,
    ReportRecord,
    ResultRecord,
    TenantRecord,
)
from nasfleet.server.registry.schema import SCHEMA_VERSION
from nasfleet.server.registry.storage import Registry
from nasfleet.server.registry.workers import WorkerRecord

__all__ = [
    "DEFAULT_REGISTRY_URL",
    "DEVICE_STATUSES",
    "FINAL_JOB_STATUSES",
    "JOB_STATUSES",
    "SCHEMA_VERSION",
    "ApiKeyRecord",
    "CacheEntry",
    "CacheKey",
    "DeviceRecord",
    "EvaluationRecord",
    "JobFinishedError",
    "JobRecord",
    "Registry",
    "RegistryError",
    "ReportRecord",
    "ResultRecord",
    "SchemaVersionError",
    "TenantRecord",
    "WorkerRecord",
]
