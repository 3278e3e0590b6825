"""Helpers shared by the orchestrator, service and API tests: tiny characteristics, jobs, reference runs,
checks, the processes a test starts (and the /proc views that find them), and the API's requests.

Everything is small on purpose: 3x8x8 inputs, 4 classes, probe batches of 8, budgets of 8-16, so that
a job scores in a few seconds on one core.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from nasfleet.protocol.messages import DataCharacteristics
from nasfleet.server.registry import JobRecord, Registry
from nasfleet.server.service.celery_app import CelerySettings
from nasfleet.server.service.dispatch import LocalDispatcher
from nasfleet.server.service.jobs import JobOptions, submit_job
from nasfleet.server.service.orchestrator import Orchestrator
from nasfleet.server.service.runtime import LocalWorkers, Service, ServiceOptions, embedded_settings

TESTS = Path(__file__).resolve().parent
OPTIONS = JobOptions(ask_size=4, batch_size=8, space_options={"channels": 8, "cells_per_stage": 1})


def characteristics(seed: int = 0, sketches: bool = True, classes: int = 4) -> DataCharacteristics:
    """A labeled device with 3x8x8 inputs and rank-2 sketches (arrays travel through the registry)."""
    shape, dim = (3, 8, 8), 3 * 8 * 8
    histogram = tuple(int(v) for v in np.random.default_rng(seed).integers(5, 20, classes))
    if not sketches:
        return DataCharacteristics(shape, classes, sum(histogram), histogram, True)
    rng = np.random.default_rng(seed + 1)
    means = rng.standard_normal((classes, dim)).astype(np.float32) * 0.5
    bases = rng.standard_normal((classes, 2, dim)).astype(np.float32) * 0.3
    return DataCharacteristics(shape, classes, sum(histogram), histogram, True, means, bases, 4.0, 1e-5)


def sqlite_url(directory: Path, name: str = "registry.sqlite") -> str:
    return f"sqlite:///{(directory / name).resolve()}"


Outcome = tuple[str, list[str], list[dict[str, float]]]
"""Best arch, archive order, raw values in archive order: what must not depend on how a job ran."""
JobPlan = tuple[str, int, int, int]
"""(tenant, seed, budget, characteristics seed) of one job."""
TWO_JOBS: list[JobPlan] = [("acme", 1, 12, 0), ("globex", 2, 12, 1)]
"""Two tenants' jobs on different device data (so they share no cache entry): the usual plan."""


def submit_plan(registry: Registry, plan: Sequence[JobPlan], strategy: str = "evolution") -> list[JobRecord]:
    jobs = []
    for tenant, seed, budget, chars in plan:
        job = submit_job(registry, tenant, characteristics(chars), strategy=strategy, budget=budget,
                         seed=seed, options=OPTIONS)  # fmt: skip
        jobs.append(job)
    return jobs


def outcome(registry: Registry, job_id: str) -> Outcome:
    """What must not depend on how a job ran: best arch, archive order, raw values in archive order."""
    record = registry.get_job(job_id)
    assert record is not None and record.status == "done", record and (record.status, record.error)
    result = registry.get_result(job_id)
    assert result is not None
    state = record.strategy_state
    assert state is not None
    values = {e.arch: e.values for e in registry.evaluations(job_id)}
    return result.arch, list(state["archive"]), [values[arch] for arch in state["archive"]]


def reference(directory: Path, plan: Sequence[JobPlan]) -> list[Outcome]:
    """The outcomes of *plan* run in process (LocalDispatcher) in a registry of their own."""
    directory.mkdir(parents=True, exist_ok=True)
    with Registry(sqlite_url(directory, "reference.sqlite")) as registry:
        jobs = submit_plan(registry, plan)
        Orchestrator(registry, LocalDispatcher(registry)).run()
        return [outcome(registry, job.id) for job in jobs]


def assert_one_evaluation_per_arch(registry: Registry, job_id: str) -> None:
    """The registry holds exactly one evaluation per (job, arch), and exactly the job's archive."""
    record = registry.get_job(job_id)
    assert record is not None and record.strategy_state is not None
    archs = [e.arch for e in registry.evaluations(job_id)]
    assert len(archs) == len(set(archs))
    assert sorted(archs) == sorted(record.strategy_state["archive"])
    assert record.evaluations_done == record.budget


