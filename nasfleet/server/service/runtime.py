"""The service around the orchestrator: Celery dispatcher, local worker processes, embedded and distributed.

Embedded (the default, no servers): the broker is an SQLite file in a state directory and `LocalWorkers`
starts ``celery -A nasfleet.server.service.celery_app worker`` processes itself and stops them (by process
group) when done, also on error. Distributed: the broker is ``redis://`` or ``amqp://``, the registry
``postgresql+psycopg://``, and workers are ``nasfleet worker`` processes started on any machines;
``local_workers`` may still add some here. `Service` puts the pieces together; `make_service` builds the
one or the other from a broker URL ("" for embedded), and `Service.run_together` runs a set of submitted
jobs to the end: how ``nasfleet search``, ``nasfleet simulate`` and the Flower round run their searches.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from nasfleet.bounds import DEFAULT_REGISTRY_URL
from nasfleet.server.registry import Registry, ResultRecord
from nasfleet.server.service.celery_app import (
    CelerySettings,
    SettingsError,
    make_app,
    resolve_queue,
    sqlite_broker_url,
)
from nasfleet.server.service.dispatch import FairShare
from nasfleet.server.service.jobs import JobRun
from nasfleet.server.service.liveness import PARENT_ENV, WorkerWatch
from nasfleet.server.service.orchestrator import Orchestrator
from nasfleet.server.service.tasks import TASK_NAME

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
BROKER_FILE = "broker.sqlite"


class CeleryDispatcher:
    """Sends scoring tasks through a Celery app to its queue (no result is awaited: results are in the
    registry)."""

    def __init__(self, app: Celery, queue: str) -> None:
        self.app, self.queue = app, queue

    def send(self, payload: dict[str, Any], archs: list[str]) -> None:
        self.app.send_task(TASK_NAME, args=(payload, archs), queue=self.queue)


def embedded_settings(state_dir: str | Path, registry: str | None = None, **options: Any) -> CelerySettings:
    """Settings of the embedded mode: the broker (and by default the registry) as SQLite files in
    *state_dir*."""
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    url = registry or f"sqlite:///{(state / 'registry.sqlite').resolve()}"
    return CelerySettings(broker=sqlite_broker_url(state / BROKER_FILE), registry=url, **options)


def worker_command(
    settings: CelerySettings, concurrency: int, pool: str = "prefork", name: str | None = None,
    app_module: str = "nasfleet.server.service.celery_app", loglevel: str = "WARNING",
) -> list[str]:  # fmt: skip
    """The ``celery worker`` command line of one local worker process."""
    command = [sys.executable, "-m", "celery", "-A", app_module, "worker", f"--pool={pool}",
               f"--concurrency={concurrency}", f"--queues={settings.queue}", f"--loglevel={loglevel}",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    if name is not None:
        command.append(f"--hostname={name}")
    return command


class LocalWorkers:
    """Celery worker processes on this machine, started, revived and stopped by their owner.

    Each process runs ``celery worker`` with *concurrency* pool processes (one torch thread each); the
    launcher waits until each reports ready (a file its ``worker_ready`` signal writes). `revive` restarts
    a worker process that exited (killed, or an unrecoverable broker error: kombu's Redis transport can
    crash the worker when the broker goes away while tasks are unacknowledged). `stop` sends SIGTERM (a
    warm shutdown: running tasks finish) and, after ``STOP_TIMEOUT_S``, SIGKILL to the process group; it
    is idempotent and runs on leaving the ``with`` block, also on error. Logs go to
    ``worker-<n>.log`` in *log_dir* (default: *state_dir*), or to this process's output if *log_dir* is
    ``"-"``.
    """

    def __init__(
        self, settings: CelerySettings, state_dir: str | Path, *, processes: int = 1, concurrency: int = 1,
        pool: str = "prefork", app_module: str = "nasfleet.server.service.celery_app",
        env: Mapping[str, str] | None = None, log_dir: str | Path | None = None,
    ) -> None:  # fmt: skip
        if processes < 1 or concurrency < 1:
            raise ValueError(f"processes and concurrency must be >= 1, but got {processes}, {concurrency}")
        self.settings, self.state_dir = resolve_queue(settings), Path(state_dir)
        self.processes, self.concurrency = processes, concurrency
        self.pool, self.app_module = pool, app_module
        self.env = dict(env or {})
        self.log_dir = None if log_dir == "-" else Path(log_dir or state_dir)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.revived = 0

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def _ready_file(self, index: int) -> Path:
        return self.state_dir / f"worker-{os.getpid()}-{id(self)}-{index}.ready"

    def _launch(self, index: int) -> subprocess.Popen[bytes]:
        ready = self._ready_file(index)
        ready.unlink(missing_ok=True)
        # A new name per start: a revived worker must not take over the dead one's heartbeat row, or the
        # orchestrator would never see the death (and never resend what the dead one held).
        name = f"nasfleet{index}-{os.getpid()}-{secrets.token_hex(4)}@%h"
        command = worker_command(self.settings, self.concurrency, self.pool, name, self.app_module)
        threads = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        env = {**os.environ, **threads, **self.settings.to_env(), **self.env,
               "NASFLEET_WORKER_READY_FILE": str(ready), PARENT_ENV: str(os.getpid())}  # fmt: skip
        if self.log_dir is None:
            return subprocess.Popen(command, env=env, start_new_session=True)
        with open(self.log_dir / f"worker-{index}.log", "ab") as log:
            return subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)

    def start(self, wait: bool = True) -> LocalWorkers:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs = [self._launch(index) for index in range(self.processes)]
        if wait:
            self._wait_ready(range(self.processes))
        return self

    def revive(self) -> int:
        """Restart every worker process that exited (its pool children are killed first); how many."""
        dead = [index for index, proc in enumerate(self.procs) if proc.poll() is not None]
        for index in dead:
            _signal_group(self.procs[index].pid, signal.SIGKILL)
            self.procs[index] = self._launch(index)
        self.revived += len(dead)
        return len(dead)

    def _wait_ready(self, indices: Iterable[int]) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not all(self._ready_file(index).exists() for index in indices):
            dead = [proc for proc in self.procs if proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                why = f"exited with {dead[0].returncode}" if dead else f"not ready in {STARTUP_TIMEOUT_S} s"
                where = "its output above" if self.log_dir is None else f"the logs in {self.log_dir}"
                raise RuntimeError(f"a local Celery worker {why}; see {where}{self._tail()}")
            time.sleep(0.05)

    def _tail(self, lines: int = 15) -> str:
        """The last lines of the first worker's log (its directory may be a temporary one), or ""."""
        log = None if self.log_dir is None else self.log_dir / "worker-0.log"
        if log is None or not log.is_file():
            return ""
        return ":\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Warm shutdown, then SIGKILL of each worker's process group (its pool children too)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the main process only: it stops its pool itself
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            _signal_group(proc.pid, signal.SIGKILL)  # the pool's children, even once the parent is gone
            proc.wait()
        self.procs.clear()

    def __enter__(self) -> LocalWorkers:
        return self if self.procs else self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass(frozen=True)
