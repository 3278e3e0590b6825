"""The Celery app that scores candidates, and its settings (`CelerySettings`) for a broker URL.

Configuration comes from `CelerySettings`, which a worker started by ``celery -A
nasfleet.server.service.celery_app worker`` reads from the environment (``NASFLEET_BROKER``,
``NASFLEET_REGISTRY``, ``NASFLEET_QUEUE``, ``NASFLEET_SOFT_TIME_LIMIT``, ``NASFLEET_TIME_LIMIT``): the
embedded launcher and ``nasfleet worker`` set them, so every process of one service agrees on the broker,
the registry and the queue.

Brokers:

- ``sqlite:///PATH`` or ``sqla+sqlite:///PATH`` (embedded, the default): kombu's SQLAlchemy transport on an
  SQLite file, through `SQLiteTransport`, which puts the file in WAL mode with a busy timeout (several
  processes poll it) and polls every `SQLITE_POLLING_S` seconds instead of kombu's default 1 s. Each worker
  reserves one task beyond the one it runs (prefetch 2), so the polling latency falls while a task runs,
  not between tasks; a shorter interval would only burn CPU that the scoring processes need (20 ms cost
  8% of a core per idle worker).
- ``redis://...`` and ``amqp://...`` (distributed).

There is no result backend: a task writes its evaluations and cache entries to the registry and the
orchestrator reads them there, so a result survives the orchestrator's crash and nothing is stored twice.
Delivery is at least once (``acks_late``, ``task_reject_on_worker_lost``): the task is idempotent.

Isolation: unless a queue is named, a deployment's tasks travel on ``nasfleet.<deployment id>``, the
random id its registry stores (`resolve_queue`), and every task carries that id, which a worker of
another registry refuses. Each worker's main process beats in the
registry (`nasfleet.server.service.liveness`).

Monitoring: the module-level `app` is also the ``-A`` target of Celery's tools, ``celery -A
nasfleet.server.service.celery_app inspect ping`` or ``events --dump`` with the workers'
``NASFLEET_BROKER``; task events are on where the broker carries them (`monitoring_events`). See
docs/monitoring.md.
"""

from __future__ import annotations

import fcntl
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Empty
from typing import Any

from celery import Celery
from celery.exceptions import SecurityWarning
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown
from kombu.transport import sqlalchemy as kombu_sqlalchemy
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from nasfleet import checks
from nasfleet.bounds import DEFAULT_BROKER_URL, DEFAULT_QUEUE, DEFAULT_REGISTRY_URL
from nasfleet.server.registry import Registry
from nasfleet.server.service.liveness import Heartbeat

QUEUE_PREFIX = "nasfleet"
DEFAULT_SOFT_TIME_LIMIT_S = 300.0
DEFAULT_TIME_LIMIT_S = 360.0
SQLITE_POLLING_S = 0.1
SQLITE_BUSY_TIMEOUT_MS = 60_000
WORKER_THREADS = 1
BROKER_SCHEMES = ("sqlite", "sqla+sqlite", "redis", "rediss", "amqp", "amqps", "pyamqp")
ENV = {
    "broker": "NASFLEET_BROKER",
    "registry": "NASFLEET_REGISTRY",
    "queue": "NASFLEET_QUEUE",
    "soft_time_limit": "NASFLEET_SOFT_TIME_LIMIT",
    "time_limit": "NASFLEET_TIME_LIMIT",
}
READY_FILE_ENV = "NASFLEET_WORKER_READY_FILE"
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{0,64}")

# A worker that runs as root (uid 0: most containers, CI here) gets Celery's SecurityWarning "You're
# running the worker with superuser privileges". The danger it names is a message that makes root run
# code: Celery refuses pickle to root outright, and these workers accept JSON only and run only their
# registered task. Its cause, the user the worker runs as, is the deployer's to change (run it as
# another user); no setting of the app removes it. Only that warning is ignored.
warnings.filterwarnings("ignore", "You're running the worker with superuser privileges", SecurityWarning)
# kombu's SQLAlchemy transport (the embedded broker) maps its message table with the `noload` loader,
# which SQLAlchemy 2.1 deprecates: an SADeprecationWarning at the first query of every process that
# publishes or consumes. The fix is kombu's (its model definition); nothing of ours triggers it but using
# the transport, so only that warning, from that module, is ignored.
warnings.filterwarnings(
    "ignore", r"The ``noload`` loader strategy is deprecated", module=r"kombu\.transport\.sqlalchemy"
)


class SettingsError(ValueError):
    """A broker, registry or queue setting that cannot work; the text names the field, rule and value."""


