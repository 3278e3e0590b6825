"""What each dashboard page shows, read from the registry for one tenant: plain dicts for the templates.

Every reader takes the tenant and returns only that tenant's records: `own_job` answers None for another
tenant's job exactly as for a missing one, so the page built on it is the same 404.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any

from nasfleet.dashboard.plots import accuracy_by_round, best_so_far, proxy_values
from nasfleet.display import compact, short_arch, short_id
from nasfleet.server.api.views import job_result
from nasfleet.server.registry import DeviceRecord, JobRecord, Registry, ReportRecord, ResultRecord

log = logging.getLogger(__name__)
MAX_TABLE_ROWS = 500  # evaluations listed on a job's page; the plot shows them all
RUNNING = ("queued", "running")


def own_job(registry: Registry, tenant: str, job_id: str) -> JobRecord | None:
    """The tenant's job *job_id*; None when missing, malformed or another tenant's."""
    job = registry.get_job(job_id)
    return job if job is not None and job.tenant == tenant else None


def job_row(job: JobRecord) -> dict[str, Any]:
    """One line of the jobs table."""
    return {
        "id": job.id, "short_id": short_id(job.id), "name": job.name or "", "device": job.device or "",
        "status": job.status, "done": job.evaluations_done, "budget": job.budget,
        "percent": round(100 * min(1.0, job.evaluations_done / job.budget)),
        "best_score": _number(job.best_score), "best_arch": short_arch(job.best_arch),
        "space": job.space, "strategy": job.strategy, "updated": f"{job.updated_at:%Y-%m-%d %H:%M:%S}",
        "error": job.error or job.note or "",
    }  # fmt: skip


def jobs_page(registry: Registry, tenant: str) -> dict[str, Any]:
    jobs = registry.list_jobs(tenant=tenant)
    rows = [job_row(job) for job in reversed(jobs)]  # newest first
    return {"jobs": rows, "live": any(job.status in RUNNING for job in jobs)}


def job_page(registry: Registry, job: JobRecord) -> dict[str, Any]:
    """A job's status and limits, best-so-far curve, delivered SubNet and archive (table and plot)."""
    result = registry.get_result(job.id) if job.status == "done" else None
    history = list(result.history) if result is not None else _state_history(job)
    evaluations = registry.evaluations(job.id)
    proxies = sorted({name for e in evaluations for name in e.values})
    delivered = result.arch if result is not None else job.best_arch
    chosen = next((i for i, e in enumerate(evaluations) if e.arch == delivered), None)
    table = [
        {"index": i + 1, "arch": e.arch, "short_arch": short_arch(e.arch), "params": compact(e.params),
         "flops": compact(e.flops), "values": [_number(e.values.get(name)) for name in proxies],
         "seconds": f"{e.seconds:.3g}", "cached": e.cached, "delivered": e.arch == delivered}
        for i, e in enumerate(evaluations[:MAX_TABLE_ROWS])
    ]  # fmt: skip
    return {
        "job": job_row(job), "record": job, "live": job.status in RUNNING,
        "limits": _limits(job.constraints), "options": _options(job),
        "curve": best_so_far(history, job.budget),
        "subnet": _subnet(registry, job, result),
        "proxies": proxies, "evaluations": table, "evaluation_count": len(evaluations),
        "proxy_plot": proxy_values([e.values for e in evaluations], chosen),
        "reports": [_report_row(r) for r in registry.list_reports(job_id=job.id)],
    }  # fmt: skip


def fleet_page(registry: Registry, tenant: str) -> dict[str, Any]:
    """Devices with tier, limits and profile, their SubNets (jobs) with predicted latency, and reports."""
    devices = registry.list_devices(tenant)
    jobs = registry.list_jobs(tenant=tenant)
    results = {result.job_id: result for result in registry.list_results(tenant=tenant)}
    reports = registry.list_reports(tenant=tenant)
    by_device: dict[str, list[ReportRecord]] = defaultdict(list)
    by_job: dict[str, list[ReportRecord]] = defaultdict(list)
    for report in reports:
        by_device[report.device or ""].append(report)
        by_job[report.job_id].append(report)
    rows = []
    for device in devices:
        own = [job for job in jobs if job.device == device.name]
        rows.append({
            "name": device.name, "tier": device.tier, "status": device.status, "error": device.error or "",
            "limits": _limits(device.constraints), "profile": _profile(device),
            "subnets": [_subnet_row(job, results.get(job.id), devices, by_job[job.id])
                        for job in reversed(own)],
            "reports": [_report_row(r) for r in by_device.get(device.name, [])],
        })  # fmt: skip
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)  # one line per device and SubNet job
    for report in reports:
        if report.device and report.round is not None:
            series[f"{report.device} ({short_id(report.job_id)})"].append((report.round, report.accuracy))
    unassigned = [_report_row(r) for r in by_device.get("", [])]
    return {"devices": rows, "accuracy_plot": accuracy_by_round(series), "unassigned": unassigned,
            "report_count": len(reports)}  # fmt: skip


