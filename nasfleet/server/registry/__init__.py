"""The SQLModel registry: tenants, devices, search jobs, evaluations and their cache, results and reports.

`Registry` is the only way in. It hands out plain frozen records; the ORM rows of
`nasfleet.server.registry.models` never leave this package.
"""

from __future__ import annotations

from nasfleet.server.registry.models import (
    DEVICE_STATUSES,
    FINAL_JOB_STATUSES,
    JOB_STATUSES,
    SCHEMA_VERSION,
    ApiKeyRecord,
    CacheEntry,
    CacheKey,
    DeviceRecord,
    EvaluationRecord,
    JobRecord,
    RegistryError,
    ReportRecord,
    ResultRecord,
    SchemaVersionError,
    TenantRecord,
)
from nasfleet.server.registry.storage import DEFAULT_URL, Registry
from nasfleet.server.registry.workers import WorkerRecord

__all__ = [
    "DEFAULT_URL",
    "DEVICE_STATUSES",
    "FINAL_JOB_STATUSES",
    "JOB_STATUSES",
    "SCHEMA_VERSION",
    "ApiKeyRecord",
    "CacheEntry",
    "CacheKey",
    "DeviceRecord",
    "EvaluationRecord",
    "JobRecord",
    "Registry",
    "RegistryError",
    "ReportRecord",
    "ResultRecord",
    "SchemaVersionError",
    "TenantRecord",
    "WorkerRecord",
]
