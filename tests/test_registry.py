"""The registry: one contract run against SQLite and PostgreSQL, concurrent writers, and the CLI."""

from __future__ import annotations

import json
import math
import multiprocessing
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from nasfleet.cli.registry import registry_app
from nasfleet.server.registry import (
    DEFAULT_REGISTRY_URL,
    SCHEMA_VERSION,
    CacheEntry,
    CacheKey,
    EvaluationRecord,
    JobRecord,
    Registry,
    RegistryError,
    ReportRecord,
    ResultRecord,
    SchemaVersionError,
)
from nasfleet.server.registry import jobs as registry_jobs

CHARACTERISTICS = "c" * 64
OTHER_CHARACTERISTICS = "d" * 64
PROXIES = "p" * 16
PROCESSES = 4


def _evaluation(arch: str, score: float = 1.0, worker: str = "w0") -> EvaluationRecord:
    values = {"synflow": score, "jacov": -score}
    return EvaluationRecord(arch, values, params=100 + len(arch), flops=1000, seconds=0.01, worker=worker)


def _job(
    registry: Registry, tenant: str = "acme", device: str | None = "phone-1", **options: Any
) -> JobRecord:
    registry.create_tenant(tenant, exist_ok=True)
    if device is not None:
        registry.upsert_device(tenant, device, tier="phone")
    return _create_job(registry, tenant, device=device, **options)


def _create_job(registry: Registry, tenant: str = "acme", **options: Any) -> JobRecord:
    settings = {"space": "nb201", "strategy": "random", "characteristics_hash": CHARACTERISTICS, "budget": 20}
    return registry.create_job(tenant, **{**settings, **options})


def _sql(url: str, statement: str, **parameters: Any) -> list[Any]:
    """Run raw SQL outside the registry; the rows it returns, if any."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), parameters)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def _dump(url: str) -> str:
    """Every value of every table in the database, as text."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            names = inspect(connection).get_table_names()
            tables = [connection.execute(text(f'SELECT * FROM "{name}"')).all() for name in names]
    finally:
        engine.dispose()
    assert "api_keys" in names
    return "\n".join(repr(row) for rows in tables for row in rows)


Call = Callable[[Registry, str], object]
INVALID: list[tuple[Call, str]] = [
    (
        lambda r, j: r.create_tenant("bad name!"),
        "tenant must be 1-64 characters of [A-Za-z0-9_.-], but got 'bad name!'",
    ),
    (
        lambda r, j: r.create_tenant("x" * 65),
        "tenant must be 1-64 characters of [A-Za-z0-9_.-], but got 'xxx",
    ),
    (
        lambda r, j: r.update_job(j, status="foo"),
        "status must be one of ['queued', 'running', 'done', 'failed', 'cancelled'], but got 'foo'",
    ),
    (
        lambda r, j: r.upsert_device("acme", "phone-1", tier="phone", status="lost"),
        "status must be one of ['ok', 'timeout', 'error'], but got 'lost'",
    ),
    (lambda r, j: _create_job(r, budget=0), "budget must be an integer in [1, 1000000000], but got 0"),
    (
        lambda r, j: _create_job(r, seed=True),
        "seed must be an integer in [0, 9223372036854775807], but got True",
    ),
    (
        lambda r, j: _create_job(r, strategy_config={"sigma": math.inf}),
        "strategy_config must be JSON data with finite numbers, but got {'sigma': inf}",
    ),
    (
        lambda r, j: _create_job(r, device="ghost"),
        "device must be a registered device of tenant 'acme', but got 'ghost'",
    ),
    (
        lambda r, j: r.update_job(j, best=("a", math.nan)),
        "best score must be a finite number in [-inf, inf], but got nan",
    ),
    (lambda r, j: r.update_job(j, state={"x": {1, 2}}), "state must be JSON data, but got {'x': {1, 2}}"),
    (
        lambda r, j: r.add_evaluations(
            j, [_evaluation("a"), EvaluationRecord("b", {"synflow": 1.0}, -1, 0, 0.1)]
        ),
        "evaluations[1].params must be an integer in [0, 9223372036854775807], but got -1",
    ),
    (
        lambda r, j: r.cache_put([CacheEntry(CacheKey("a", "not a hash!", PROXIES), {"s": 1.0}, 1, 1)]),
        "entries[0].key.characteristics_hash must be 1-128 characters of [A-Za-z0-9_.-], "
        "but got 'not a hash!'",
    ),
    (
        lambda r, j: r.set_result(ResultRecord(j, "a", math.inf, {"s": 1.0}, 1, 1)),
        "score must be a finite number in [-inf, inf], but got inf",
    ),
    (
        lambda r, j: r.add_report(ReportRecord(j, "a", 1.5, 0.1, 1.0, 1, 1)),
        "accuracy must be a finite number in [0.0, 1.0], but got 1.5",
    ),
]


