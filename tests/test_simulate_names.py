"""``nasfleet simulate --name``: a run has a name, and the same command with it resumes the run.

The real command, three times on one SQLite registry (a tiny round: 2 devices, budget 4, 2 rounds, one
local epoch, one worker): the first run searches and stores reports tagged with the run and its rounds;
the second, with the same name, reuses every finished job (no new job, nothing scored again) and still
trains and reports, under a training time cap so short that no epoch completes; the third, with another
budget, refuses each device naming the setting that differs.
Flower's state goes to a temporary ``FLWR_HOME``, with telemetry and update checks off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.server.federation.names import MAX_RUN_NAME, device_job_name
from nasfleet.server.registry import Registry
from nasfleet.server.registry.checks import NAME_LENGTH

NAME = "nightly"
TINY = [
    "--clients",
    "2",
    "--rounds",
    "2",
    "--train-epochs",
    "1",
    "--local-workers",
    "1",
    "--probe-batch",
    "8",
]


@dataclass(frozen=True)
class Run:
    """One ``nasfleet simulate`` run: its exit status, its output, and the registry afterwards."""

    code: int
    output: str
    export: dict[str, Any]

    def scored(self) -> int:
        """Evaluations a worker scored (not answered from the cache)."""
        return sum(1 for row in self.export["evaluations"] if not row["cached"])


def _simulate(url: str, home: Path, budget: int, *extra: str) -> Run:
    command = [sys.executable, "-m", "nasfleet.cli", "simulate", *TINY, "--budget", str(budget),
               "--registry", url, "--name", NAME, *extra]  # fmt: skip
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1", "COLUMNS": "1000"}  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    with Registry(url) as registry:
        export = registry.export()
    return Run(done.returncode, " ".join((done.stdout + done.stderr).split()), export)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run, Run]:
    directory = tmp_path_factory.mktemp("named-run")
    url = f"sqlite:///{directory / 'registry.db'}"
    capped = ("--train-max-seconds", "0.001")  # the first batch always trains; no later one starts
    return (_simulate(url, directory, 4), _simulate(url, directory, 4, *capped), _simulate(url, directory, 6))


def test_the_same_name_again_reuses_every_search_and_scores_nothing(runs: tuple[Run, Run, Run]) -> None:
    first, second, _ = runs
    assert first.code == 0, first.output
    assert second.code == 0, second.output
    names = sorted(job["name"] for job in first.export["jobs"])
    assert names[:2] == [f"{NAME}.device-0", f"{NAME}.device-1"]
    tiers = {device["name"]: device["tier"] for device in first.export["devices"]}
    assert names[2:] == sorted(f"{NAME}.shared-{tier}" for tier in set(tiers.values())), "one per tier"
    assert second.export["jobs"] == first.export["jobs"], "no new job, none changed"
    assert first.scored() > 0 and second.scored() == first.scored(), "nothing scored again"
    assert len(second.export["evaluations"]) == len(first.export["evaluations"])
    assert f"run {NAME}: rerun with --name {NAME} to resume" in second.output


def test_reports_carry_the_run_and_its_rounds(runs: tuple[Run, Run, Run]) -> None:
    first, second, _ = runs
    reports = first.export["reports"]
    shared = {job["id"] for job in first.export["jobs"] if job["name"].startswith(f"{NAME}.shared-")}
    assert {report["run"] for report in reports} == {NAME}
    by_device = {(r["device"], r["round"], r["job_id"] in shared) for r in reports}
    assert by_device == {(device, round_number, shared_job) for device in ("device-0", "device-1")
                         for round_number, shared_job in ((1, False), (2, False), (1, True))}  # fmt: skip
    # the rerun trained and reported again: as many new reports, tagged alike, round 1's on the same SubNets
    again = second.export["reports"][len(reports) :]
    assert sorted(_tags(again)) == sorted(_tags(reports))
    assert sorted(_tags(again, 1)) == sorted(_tags(reports, 1))


def test_reports_keep_the_epochs_done_and_the_time_cap_reaches_the_devices(
    runs: tuple[Run, Run, Run],
) -> None:
    first, second, _ = runs
    reports = first.export["reports"]
    again = second.export["reports"][len(reports) :]
    assert reports and len(again) == len(reports)
    assert [r["epochs_done"] for r in reports] == [1] * len(reports), "--train-epochs 1, no cap reached"
    assert [r["epochs_done"] for r in again] == [0] * len(again), "capped after the first batch"


def _tags(reports: list[dict[str, Any]], round_number: int | None = None) -> list[tuple[Any, ...]]:
    """Each report's run, round and job; with *round_number*, that round's only, with their archs."""
    if round_number is None:
        return [(r["run"], r["round"], r["job_id"]) for r in reports]
    return [(r["job_id"], r["device"], r["arch"]) for r in reports if r["round"] == round_number]


def test_another_budget_under_the_same_name_refuses_each_device_naming_it(runs: tuple[Run, Run, Run]) -> None:
    _, second, third = runs
    assert third.code == 1, third.output
    assert "2 device(s) failed" in third.output
    for device in ("device-0", "device-1"):
        assert f"{device}: error: name '{NAME}.{device}' is job " in third.output
    assert third.output.count("stored with other settings (budget: stored 4, asked 6)") == 2
    assert third.export["jobs"] == second.export["jobs"] and third.scored() == second.scored()
    assert len(third.export["reports"]) == len(second.export["reports"]), "nothing trained or reported"


def test_a_bad_name_is_a_usage_error_before_anything_starts() -> None:
    for name in ("a b", "x" * (MAX_RUN_NAME + 1)):
        result = CliRunner().invoke(app, ["simulate", "--name", name], env={"COLUMNS": "1000"})
        assert result.exit_code == 2
        message = f"Invalid value for --name: name must be 1-{MAX_RUN_NAME} characters of [A-Za-z0-9_.-]"
        assert message in " ".join(result.output.replace("│", " ").split()), result.output


def test_a_device_name_too_long_for_the_job_name_is_replaced_by_its_digest() -> None:
    run, device = "r" * MAX_RUN_NAME, "d" * 40
    assert device_job_name(NAME, "device-7") == f"{NAME}.device-7"
    long = device_job_name(run, device)
    assert len(long) <= NAME_LENGTH and long.startswith(f"{run}.") and device not in long
    assert long == device_job_name(run, device) != device_job_name(run, device + "x"), "stable, distinct"
