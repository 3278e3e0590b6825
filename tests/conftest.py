"""Shared fixtures: a registry on each backend (`url`, `registry`), the URLs of the services distributed
mode uses, each checked reachable first, a Redis database of a module's own, and one torch thread.

A service that cannot be reached skips the test that needs it, unless the environment variable ``CI``
is set (``CI=true``): then the test fails loudly, so that CI can never pass by skipping. The URLs can be
overridden with ``NASFLEET_TEST_POSTGRES`` (an admin URL of an existing database), ``NASFLEET_TEST_REDIS``
and ``NASFLEET_TEST_AMQP``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from nasfleet.server.registry import Registry

POSTGRES_ADMIN_URL = os.environ.get("NASFLEET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("NASFLEET_TEST_REDIS", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("NASFLEET_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
TIMEOUT_S = 2.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(service: str, url: str, reason: str) -> NoReturn:
    """Skip the test, or fail it when ``CI`` is set: a service CI provides must be there."""
    message = f"{service} at {url} is not reachable: {reason}"
    if _in_ci():
        pytest.fail(f"CI is set, so {service} must be running and reachable; {message}", pytrace=False)
    pytest.skip(message)


def _socket_error(url: str, default_port: int) -> str | None:
    """None when a TCP connection to *url*'s host and port opens, else why not."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or default_port)
    try:
        with socket.create_connection(address, timeout=TIMEOUT_S):
            return None
    except OSError as error:
        return f"{address[0]}:{address[1]}: {error}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A ``postgresql+psycopg://`` URL of a fresh, empty database, dropped after the test.

    The database is created through the admin database of ``NASFLEET_TEST_POSTGRES`` (``test``), so
    tests never see each other's rows, nor those of an earlier run.
    """
    problem = _socket_error(POSTGRES_ADMIN_URL, 5432)
    if problem is not None:
        _unavailable("PostgreSQL", POSTGRES_ADMIN_URL, problem)
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=int(TIMEOUT_S))
    except psycopg.Error as error:
        _unavailable("PostgreSQL", POSTGRES_ADMIN_URL, str(error).strip())
    name = f"nasfleet_test_{uuid.uuid4().hex[:16]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            parts = urlsplit(POSTGRES_ADMIN_URL)
            yield f"postgresql+psycopg://{parts.netloc}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    """The Redis URL, after a PING answered."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S).ping()
    except redis.RedisError as error:
        _unavailable("Redis", REDIS_URL, str(error))
    return REDIS_URL


@pytest.fixture
def amqp_url() -> str:
    """The AMQP (RabbitMQ) URL, after a TCP connection to its port opened."""
    problem = _socket_error(AMQP_URL, 5672)
    if problem is not None:
        _unavailable("RabbitMQ", AMQP_URL, problem)
    return AMQP_URL


@pytest.fixture
def redis_broker(redis_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The Redis database ``REDIS_DB`` of the test's module (modules use distinct ones), emptied before
    and after the test."""
    import redis

    url = redis_url.rsplit("/", 1)[0] + f"/{request.module.REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
        redis.Redis.from_url(url).flushdb()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch intra-op thread during the test: on tiny tensors more threads only add contention (tests
    run many times slower on a loaded host), and timings are steadier. Use it module-wide with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    from nasfleet.search.latency import one_thread  # torch is loaded only by the tests that ask

    with one_thread():
        yield


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registry URL on each backend: an SQLite file, then PostgreSQL (`postgres_url`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def registry(url: str) -> Iterator[Registry]:
    """The registry at `url`, open for the test."""
    from nasfleet.server.registry import Registry

    with Registry(url) as opened:
        yield opened
