"""The load: clients polling the API over keep-alive HTTP/1.1, every request's latency recorded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field

STATUS, LIST, RESULT = "GET /v1/jobs/{id}", "GET /v1/jobs", "GET /v1/jobs/{id}/result"


@dataclass
class Sample:
    at: float
    endpoint: str
    status: int
    seconds: float


@dataclass
class Run:
    """What one load phase saw: every request, each job's progress, when each job was seen finished."""

    samples: list[Sample] = field(default_factory=list)
    progress: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)


class Connection:
    """One keep-alive HTTP/1.1 connection doing GETs: a client far lighter than httpx per request.

    On a 2-core machine shared with the server and its worker, a general-purpose async client used more
    CPU per request than the server did (measured: 3.4 ms vs 2.2 ms); this one reads a status line,
    headers and a Content-Length body, which is all uvicorn sends for these JSON answers.
    """

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port, self.key = host, port, key
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.key}\r\n\r\n"
        self.writer.write(request.encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def client_loop(
    index: int, connection: Connection, jobs: list[str], run: Run, stop_at: float, think_s: float,
    list_every: int,
) -> None:  # fmt: skip
    """Poll the tenant's jobs in turn (every *list_every*-th request: list them; a finished job's result
    once), waiting *think_s* (+-20%, uniformly) between requests, after a first wait uniform in [0, think_s]
    so that the clients do not poll in lockstep."""
    fetched: set[str] = set()
    count = 0
    jitter = random.Random(index)
    await asyncio.sleep(jitter.uniform(0, think_s))
    while time.perf_counter() < stop_at:
        job = jobs[(index + count) % len(jobs)]
        count += 1
        if job in run.finished and job not in fetched:
            endpoint, path = RESULT, f"/v1/jobs/{job}/result"
            fetched.add(job)
        elif count % list_every == 0:
            endpoint, path = LIST, "/v1/jobs"
        else:
            endpoint, path = STATUS, f"/v1/jobs/{job}"
        began = time.perf_counter()
        try:
            status, body = await connection.get(path)
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            status, body = 0, b""
            run.errors.append(f"{endpoint}: {type(error).__name__}: {error}")
            await connection.close()
        run.samples.append(Sample(began - run.start, endpoint, status, time.perf_counter() - began))
        if status == 200 and endpoint == STATUS:
            state = json.loads(body)
            run.progress.setdefault(job, []).append((began - run.start, int(state["evaluations_done"])))
            if state["status"] in ("done", "failed", "cancelled"):
                run.finished.setdefault(job, began - run.start)
        await asyncio.sleep(think_s * jitter.uniform(0.8, 1.2))


async def load(
    port: int, keys: dict[str, str], jobs: dict[str, list[str]], clients: int, duration_s: float,
    think_s: float, list_every: int,
) -> Run:  # fmt: skip
    """*clients* clients, spread over the tenants in turn, for *duration_s* seconds."""
    tenants = sorted(keys)
    owners = [tenants[i % len(tenants)] for i in range(clients)]
    connections = [Connection("127.0.0.1", port, keys[owner]) for owner in owners]
    run = Run()
    stop_at = run.start + duration_s
    try:
        await asyncio.gather(
            *(client_loop(i, connections[i], jobs[owner], run, stop_at, think_s, list_every)
              for i, owner in enumerate(owners))
        )  # fmt: skip
    finally:
        for connection in connections:
            await connection.close()
    return run