class ServiceOptions:
    """How many local worker processes to run (0: rely on remote ``nasfleet worker``s) and the quotas."""

    local_workers: int = 1
    concurrency: int = 1
    pool: str = "prefork"
    fair: FairShare = field(default_factory=FairShare)
    poll_s: float = 0.01
    lost_after_s: float = 900.0
    dead_after_s: float = 10.0


def broker_problem(app: Celery, timeout_s: float = 2.0) -> str | None:
    """None if *app*'s broker accepts a connection within about *timeout_s*, else why not (one line)."""
    with app.connection_for_write() as connection:
        try:
            connection.ensure_connection(max_retries=1, timeout=timeout_s)
        except Exception as error:  # kombu raises its own, the driver's and OS errors alike
            reason = (str(error).splitlines() or [type(error).__name__])[0].rstrip(".")
            return f"broker {maybe_sanitize_url(app.conf.broker_url)} unreachable: {reason}"
    return None


class RedisEpoch:
    """The Redis broker's ``run_id``, which changes when the server restarts; None while unreachable."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def __call__(self) -> str | None:
        try:
            return str(self.client.info("server")["run_id"])
        except (redis.RedisError, OSError, KeyError):
            return None


class Service:
    """A broker, a registry, local workers (if any) and an orchestrator, started and stopped together."""

    def __init__(
        self, settings: CelerySettings, state_dir: str | Path, options: ServiceOptions | None = None
    ) -> None:
        self.registry = Registry(settings.registry)
        self.settings, self.state_dir = resolve_queue(settings, self.registry), Path(state_dir)
        self.options = options or ServiceOptions()
        self.app = make_app(self.settings)
        self.workers: LocalWorkers | None = None

    def __enter__(self) -> Service:
        if self.options.local_workers:
            options = self.options
            self.workers = LocalWorkers(self.settings, self.state_dir, processes=options.local_workers,
                                        concurrency=options.concurrency, pool=options.pool)  # fmt: skip
            try:
                self.workers.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.workers is not None:
            self.workers.stop()
        self.app.close()
        self.registry.close()

    def orchestrator(self, job_ids: Sequence[str] | None = None, **overrides: Any) -> Orchestrator:
        options = replace(self.options, **{k: v for k, v in overrides.items() if hasattr(self.options, k)})
        rest = {k: v for k, v in overrides.items() if not hasattr(self.options, k)}
        dispatcher = CeleryDispatcher(self.app, self.settings.queue)
        if self.workers is not None:
            rest.setdefault("housekeeping", self.workers.revive)
        epoch = RedisEpoch(self.settings.broker) if self.settings.broker.startswith("redis") else None
        watch = WorkerWatch(self.registry, self.settings.queue, options.dead_after_s, epoch)
        return Orchestrator(self.registry, dispatcher, fair=options.fair, job_ids=job_ids, watch=watch,
                            poll_s=options.poll_s, lost_after_s=options.lost_after_s, **rest)  # fmt: skip

    def broker_problem(self, timeout_s: float = 2.0) -> str | None:
        """None if the broker accepts a connection within *timeout_s*, else why not (one line)."""
        return broker_problem(self.app, timeout_s)

    def run(self, job_ids: Sequence[str] | None = None, **overrides: Any) -> dict[str, ResultRecord]:
        """Run the registry's unfinished jobs (or *job_ids*) to the end."""
        return self.orchestrator(job_ids, **overrides).run()

    def run_together(
        self, job_ids: Sequence[str], on_step: Callable[[JobRun], None] | None = None
    ) -> Orchestrator:
        """Run *job_ids* (and no other job) to the end, all admitted at once: how ``nasfleet search`` and
        a federation round run their searches. The orchestrator that ran them (``failed``, ``stats``)."""
        fair = replace(
            self.options.fair, max_jobs_per_tenant=max(self.options.fair.max_jobs_per_tenant, len(job_ids))
        )
        orchestrator = self.orchestrator(job_ids, fair=fair, on_step=on_step)
        orchestrator.run()
        return orchestrator