class TestRegistryContract:
    """What every backend must do; each test gets a fresh, empty registry."""

    def test_tenants_round_trip(self, registry: Registry) -> None:
        created = registry.create_tenant("acme")
        registry.create_tenant("beta.lab-2")
        assert registry.get_tenant("acme") == created
        assert created.created_at.tzinfo is not None
        assert [tenant.name for tenant in registry.list_tenants()] == ["acme", "beta.lab-2"]
        assert registry.get_tenant("nobody") is None
        assert registry.create_tenant("acme", exist_ok=True) == created
        with pytest.raises(RegistryError, match="tenant must be a name not yet registered, but got 'acme'"):
            registry.create_tenant("acme")

    def test_devices_are_upserted(self, registry: Registry) -> None:
        registry.create_tenant("acme")
        constraints, profile = (
            {"max_params": 10**6, "max_latency_ms": 20.5},
            {"tier": "phone", "flops_per_ms": 1e6},
        )
        first = registry.upsert_device(
            "acme", "phone-1", tier="phone", constraints=constraints, profile=profile,
            characteristics_hash=CHARACTERISTICS,
        )  # fmt: skip
        assert (first.constraints, first.profile, first.characteristics_hash) == (
            constraints,
            profile,
            CHARACTERISTICS,
        )
        second = registry.upsert_device(
            "acme", "phone-1", tier="phone-pro", status="timeout", error="no answer"
        )
        assert registry.list_devices("acme") == [second]
        assert (second.tier, second.status, second.error, second.constraints) == (
            "phone-pro",
            "timeout",
            "no answer",
            {},
        )
        assert second.updated_at >= first.updated_at
        with pytest.raises(RegistryError, match="tenant must be a registered tenant name, but got 'ghost'"):
            registry.upsert_device("ghost", "phone-1", tier="phone")

    def test_jobs_round_trip_and_resume_queries(self, registry: Registry) -> None:
        job = _job(
            registry, seed=7, strategy_config={"population": 8}, constraints={"max_params": 5000},
            options={"ask_size": 4, "aggregate": "fgnas"},
        )  # fmt: skip
        assert registry.get_job(job.id) == job
        assert (job.tenant, job.device, job.space, job.strategy, job.budget, job.seed) == (
            "acme", "phone-1", "nb201", "random", 20, 7,
        )  # fmt: skip
        assert (job.strategy_config, job.constraints, job.options["ask_size"]) == (
            {"population": 8},
            {"max_params": 5000},
            4,
        )
        assert (job.status, job.evaluations_done, job.strategy_state, job.best_score, job.finished) == (
            "queued", 0, None, None, False,
        )  # fmt: skip
        other = _job(registry, "beta", device=None)
        assert other.device is None
        assert [found.id for found in registry.list_jobs(tenant="acme")] == [job.id]
        assert registry.claim_job(job.id) and not registry.claim_job(job.id)
        assert [found.id for found in registry.list_jobs(status="running")] == [job.id]
        registry.update_job(other.id, status="failed", error="worker lost")
        assert [found.id for found in registry.unfinished_jobs()] == [job.id]
        state = {"rng": [1, 2, 3], "sigma": math.inf, "archive": ["a|b"] * 2000}
        updated = registry.update_job(job.id, state=state, evaluations_done=8, best=("a|b", 0.5))
        assert registry.get_job(job.id) == updated
        assert (updated.strategy_state, updated.evaluations_done, updated.best_arch, updated.best_score) == (
            state, 8, "a|b", 0.5,
        )  # fmt: skip
        assert registry.get_job("0" * 32) is None

    def test_final_status_and_budget_are_enforced(self, registry: Registry) -> None:
        job, other = _job(registry), _job(registry)
        registry.update_job(job.id, status="cancelled")
        with pytest.raises(
            RegistryError, match=re.escape("status must be unchanged once the job is 'cancelled'")
        ):
            registry.update_job(job.id, status="running")
        with pytest.raises(
            RegistryError, match=re.escape("evaluations_done must be at most the job's budget 20")
        ):
            registry.update_job(other.id, evaluations_done=21)
        assert registry.get_job(job.id).status == "cancelled"  # type: ignore[union-attr]

    def test_evaluations_are_idempotent(self, registry: Registry) -> None:
        job = _job(registry)
        first = [_evaluation(arch) for arch in ("a", "b", "c")]
        assert registry.add_evaluations(job.id, first) == 3
        assert registry.add_evaluations(job.id, first) == 0
        assert (
            registry.add_evaluations(job.id, [_evaluation("c", 9.0), _evaluation("d"), _evaluation("d")]) == 1
        )
        stored = registry.evaluations(job.id)
        assert [evaluation.arch for evaluation in stored] == ["a", "b", "c", "d"]
        assert stored[2] == first[2]  # the first values stored are kept
        assert (
            registry.add_evaluations(
                job.id, [EvaluationRecord("e", {"synflow": np.float32(0.5)}, np.int64(7), 1, 0)]
            )
            == 1
        )
        numpy_made = registry.evaluations(job.id)[-1]
        assert (numpy_made.values, numpy_made.params) == ({"synflow": 0.5}, 7)
        assert type(numpy_made.params) is int and type(numpy_made.values["synflow"]) is float
        assert registry.evaluations(_job(registry, "beta").id) == []

    def test_checkpoint_stores_a_step_atomically(self, registry: Registry) -> None:
        job = _job(registry)
        step = [_evaluation("a"), _evaluation("b", 2.0)]
        assert registry.checkpoint(job.id, step, state={"told": 2}, evaluations_done=2, best=("b", 2.0)) == 2
        resumed = registry.get_job(job.id)
        assert resumed is not None
        assert (resumed.strategy_state, resumed.evaluations_done, resumed.best_arch) == ({"told": 2}, 2, "b")
        assert registry.evaluations(job.id) == step

    def test_cache_hits_are_flagged(self, registry: Registry) -> None:
        job = _job(registry)
        scored, hit = _evaluation("a"), EvaluationRecord("b", {"synflow": 2.0}, 1, 2, 0.0, cached=True)
        assert (scored.cached, hit.cached, hit.worker) == (False, True, "")
        assert registry.add_evaluations(job.id, [scored, hit]) == 2
        again = replace(_evaluation("c"), cached=True)
        assert registry.checkpoint(job.id, [again, _evaluation("d")], state={}, evaluations_done=4) == 2
        stored = registry.evaluations(job.id)
        assert stored == [scored, hit, again, _evaluation("d")]
        assert [evaluation.cached for evaluation in stored] == [False, True, True, False]
        exported = registry.export()["evaluations"]
        assert [(row["arch"], row["cached"]) for row in exported] == [
            ("a", False), ("b", True), ("c", True), ("d", False),
        ]  # fmt: skip
        with pytest.raises(RegistryError, match=re.escape("evaluations[0].cached must be True or False")):
            registry.add_evaluations(job.id, [replace(_evaluation("e"), cached="yes")])  # type: ignore[arg-type]

    def test_a_database_without_the_cached_column_is_migrated(self, registry: Registry, url: str) -> None:
        job = _job(registry)
        legacy_hit = _evaluation("b", worker="cache")  # how versions 1 and 2 marked a cache hit
        registry.add_evaluations(job.id, [_evaluation("a"), legacy_hit])
        registry.close()
        _sql(url, "ALTER TABLE evaluations DROP COLUMN cached")  # as version 2 created it
        _sql(url, "UPDATE schema_version SET version = 2")
        legacy_options = "CAST(:o AS JSON)" if url.startswith("postgresql") else ":o"
        _sql(
            url, f"UPDATE jobs SET options = {legacy_options} WHERE id = :i", o='{"probe_batch": 8}', i=job.id
        )
        with Registry(url) as reopened:
            migrated = reopened.get_job(job.id)
            assert migrated is not None and migrated.options == {"batch_size": 8}  # the early option name
            stored = reopened.evaluations(job.id)
            assert stored == [_evaluation("a"), replace(legacy_hit, worker="", cached=True)]
            reopened.add_evaluations(job.id, [_evaluation("c")])
            assert reopened.evaluations(job.id)[-1].cached is False
        assert _sql(url, "SELECT id, version FROM schema_version") == [(1, SCHEMA_VERSION)]
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                columns = {
                    column["name"]: column for column in inspect(connection).get_columns("evaluations")
                }
        finally:
            engine.dispose()
        assert columns["cached"]["nullable"] is False
        with Registry(url) as again:  # the migration ran once; opening again changes nothing
            assert [evaluation.cached for evaluation in again.evaluations(job.id)] == [False, True, False]

    def test_failed_write_leaves_nothing(self, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
        job = _job(registry)
        good = [_evaluation("a"), _evaluation("b")]
        bad = EvaluationRecord("c", {"synflow": math.nan}, 1, 1, 0.1)
        expected = "evaluations[2].values['synflow'] must be a finite number in [-inf, inf], but got nan"
        with pytest.raises(RegistryError, match=re.escape(expected)):
            registry.add_evaluations(job.id, [*good, bad])
        assert registry.evaluations(job.id) == []

        def fail(*_args: object) -> None:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(registry_jobs, "update_job_row", fail)  # fails after the evaluations are in
        with pytest.raises(RegistryError, match="disk on fire") as caught:
            registry.checkpoint(job.id, good, state={"told": 2}, evaluations_done=2)
        assert isinstance(caught.value.__cause__, RuntimeError)
        assert registry.evaluations(job.id) == []
        assert registry.get_job(job.id) == job
        with pytest.raises(RegistryError, match="job_id must be the id of a registered job, but got 'fff"):
            registry.add_evaluations("f" * 32, good)

    @pytest.mark.parametrize(("call", "message"), INVALID, ids=[message[:40] for _, message in INVALID])
    def test_invalid_arguments_are_refused(
        self, registry: Registry, url: str, call: Call, message: str
    ) -> None:
        job = _job(registry)
        before = _dump(url)
        with pytest.raises(RegistryError) as caught:
            call(registry, job.id)
        assert str(caught.value).startswith(message), str(caught.value)
        assert _dump(url) == before

    def test_cache_hits_across_jobs_and_tenants(self, registry: Registry) -> None:
        first, second = _job(registry, "acme"), _job(registry, "beta")
        entry = CacheEntry(CacheKey("a|b", first.characteristics_hash, PROXIES), {"synflow": 2.0}, 10, 20)
        other = CacheEntry(CacheKey("c", first.characteristics_hash, PROXIES), {"synflow": 1.0}, 1, 2)
        assert registry.cache_put([entry, other, entry]) == 2
        assert registry.cache_put([replace(entry, values={"synflow": 99.0})]) == 0
        wanted = CacheKey("a|b", second.characteristics_hash, PROXIES)  # the other tenant's job asks
        misses = [
            CacheKey("a|b", OTHER_CHARACTERISTICS, PROXIES), CacheKey("a|b", CHARACTERISTICS, "q" * 16),
            CacheKey("zzz", CHARACTERISTICS, PROXIES),
        ]  # fmt: skip
        assert registry.cache_get([wanted, *misses]) == {wanted: entry}
        assert registry.cache_get([]) == {}

    def test_results_round_trip_and_finish_the_job(self, registry: Registry) -> None:
        job = _job(registry)
        history = ({"step": 1, "evaluations": 8, "arch": "a|b", "score": 0.75},)
        result = ResultRecord(job.id, "a|b", 0.75, {"synflow": 2.0}, 10, 20, history)
        registry.set_result(result)
        assert registry.get_result(job.id) == result
        done = registry.get_job(job.id)
        assert done is not None and (done.status, done.best_arch, done.best_score) == ("done", "a|b", 0.75)
        replaced = ResultRecord(job.id, "c", 0.8, {"synflow": 3.0}, 11, 21)
        registry.set_result(replaced)
        assert registry.get_result(job.id) == replaced
        assert registry.list_results(tenant="acme") == [replaced]
        assert registry.list_results(tenant="beta") == []
        assert registry.get_result("0" * 32) is None

    def test_reports_round_trip(self, registry: Registry) -> None:
        job = _job(registry)
        registry.upsert_device("acme", "phone-2", tier="phone")
        registry.add_evaluations(job.id, [_evaluation("a|b"), _evaluation("c")])
        registry.set_result(ResultRecord(job.id, "a|b", 0.5, {"synflow": 1.0}, 3, 4))
        sent = ReportRecord(
            job.id, "a|b", 0.9, 0.3, 12.5, 800, 200, latency_ms_predicted=4.0, latency_ms_measured=4.5
        )
        stored = registry.add_report(sent)
        assert stored.device == "phone-1" and stored.id is not None and stored.created_at is not None
        assert replace(stored, id=None, created_at=None, device=None) == sent
        later = registry.add_report(ReportRecord(job.id, "c", 0.5, 1.0, 3.0, 10, 5, device="phone-1"))
        assert later.device == "phone-1" and later.arch == "c", "a later round's report on a scored arch"
        assert registry.list_reports(job_id=job.id) == [stored, later]
        assert registry.list_reports(tenant="beta") == []

    def test_a_report_the_job_cannot_have_asked_for_is_refused_and_nothing_is_stored(
        self, registry: Registry
    ) -> None:
        job = _job(registry)
        registry.upsert_device("acme", "phone-2", tier="phone")
        _job(registry, tenant="beta", device="tablet")
        unfinished = ReportRecord(job.id, "a|b", 0.9, 0.3, 1.0, 8, 2)
        with pytest.raises(RegistryError, match=r"^arch must be a SubNet job \w+ can have sent"):
            registry.add_report(unfinished)  # no result yet
        registry.add_evaluations(job.id, [_evaluation("a|b")])
        registry.set_result(ResultRecord(job.id, "a|b", 0.5, {"synflow": 1.0}, 3, 4))
        refused = [
            (ReportRecord(job.id, "never-scored", 0.9, 0.3, 1.0, 8, 2), "arch must be a SubNet job"),
            (ReportRecord(job.id, "a|b", math.nan, 0.3, 1.0, 8, 2), "accuracy must be"),
            (ReportRecord(job.id, "a|b", 1.5, 0.3, 1.0, 8, 2), "accuracy must be"),
            (ReportRecord(job.id, "a|b", 0.9, 0.3, 1.0, 8, 2, device="phone-2"),
             "device must be the device job"),
            (ReportRecord(job.id, "a|b", 0.9, 0.3, 1.0, 8, 2, device="tablet"),
             "device must be a registered device of tenant 'acme'"),
        ]  # fmt: skip
        for report, message in refused:
            with pytest.raises(RegistryError, match=f"^{re.escape(message)}"):
                registry.add_report(report)
        assert registry.list_reports() == []

    def test_api_keys_are_stored_hashed(self, registry: Registry, url: str) -> None:
        registry.create_tenant("acme")
        key = registry.create_api_key("acme")
        prefix, key_id, secret = key.split("_", 2)
        assert len(secret) >= 40
        assert registry.verify_api_key(key) == registry.get_tenant("acme")
        assert registry.verify_api_key(f"{prefix}_{key_id}_{secret[::-1]}") is None
        assert registry.verify_api_key("garbage") is None
        dump = _dump(url)
        assert key_id in dump and secret not in dump
        if url.startswith("sqlite"):
            database = Path(url.removeprefix("sqlite:///"))
            raw = b"".join(path.read_bytes() for path in database.parent.glob(f"{database.name}*"))
            assert key_id.encode() in raw and secret.encode() not in raw
        assert [found.key_id for found in registry.list_api_keys("acme")] == [key_id]
        assert registry.revoke_api_key(key) and not registry.revoke_api_key(key_id)
        assert registry.verify_api_key(key) is None
        assert [found.revoked for found in registry.list_api_keys("acme")] == [True]

    def test_newer_schema_is_refused_and_older_upgraded(self, registry: Registry, url: str) -> None:
        registry.create_tenant("acme")
        registry.close()
        _sql(url, "UPDATE schema_version SET version = :version", version=SCHEMA_VERSION + 1)
        expected = f"registry schema version must be at most {SCHEMA_VERSION} (this code's), but the database"
        with pytest.raises(SchemaVersionError, match=re.escape(expected)) as caught:
            Registry(url)
        assert f"has version {SCHEMA_VERSION + 1}: upgrade nasfleet" in str(caught.value)
        _sql(url, "DELETE FROM schema_version")  # as written before versioning
        with Registry(url) as reopened:
            assert [tenant.name for tenant in reopened.list_tenants()] == ["acme"]
        assert _sql(url, "SELECT id, version FROM schema_version") == [(1, SCHEMA_VERSION)]

    def test_export_holds_everything_but_secrets(self, registry: Registry) -> None:
        job = _job(registry)
        registry.add_evaluations(job.id, [_evaluation("a"), _evaluation("b")])
        registry.set_result(ResultRecord(job.id, "b", 0.5, {"synflow": 1.0}, 3, 4))
        registry.add_report(ReportRecord(job.id, "b", 0.9, 0.2, 1.0, 8, 2))
        key = registry.create_api_key("acme")
        data = registry.export()
        document = json.dumps(data)
        assert json.loads(document) == data
        assert (data["version"], data["schema_version"]) == (1, SCHEMA_VERSION)
        assert [tenant["name"] for tenant in data["tenants"]] == ["acme"]
        assert [(device["tenant"], device["name"]) for device in data["devices"]] == [("acme", "phone-1")]
        assert [(found["id"], found["status"], found["best_arch"]) for found in data["jobs"]] == [
            (job.id, "done", "b")
        ]
        assert [(row["job_id"], row["arch"]) for row in data["evaluations"]] == [(job.id, "a"), (job.id, "b")]
        assert data["evaluations"][0]["values"] == {"synflow": 1.0, "jacov": -1.0}
        assert [(result["job_id"], result["arch"]) for result in data["results"]] == [(job.id, "b")]
        assert [(report["device"], report["accuracy"]) for report in data["reports"]] == [("phone-1", 0.9)]
        assert set(data["api_keys"][0]) == {"key_id", "tenant", "created_at", "revoked"}
        assert key.split("_", 2)[2] not in document
        assert '"salt"' not in document and '"key_hash"' not in document

    def test_concurrent_writers_of_several_tenants(self, registry: Registry) -> None:
        def search(tenant: str) -> int:
            registry.create_tenant(tenant, exist_ok=True)
            job = _job(registry, tenant, device="edge", budget=40)
            added = 0
            for step in range(4):  # batches overlap by two archs
                batch = [_evaluation(f"arch-{n}") for n in range(step * 8, step * 8 + 10)]
                added += registry.checkpoint(
                    job.id, batch, state={"step": step}, evaluations_done=step * 8 + 10
                )
                cached = [
                    CacheEntry(CacheKey(e.arch, CHARACTERISTICS, PROXIES), e.values, e.params, 1)
                    for e in batch
                ]
                registry.cache_put(cached)
            registry.set_result(ResultRecord(job.id, "arch-0", 1.0, {"synflow": 1.0}, 1, 1))
            return added

        tenants = [f"tenant-{index}" for index in range(3)]
        with ThreadPoolExecutor(max_workers=9) as pool:
            added = list(pool.map(search, [tenant for tenant in tenants for _ in range(3)]))
        assert added == [34] * 9
        assert [tenant.name for tenant in registry.list_tenants()] == tenants
        assert [len(registry.list_devices(tenant)) for tenant in tenants] == [1, 1, 1]
        jobs = registry.list_jobs()
        assert sorted(job.tenant for job in jobs) == sorted(tenants * 3)
        assert all(job.status == "done" and job.evaluations_done == 34 for job in jobs)
        assert [len(registry.evaluations(job.id)) for job in jobs] == [34] * 9
        keys = [CacheKey(f"arch-{n}", CHARACTERISTICS, PROXIES) for n in range(40)]
        assert len(registry.cache_get(keys)) == 34


def _write_from_process(url: str, job_id: str, worker: int, barrier: str) -> int:
    """One of `PROCESSES` writers: wait for all to start, then store overlapping evaluations in batches."""
    Path(barrier, str(worker)).touch()
    deadline = time.monotonic() + 60
    while len(list(Path(barrier).iterdir())) < PROCESSES and time.monotonic() < deadline:
        time.sleep(0.01)
    added = 0
    with Registry(url) as registry:  # all open at once: concurrent migrations too
        archs = [f"arch-{n}" for n in range(worker * 50, worker * 50 + 100)]
        for start in range(0, len(archs), 5):
            batch = [_evaluation(arch, worker=f"w{worker}") for arch in archs[start : start + 5]]
            added += registry.add_evaluations(job_id, batch)
            registry.cache_put(
                [CacheEntry(CacheKey(e.arch, CHARACTERISTICS, PROXIES), e.values, 1, 1) for e in batch]
            )
            assert len(registry.evaluations(job_id)) >= added
    return added


def test_sqlite_takes_concurrent_writer_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry(url) as registry:
        job = _job(registry)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        added = pool.starmap(_write_from_process, [(url, job.id, w, str(barrier)) for w in range(PROCESSES)])
    unique = 50 * (PROCESSES - 1) + 100
    assert sum(added) == unique
    with Registry(url) as registry:
        stored = registry.evaluations(job.id)
        assert sorted(e.arch for e in stored) == sorted(f"arch-{n}" for n in range(unique))
        assert len(registry.cache_get([CacheKey(e.arch, CHARACTERISTICS, PROXIES) for e in stored])) == unique


# -- the ``nasfleet registry`` commands ----------------------------------------------------------------------
runner = CliRunner()


def _cli(*args: str, **env: str) -> tuple[int, str]:
    result = runner.invoke(registry_app, list(args), env={"COLUMNS": "300", **env})
    return result.exit_code, result.output


def _filled(tmp_path: Path) -> tuple[str, JobRecord]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry(url) as registry:
        job = _job(registry)
        registry.add_evaluations(job.id, [_evaluation("a|b"), _evaluation("c")])
        registry.set_result(ResultRecord(job.id, "a|b", 0.75, {"synflow": 1.0}, 123, 456))
        registry.add_report(ReportRecord(job.id, "a|b", 0.875, 0.3, 2.0, 80, 20, latency_ms_measured=3.5))
    return url, job


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("tenants", ["tenants (1)", "acme"]),
        ("devices", ["devices (1)", "phone-1", "ok"]),
        ("jobs", ["jobs (1)", "nb201", "random", "done", "0/20", "0.75"]),
        ("results", ["results (1)", "a|b", "123", "456"]),
        ("reports", ["reports (1)", "phone-1", "0.875", "3.5"]),
    ],
)
def test_cli_lists(tmp_path: Path, what: str, expected: list[str]) -> None:
    url, job = _filled(tmp_path)
    code, output = _cli("list", "--registry", url, "--what", what)
    assert code == 0, output
    assert all(part in output for part in expected), output
    assert what != "jobs" or (job.id[:8] in output and job.id not in output)  # a short id: a unique prefix


