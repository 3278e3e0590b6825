"""Helpers shared by the orchestrator and service tests: tiny characteristics, jobs, reference runs, checks.

Everything is small on purpose: 3x8x8 inputs, 4 classes, probe batches of 8, budgets of 8-16, so that
a job scores in a few seconds on one core.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from nasfleet.protocol.messages import DataCharacteristics
from nasfleet.server.registry import JobRecord, Registry
from nasfleet.server.service.jobs import JobOptions, submit_job
from nasfleet.server.service.orchestrator import LocalDispatcher, Orchestrator

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
