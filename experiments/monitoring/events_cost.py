"""What Celery's task events cost on the Redis broker (issue 17), side by side in one run.

Three arms: events ``off``; ``on`` (nasfleet's setting for Redis and RabbitMQ), with no monitor listening;
``on+monitor``, with ``celery events --dump`` subscribed (its output to a file), the heaviest standard
monitor, since it formats every event's arguments. Two workloads per arm:

1. **trivial**: ``--tasks`` tasks that only increment a Redis counter, sent from this process to one
   worker (concurrency 1): the time per task, where the four events a task costs weigh the most.
2. **scoring**: a real job of ``--budget`` evaluations through the orchestrator (this process) and the
   same worker: its wall time, what a user waits for.

Each arm has a fresh registry (hence its own queue) and a fresh worker, whose start-up is not timed.
Each round runs every arm once, the order rotating, so that drifting load hits all alike; the medians
over ``--rounds`` rounds and their ratios to ``off`` are reported, with every run, in
``results/events_cost.json``.

    python experiments/monitoring/events_cost.py            # about 4 minutes
    python experiments/monitoring/events_cost.py --quick    # to check the script runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import redis

from nasfleet.server.registry import Registry
from nasfleet.server.service.celery_app import CelerySettings, make_app, resolve_queue
from nasfleet.server.service.jobs import JobOptions, submit_job
from nasfleet.server.service.runtime import LocalWorkers, Service, ServiceOptions

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/, for the devices shared with scaling/ and faults/
from devices import device_characteristics  # noqa: E402
from events_app import TOUCH_TASK  # noqa: E402

ARMS = ("off", "on", "on+monitor")
MONITOR = [sys.executable, "-m", "celery", "-A", "nasfleet.server.service.celery_app", "events", "--dump"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


@contextmanager
def monitor(settings: CelerySettings, out: Path) -> Iterator[None]:
    """``celery events --dump`` subscribed (probe events are sent until it prints one), then stopped."""
    env = {**os.environ, **settings.to_env()}
    with open(out, "wb") as output:
        proc = subprocess.Popen(MONITOR, stdout=output, stderr=output, env=env, start_new_session=True)
    app = make_app(settings)
    try:
        with app.events.default_dispatcher() as dispatcher:

            def printed() -> bool:
                dispatcher.send("bench-probe")
                return "bench probe" in out.read_text(errors="replace")

            wait_for(printed, 60, f"the event monitor (see {out})")
        yield
    finally:
        app.close()
        proc.terminate()
        proc.wait(timeout=30)


def trivial(settings: CelerySettings, events: bool, tasks: int) -> dict[str, Any]:
    """Send *tasks* touch tasks (after a warm-up) and time them until the worker has done them all."""
    app = make_app(settings)
    app.conf.task_send_sent_event = events
    counter = redis.Redis.from_url(settings.broker)
    try:
        for key, count in (("warm", 20), ("timed", tasks)):
            started = time.perf_counter()
            for _ in range(count):
                app.send_task(TOUCH_TASK, args=(key,), queue=settings.queue)
            wait_for(lambda key=key, count=count: int(counter.get(key) or 0) >= count, 300, f"{key} tasks")
            wall = time.perf_counter() - started
    finally:
        counter.close()
        app.close()
    return {"tasks": tasks, "wall_s": wall, "ms_per_task": 1000 * wall / tasks}


def scoring(settings: CelerySettings, state: Path, events: bool, args: Any) -> dict[str, Any]:
    """Run one real job of ``--budget`` evaluations through the orchestrator and the worker."""
    options = JobOptions(ask_size=args.ask_size, batch_size=args.batch_size)
    with Service(settings, state, ServiceOptions(local_workers=0)) as service:
        service.app.conf.task_send_sent_event = events
        job = submit_job(service.registry, "acme", device_characteristics(0, tuple(args.input)),
                         strategy="evolution", budget=args.budget, seed=1, options=options)  # fmt: skip
        started = time.perf_counter()
        service.run([job.id])
        wall = time.perf_counter() - started
        scored = [e for e in service.registry.evaluations(job.id) if e.worker != "cache"]
    return {"evaluations": len(scored), "wall_s": wall, "scoring_s": sum(e.seconds for e in scored)}


def run_arm(arm: str, root: Path, args: Any) -> dict[str, Any]:
    """One arm: a fresh registry and worker, the monitor if the arm has one, both workloads."""
    state = root / f"{arm}-{time.monotonic_ns()}"
    state.mkdir(parents=True)
    redis.Redis.from_url(args.redis).flushdb()
    base = CelerySettings(broker=args.redis, registry=f"sqlite:///{state / 'registry.sqlite'}")
    with Registry(base.registry) as registry:
        settings = resolve_queue(base, registry)
    events = arm != "off"
    env = {"PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "NASFLEET_BENCH_EVENTS": "1" if events else "0"}  # fmt: skip
    listening = monitor(settings, state / "events.log") if arm == "on+monitor" else nullcontext()
    with LocalWorkers(settings, state, app_module="events_app", env=env), listening:
        row: dict[str, Any] = {"arm": arm, "trivial": trivial(settings, events, args.tasks),
               "scoring": scoring(settings, state, events, args)}  # fmt: skip
    log(f"  {arm:>10}: {row['trivial']['ms_per_task']:.2f} ms/task, job {row['scoring']['wall_s']:.2f} s")
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per arm and their ratios to ``off``."""
    medians = {}
    for arm in ARMS:
        runs = [r for r in rows if r["arm"] == arm]
        medians[arm] = {
            "trivial_ms_per_task": statistics.median(r["trivial"]["ms_per_task"] for r in runs),
            "scoring_wall_s": statistics.median(r["scoring"]["wall_s"] for r in runs),
        }
    off = medians["off"]
    ratios = {arm: {key: value / off[key] for key, value in m.items()} for arm, m in medians.items()}
    return {"medians": medians, "ratio_to_off": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=1000, help="trivial tasks per arm")
    parser.add_argument("--budget", type=int, default=24, help="evaluations of the scoring job")
    parser.add_argument("--ask-size", type=int, default=8)
    parser.add_argument("--input", type=int, nargs=3, default=[3, 16, 16], metavar=("C", "H", "W"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/10", help="a database it may empty")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.tasks, args.budget = 1, 50, 8
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nasfleet-events-cost-") as root:
        for round_ in range(args.rounds):
            order = ARMS[round_ % len(ARMS) :] + ARMS[: round_ % len(ARMS)]
            log(f"round {round_ + 1}/{args.rounds}: {', '.join(order)}")
            rows.extend({"round": round_, **run_arm(arm, Path(root), args)} for arm in order)
    redis.Redis.from_url(args.redis).flushdb()
    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
                    "python": platform.python_version()},
        **summarize(rows), "runs": rows,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("events_cost_quick.json" if args.quick else "events_cost.json")
    path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"ratios to off: {json.dumps(result['ratio_to_off'])}; written to {path}")


if __name__ == "__main__":
    main()