def test_cli_show_and_its_errors(tmp_path: Path) -> None:
    url, job = _filled(tmp_path)
    code, output = _cli("show", job.id, "--registry", url)
    assert code == 0, output
    assert all(part in output for part in (job.id, "nb201", "evaluations stored", "a|b", "0.875", "phone-1"))
    code, output = _cli("show", "0" * 32, "--registry", url)
    assert code == 1 and "JOB_ID must be the id of a registered job or its prefix, but got '000" in output
    code, output = _cli("list", "--registry", url, "--what", "secrets")
    assert code == 2 and "secrets" in output
    code, output = _cli("list", "--registry", f"sqlite:///{tmp_path / 'missing.db'}")
    assert code == 2 and "does not exist" in output
    assert not (tmp_path / "missing.db").exists()


def test_cli_show_takes_a_unique_prefix_and_prints_json(tmp_path: Path) -> None:
    url, job = _filled(tmp_path)
    with Registry(url) as registry:  # 17 jobs in all: two of them share a first hex digit
        ids = [job.id] + [_job(registry).id for _ in range(16)]
    code, output = _cli("show", job.id[:6].upper(), "--registry", url, "--format", "json")
    assert code == 0, output
    document = json.loads(output)
    assert document["job"]["id"] == job.id and document["evaluations_stored"] == 2
    assert document["result"]["arch"] == "a|b" and [r["accuracy"] for r in document["reports"]] == [0.875]
    assert "strategy_state" not in document["job"]
    shared = next(first for first in "0123456789abcdef" if sum(i.startswith(first) for i in ids) > 1)
    code, output = _cli("show", shared, "--registry", url)
    count = sum(i.startswith(shared) for i in ids)
    assert code == 1 and "must be a unique prefix" in output and f"starts {count} job ids" in output
    code, output = _cli("show", "", "--registry", url)
    assert code == 1 and "or its prefix, but got ''" in output


