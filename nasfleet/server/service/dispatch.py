"""How the orchestrator reaches the workers, and what it keeps about what it sent.

`Dispatcher` sends one scoring task (`CeleryDispatcher` in `nasfleet.server.service.runtime`; here
`LocalDispatcher` scores in the calling process). `FairShare` holds the per-tenant quotas; a `Flight` is
an arch sent (or queued) and the jobs waiting for it; `RunStats` counts what one orchestrator run did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from nasfleet.server.registry import CacheKey, Registry
from nasfleet.server.service.tasks import score_locally

if TYPE_CHECKING:
    from nasfleet.server.service.jobs import JobRun


class Dispatcher(Protocol):
    """Sends one scoring task: ``score_batch(payload, archs)``."""

    def send(self, payload: dict[str, Any], archs: list[str]) -> None: ...


class LocalDispatcher:
    """Scores in the calling process at once, through the task's own code: no broker, no worker."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def send(self, payload: dict[str, Any], archs: list[str]) -> None:
        score_locally(self.registry, payload, archs)


@dataclass(frozen=True)
class FairShare:
    """Quotas and the dispatch granularity of the orchestrator's fair share between tenants.

    At most ``max_jobs_per_tenant`` jobs of a tenant run at once (the others stay queued); at most
    ``max_in_flight`` archs are dispatched and unanswered in all, and ``max_tenant_in_flight`` per tenant.
    Free slots go to tenants in round-robin order, one task (``chunk_size`` archs) per turn, and within a
    tenant round-robin over its jobs. Because the queue never holds more than ``max_in_flight`` archs, the
    broker's FIFO order cannot undo the orchestrator's: a tenant with a huge job gets its share of the
    workers, and a small job of another tenant starts and finishes without waiting behind it.
    """

    max_jobs_per_tenant: int = 4
    max_in_flight: int = 8
    max_tenant_in_flight: int | None = None
    chunk_size: int = 1

    def __post_init__(self) -> None:
        for name in ("max_jobs_per_tenant", "max_in_flight", "chunk_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, but got {value!r}")

    @property
    def tenant_in_flight(self) -> int:
        return self.max_tenant_in_flight or self.max_in_flight


@dataclass
class Flight:
    """An arch sent to the workers (or waiting to be sent) and the jobs that wait for its values."""

    key: CacheKey
    waiters: list[JobRun]
    sent_at: float | None = None
    attempts: int = 0


@dataclass
class RunStats:
    """What the orchestrator did: its busy (non-waiting) time, and what it sent and found cached."""

    wall_seconds: float = 0.0
    busy_seconds: float = 0.0
    steps: int = 0
    dispatched: int = 0
    cache_hits: int = 0
    shared_in_flight: int = 0
    resent: int = 0
    events: list[tuple[float, str, str, str, int]] = field(default_factory=list)