def make_service(
    state_dir: str | Path, *, broker: str = "", registry: str | None = None, workers: int = 1, **options: Any
) -> Service:
    """An embedded (no *broker*) or distributed service, not started yet: enter it to start its workers.

    Embedded: the SQLite broker in *state_dir*, the *registry* URL (default: an SQLite file in
    *state_dir*) and *workers* (at least 1) local worker processes. Distributed: the *broker* and
    *registry* URLs, served by ``nasfleet worker`` processes started elsewhere and by *workers* (0 or
    more) local ones. Local workers log to *state_dir*; *options* are further `ServiceOptions`.

    Each local worker is its own process (with one pool process) in its own session: on Linux with
    autogroup scheduling a session is one scheduling group, so N workers in N sessions get N shares of a
    busy machine, where N pool processes of one worker would share one.
    """
    if not broker and not (isinstance(workers, int) and workers >= 1):
        raise SettingsError(
            f"workers must be an integer >= 1 without a broker (embedded), but got {workers!r}"
        )
    if broker:
        settings = CelerySettings(broker=broker, registry=registry or DEFAULT_REGISTRY_URL)
    else:
        settings = embedded_settings(state_dir, registry)
    options.setdefault("concurrency", 1)
    return Service(settings, state_dir, ServiceOptions(local_workers=workers, **options))