class _SQLiteChannel(kombu_sqlalchemy.Channel):
    """kombu's SQLAlchemy channel, with WAL and a busy timeout on the SQLite file it polls.

    kombu creates its tables on a file's first use, and a queue's row on the queue's first use, by
    checking, then creating: processes that start at once on a new broker file (the workers of an
    embedded service) race, and the loser fails ("table kombu_queue already exists", or a unique
    constraint on the queue's name) and its worker exits. The first use of a file is therefore serialized
    by a lock file beside it, and a queue row another process created meanwhile is read back.
    """

    def _get_or_create(self, queue: str) -> Any:
        try:
            return super()._get_or_create(queue)  # type: ignore[no-untyped-call]
        except IntegrityError:  # created by another process between kombu's check and its insert
            self.session.rollback()
            return super()._get_or_create(queue)  # type: ignore[no-untyped-call]

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        """The oldest message of *queue*, deleted as it is delivered: kombu only hides delivered messages,
        so the file grew forever. An unacknowledged one is put back when the channel closes; one whose
        worker was killed is sent again by the orchestrator (`nasfleet.server.service.liveness`)."""
        obj = self._get_or_create(queue)
        self.session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            message = (
                self.session.query(self.message_cls)
                .filter(self.message_cls.queue_id == obj.id, self.message_cls.visible != False)  # noqa: E712
                .order_by(self.message_cls.sent_at, self.message_cls.id)
                .first()
            )
            if message is None:
                raise Empty()
            payload = message.payload
            self.session.delete(message)
            return loads(bytes_to_str(payload))  # type: ignore[no-untyped-call]
        finally:
            self.session.commit()

    def _open(self) -> Any:
        url = self.connection.client.hostname
        database = make_url(url).database
        if url in self._engines or not database or database == ":memory:":
            return super()._open()  # type: ignore[no-untyped-call]
        with open(f"{database}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return super()._open()  # type: ignore[no-untyped-call]
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _engine_from_config(self) -> Any:
        options = self.connection.client.transport_options
        saved = options.pop("polling_interval", None)
        try:
            engine = super()._engine_from_config()  # type: ignore[no-untyped-call]
        finally:
            if saved is not None:
                options["polling_interval"] = saved

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.close()

        return engine


class SQLiteTransport(kombu_sqlalchemy.Transport):
    """The embedded broker: kombu's SQLAlchemy transport on an SQLite file, polled every 100 ms."""

    Channel = _SQLiteChannel
    polling_interval = SQLITE_POLLING_S


SQLITE_TRANSPORT = f"{__name__}:SQLiteTransport"


@dataclass(frozen=True)
class CelerySettings:
    """Where a service's tasks travel (broker), where results go (registry), which queue, time limits."""

    broker: str = DEFAULT_BROKER_URL
    registry: str = DEFAULT_REGISTRY_URL
    queue: str = DEFAULT_QUEUE
    soft_time_limit: float = DEFAULT_SOFT_TIME_LIMIT_S
    time_limit: float = DEFAULT_TIME_LIMIT_S

    def __post_init__(self) -> None:
        scheme = self.broker.split("://", 1)[0] if "://" in self.broker else ""
        _require(scheme in BROKER_SCHEMES, "broker", f"a URL with a scheme of {list(BROKER_SCHEMES)}",
                 self.broker)  # fmt: skip
        _require("://" in self.registry, "registry", "an SQLAlchemy URL", self.registry)
        _require(_QUEUE_NAME.fullmatch(self.queue) is not None, "queue",
                 "at most 64 characters of [A-Za-z0-9_.-] ('' for the deployment's)", self.queue)  # fmt: skip
        _require(0 < self.soft_time_limit < self.time_limit, "time limits",
                 "0 < soft_time_limit < time_limit", (self.soft_time_limit, self.time_limit))  # fmt: skip

    @property
    def embedded(self) -> bool:
        """True for the SQLite broker, which needs no server."""
        return self.broker.startswith(("sqlite", "sqla+sqlite"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CelerySettings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, name in ENV.items():
            if environ.get(name):
                text = environ[name]
                values[field] = float(text) if field.endswith("time_limit") else text
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment variables from which a worker process rebuilds these settings."""
        return {name: str(getattr(self, field)) for field, name in ENV.items()}


def _require(ok: bool, field: str, rule: str, value: object) -> None:
    checks.require(ok, field, rule, value, SettingsError)


def deployment_queue(deployment_id: str) -> str:
    """The task queue of the deployment whose registry has *deployment_id*."""
    return f"{QUEUE_PREFIX}.{deployment_id[:16]}"


def resolve_queue(settings: CelerySettings, registry: Registry | None = None) -> CelerySettings:
    """*settings* with their queue named: as given, or the deployment's (read from *registry*, or from
    the settings' registry, opened for the purpose)."""
    if settings.queue:
        return settings
    if registry is not None:
        return replace(settings, queue=deployment_queue(registry.deployment_id))
    with Registry(settings.registry) as opened:
        return replace(settings, queue=deployment_queue(opened.deployment_id))


def sqlite_broker_url(path: str | Path) -> str:
    """The embedded broker's URL for an SQLite file at *path*."""
    return f"sqlite:///{Path(path).resolve()}"


def _broker_options(settings: CelerySettings) -> dict[str, Any]:
    """``broker_url``, ``broker_transport`` and transport options for the settings' broker."""
    if settings.embedded:
        url = settings.broker.removeprefix("sqla+")
        return {"broker_url": url, "broker_transport": SQLITE_TRANSPORT, "broker_transport_options": {}}
    options: dict[str, Any] = {}
    if settings.broker.startswith("redis"):
        # An unacknowledged task of a worker that died comes back after this long: after its hard limit.
        options["visibility_timeout"] = int(settings.time_limit) + 60
    return {"broker_url": settings.broker, "broker_transport": None, "broker_transport_options": options}


def monitoring_events(settings: CelerySettings) -> bool:
    """Whether workers and senders publish Celery's task events: on Redis and RabbitMQ, off on SQLite.

    Events travel on Celery's ``celeryev`` exchange (fanout on Redis, topic on RabbitMQ), whose
    bindings the broker holds. kombu's SQLAlchemy transport keeps an exchange's bindings in the memory
    of the process that declared them, so an event a worker publishes finds no monitor's queue there
    and is dropped (and the worker starts no remote control, which needs a fanout exchange): on the
    embedded broker events would cost a publish each and show nothing. Where they work, a task costs
    four publishes (sent, received, started, succeeded), and nothing is kept while no monitor listens;
    ``experiments/monitoring/events_cost.py`` measures the cost.
    """
    return not settings.embedded


def configure(app: Celery, settings: CelerySettings) -> Celery:
    """Point *app* at the settings' broker, registry and queue, with the delivery rules of the module."""
    app.conf.update(
        **_broker_options(settings),
        nasfleet_registry=settings.registry,
        task_default_queue=settings.queue or QUEUE_PREFIX,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_soft_time_limit=settings.soft_time_limit,
        task_time_limit=settings.time_limit,
        # The next task is at hand when one ends; a killed worker's reserved task is unacknowledged,
        # hence redelivered like the running one.
        worker_prefetch_multiplier=2,
        # A pool process killed mid-task: give up waiting for its result after 1 s, so the task (acks
        # late, rejected on worker loss) is redelivered at once instead of after the default 10 s.
        worker_lost_wait=1.0,
        worker_max_tasks_per_child=None,
        # Task events (task-sent .. task-succeeded) for `celery events`, Flower and the like: see
        # `monitoring_events`.
        worker_send_task_events=monitoring_events(settings),
        task_send_sent_event=monitoring_events(settings),
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5},
    )
    return app


def make_app(settings: CelerySettings | None = None) -> Celery:
    """A configured Celery app with the scoring task registered."""
    app = Celery("nasfleet", include=["nasfleet.server.service.tasks"])
    return configure(app, settings or CelerySettings.from_env())


def _one_thread(**_: Any) -> None:
    """A worker process scores on one torch and one BLAS thread: cores are used by processes, not threads."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(WORKER_THREADS)
    threadpool_limits(WORKER_THREADS)


_HEARTBEAT: list[Heartbeat] = []


def _announce_ready(sender: Any = None, **_: Any) -> None:
    """Start beating in the registry; then touch the file named by ``NASFLEET_WORKER_READY_FILE``: how a
    launcher knows the worker consumes."""
    settings = resolve_queue(CelerySettings.from_env())
    name = str(getattr(sender, "hostname", None) or f"celery-{os.getpid()}")
    _HEARTBEAT.append(Heartbeat(settings.registry, name, settings.queue).start())
    path = os.environ.get(READY_FILE_ENV)
    if path:
        Path(path).write_text(str(os.getpid()))


def _stop_beating(**_: Any) -> None:
    """A clean stop: the worker's row goes (its unacknowledged tasks went back to the broker)."""
    while _HEARTBEAT:
        _HEARTBEAT.pop().stop()


worker_init.connect(_one_thread, weak=False)
worker_process_init.connect(_one_thread, weak=False)
worker_ready.connect(_announce_ready, weak=False)
worker_shutdown.connect(_stop_beating, weak=False)

app = make_app()
