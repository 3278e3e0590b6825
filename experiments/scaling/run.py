"""Scaling of the service (issue 6), side by side in one run: workers, overhead, cache.

1. **Throughput, 2 worker processes vs 1.** The same jobs (``--jobs`` jobs of ``--budget`` evaluations,
   two tenants, fresh registry each time) through the embedded service with one local Celery worker of
   concurrency 1 and then 2 (one torch thread per pool process). Repeated ``--repeats`` times, the
   order alternating, so that drifting load on the machine hits both alike; the ratio of the median
   throughputs (evaluations scored per wall second, worker start-up excluded) is reported.
2. **Orchestration + registry overhead of a ``--overhead-budget``-evaluation job**, one worker, embedded
   (SQLite broker and registry) and distributed (Redis broker, PostgreSQL registry). Two measures:
   ``overhead`` = 1 - (seconds the worker spent scoring) / (wall seconds x workers), everything that is
   not scoring: orchestrator, registry reads and writes, broker latency, idle gaps between steps; and
   ``orchestrator_busy`` = the orchestrator's own working time (registry calls included, sleeping not)
   over wall time.
3. **Cache.** The same job again (another tenant, same device data, same seed) in the same registry:
   its wall time over the first's.

    python experiments/scaling/run.py                       # everything, about 5-8 minutes
    python experiments/scaling/run.py --quick --no-distributed
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from nasfleet.server.service.celery_app import CelerySettings
from nasfleet.server.service.dispatch import FairShare
from nasfleet.server.service.jobs import JobOptions, JobRun, submit_job
from nasfleet.server.service.runtime import Service, ServiceOptions, embedded_settings

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/, for the devices shared with faults/
from devices import device_characteristics  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def progress(label: str, total: int) -> Callable[[JobRun], None]:
    started, shown = time.perf_counter(), [0]
    told: dict[str, int] = {}

    def show(job: JobRun) -> None:
        told[job.id] = job.told
        done = sum(told.values())
        if done * 10 // total > shown[0] * 10 // total or done == total:
            log(f"  {label}: {done}/{total} evaluations ({time.perf_counter() - started:.1f} s)")
        shown[0] = done

    return show


def run_jobs(
    settings: CelerySettings, state: Path, workers: int, plan: list[tuple[str, int, int]], args: Any,
    label: str,
) -> dict[str, Any]:  # fmt: skip
    """Submit *plan* (tenant, seed, characteristics seed) and run it; timing from the registry."""
    # One worker process per worker (each its own session, so its own scheduling group; see README).
    options = ServiceOptions(local_workers=workers, concurrency=1, fair=FairShare(max_in_flight=4 * workers))
    shape = tuple(args.input)
    job_options = JobOptions(ask_size=args.ask_size, batch_size=args.batch_size)
    with Service(settings, state, options) as service:
        jobs = [
            submit_job(service.registry, tenant, device_characteristics(chars, shape, rank=4),  # type: ignore[arg-type]
                       strategy="evolution",
                       budget=args.budget if len(plan) > 1 else args.overhead_budget, seed=seed,
                       options=job_options)
            for tenant, seed, chars in plan
        ]  # fmt: skip
        total = sum(job.budget for job in jobs)
        orchestrator = service.orchestrator(job_ids=[job.id for job in jobs], on_step=progress(label, total))
        started = time.perf_counter()
        results = orchestrator.run()
        wall = time.perf_counter() - started
        evaluations = [e for job in jobs for e in service.registry.evaluations(job.id)]
    scored = [e for e in evaluations if e.worker != "cache"]
    scoring = sum(e.seconds for e in scored)
    return {
        "label": label, "workers": workers, "jobs": len(jobs), "done": len(results), "wall_s": wall,
        "evaluations_told": total, "scored": len(scored), "cache_answered": len(evaluations) - len(scored),
        "scoring_s": scoring, "throughput_per_s": len(scored) / wall,
        "overhead": 1.0 - scoring / (wall * workers),
        "orchestrator_busy": orchestrator.stats.busy_seconds / wall,
        "dispatched": orchestrator.stats.dispatched, "cache_hits": orchestrator.stats.cache_hits,
        "best": [r.arch for r in results.values()],
    }  # fmt: skip


def fresh(root: Path, name: str) -> Path:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


RAW_SCORER = """
import sys, time, numpy as np, torch
torch.set_num_threads(1)
from nasfleet.protocol.messages import DataCharacteristics
from nasfleet.proxies.engine import expand_names, score_archs
from nasfleet.search.probe import synthetic_probe_batch
from nasfleet.spaces import get_space
count, shape = int(sys.argv[1]), tuple(map(int, sys.argv[2:5]))
batch_size, seed = int(sys.argv[5]), int(sys.argv[6])
space, rng = get_space("nb201"), np.random.default_rng(seed)
classes = 10
chars = DataCharacteristics(shape, classes, classes * 10, (10,) * classes, True)
batch = synthetic_probe_batch(chars, batch_size, 0)
archs = [space.sample(rng) for _ in range(count)]
score_archs(space, archs[:1], batch, expand_names("fgnas", True)[0], seed=0, progress=False)
started = time.perf_counter()
score_archs(space, archs, batch, expand_names("fgnas", True)[0], seed=0, progress=False)
print(time.perf_counter() - started)
"""


def raw_ceiling(args: Any, repeat: int) -> dict[int, float]:
    """Archs per second that 1 and 2 plain scoring processes (own sessions, no service) get right now."""
    rates: dict[int, float] = {}
    for processes in (1, 2):
        command = [sys.executable, "-c", RAW_SCORER, str(args.raw_archs), *map(str, args.input),
                   str(args.batch_size)]  # fmt: skip
        # Every process scores the same archs: random NB201 archs differ several-fold in cost, so
        # different draws per process would measure the draw, not the machine.
        procs = [subprocess.Popen([*command, str(repeat)], stdout=subprocess.PIPE, start_new_session=True)
                 for _ in range(processes)]  # fmt: skip
        seconds = [float(proc.communicate()[0]) for proc in procs]
        rates[processes] = processes * args.raw_archs / max(seconds)
    log(f"  raw scoring, no service: {rates[1]:.2f}/s with 1 process, {rates[2]:.2f}/s with 2")
    return rates


def throughput(root: Path, args: Any) -> dict[str, Any]:
    plan = [(f"tenant{j % 2}", j, j) for j in range(args.jobs)]
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    raw: list[dict[int, float]] = []
    for repeat in range(args.repeats):
        for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
            state = fresh(root, f"throughput-{workers}-{repeat}")
            label = f"throughput, {workers} worker(s), repeat {repeat + 1}"
            log(label)
            run = run_jobs(embedded_settings(state), state, workers, plan, args, label)
            log(f"  {run['scored']} scored in {run['wall_s']:.1f} s: {run['throughput_per_s']:.2f}/s")
            runs[workers].append(run)
        raw.append(raw_ceiling(args, repeat))
    medians = {w: statistics.median(r["throughput_per_s"] for r in runs[w]) for w in runs}
    raw_ratio = statistics.median(rates[2] / rates[1] for rates in raw)
    # Busy share of the workers (scoring / (wall x workers)) and the seconds one arch took: a ratio below
    # 2 with busy workers and slower archs means the machine, not the service, withheld the second core.
    busy = {w: statistics.median(1 - r["overhead"] for r in runs[w]) for w in runs}
    per_arch = {w: statistics.median(r["scoring_s"] / r["scored"] for r in runs[w]) for w in runs}
    return {"runs": runs, "median_per_s": medians, "ratio": medians[2] / medians[1], "raw": raw,
            "raw_ratio": raw_ratio, "workers_busy": busy, "seconds_per_arch": per_arch}  # fmt: skip


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"nasfleet_scaling_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def overhead_and_cache(settings: CelerySettings, state: Path, args: Any, mode: str) -> dict[str, Any]:
    first = run_jobs(
        settings, state, 1, [("first", 7, 100)], args, f"{mode}: {args.overhead_budget}-eval job"
    )
    log(f"  overhead {first['overhead']:.1%}, orchestrator busy {first['orchestrator_busy']:.1%}")
    again = run_jobs(settings, state, 1, [("second", 7, 100)], args, f"{mode}: the same job again")
    ratio = again["wall_s"] / first["wall_s"]
    log(f"  repeat: {again['wall_s']:.2f} s = {ratio:.1%} of the first; {again['dispatched']} archs sent")
    return {"first": first, "again": again, "cache_cost_ratio": ratio}


def distributed(root: Path, args: Any) -> dict[str, Any]:
    import redis

    broker = args.redis
    redis.Redis.from_url(broker).flushdb()
    try:
        with postgres_database(args.postgres_admin) as registry:
            settings = CelerySettings(
                broker=broker, registry=registry, queue=f"scaling-{uuid.uuid4().hex[:6]}"
            )
            return overhead_and_cache(settings, fresh(root, "distributed"), args, "distributed")
    finally:
        redis.Redis.from_url(broker).flushdb()


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    runs = summary["throughput"]["runs"]
    for workers, color in ((1, "tab:blue"), (2, "tab:orange")):
        values = [r["throughput_per_s"] for r in runs[workers]]
        axes[0].scatter([workers] * len(values), values, color=color, zorder=3)
        axes[0].bar(workers, summary["throughput"]["median_per_s"][workers], color=color, alpha=0.5)
    raw = summary["throughput"]["raw"]
    for workers in (1, 2):
        label = "plain scoring processes" if workers == 1 else None
        axes[0].scatter([workers + 0.25] * len(raw), [rates[workers] for rates in raw], color="gray",
                        marker="x", zorder=3, label=label)  # fmt: skip
    axes[0].legend(fontsize=7)
    ratio, raw_ratio = summary["throughput"]["ratio"], summary["throughput"]["raw_ratio"]
    axes[0].set(xticks=[1, 2], xlabel="worker processes", ylabel="evaluations / s",
                title=f"throughput: {ratio:.2f}x (plain processes: {raw_ratio:.2f}x)")  # fmt: skip
    modes = [m for m in ("embedded", "distributed") if m in summary]
    overhead = [summary[m]["first"]["overhead"] * 100 for m in modes]
    busy = [summary[m]["first"]["orchestrator_busy"] * 100 for m in modes]
    x = np.arange(len(modes))
    axes[1].bar(x - 0.2, overhead, 0.4, label="not scoring (1 - scoring / wall)")
    axes[1].bar(x + 0.2, busy, 0.4, label="orchestrator busy")
    axes[1].axhline(10, color="red", linestyle="--", label="target 10%")
    axes[1].set(xticks=x, xticklabels=modes, ylabel="% of wall time",
                title=f"overhead, {summary['args']['overhead_budget']}-evaluation job")  # fmt: skip
    axes[1].legend(fontsize=7)
    ratios = [summary[m]["cache_cost_ratio"] * 100 for m in modes]
    axes[2].bar(modes, ratios, color="tab:green")
    axes[2].axhline(5, color="red", linestyle="--", label="target 5%")
    axes[2].set(ylabel="% of the first job's wall time", title="the same job again (cache)")
    axes[2].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=4, help="jobs of the throughput runs")
    parser.add_argument("--budget", type=int, default=24, help="evaluations per throughput job")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--raw-archs", type=int, default=24, help="archs per raw-scoring process")
    parser.add_argument("--overhead-budget", type=int, default=200)
    parser.add_argument("--ask-size", type=int, default=8)
    parser.add_argument("--input", type=int, nargs=3, default=[3, 16, 16], metavar=("C", "H", "W"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--postgres-admin", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-distributed", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.budget, args.repeats, args.overhead_budget, args.input = 2, 8, 1, 16, [3, 8, 8]
        args.raw_archs = 4
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    }
    with tempfile.TemporaryDirectory(prefix="nasfleet-scaling-") as scratch:
        root = Path(scratch)
        summary["throughput"] = throughput(root, args)
        ratios = summary["throughput"]
        log(f"throughput ratio, 2 vs 1 worker: {ratios['ratio']:.2f}x (raw: {ratios['raw_ratio']:.2f}x)")
        state = fresh(root, "embedded")
        summary["embedded"] = overhead_and_cache(embedded_settings(state), state, args, "embedded")
        if not args.no_distributed:
            summary["distributed"] = distributed(root, args)
    (args.out / "scaling.json").write_text(json.dumps(summary, indent=2))
    plot(summary, args.out / "scaling.png")
    log(f"wrote {args.out / 'scaling.json'} and {args.out / 'scaling.png'}")


if __name__ == "__main__":
    main()
