"""Containment: which failures are one job's own, and how a failed job's error is written down.

The orchestrator fails a job, and only that job, for anything the job raises while it is prepared,
stepped or stored: a validation error of its stored options or messages, a strategy that breaks its
contract, an arithmetic error, a registry that refuses to write *its* record. One thing is no job's
fault: a registry that cannot be reached at all (a dropped connection, a database that is down or
locked). Failing every job because the database blipped would lose them all, so that error propagates,
the orchestrator stops and its loop (`nasfleet.server.api.runner.OrchestratorLoop`) starts a new one,
which resumes every job from its checkpoint.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from nasfleet.protocol.checks import MessageError
from nasfleet.proxies.base import ProxyError
from nasfleet.search import SearchError
from nasfleet.server.registry import RegistryError
from nasfleet.strategies.base import StrategyError

#: Errors whose text already says what is wrong (field, rule and value); shown without their type.
EXPLAINED = (SearchError, StrategyError, MessageError, ProxyError, RegistryError)
MAX_ERROR_CHARS = 2000
#: Errors that say the database cannot be reached (or used at all) right now, whoever asks.
UNREACHABLE = (OperationalError, InterfaceError, sqlite3.OperationalError, ConnectionError)


def registry_unreachable(error: BaseException) -> bool:
    """True when *error*, or an error that caused it, says the registry itself cannot be reached.

    SQLAlchemy raises `OperationalError` (server down, connection refused or dropped, SQLite locked or
    unreadable) and `InterfaceError` for these, and sets ``connection_invalidated`` on a `DBAPIError`
    whose connection died; the registry wraps each in a `RegistryError` ``from`` it.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UNREACHABLE):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


def describe(error: BaseException) -> str:
    """The error as a job's stored reason: its text (with its type unless it is one of `EXPLAINED`).

    Cut to `MAX_ERROR_CHARS` and without NUL characters, so that the reason itself can always be stored.
    """
    try:
        text = str(error)
    except Exception:  # an exception whose __str__ fails still fails its job
        text = "(its message could not be read)"
    shown = text if isinstance(error, EXPLAINED) else f"{type(error).__name__}: {text}"
    return shown.replace("\x00", "\\x00")[:MAX_ERROR_CHARS]
