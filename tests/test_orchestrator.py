"""The orchestrator in process (no broker): search semantics, resume, cache, fairness, quotas, failures.

`LocalDispatcher` runs the task's own code at once; `ThreadWorker` is a FIFO queue drained by one
background thread, a stand-in for a broker with one worker, so that dispatch order and fair share show.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_support import (
    OPTIONS,
    assert_one_evaluation_per_arch,
    characteristics,
    outcome,
    reference,
    sqlite_url,
    submit_plan,
)

from nasfleet.protocol.codecs import decode_characteristics, encode_characteristics
from nasfleet.protocol.messages import ResourceConstraints
from nasfleet.proxies.base import ProxyError
from nasfleet.search import SearchConfig, run_search
from nasfleet.search.probe import synthetic_probe_batch
from nasfleet.server.registry import Registry, ResultRecord
from nasfleet.server.service import tasks
from nasfleet.server.service.dispatch import FairShare, LocalDispatcher
from nasfleet.server.service.jobs import JobRun, submit_job
from nasfleet.server.service.orchestrator import Orchestrator
from nasfleet.server.service.tasks import (
    PayloadError,
    ScoringSpec,
    make_payload,
    parse_request,
)
from nasfleet.spaces import get_space
from nasfleet.strategies import get_strategy
from nasfleet.strategies.base import Feasibility


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(sqlite_url(tmp_path)) as opened:
        yield opened


class ThreadWorker:
    """A FIFO queue of tasks scored one at a time by a background thread, with its own registry."""

    def __init__(self, url: str) -> None:
        self.tasks: queue.Queue[tuple[dict[str, Any], list[str]] | None] = queue.Queue()
        self.sent: list[tuple[str, int]] = []
        self.registry = Registry(url)
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def send(self, payload: dict[str, Any], archs: list[str]) -> None:
        self.sent.append((payload["job_id"], len(archs)))
        self.tasks.put((payload, archs))

    def _drain(self) -> None:
        while (task := self.tasks.get()) is not None:
            tasks.score_locally(self.registry, *task)

    def close(self) -> None:
        self.tasks.put(None)
        self.thread.join(timeout=30)
        self.registry.close()


@pytest.fixture
def worker(registry: Registry) -> Iterator[ThreadWorker]:
    thread_worker = ThreadWorker(registry.url)
    yield thread_worker
    thread_worker.close()


def test_a_job_searches_as_the_in_process_loop_does(registry: Registry) -> None:
    # Prepare: the same search through run_search and through the orchestrator (scoring seed = seed).
    chars, seed, options = characteristics(0), 3, replace(OPTIONS, scoring_seed=3)
    job = submit_job(registry, "acme", chars, budget=12, seed=seed, options=options)
    space = get_space("nb201", options.space_options)
    batch = synthetic_probe_batch(chars, options.batch_size, seed)
    config = SearchConfig("nb201", "evolution", 12, seed, options.ask_size)
    strategy = get_strategy(
        "evolution", space, seed, 12, {}, Feasibility(space, config.constraints, 4, (3, 8, 8))
    )
    # Execute
    expected = run_search(space, strategy, batch, config, progress=False)
    results = Orchestrator(registry, LocalDispatcher(registry)).run()
    # Assert: same best, same archive in the same order, same final fitness
    best, archive, _ = outcome(registry, job.id)
    assert results[job.id].arch == best == expected.best_arch
    assert archive == [entry.arch for entry in expected.archive]
    assert results[job.id].score == pytest.approx(expected.best_score, abs=0, rel=1e-12)
    assert_one_evaluation_per_arch(registry, job.id)


@pytest.mark.parametrize("stop_after", [1, 4])
def test_a_stopped_orchestrator_resumes_to_the_uninterrupted_result(
    tmp_path: Path, registry: Registry, stop_after: int
) -> None:
    plan = [("acme", 1, 16, 0), ("globex", 2, 12, 1)]
    jobs = submit_plan(registry, plan)
    # Execute: stop abruptly (as a crash would: no cleanup), then a fresh orchestrator resumes
    Orchestrator(registry, LocalDispatcher(registry)).run(max_steps=stop_after)
    assert all(job.status == "running" for job in registry.unfinished_jobs())
    Orchestrator(registry, LocalDispatcher(registry)).run()
    # Assert
    assert [outcome(registry, job.id) for job in jobs] == reference(tmp_path / "ref", plan)
    for job in jobs:
        assert_one_evaluation_per_arch(registry, job.id)


def test_a_crash_between_the_last_checkpoint_and_the_result_is_finished_on_resume(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = [("acme", 1, 8, 0)]
    job = submit_plan(registry, plan)[0]

    def crash(_: JobRun) -> ResultRecord:
        raise KeyboardInterrupt  # the process dies here

    with monkeypatch.context() as patched:
        patched.setattr(JobRun, "finish", crash)
        with pytest.raises(KeyboardInterrupt):
            Orchestrator(registry, LocalDispatcher(registry)).run()
    resumed = Orchestrator(registry, LocalDispatcher(registry))
    resumed.run()
    assert resumed.stats.dispatched == 0 and resumed.stats.steps == 0
    assert [outcome(registry, job.id)] == reference(tmp_path / "ref", plan)


def test_an_arch_is_never_scored_twice_for_the_same_characteristics(registry: Registry) -> None:
    first = submit_plan(registry, [("acme", 5, 12, 0)])[0]
    Orchestrator(registry, LocalDispatcher(registry)).run()
    # Execute: the same search for another tenant, then for a device with other data
    again = submit_plan(registry, [("globex", 5, 12, 0)])[0]
    repeat = Orchestrator(registry, LocalDispatcher(registry))
    repeat.run()
    other = Orchestrator(registry, LocalDispatcher(registry))
    third = submit_plan(registry, [("initech", 5, 12, 1)])[0]
    other.run()
    # Assert: the repeat is answered by the cache alone; other characteristics never hit the cache
    assert repeat.stats.dispatched == 0
    assert repeat.stats.cache_hits == len(registry.evaluations(first.id))
    assert outcome(registry, again.id) == outcome(registry, first.id)
    assert all(e.cached for e in registry.evaluations(again.id))
    assert not any(e.cached for e in registry.evaluations(first.id))
    assert other.stats.cache_hits == 0
    assert other.stats.dispatched == len(registry.evaluations(third.id))


def test_jobs_waiting_for_the_same_arch_share_one_task(registry: Registry, worker: ThreadWorker) -> None:
    jobs = submit_plan(registry, [("acme", 7, 12, 0), ("globex", 7, 12, 0)])
    orchestrator = Orchestrator(registry, worker)
    orchestrator.run(timeout_s=120)
    unique = {e.arch for e in registry.evaluations(jobs[0].id)}
    assert orchestrator.stats.dispatched == len(unique)
    assert orchestrator.stats.shared_in_flight > 0
    assert outcome(registry, jobs[0].id) == outcome(registry, jobs[1].id)


def test_a_small_job_is_not_starved_by_a_tenant_with_many_jobs(
    registry: Registry, worker: ThreadWorker
) -> None:
    # Prepare: a tenant with four jobs in flight (16 archs per round) and another with one small job
    big = submit_plan(registry, [("bigcorp", seed, 16, 0) for seed in (1, 2, 3, 4)])
    small = submit_plan(registry, [("smallco", 9, 8, 1)])[0]
    orchestrator = Orchestrator(registry, worker, fair=FairShare(max_in_flight=2))
    # Execute
    orchestrator.run(timeout_s=120)
    # Assert: smallco got about half the workers; without the cap on the queue (FIFO behind bigcorp's
    # 16 archs per round) bigcorp gets 32 archs dispatched and 16 evaluations before smallco is done
    events = orchestrator.stats.events
    done_at = next(time for time, kind, _, job, _ in events if kind == "done" and job == small.id)
    told = {job.id: 0 for job in big}
    for time, kind, _, job, count in events:
        if kind == "step" and job in told and time <= done_at:
            told[job] = count
    sent = sum(n for time, kind, tenant, _, n in events if kind == "dispatch" and tenant == "bigcorp"
               and time <= done_at)  # fmt: skip
    assert sent <= 12 and sum(told.values()) <= 8, f"bigcorp: {sent} archs sent, told {told}"
    assert small.id in [job for job, _ in worker.sent[:2]]


def test_a_tenant_runs_at_most_its_quota_of_jobs_at_once(registry: Registry, worker: ThreadWorker) -> None:
    submit_plan(registry, [("acme", 1, 8, 0), ("acme", 2, 8, 0), ("acme", 3, 8, 0), ("globex", 4, 8, 1)])
    orchestrator = Orchestrator(registry, worker, fair=FairShare(max_jobs_per_tenant=1))
    orchestrator.run(timeout_s=120)
    running, most = set(), {"acme": 0, "globex": 0}
    for _, kind, tenant, job, _ in orchestrator.stats.events:
        if kind == "admit":
            running.add((tenant, job))
        elif kind in ("done", "failed"):
            running.discard((tenant, job))
        most[tenant] = max(most[tenant], sum(1 for t, _ in running if t == tenant))
    assert most == {"acme": 1, "globex": 1}
    assert len(orchestrator.results) == 4


def test_three_tenants_with_three_jobs_each_run_at_once(
    tmp_path: Path, registry: Registry, worker: ThreadWorker
) -> None:
    plan = [(tenant, seed, 8, seed % 2) for tenant in ("a", "b", "c") for seed in (1, 2, 3)]
    jobs = submit_plan(registry, plan)
    orchestrator = Orchestrator(registry, worker, fair=FairShare(max_in_flight=4))
    orchestrator.run(timeout_s=180)
    assert [outcome(registry, job.id) for job in jobs] == reference(tmp_path / "ref", plan)
    admitted = [time for time, kind, *_ in orchestrator.stats.events if kind == "admit"]
    first_done = min(time for time, kind, *_ in orchestrator.stats.events if kind == "done")
    assert len(admitted) == 9 and max(admitted) < first_done
    for job in jobs:
        assert_one_evaluation_per_arch(registry, job.id)


def test_an_arch_that_cannot_be_scored_fails_its_job_only(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tasks._score_arch

    def score(space: Any, genome: Any, batch: Any, scoring: Any) -> Any:
        if batch.num_classes == 5:
            raise ProxyError("fg_gi: non-finite value")
        return real(space, genome, batch, scoring)

    monkeypatch.setattr(tasks, "_score_arch", score)
    bad = submit_job(registry, "acme", characteristics(0, classes=5), budget=8, options=OPTIONS)
    good = submit_plan(registry, [("acme", 1, 8, 0)])[0]
    results = Orchestrator(registry, LocalDispatcher(registry), status_every_s=0.0).run(timeout_s=60)
    failed = registry.get_job(bad.id)
    assert failed is not None and failed.status == "failed"
    assert "scoring failed" in (failed.error or "") and "non-finite" in (failed.error or "")
    assert list(results) == [good.id]


def test_a_job_cancelled_while_its_step_runs_leaves_the_loop_and_others_finish(registry: Registry) -> None:
    # Prepare: the first finished step of the first job cancels it, as the tenant API would, while the
    # loop still holds it (no status check in between)
    doomed, other = submit_plan(registry, [("acme", 1, 16, 0), ("globex", 2, 16, 1)])

    def cancel(job: JobRun) -> None:
        if job.id == doomed.id:
            registry.update_job(doomed.id, status="cancelled")

    orchestrator = Orchestrator(registry, LocalDispatcher(registry), status_every_s=3600.0, on_step=cancel)
    # Execute
    results = orchestrator.run(timeout_s=120)
    # Assert: no RegistryError escaped; the cancelled job stays cancelled, the other one is done
    assert list(results) == [other.id]
    record = registry.get_job(doomed.id)
    assert record is not None and record.status == "cancelled"
    assert orchestrator.failed == {doomed.id: "cancelled"}


def test_a_job_whose_constraints_admit_nothing_fails_with_the_reason(registry: Registry) -> None:
    tiny = ResourceConstraints(max_params=10)
    bad = submit_job(registry, "acme", characteristics(0), budget=8, options=OPTIONS, constraints=tiny)
    good = submit_plan(registry, [("globex", 1, 8, 0)])[0]
    orchestrator = Orchestrator(registry, LocalDispatcher(registry))
    orchestrator.run(timeout_s=60)
    failed = registry.get_job(bad.id)
    assert failed is not None and failed.status == "failed" and "max_params=10" in (failed.error or "")
    assert list(orchestrator.results) == [good.id]


# -- the task's boundary -------------------------------------------------------------------------------------
def _valid() -> tuple[dict[str, Any], list[str]]:
    spec = ScoringSpec("nb201", ("fg_fi", "fg_fc"), 8, 0, {"channels": 8, "cells_per_stage": 1})
    arch = get_space("nb201").encode(get_space("nb201").sample(np.random.default_rng(0)))
    return make_payload("ab" * 16, "cd" * 32, spec, "ef" * 16), [arch]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p, a: ("not a mapping", a), "payload must be a mapping"),
        (lambda p, a: ({**p, "version": 99}, a), "payload.version"),
        (lambda p, a: ({**p, "deployment": "../x"}, a), "payload.deployment"),
        (lambda p, a: ({**p, "job_id": "x"}, a), "payload.job_id"),
        (lambda p, a: ({**p, "characteristics_hash": 7}, a), "payload.characteristics_hash"),
        (lambda p, a: ({**p, "scoring": {**p["scoring"], "space": "nope"}}, a), "scoring.space"),
        (lambda p, a: ({**p, "scoring": {**p["scoring"], "proxies": ["nope"]}}, a), "scoring.proxies"),
        (lambda p, a: ({**p, "scoring": {**p["scoring"], "batch_size": 1}}, a), "scoring.batch_size"),
        (lambda p, a: ({**p, "scoring": {**p["scoring"], "space_options": {"x": 1}}}, a), "space_options"),
        (lambda p, a: ({**p, "proxy_config_hash": "0" * 64}, a), "payload.proxy_config_hash"),
        (lambda p, a: (p, []), "archs must be a list of 1 to"),
        (lambda p, a: (p, ["|garbage|"]), "archs[0] must be an architecture"),
        (lambda p, a: (p, a + a), "archs must be distinct"),
    ],
)
def test_a_malformed_payload_is_rejected_naming_the_field(change: Any, field: str) -> None:
    payload, archs = change(*_valid())
    with pytest.raises(PayloadError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_request(payload, archs)


def test_a_payload_for_an_unknown_job_fails_no_job(registry: Registry) -> None:
    job = submit_plan(registry, [("acme", 1, 8, 0)])[0]
    payload, archs = _valid()
    tasks.score_locally(registry, payload, archs)
    assert registry.get_job(job.id).status == "queued"  # type: ignore[union-attr]
    assert registry.evaluations(job.id) == []


def test_characteristics_travel_through_job_options_unchanged() -> None:
    chars = characteristics(3)
    decoded = decode_characteristics(encode_characteristics(chars))
    assert decoded.digest() == chars.digest()
    assert np.array_equal(decoded.class_bases, chars.class_bases)  # type: ignore[arg-type]
