"""Faults against the running service (issue 12, "Numbers"): recovery time, evaluations lost and
duplicated, jobs finished, for each (mode, fault) cell.

nasfleet is a black box here: two jobs of two tenants are submitted to a fresh registry, then the
service runs as its commands run it, in separate processes: ``nasfleet orchestrate`` (with its own
local worker in embedded mode) and, distributed, ``nasfleet worker`` on a private broker (Redis or a
second RabbitMQ node) and a private PostgreSQL registry. Once the jobs have a few stored evaluations,
the fault is injected; the registry is polled every ``--poll`` s until the jobs finish (or
``--timeout`` s pass without recovery), then read once more for the metrics. Every process a cell
started is SIGKILLed by pid when the cell ends, also on error or interruption (see ``support.py``).

Modes: ``embedded`` (SQLite broker file + SQLite registry), ``redis`` (Redis + PostgreSQL),
``rabbitmq`` (RabbitMQ + PostgreSQL). Faults:

- ``none``: the control; nothing is injected at the instant a fault would be.
- ``pool-child``: SIGKILL of a Celery pool process while it is busy scoring (its CPU time grows).
- ``worker-main``: SIGKILL of the ``celery worker`` main process whose pool process is busy, then of its
  pool processes (``--orphans kill``; ``leave`` lets them be) -- the whole worker is gone; its
  supervisor (``nasfleet orchestrate`` embedded, ``nasfleet worker`` distributed) starts another.
- ``orchestrator``: SIGKILL of ``nasfleet orchestrate`` (only that pid), then the same command again
  after ``--down`` s. Its old local workers (embedded) are left to themselves and counted as strays.
- ``redis-restart`` / ``rabbitmq-restart``: SIGKILL of the private broker, started again after ``--down`` s
  (Redis without persistence: its queue is lost; RabbitMQ keeps durable queues in its mnesia directory).
- ``postgres-restart``: immediate shutdown of the private PostgreSQL (a crash), started after ``--down`` s.

Metrics (times from the fault instant; see README.md):

- ``recovery_s``: until every job that was unfinished at the fault has completed the step it was in, i.e.
  the last arch the fault held up is stored and the job advanced (its ``evaluations_done`` grew), seen by
  polling. A job's step cannot finish without every arch it sent, so this is the stored evaluation of
  the affected job's lost work. The control's value is the normal latency of a step.
- ``next_eval_s``: until the first evaluation stored after the fault (``evaluations.created_at``).
- ``stall_s``: the longest interval after the fault without a new stored evaluation.
- ``lost``: archs in a finished job's archive without an evaluation row, plus budget - evaluations_done;
  ``duplicated``: rows per (job, arch) beyond one; ``extra``: rows of archs not in the job's archive.
- ``jobs_finished``: jobs ``done`` of those submitted, when the cell ended.

    python experiments/faults/run.py                                  # every cell, ~40 min
    python experiments/faults/run.py --modes embedded --faults pool-child,worker-main --timeout 120
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from support import (
    PostgresServer,
    RabbitServer,
    RedisServer,
    Server,
    Tracker,
    alive,
    descendants,
    install_cleanup,
    is_celery,
    log,
    nasfleet_command,
    proc_info,
)

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # experiments/, for the devices shared with scaling/
from devices import device_characteristics  # noqa: E402

MODES = ("embedded", "redis", "rabbitmq")
FAULTS = ("none", "pool-child", "worker-main", "orchestrator", "redis-restart", "rabbitmq-restart",
          "postgres-restart")  # fmt: skip
GOAL_S = 30.0


def applicable(mode: str, fault: str) -> str | None:
    """Why *fault* does not apply to *mode*, or None."""
    if fault == "redis-restart" and mode != "redis":
        return "Redis is the broker of the redis mode only"
    if fault == "rabbitmq-restart" and mode != "rabbitmq":
        return "RabbitMQ is the broker of the rabbitmq mode only"
    if fault == "postgres-restart" and mode == "embedded":
        return "the embedded mode's registry is an SQLite file"
    return None


# -- jobs ----------------------------------------------------------------------------------------------------
def submit(registry_url: str, args: argparse.Namespace) -> list[str]:
    """Two jobs of two tenants (different device data, so they share no cache entry)."""
    from nasfleet.server.registry import Registry
    from nasfleet.server.service.jobs import JobOptions, submit_job

    options = JobOptions(ask_size=args.ask_size, batch_size=args.batch_size,
                         space_options=json.loads(args.space_options))  # fmt: skip
    shape = tuple(args.input)
    with Registry(registry_url) as registry:
        return [
            submit_job(registry, tenant, device_characteristics(index, shape), strategy="evolution",  # type: ignore[arg-type]
                       budget=args.budget, seed=index + 1, options=options).id
            for index, tenant in enumerate(("acme", "globex"))
        ]  # fmt: skip


# -- the registry, read as plain SQL (the harness needs no nasfleet internals to measure) -------------------
def _epoch(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


class RegistryView:
    def __init__(self, url: str, job_ids: list[str]) -> None:
        from sqlalchemy import create_engine

        args = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        self.engine = create_engine(url, **args)  # type: ignore[arg-type]
        self.job_ids = job_ids

    def _rows(self, query: str) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as connection:
            return list(connection.execute(text(query)))

    def jobs(self) -> dict[str, dict[str, Any]]:
        rows = self._rows("SELECT id, status, evaluations_done, budget, error FROM jobs")
        return {r[0]: {"status": r[1], "told": r[2], "budget": r[3], "error": r[4]} for r in rows
                if r[0] in self.job_ids}  # fmt: skip

    def evaluation_count(self) -> int:
        return sum(int(r[1]) for r in self._rows("SELECT job_id, COUNT(*) FROM evaluations GROUP BY job_id")
                   if r[0] in self.job_ids)  # fmt: skip

    def evaluations(self) -> list[tuple[str, str, float, str]]:
        rows = self._rows("SELECT job_id, arch, created_at, worker FROM evaluations")
        return sorted(((r[0], r[1], _epoch(r[2]), r[3]) for r in rows if r[0] in self.job_ids),
                      key=lambda row: row[2])  # fmt: skip

    def archives(self) -> dict[str, list[str] | None]:
        found: dict[str, list[str] | None] = {}
        for job_id, state in self._rows("SELECT id, strategy_state FROM jobs"):
            if job_id in self.job_ids:
                try:
                    found[job_id] = list(json.loads(state)["archive"])
                except (TypeError, ValueError, KeyError):
                    found[job_id] = None
        return found

    def close(self) -> None:
        self.engine.dispose()


FINISHED = ("done", "failed", "cancelled")


# -- one deployment of the service ---------------------------------------------------------------------------
class Deployment:
    """``nasfleet orchestrate`` (+ ``nasfleet worker`` distributed), restarted if they exit on their own
    before the jobs are finished (as a process supervisor would; counted in ``unexpected_exits``)."""

    def __init__(self, tracker: Tracker, broker: str, registry: str, root: Path, args: argparse.Namespace,
                 embedded: bool) -> None:  # fmt: skip
        self.tracker, self.broker, self.registry, self.root = tracker, broker, registry, root
        self.args, self.embedded = args, embedded
        self.host: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.unexpected_exits: list[dict[str, Any]] = []

    def _urls(self) -> list[str]:
        return ["--broker", self.broker, "--registry", self.registry]

    def start_host(self) -> None:
        workers = str(self.args.workers) if self.embedded else "0"
        command = [*nasfleet_command(), "orchestrate", *self._urls(), "--local-workers", workers,
                   "--concurrency", str(self.args.concurrency),
                   "--state-dir", str(self.root / "state")]  # fmt: skip
        self.host = self.tracker.spawn(command, self.root / "orchestrate.log")

    def start_worker(self) -> None:
        command = [*nasfleet_command(), "worker", *self._urls(), "--local-workers", str(self.args.workers),
                   "--concurrency", str(self.args.concurrency)]  # fmt: skip
        self.worker = self.tracker.spawn(command, self.root / "worker.log")

    def start(self) -> None:
        if not self.embedded:
            self.start_worker()
        self.start_host()

    def supervise(self, finished: bool) -> None:
        if self.host is not None and self.host.poll() is not None and not finished:
            self.unexpected_exits.append({"process": "nasfleet orchestrate", "rc": self.host.returncode,
                                          "at": time.time()})  # fmt: skip
            log(f"  nasfleet orchestrate exited with {self.host.returncode} before the jobs finished; "
                "starting it again")  # fmt: skip
            self.start_host()
        if self.worker is not None and self.worker.poll() is not None:
            self.unexpected_exits.append({"process": "nasfleet worker", "rc": self.worker.returncode,
                                          "at": time.time()})  # fmt: skip
            log(f"  nasfleet worker exited with {self.worker.returncode}; starting it again")
            self.start_worker()

    def worker_root(self) -> int | None:
        """The process under which the Celery workers run: the host (embedded) or `nasfleet worker`."""
        proc = self.host if self.embedded else self.worker
        return None if proc is None or proc.poll() is not None else proc.pid

    def pool(self) -> dict[int, list[int]]:
        """Celery worker main processes under `worker_root` -> their pool processes."""
        root = self.worker_root()
        if root is None:
            return {}
        table = self.tracker.marked()

        def main(pid: int) -> bool:
            parent = table.get(table[pid].ppid)
            return is_celery(table[pid]) and (parent is None or not is_celery(parent))

        mains = [pid for pid in descendants(root, table) if pid in table and main(pid)]
        return {main: sorted(descendants(main, table)) for main in mains}

    def busy_pool_process(self, window_s: float = 0.15) -> tuple[int, int] | None:
        """(worker main, pool process) of a pool process that is scoring now (its CPU time grows)."""
        before = {(main, child): proc_info(child) for main, children in self.pool().items()
                  for child in children}  # fmt: skip
        time.sleep(window_s)
        for (main, child), info in before.items():
            now = proc_info(child)
            if info is not None and now is not None and now.cpu_s - info.cpu_s >= window_s / 3:
                return main, child
        return None


# -- one cell ------------------------------------------------------------------------------------------------
def inject(fault: str, deployment: Deployment, servers: dict[str, Server], args: argparse.Namespace
           ) -> dict[str, Any] | None:  # fmt: skip
    """Inject *fault* now, if its target is ready; what was done (with ``at``), or None to try later."""
    if fault == "none":
        return {"at": time.time(), "what": "nothing (control)"}
    if fault in ("pool-child", "worker-main"):
        busy = deployment.busy_pool_process()
        if busy is None:
            return None
        main, child = busy
        if fault == "pool-child":
            at = time.time()
            os.kill(child, signal.SIGKILL)
            return {"at": at, "what": f"SIGKILL pool process {child} (busy) of worker {main}"}
        children = deployment.pool().get(main, [child])
        at = time.time()
        os.kill(main, signal.SIGKILL)
        killed = []
        if args.orphans == "kill":
            for pid in children:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        left = [pid for pid in children if pid not in killed]
        return {"at": at, "what": f"SIGKILL worker main {main}, then its pool processes {killed}",
                "pool_processes": children, "orphans": left}  # fmt: skip
    if fault == "orchestrator":
        assert deployment.host is not None
        old = deployment.host
        table = deployment.tracker.marked()
        below = sorted(descendants(old.pid, table))
        at = time.time()
        old.kill()
        old.wait()
        time.sleep(args.down)
        deployment.start_host()
        what = f"SIGKILL nasfleet orchestrate {old.pid}, started again after {args.down} s"
        return {"at": at, "what": what, "orphans": below}
    server = servers[fault.removesuffix("-restart")]
    at = time.time()
    server.restart(args.down)
    return {"at": at, "what": f"{server.name} killed, started again after {args.down} s (up at "
            f"+{time.time() - at:.1f} s)"}  # fmt: skip


def start_servers(mode: str, tracker: Tracker, root: Path, args: argparse.Namespace,
                  servers: dict[str, Server]) -> None:  # fmt: skip
    """Start *mode*'s private servers into *servers* (filled as they start: all are stopped on error)."""
    if mode == "embedded":
        return
    servers["postgres"] = PostgresServer(tracker, root / "postgres", args.postgres_port)
    servers["postgres"].start()
    if mode == "redis":
        servers["redis"] = RedisServer(tracker, root / "redis", args.redis_port)
    else:
        servers["rabbitmq"] = RabbitServer(tracker, root / "rabbitmq", args.rabbitmq_port)
    servers[mode].start()


