"""Summaries of load phases: latency percentiles per endpoint, throughput, CPU; the plot and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from client import Run

PERCENTILES = (50, 90, 95, 99)


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    values = np.array(seconds) * 1000
    out = {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}
    return {**out, "mean": float(values.mean()), "max": float(values.max())}


def summarize_phase(run: Run, think_ms: float, duration_s: float, extra: dict[str, Any]) -> dict[str, Any]:
    ok = [s for s in run.samples if s.status == 200]
    endpoints = sorted({s.endpoint for s in run.samples})
    statuses: dict[str, int] = {}
    for sample in run.samples:
        statuses[str(sample.status)] = statuses.get(str(sample.status), 0) + 1
    server_cpu = extra["cpu_seconds"]["server process (API + orchestrator thread)"]
    return {
        "think_ms": think_ms,
        "requests": len(run.samples),
        "throughput_rps": len(run.samples) / duration_s,
        "statuses": statuses,
        "client_errors": run.errors[:20],
        "latency_ms": {
            "all": percentiles([s.seconds for s in ok]),
            **{e: percentiles([s.seconds for s in ok if s.endpoint == e]) for e in endpoints},
        },
        "requests_per_endpoint": {e: sum(1 for s in run.samples if s.endpoint == e) for e in endpoints},
        "server_cpu_ms_per_request": 1000 * server_cpu / max(1, len(run.samples)),
        "jobs_finished_during_load": len(run.finished),
        "evaluations_seen": sum(max(n for _, n in points) for points in run.progress.values()),
        **extra,
    }


def _evaluations_over_time(run: Run, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(0, duration_s, 121)
    total = np.zeros_like(grid)
    for points in run.progress.values():
        times, counts = zip(*sorted(points), strict=True)
        total += np.interp(grid, times, np.maximum.accumulate(counts), left=0)
    return grid, total


def plot(runs: list[Run], report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = report["config"]["duration"]
    figure, axes = plt.subplots(1, 1 + len(runs), figsize=(5.2 * (1 + len(runs)), 4.6))
    cdf = axes[0]
    for run, phase in zip(runs, report["phases"], strict=True):
        values = np.sort([s.seconds * 1000 for s in run.samples if s.status == 200])
        stats = phase["latency_ms"]["all"]
        label = (f"{phase['think_ms']:.0f} ms think: {phase['throughput_rps']:.0f} req/s, "
                 f"p50 {stats['p50']:.0f} / p99 {stats['p99']:.0f} ms")  # fmt: skip
        cdf.plot(values, np.arange(1, len(values) + 1) / len(values), label=label)
    cdf.set_xscale("log")
    cdf.set(xlabel="latency (ms, log scale)", ylabel="fraction of requests",
            title=f"{report['config']['clients']} polling clients: latency CDF")  # fmt: skip
    cdf.legend(fontsize=7, loc="lower right")
    for axis, run, phase in zip(axes[1:], runs, report["phases"], strict=True):
        axis.scatter([s.at for s in run.samples], [s.seconds * 1000 for s in run.samples], s=2, alpha=0.2)
        axis.set(xlabel="seconds", ylabel="latency (ms)", yscale="log",
                 title=f"{phase['think_ms']:.0f} ms think: latency and jobs' progress")  # fmt: skip
        grid, total = _evaluations_over_time(run, duration)
        twin = axis.twinx()
        twin.plot(grid, total, color="tab:red")
        twin.set_ylabel("evaluations done, all jobs", color="tab:red")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _server_cores(phase: dict[str, Any], duration_s: float) -> float:
    return float(phase["cpu_seconds"]["server process (API + orchestrator thread)"]) / duration_s


def markdown(report: dict[str, Any]) -> str:
    config, machine = report["config"], report["machine"]
    lines = [
        "# Tenant HTTP API under load",
        "",
        f"`{report['command']}`",
        "",
        f"{config['clients']} concurrent clients of {config['tenants']} tenants (asyncio, one keep-alive "
        f"HTTP/1.1 connection each) poll for {config['duration']:.0f} s per phase, with "
        f"{len(report['phases'])} think times between a client's requests. In each phase "
        f"{config['tenants'] * config['jobs_per_tenant']} fresh jobs (budget {config['budget']}, small "
        "NB201, 3x16x16 inputs, rank-2 sketches as base64) run meanwhile on "
        f"{config['workers']} local worker process of `nasfleet serve` (embedded mode: SQLite broker and "
        "registry; the orchestrator runs in a thread of the API process). Each client polls its tenant's "
        f"jobs in turn; every {config['list_every']}th request lists them, and a finished job's result is "
        "fetched once. Latency is measured in the client, from sending a request to having its whole body.",
        "",
        f"Machine: {machine['cpus']} CPUs shared with other work (load average "
        f"{machine['load_average_at_start']:.1f} at the start; CPU pressure before the first phase: "
        f"`{machine['cpu_pressure_at_start']}`). The load generator, the API server and the worker all ran "
        "on it, so the numbers are an upper bound on what a dedicated host would show.",
        "",
        "| think ms | requests | req/s | p50 ms | p90 ms | p95 ms | p99 ms | max ms | server CPU ms/req | "
        "server CPU cores | non-200 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in report["phases"]:
        stats, bad = phase["latency_ms"]["all"], sum(n for s, n in phase["statuses"].items() if s != "200")
        lines.append(
            f"| {phase['think_ms']:.0f} | {phase['requests']} | {phase['throughput_rps']:.0f} | "
            + " | ".join(f"{stats[k]:.1f}" for k in ("p50", "p90", "p95", "p99", "max"))
            + f" | {phase['server_cpu_ms_per_request']:.2f}"
            + f" | {_server_cores(phase, config['duration']):.2f} | {bad} |"
        )
    lines += [
        "",
        "Server CPU is the `nasfleet serve` process: the API and the orchestrator thread, which share one "
        "interpreter, so about one core is its ceiling; its local worker process scored the jobs apart. "
        "Reading: at the poll intervals a device would use (0.25-1 s) the median stays a few ms; at 50 ms "
        "the server process nears its one-core ceiling and requests queue. More throughput needs more API "
        "processes (`nasfleet serve --no-orchestrate` on the same registry behind a load balancer).",
        "",
        "Per endpoint (p50 / p95 / p99 ms):",
        "",
    ]
    for phase in report["phases"]:
        counts = phase["requests_per_endpoint"]
        parts = [f"{e} ({counts[e]}): {s['p50']:.1f} / {s['p95']:.1f} / {s['p99']:.1f}"
                 for e, s in phase["latency_ms"].items() if e != "all" and s]  # fmt: skip
        jobs = (f"{phase['jobs_finished_during_load']} of {phase['jobs_submitted']} jobs finished in the "
                f"phase, {phase['evaluations_seen']} evaluations; end states "
                f"{phase['end_states']}")  # fmt: skip
        lines.append(f"- {phase['think_ms']:.0f} ms think: " + "; ".join(parts) + f". {jobs}.")
    lines += ["", "![latency](latency.png)", ""]
    return "\n".join(lines)
