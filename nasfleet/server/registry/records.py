"""The plain, frozen records the registry hands out: copies of its rows, never the rows themselves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nasfleet.server.registry.checks import FINAL_JOB_STATUSES


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
    name: str | None = None  # unique within the tenant; a search resumes by it

    @property
    def finished(self) -> bool:
        return self.status in FINAL_JOB_STATUSES


@dataclass(frozen=True)
class EvaluationRecord:
    """One scored architecture of a job: raw proxy values, exact costs, scoring time and who scored it.

    ``cached`` marks an evaluation answered from the evaluation cache instead of scored for this job.
    """

    arch: str
    values: dict[str, float]
    params: int
    flops: int
    seconds: float
    worker: str = ""
    cached: bool = False


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
    """A device's training report; ``device`` defaults to the job's; storing sets ``id``, ``created_at``.

    ``run`` and ``round``: the named run (``nasfleet simulate --name``) and its federation round (1, 2,
    ...) that trained the SubNet; None where unknown (a report from outside a round, an unnamed run's
    ``run``, or any report stored before registry schema version 5). ``epochs_done``: the epochs the
    device trained, in [0, `MAX_EPOCHS`] (fewer than asked where early stopping or the time cap ended
    training); None where the report did not say, or was stored before version 6.
    """

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
    run: str | None = None
    round: int | None = None
    epochs_done: int | None = None


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key's public part; the secret and its hash never leave the registry."""

    key_id: str
    tenant: str
    created_at: datetime
    revoked: bool