def check_outcomes(
    registry: Registry, directory: Path, jobs: Sequence[JobRecord], plan: Sequence[JobPlan]
) -> None:
    """The *jobs* submitted for *plan* reached the outcomes of its reference run (made in ``directory /
    "ref"``), with exactly one evaluation per arch each."""
    assert [outcome(registry, job.id) for job in jobs] == reference(directory / "ref", plan)
    for job in jobs:
        assert_one_evaluation_per_arch(registry, job.id)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def child_process(command: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Iterator[
    subprocess.Popen[bytes]
]:  # fmt: skip
    """A process of this test, killed (with its process group) on leaving, also on failure."""
    with open(log, "ab") as output:
        proc = subprocess.Popen(list(command), stdout=output, stderr=output, start_new_session=True,
                                env={**os.environ, **(env or {})})  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def python(*lines: str) -> list[str]:
    """A ``python -c`` command line running *lines* with the tests directory importable."""
    return [sys.executable, "-c", "\n".join([f"import sys; sys.path.insert(0, {str(TESTS)!r})", *lines])]


def fault_env(directory: Path, *faults: str) -> dict[str, str]:
    """Environment of a worker running `fault_app` with *faults* (see that module)."""
    directory.mkdir(parents=True, exist_ok=True)
    return {"PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "NASFLEET_TEST_FAULTS": ",".join(faults), "NASFLEET_TEST_MARKS": str(directory)}  # fmt: skip


def fault_workers(
    settings: CelerySettings, directory: Path, *faults: str, concurrency: int = 2
) -> LocalWorkers:
    """Local workers running `fault_app` with *faults*, their marker files in ``directory / "marks"``."""
    env = fault_env(directory / "marks", *faults)
    return LocalWorkers(settings, directory, concurrency=concurrency, app_module="fault_app", env=env)


def orchestrator_side(directory: Path, **options: Any) -> Service:
    """The embedded service without local workers (the test starts them), its state in *directory*."""
    settings = embedded_settings(directory / "state")
    return Service(settings, directory, ServiceOptions(local_workers=0, **options))


def worker_command(broker: str, registry: str, *options: str) -> list[str]:
    """``nasfleet worker`` for *broker* and *registry*, as it is started on another machine."""
    command = ["-m", "nasfleet.cli", "worker", "--broker", broker, "--registry", registry]
    return [sys.executable, *command, *options]


# -- processes, as /proc shows them --------------------------------------------------------------------------
def _stat(entry: Path) -> list[str] | None:
    """The fields of ``entry/stat`` after the command name (state, ppid, pgrp, ...); None if it is gone."""
    try:
        return (entry / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _live_processes() -> dict[int, list[str]]:
    """Every live (not zombie) process's stat fields, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry)) is not None and fields[0] != "Z":
            found[int(entry.name)] = fields
    return found


def children(pid: int) -> list[int]:
    """Live processes whose parent is *pid*."""
    return [child for child, fields in _live_processes().items() if int(fields[1]) == pid]


def process_group(pid: int) -> list[int]:
    """Live processes of the process group *pid* leads (a worker and its pool children)."""
    return [member for member, fields in _live_processes().items() if int(fields[2]) == pid]


def descendants(pid: int) -> list[int]:
    """Live descendants of *pid*, whatever session they started."""
    parents = {child: int(fields[1]) for child, fields in _live_processes().items()}
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found.extend(below)
        frontier = below
    return found


def alive(pid: int) -> bool:
    """Whether *pid* runs; a zombie (exited, not reaped yet) is gone for a test's purpose."""
    fields = _stat(Path(f"/proc/{pid}"))
    return fields is not None and fields[0] != "Z"


def stop_server(proc: subprocess.Popen[bytes], workers: Sequence[int]) -> None:
    """Stop a ``nasfleet serve`` as a user would (SIGTERM, up to 60 s), then SIGKILL the process groups of
    its *workers* that it failed to stop itself."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
    kill_groups(workers)


def kill_groups(pids: Sequence[int]) -> None:
    """SIGKILL the process groups *pids* lead, those still there."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the tenant API ------------------------------------------------------------------------------------------
MISSING_JOB = "0123456789abcdef0123456789abcdef"
"""A well-formed job id that no job has."""


def api_client(url: str, key: str | None, **headers: str) -> httpx.Client:
    """An HTTP client of the API at *url*, with *key* as its bearer token (none: unauthenticated)."""
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers={**auth, **headers}, timeout=60)


def job_routes(job_id: str, report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route about one job, as (method, path, body); *report* is the body of the report route."""
    return [
        ("GET", f"/v1/jobs/{job_id}", None),
        ("GET", f"/v1/jobs/{job_id}/result", None),
        ("GET", f"/v1/jobs/{job_id}/export", None),
        ("POST", f"/v1/jobs/{job_id}/cancel", None),
        ("POST", f"/v1/jobs/{job_id}/reports", report),
        ("GET", f"/v1/jobs/{job_id}/reports", None),
    ]


def schema_checks() -> list[Any]:
    """The schemathesis checks every API answer must pass (tests/test_api_fuzz.py, experiments/faults)."""
    from schemathesis.checks import (
        content_type_conformance,
        negative_data_rejection,
        not_a_server_error,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [not_a_server_error, status_code_conformance, content_type_conformance,
            response_headers_conformance, response_schema_conformance, negative_data_rejection]  # fmt: skip


def accept_413_as_rejection(schema: Any) -> None:
    """413 is how the server refuses a body over its size limit before parsing it: a rejection too."""
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