def _subnet_row(
    job: JobRecord, result: ResultRecord | None, devices: list[DeviceRecord], reports: list[ReportRecord]
) -> dict[str, Any]:
    """A device's SubNet: its job, costs, predicted latency and the last measured one reported."""
    latency = None
    if result is not None:
        try:
            latency = job_result(job, result, devices).latency_ms_predicted
        except Exception:  # an arch of a space this server cannot load: show the rest
            log.warning("job %s: cannot describe its SubNet", job.id, exc_info=True)
    measured = [r.latency_ms_measured for r in reports if r.latency_ms_measured is not None]
    return {**job_row(job), "arch": result.arch if result else "",
            "params": compact(result.params if result else None),
            "flops": compact(result.flops if result else None), "predicted_ms": _number(latency),
            "measured_ms": _number(measured[-1] if measured else None)}  # fmt: skip


def _subnet(registry: Registry, job: JobRecord, result: ResultRecord | None) -> dict[str, Any] | None:
    """The delivered SubNet: arch, score, costs, predicted latency and raw proxy values."""
    if result is None:
        return None
    devices = registry.list_devices(job.tenant) if job.device else []
    try:
        described = job_result(job, result, devices)
        latency, genome = described.latency_ms_predicted, described.subnet.genome
    except Exception:  # an arch of a space this server cannot load: show the rest
        log.warning("job %s: cannot describe its SubNet", job.id, exc_info=True)
        latency, genome = None, []
    return {"arch": result.arch, "score": _number(result.score), "params": compact(result.params),
            "flops": compact(result.flops), "predicted_ms": _number(latency), "genome": genome,
            "values": {name: _number(value) for name, value in sorted(result.values.items())}}  # fmt: skip


def _state_history(job: JobRecord) -> list[dict[str, Any]]:
    """The best-so-far history of a job still searching: its checkpointed loop state's."""
    state = job.strategy_state or {}
    history = state.get("history")
    return [entry for entry in history if isinstance(entry, dict)] if isinstance(history, list) else []


def _limits(constraints: dict[str, Any]) -> list[tuple[str, str]]:
    """The set limits as (label, value); the wire's ``kind`` and ``version`` are left out."""
    labels = {"max_params": "params ≤", "max_flops": "FLOPs ≤", "max_latency_ms": "latency ≤ (ms)",
              "max_memory_mb": "memory ≤ (MB)"}  # fmt: skip
    shown = []
    for key, value in constraints.items():
        if key in ("kind", "version") or value is None:
            continue
        shown.append((labels.get(key, key), compact(value) if isinstance(value, int) else _number(value)))
    return shown


def _profile(device: DeviceRecord) -> list[tuple[str, str]]:
    """The device profile's speed (as a count: ``2.77M`` FLOPs per ms), overhead and memory."""
    shown = []
    for key, label in (
        ("flops_per_ms", "FLOPs/ms"),
        ("overhead_ms", "overhead (ms)"),
        ("memory_mb", "memory (MB)"),
    ):
        value = device.profile.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            shown.append((label, compact(round(value)) if key == "flops_per_ms" else _number(value)))
    return shown


def _options(job: JobRecord) -> list[tuple[str, str]]:
    shown = [("space", job.space), ("strategy", job.strategy), ("seed", str(job.seed))]
    for key in ("ask_size", "aggregate", "batch_size"):
        if key in job.options:
            shown.append((key.replace("_", " "), str(job.options[key])))
    return shown


def _report_row(report: ReportRecord) -> dict[str, Any]:
    return {
        "run": report.run or "", "round": "" if report.round is None else report.round,
        "job_id": report.job_id, "short_job": short_id(report.job_id), "device": report.device or "",
        "arch": short_arch(report.arch), "accuracy": f"{report.accuracy:.4f}", "loss": _number(report.loss),
        "predicted_ms": _number(report.latency_ms_predicted),
        "measured_ms": _number(report.latency_ms_measured),
        "train_seconds": _number(report.train_seconds),
        "epochs": _number(report.epochs_done), "samples": f"{report.num_train}/{report.num_test}",
        "time": f"{report.created_at:%Y-%m-%d %H:%M:%S}" if report.created_at else "",
    }  # fmt: skip


def _number(value: float | int | None) -> str:
    """4 significant digits; "-" for none or a non-finite value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g}"