def run_cell(mode: str, fault: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    tracker = Tracker()
    root = Path(tempfile.mkdtemp(prefix=f"nasfleet-faults-{mode}-{fault}-"))
    root.chmod(0o755)  # the postgres user must reach its directory
    cell: dict[str, Any] = {"mode": mode, "fault": fault, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    view: RegistryView | None = None
    deployment: Deployment | None = None
    servers: dict[str, Server] = {}
    try:
        start_servers(mode, tracker, root, args, servers)
        if mode == "embedded":
            broker = f"sqlite:///{root / 'state' / 'broker.sqlite'}"
            (root / "state").mkdir()
            registry = f"sqlite:///{root / 'state' / 'registry.sqlite'}"
        else:
            pg = servers["postgres"]
            assert isinstance(pg, PostgresServer)
            registry = pg.create_database(f"faults_{uuid.uuid4().hex[:8]}")
            broker = servers[mode].url  # type: ignore[attr-defined]
        job_ids = submit(registry, args)
        view = RegistryView(registry, job_ids)
        deployment = Deployment(tracker, broker, registry, root, args, embedded=mode == "embedded")
        started = time.time()
        deployment.start()
        cell.update(observe(fault, deployment, servers, view, args, started))
    except Exception as error:
        cell.update(status="error", reason=f"{type(error).__name__}: {error}"[:2000])
        log(f"  error: {cell['reason']}")
        traceback.print_exc()
    finally:
        if deployment is not None:
            cell["strays"] = strays(tracker, deployment)
            cell["unexpected_exits"] = deployment.unexpected_exits
        if mode == "embedded" and (root / "state" / "broker.sqlite").exists():
            cell["broker_file_bytes"] = (root / "state" / "broker.sqlite").stat().st_size
        if view is not None:
            view.close()
        if deployment is not None:
            for proc in (deployment.host, deployment.worker):
                if proc is not None and proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
        for server in servers.values():
            server.stop()
        cell["processes_killed_at_end"] = tracker.kill_all()
        keep_logs(root, logs / f"{mode}-{fault}")
        shutil.rmtree(root, ignore_errors=True)
    return cell


def strays(tracker: Tracker, deployment: Deployment) -> list[str]:
    """Celery processes alive now that are not under the current host or `nasfleet worker`."""
    table = tracker.marked()
    current: set[int] = set()
    for proc in (deployment.host, deployment.worker):
        if proc is not None and proc.poll() is None:
            current |= {proc.pid, *descendants(proc.pid, table)}
    return [
        f"{pid}: {info.cmdline[:100]}"
        for pid, info in table.items()
        if is_celery(info) and pid not in current
    ]


def keep_logs(root: Path, target: Path, tail_bytes: int = 48_000) -> None:
    """The tail of each log of the cell, for the record (small: the results are committed)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for path in [*root.glob("*.log"), *root.glob("state/*.log"), *root.glob("*/*.log")]:
        if path.is_file():
            data = path.read_bytes()[-tail_bytes:]
            (target / f"{path.parent.name}-{path.name}" if path.parent != root else target / path.name
             ).write_bytes(data)  # fmt: skip


def observe(fault: str, deployment: Deployment, servers: dict[str, Server], view: RegistryView,
            args: argparse.Namespace, started: float) -> dict[str, Any]:  # fmt: skip
    """Poll until the jobs finish (or time out); inject the fault on the way; the cell's metrics."""
    injected: dict[str, Any] | None = None
    told_at_fault: dict[str, int] = {}
    recovered_at: dict[str, float] = {}
    jobs: dict[str, dict[str, Any]] = {}
    orphans_gone: float | None = None  # when the last process orphaned by the fault had exited
    count, poll_errors, next_progress = 0, 0, 0.0
    status, reason = "ok", ""
    while True:
        now = time.time()
        try:
            jobs, count = view.jobs(), view.evaluation_count()
        except Exception as error:  # the registry is away (PostgreSQL restarting)
            poll_errors += 1
            if poll_errors == 1 or poll_errors % 50 == 0:
                log(f"  registry unreadable ({type(error).__name__}); {poll_errors} failed polls")
        finished = bool(jobs) and all(job["status"] in FINISHED for job in jobs.values())
        if now >= next_progress or finished:
            told = sum(job["told"] for job in jobs.values())
            total = sum(job["budget"] for job in jobs.values())
            states = ",".join(sorted(job["status"] for job in jobs.values()))
            log(f"  {now - started:5.1f} s: {told}/{total} told, {count} evaluations stored, jobs {states}")
            next_progress = now + args.progress
        if injected is not None and orphans_gone is None and not any(alive(p) for p in injected["orphans"]):
            orphans_gone = now
        if injected is not None:
            for job_id, told in told_at_fault.items():
                job = jobs.get(job_id)
                if job_id not in recovered_at and job and (job["told"] > told or job["status"] in FINISHED):
                    recovered_at[job_id] = now
        if finished:
            break
        if injected is None:
            running = [job for job in jobs.values() if job["status"] not in FINISHED]
            if count >= args.inject_after and running:
                told_at_fault = {j: job["told"] for j, job in jobs.items() if job["status"] not in FINISHED}
                injected = inject(fault, deployment, servers, args)
                if injected is not None:
                    injected.setdefault("orphans", [])
                    log(f"  fault at {injected['at'] - started:.1f} s: {injected['what']}")
            elif now - started > args.start_timeout:
                status, reason = (
                    "error",
                    f"no fault injected: {count} evaluations after {args.start_timeout} s",
                )
                break
        else:
            since = now - injected["at"]
            waiting = [j for j in told_at_fault if j not in recovered_at]
            if waiting and since > args.timeout:
                status, reason = "not-recovered", f"not recovered within {args.timeout:.0f} s"
                log(f"  {reason}")
                break
            if not waiting and now - max(recovered_at.values()) > args.finish_timeout:
                status, reason = "unfinished", f"jobs not finished {args.finish_timeout:.0f} s after recovery"
                break
        deployment.supervise(finished)
        time.sleep(args.poll)
    ended = time.time()
    result = measure(view, injected, told_at_fault, recovered_at, status, reason, started, ended,
                     poll_errors, args)  # fmt: skip
    if injected is not None and injected["orphans"]:
        result["orphans"] = injected["orphans"]
        result["orphans_gone_s"] = None if orphans_gone is None else round(orphans_gone - injected["at"], 2)
    return result


def measure(view: RegistryView, injected: dict[str, Any] | None, told_at_fault: dict[str, int],
            recovered_at: dict[str, float], status: str, reason: str, started: float, ended: float,
            poll_errors: int, args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    for attempt in range(30):  # the registry may still be coming back
        try:
            jobs, evaluations, archives = view.jobs(), view.evaluations(), view.archives()
            break
        except Exception:
            if attempt == 29:
                raise
            time.sleep(1.0)
    rows = Counter((job_id, arch) for job_id, arch, _, _ in evaluations)
    lost = extra = 0
    lost_known = any(job["status"] == "done" for job in jobs.values())  # only a finished job can tell
    for job_id, job in jobs.items():
        if job["status"] != "done":
            continue
        archive = archives.get(job_id)
        if archive is None:
            lost_known = False
            continue
        stored = {arch for j, arch in rows if j == job_id}
        lost += len(set(archive) - stored) + max(0, job["budget"] - job["told"])
        extra += len(stored - set(archive))
    result: dict[str, Any] = {
        "status": status, "reason": reason,
        "jobs_submitted": len(view.job_ids),
        "jobs_finished": sum(job["status"] == "done" for job in jobs.values()),
        "jobs": {job_id: {k: job[k] for k in ("status", "told", "budget", "error")}
                 for job_id, job in jobs.items()},
        "evaluations": len(evaluations),
        "lost": lost if lost_known else None, "duplicated": sum(n - 1 for n in rows.values() if n > 1),
        "extra": extra, "poll_errors": poll_errors,
        "wall_s": round(ended - started, 2),
        "jobs_s": round(evaluations[-1][2] - evaluations[0][2], 2) if evaluations else None,
    }  # fmt: skip
    if injected is None:
        return result
    at = injected["at"]
    affected = set(told_at_fault)
    after = [t for job_id, _, t, _ in evaluations if job_id in affected and t > at]
    waiting = affected - set(recovered_at)
    gaps, previous = [], at
    for t in after:
        gaps.append(t - previous)
        previous = t
    if waiting:
        gaps.append(ended - previous)
    result.update(
        fault_detail=injected["what"], fault_at_s=round(at - started, 2), evaluations_at_fault=sum(
            1 for _, _, t, _ in evaluations if t <= at),
        recovered=not waiting,
        recovery_s=round(max(recovered_at.values()) - at, 2) if recovered_at and not waiting else None,
        recovery_per_job_s={j: round(recovered_at[j] - at, 2) if j in recovered_at else None
                            for j in affected},
        next_eval_s=round(after[0] - at, 2) if after else None,
        stall_s=round(max(gaps), 2) if gaps else None,
        scored_by_killed=sorted({w for _, _, t, w in evaluations if t > at and any(
            w.endswith(f":{pid}") for pid in injected.get("pool_processes", []))}),
    )  # fmt: skip
    return result


# -- results -------------------------------------------------------------------------------------------------
def load(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["cells"]) if path.exists() else []


def save(path: Path, cells: list[dict[str, Any]], args: argparse.Namespace) -> None:
    order = {(m, f): i for i, (m, f) in enumerate((m, f) for m in MODES for f in FAULTS)}
    cells = sorted(cells, key=lambda c: order.get((c["mode"], c["fault"]), 999))
    settings = {k: v for k, v in vars(args).items() if k not in ("modes", "faults", "out", "force")}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"settings": settings, "cells": cells}, indent=1, default=str) + "\n")
    temporary.replace(path)


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def table(cells: list[dict[str, Any]]) -> str:
    commands = list(dict.fromkeys(c["command"] for c in cells if c.get("command")))
    lines = [
        "# Faults: recovery, lost and duplicated evaluations, jobs finished",
        "",
        f"Definitions in README.md. Goal: recovery <= {GOAL_S:.0f} s, 0 lost, 0 duplicated, "
        "every job finished.",
        "Produced by (each cell records its command and start time in faults.json):",
        "",
        *[f"    {command}" for command in commands],
        "",
        "| mode | fault | recovery s | next eval s | longest stall s | lost | duplicated | jobs finished "
        "| harness restarts | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        if c.get("status") == "skipped":
            lines.append(f"| {c['mode']} | {c['fault']} | n/a | | | | | | | skipped: {c['reason']} |")
            continue
        recovery = _seconds(c.get("recovery_s"))
        if c.get("status") == "not-recovered":
            recovery = f"**> {c.get('timeout_s', 0):.0f}** (not recovered)"
        elif c.get("recovery_s") is not None and c["recovery_s"] > GOAL_S and c["fault"] != "none":
            recovery = f"**{recovery}**"
        notes = [c.get("reason") or ""] if c.get("status") not in ("ok",) else []
        if c.get("orphans"):
            gone = c.get("orphans_gone_s")
            fate = "still alive at the end" if gone is None else f"gone after {gone:.1f} s"
            notes.append(f"{len(c['orphans'])} orphaned process(es) {fate}")
        if c.get("strays"):
            notes.append(f"{len(c['strays'])} stray worker process(es) at the end")
        if c.get("unexpected_exits"):
            exits = ", ".join(f"{e['process']} rc {e['rc']}" for e in c["unexpected_exits"])
            notes.append(f"restarted after exiting: {exits}")
        if c.get("status") == "error":
            notes = [f"error: {c.get('reason', '')[:200]}"]
        lost = "–" if c.get("lost") is None else str(c["lost"])
        finished = f"{c.get('jobs_finished', '–')}/{c.get('jobs_submitted', '–')}"
        restarts = len(c["unexpected_exits"]) if "unexpected_exits" in c else "–"
        lines.append(f"| {c['mode']} | {c['fault']} | {recovery} | {_seconds(c.get('next_eval_s'))} | "
                     f"{_seconds(c.get('stall_s'))} | {lost} | {c.get('duplicated', '–')} | {finished} | "
                     f"{restarts} | {'; '.join(n for n in notes if n)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faults = [f for f in FAULTS if any(c["fault"] == f for c in cells)]
    modes = [m for m in MODES if any(c["mode"] == m for c in cells)]
    if not faults or not modes:
        return
    by = {(c["mode"], c["fault"]): c for c in cells}
    ceiling = max([GOAL_S * 1.5]
                  + [float(c.get("timeout_s") or 0) for c in cells if c.get("status") == "not-recovered"]
                  + [float(c.get("recovery_s") or 0) for c in cells])  # fmt: skip
    figure, axes = plt.subplots(figsize=(max(7.0, 1.5 * len(faults) + 3), 4.5))
    width = 0.8 / len(modes)
    colors = {"embedded": "tab:blue", "redis": "tab:red", "rabbitmq": "tab:orange"}
    for m, mode in enumerate(modes):
        for f, fault in enumerate(faults):
            x = f - 0.4 + width * (m + 0.5)
            cell = by.get((mode, fault))
            if cell is None:
                continue
            label = mode if f == 0 or not any((mode, g) in by for g in faults[:f]) else None
            if cell.get("status") == "skipped":
                axes.text(x, ceiling * 0.02, "n/a", ha="center", fontsize=7, rotation=90, color="gray")
            elif cell.get("status") == "not-recovered":
                axes.bar(x, float(cell["timeout_s"]), width, color=colors[mode], alpha=0.35, hatch="//",
                         label=label)  # fmt: skip
                axes.text(x, float(cell["timeout_s"]), f">{cell['timeout_s']:.0f}", ha="center", va="bottom",
                          fontsize=7)  # fmt: skip
            elif cell.get("recovery_s") is not None:
                axes.bar(x, cell["recovery_s"], width, color=colors[mode], label=label)
                axes.text(
                    x, cell["recovery_s"], f"{cell['recovery_s']:.1f}", ha="center", va="bottom", fontsize=7
                )
            else:
                axes.text(x, ceiling * 0.02, "error", ha="center", fontsize=7, rotation=90, color="red")
    axes.axhline(GOAL_S, color="green", linestyle="--", label=f"goal {GOAL_S:.0f} s")
    axes.set_xticks(range(len(faults)), faults, fontsize=8)
    axes.set(ylabel="recovery, s (fault -> the affected step stored)", ylim=(0, ceiling * 1.12),
             title="Recovery per fault and mode (hatched: not within the timeout)")  # fmt: skip
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_reports(cells: list[dict[str, Any]], out: Path) -> None:
    (out / "faults.md").write_text(table(cells))
    plot(cells, out / "faults.png")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {MODES}")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {FAULTS}")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--force", action="store_true", help="run cells already in the results again")
    parser.add_argument("--timeout", type=float, default=180.0, help="s after the fault to recover")
    parser.add_argument("--finish-timeout", type=float, default=180.0, help="s after recovery to finish")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="s to reach --inject-after")
    parser.add_argument("--inject-after", type=int, default=6, help="evaluations stored before the fault")
    parser.add_argument("--down", type=float, default=1.0, help="s a killed server/orchestrator stays down")
    parser.add_argument("--orphans", choices=("kill", "leave"), default="kill",
                        help="worker-main: SIGKILL its pool processes at once, or leave them")  # fmt: skip
    parser.add_argument("--poll", type=float, default=0.2, help="registry polling interval, s")
    parser.add_argument("--progress", type=float, default=10.0, help="s between progress lines")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="pool processes per worker")
    parser.add_argument("--budget", type=int, default=32, help="evaluations per job")
    parser.add_argument("--ask-size", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input", type=int, nargs=3, default=[3, 16, 16], metavar=("C", "H", "W"))
    parser.add_argument("--space-options", default="{}", help='NB201 options as JSON, e.g. {"channels": 8}')
    parser.add_argument("--redis-port", type=int, default=6390)
    parser.add_argument("--postgres-port", type=int, default=5439)
    parser.add_argument("--rabbitmq-port", type=int, default=5679)
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    for name, given, known in (("mode", modes, MODES), ("fault", faults, FAULTS)):
        unknown = [g for g in given if g not in known]
        if unknown:
            parser.error(f"unknown {name}(s) {unknown}; choose from {list(known)}")
    install_cleanup()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "faults.json"
    cells = load(path)
    command = "python experiments/faults/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    todo = [(m, f) for m in modes for f in faults]
    for index, (mode, fault) in enumerate(todo, 1):
        done = [c for c in cells if c["mode"] == mode and c["fault"] == fault]
        if done and done[0].get("status") != "error" and not args.force:
            log(f"[{index}/{len(todo)}] {mode} x {fault}: {done[0].get('status')} in {path.name}; skipped")
            continue
        cells = [c for c in cells if (c["mode"], c["fault"]) != (mode, fault)]
        why = applicable(mode, fault)
        if why is not None:
            cell: dict[str, Any] = {"mode": mode, "fault": fault, "status": "skipped", "reason": why}
        else:
            log(f"[{index}/{len(todo)}] {mode} x {fault}")
            began = time.time()
            try:
                cell = run_cell(mode, fault, args, args.out / "logs")
            except (KeyboardInterrupt, SystemExit):
                log(f"interrupted during {mode} x {fault}: its processes were killed; it is not recorded")
                raise
            cell.update(timeout_s=args.timeout, cell_s=round(time.time() - began, 1), command=command)
            log(f"[{index}/{len(todo)}] {mode} x {fault}: {cell['status']}, recovery "
                f"{_seconds(cell.get('recovery_s'))} s, next eval {_seconds(cell.get('next_eval_s'))} s, "
                f"lost {cell.get('lost')}, duplicated {cell.get('duplicated')}, jobs finished "
                f"{cell.get('jobs_finished')}/{cell.get('jobs_submitted')}")  # fmt: skip
        cells.append(cell)
        save(path, cells, args)
        write_reports(load(path), args.out)
    write_reports(load(path), args.out)
    log(f"results: {path}, {args.out / 'faults.md'}, {args.out / 'faults.png'}")


if __name__ == "__main__":
    main()
