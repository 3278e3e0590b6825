"""``nasfleet search`` through the service: a job in the registry, run by the orchestrator, scored by real
Celery worker processes on the real-data probe batch of ``--data``; embedded (the default) and
distributed (Redis broker, PostgreSQL registry, a ``nasfleet worker`` started apart).

Small on purpose: ``synthetic:32`` data (3x32x32 images, 10 classes), probe batches of 4, budgets of 6.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from service_support import child_process, worker_command
from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.data.datasets import load_dataset
from nasfleet.proxies.base import revised
from nasfleet.proxies.fgnas import FeatureCorrelation
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.search import SearchConfig, make_strategy, run_search
from nasfleet.server.registry import Registry
from nasfleet.server.service.tasks import ScoringSpec
from nasfleet.spaces import get_space

EVOLUTION = {"population_size": 4, "sample_size": 2}
SEARCH = (
    "search", "--strategy", "evolution", "--strategy-config", json.dumps(EVOLUTION), "--data", "synthetic:32",
    "--batch-size", "4", "--budget", "6", "--ask", "3", "--seed", "2",
)  # fmt: skip
REDIS_DB = 12
runner = CliRunner()


def _search(out: Path, *options: str) -> dict[str, Any]:
    result = runner.invoke(app, [*SEARCH, "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _scored_by(registry_url: str, data: dict[str, Any]) -> tuple[set[str], int]:
    """The workers that scored the job's evaluations and how many the cache answered, after checking the
    job is done and complete."""
    with Registry(registry_url) as registry:
        job = registry.get_job(data["service"]["job_id"])
        assert job is not None and job.status == "done" and job.evaluations_done == 6
        assert job.options["probe_data"] == "synthetic:32" and job.options["batch_size"] == 4
        evaluations = registry.evaluations(job.id)
    assert sorted(e.arch for e in evaluations) == sorted(entry["arch"] for entry in data["archive"])
    return {e.worker for e in evaluations if not e.cached}, sum(e.cached for e in evaluations)


def test_search_scores_real_data_on_celery_workers_and_an_identical_search_comes_from_the_cache(
    tmp_path: Path,
) -> None:
    # Prepare: the same search in process, on the same real-data probe batch (the library's run_search)
    space = get_space("nb201")
    batch = ProbeBatch.from_dataset(load_dataset("synthetic:32"), 4, seed=2, labeled=True)
    config = SearchConfig("nb201", "evolution", 6, seed=2, ask_size=3, strategy_config=EVOLUTION)
    expected = run_search(space, make_strategy(space, config, batch), batch, config, progress=False)
    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    # Execute: twice, for two tenants
    first = _search(tmp_path / "first.json", "--registry", registry, "--tenant", "acme")
    second = _search(tmp_path / "second.json", "--registry", registry, "--tenant", "globex")
    # Assert: the in-process search's archive, order and best, scored by worker processes
    assert first["best"]["arch"] == expected.best_arch
    assert [entry["arch"] for entry in first["archive"]] == [entry.arch for entry in expected.archive]
    for entry, reference in zip(first["archive"], expected.archive, strict=True):
        assert entry["values"] == pytest.approx(reference.values, rel=1e-5)
    assert first["probe"] == {"batch_size": 4, "input_shape": [3, 32, 32], "num_classes": 10, "labeled": True}
    service = first["service"]
    assert (service["mode"], service["tenant"], service["scored"]) == ("embedded", "acme", 6)
    assert _scored_by(registry, first) == (set(service["workers"]), 0) and service["workers"]
    assert all(name.rsplit(":", 1)[1].isdigit() for name in service["workers"]), "host:pid of a pool process"
    # ... and the second, identical search is answered from the cache: nothing scored, the same search
    assert (second["service"]["scored"], second["service"]["cache_hits"]) == (0, 6)
    assert second["timing"]["cached_evaluations"] == 6 and _scored_by(registry, second) == (set(), 6)
    for key in ("best", "history", "strategy_state", "config"):
        assert second[key] == first[key], key


def test_the_probe_data_is_part_of_the_cache_key_only_when_set() -> None:
    synthetic = ScoringSpec("nb201", ("fg_fi",), 4, 0)
    real = ScoringSpec("nb201", ("fg_fi",), 4, 0, data="cifar10")
    assert "data" not in synthetic.to_wire(), "synthetic-probe digests are those of earlier versions"
    assert ScoringSpec.from_wire(real.to_wire()) == real
    assert (
        len(
            {
                synthetic.digest(),
                real.digest(),
                ScoringSpec("nb201", ("fg_fi",), 4, 0, data="digits").digest(),
            }
        )
        == 3
    )


@pytest.mark.timeout(240)
def test_search_runs_on_a_remote_worker_through_redis_and_postgresql(
    tmp_path: Path, redis_broker: str, postgres_url: str
) -> None:
    # Prepare: `nasfleet worker` started apart (as on another machine), on a Redis database of its own
    with child_process(worker_command(redis_broker, postgres_url), tmp_path / "worker.log") as proc:
        # Execute: the search starts no worker of its own; it waits for the worker's first beat (a worker
        # importing torch on a loaded machine has taken over the default 10 s)
        data = _search(
            tmp_path / "remote.json",
            "--broker",
            redis_broker,
            "--registry",
            postgres_url,
            "--local-workers",
            "0",
            "--wait-for-workers",
            "120",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    # Assert
    service = data["service"]
    assert (service["mode"], service["local_workers"], service["scored"]) == ("distributed", 0, 6)
    assert _scored_by(postgres_url, data) == (set(service["workers"]), 0) and service["workers"]
    assert data["best"]["arch"] in {entry["arch"] for entry in data["archive"]}


def test_a_revised_proxy_changes_the_cache_key_of_the_specs_that_use_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare
    uses_fc, without_fc = ScoringSpec("nb201", ("fgnas",), 4, 0), ScoringSpec("nb201", ("fg_fi",), 4, 0)
    before = uses_fc.digest(), without_fc.digest()
    assert revised(["fg_fi", "fg_fc"]) == {"fg_fc": FeatureCorrelation.revision}
    # Execute: a new definition of S_FC
    monkeypatch.setattr(FeatureCorrelation, "revision", FeatureCorrelation.revision + 1)
    # Assert: its old values are no longer found; the other spec's are
    assert uses_fc.digest() != before[0]
    assert without_fc.digest() == before[1]
