"""One search through the service, as ``nasfleet search`` runs it: submit a job, run it, report it.

The job goes to the registry under a tenant (created if new), the service runs it (the embedded broker
lives in a temporary directory), and the finished job is reported as `nasfleet.search.SearchResult`, as
the in-process `nasfleet.search.run_search` reports a search.

Probe data: a job with ``JobOptions.probe_data`` scores on a seeded mini-batch of that dataset's train
split (real images for ``cifar10``), not on a synthetic batch; the spec, the batch size and the scoring
seed are part of the evaluation cache key, so an identical search a second time is answered from the
cache, and a search on other data never is. Every worker must be able to read the dataset.

Timing: ``wall_seconds`` is the orchestration (workers already started; their start is reported apart as
``startup_seconds``), ``scoring_seconds`` the part of it the orchestrator spent waiting for the workers,
so the overhead is the orchestrator's own time: strategy, aggregation, registry, dispatch.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kombu.utils.url import maybe_sanitize_url

from nasfleet.protocol.messages import DataCharacteristics, ResourceConstraints
from nasfleet.search import SearchError, SearchResult, search_progress
from nasfleet.server.service.jobs import JobOptions, JobRun, submit_job
from nasfleet.server.service.runtime import make_service


@dataclass(frozen=True)
class ServiceSearch:
    """A finished search job: the result as `run_search` reports one, and how the service ran it."""

    result: SearchResult
    service: dict[str, Any]


def search_through_service(
    characteristics: DataCharacteristics, *, tenant: str, space: str, strategy: str, budget: int,
    seed: int, strategy_config: Mapping[str, Any], constraints: ResourceConstraints, options: JobOptions,
    registry: str, broker: str = "", workers: int = 1, progress: bool = True,
) -> ServiceSearch:  # fmt: skip
    """Submit one search job for *tenant*, run it to the end through the service, and report it.

    Raises `SearchError` with the job's reason if it failed (e.g. no architecture meets *constraints*),
    and what `make_service` raises if the service cannot start (`SettingsError`, `RegistryError`, or a
    ``RuntimeError`` naming a worker that did not start).
    """
    with tempfile.TemporaryDirectory(prefix="nasfleet-search-") as state:
        started = time.perf_counter()
        service = make_service(state, broker=broker, registry=registry, workers=workers)
        with service:
            startup = time.perf_counter() - started
            job = submit_job(
                service.registry, tenant, characteristics, space=space, strategy=strategy, budget=budget,
                seed=seed, strategy_config=strategy_config, constraints=constraints, options=options,
            )  # fmt: skip
            runs: dict[str, JobRun] = {}
            with search_progress(budget, progress) as show:

                def on_step(run: JobRun) -> None:
                    runs[run.id] = run
                    show(run.told, run.loop.history[-1].score)

                orchestrator = service.run_together([job.id], on_step)
            record = service.registry.get_job(job.id)
            if record is None or record.status != "done" or job.id not in runs:
                reason = orchestrator.failed.get(job.id) or (record.error if record else None)
                raise SearchError(f"job {job.id} {record.status if record else 'vanished'}: {reason}")
            stats = orchestrator.stats
            wall, busy = stats.wall_seconds, min(stats.busy_seconds, stats.wall_seconds)
            result = runs[job.id].search_result(wall, wall - busy)
            evaluations = service.registry.evaluations(job.id)
    scored = [e.seconds for e in evaluations if not e.cached]
    return ServiceSearch(result, {
        "job_id": job.id, "tenant": tenant, "mode": "distributed" if broker else "embedded",
        "broker": maybe_sanitize_url(broker) if broker else "", "registry": maybe_sanitize_url(registry),
        "local_workers": workers, "startup_seconds": startup, "orchestrator_busy_seconds": busy,
        "worker_scoring_seconds": sum(scored), "scored": len(scored), "cache_hits": stats.cache_hits,
        "dispatched": stats.dispatched, "workers": sorted({e.worker for e in evaluations if not e.cached}),
    })  # fmt: skip
