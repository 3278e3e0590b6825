"""Registry URLs and their engines: the default URL, the backends accepted, SQLite made safe to share.

SQLite is made safe for several writing processes by (1) WAL journal mode, so readers never block the
writer; (2) a busy timeout, so a writer waits for the lock instead of failing with "database is locked";
(3) ``BEGIN IMMEDIATE`` for every write transaction, taking the write lock up front: a deferred
transaction that reads and then writes cannot wait for the lock (SQLite fails it at once to avoid a
deadlock), however long the busy timeout.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from nasfleet.server.registry.checks import RegistryError, require

BACKENDS = ("sqlite", "postgresql")
BUSY_TIMEOUT_MS = 60_000
QUIET = {"hide_parameters": True}  # errors and logs never show bound values: key hashes, large states


def create_engines(url: str) -> tuple[Engine, Engine]:
    """A (read, write) pair of engines for *url*; they are one engine except for file-backed SQLite."""
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        shown = parsed.render_as_string(hide_password=True)
        require(backend in BACKENDS, "registry url", f"a URL of one of {list(BACKENDS)}", shown)
        if backend == "postgresql":
            engine = sa_create_engine(
                parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10}, **QUIET
            )
            return engine, engine
        # Sessions hand pooled connections between threads, each used by one thread at a time.
        threads = {"check_same_thread": False}
        if parsed.database in (None, "", ":memory:"):
            memory = sa_create_engine(parsed, poolclass=StaticPool, connect_args=threads, **QUIET)
            _configure_sqlite(memory, "BEGIN IMMEDIATE")
            return memory, memory
        read = sa_create_engine(parsed, connect_args=threads, **QUIET)
        write = sa_create_engine(parsed, connect_args=threads, **QUIET)
    except (SQLAlchemyError, ValueError, ImportError) as error:
        shown = _redacted(url)
        raise RegistryError(
            f"registry url must be a usable SQLAlchemy URL, but got {shown!r} ({error})"
        ) from None
    _configure_sqlite(read, "BEGIN")
    _configure_sqlite(write, "BEGIN IMMEDIATE")
    return read, write


def shown_url(engine: Engine) -> str:
    """*engine*'s URL with its password hidden, for messages."""
    return engine.url.render_as_string(hide_password=True)


def _redacted(url: str) -> str:
    """*url* with its password hidden, when it parses at all."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return url


def _configure_sqlite(engine: Engine, begin: str) -> None:
    """WAL, a busy timeout and foreign keys on each connection; transactions opened with *begin*."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver must not open transactions itself
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # first, so the WAL switch may wait
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(begin)