def test_cli_exports_json_atomically(tmp_path: Path) -> None:
    url, job = _filled(tmp_path)
    out = tmp_path / "out" / "registry.json"
    out.parent.mkdir()  # an output's directory must exist (tests/test_outputs.py)
    code, output = _cli("export", "--registry", url, "--format", "json", "--out", str(out))
    assert code == 0, output
    data = json.loads(out.read_text())
    assert [found["id"] for found in data["jobs"]] == [job.id] and len(data["evaluations"]) == 2
    assert [path.name for path in out.parent.iterdir()] == ["registry.json"]  # no temporary left
    code, output = _cli("export", "--registry", url)
    assert code == 0 and json.loads(output)["jobs"] == data["jobs"]
    assert _cli("export", "--registry", url, "--format", "xml")[0] == 2


def test_cli_registry_defaults_to_env_then_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = _filled(tmp_path)
    code, output = _cli("list", "--what", "tenants", NASFLEET_REGISTRY=url)
    assert code == 0 and "acme" in output
    monkeypatch.delenv("NASFLEET_REGISTRY", raising=False)
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, output = _cli("list", "--what", "tenants")
    assert code == 2 and "nasfleet-registry.db" in output
    with Registry(DEFAULT_REGISTRY_URL) as registry:
        registry.create_tenant("local")
    code, output = _cli("list", "--what", "tenants")
    assert code == 0 and "local" in output and (here / "nasfleet-registry.db").is_file()
