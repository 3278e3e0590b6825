"""Every table the command line prints fits 100 columns, and nothing is lost: ids and archs are shortened
in tables, whole in ``--format json``; the round's shared-baseline job is marked. Through the real
commands on a real SQLite registry whose jobs the real round code submitted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.display import compact, short_arch
from nasfleet.protocol import messages
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.round import DeviceOutcome, RoundRecorder, tier_of
from nasfleet.server.registry import Registry, ReportRecord, ResultRecord

ARCHS = (
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|",
)
SHAPE, CLASSES = (1, 8, 8), 10
WIDE = {"COLUMNS": "240"}  # a wide terminal: the tables still stop at 100


def _run(*args: str, env: dict[str, str] = WIDE) -> str:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def _fits(text: str) -> list[str]:
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= 100, max(lines, key=len)
    return lines


def _outcome(node: int, name: str, tier: str) -> DeviceOutcome:
    chars = messages.DataCharacteristics(SHAPE, CLASSES, 100, (10,) * CLASSES, True)
    return DeviceOutcome(
        node, identity=messages.DeviceIdentity("acme-lab", name), characteristics=chars,
        constraints=messages.ResourceConstraints(200_000, 1_562_500, 100.0, 1.0),
        profile=messages.DeviceProfile(tier, 1e5, 0.5, 1.0),
    )  # fmt: skip


@pytest.fixture
def round_registry(tmp_path: Path) -> tuple[str, RoundRecorder, list[DeviceOutcome], dict[str, str]]:
    """Two devices' jobs (of two tiers) and their tiers' shared baselines', submitted by the round's own
    code, with results and reports; the jobs' long archs are what made the tables wrap."""
    config = RoundConfig(registry=f"sqlite:///{tmp_path / 'registry.db'}", budget=4)
    recorder = RoundRecorder(config.registry)
    outcomes = [_outcome(1, "pi-kitchen", "micro"), _outcome(2, "orin-garage", "edge-gpu")]
    for outcome in outcomes:
        recorder.register(outcome, config)
    shared = recorder.submit_shared(outcomes, config)
    assert set(shared) == {"micro", "edge-gpu"}, "one shared baseline per tier"
    with Registry(config.registry) as registry:
        jobs = [(o.job_id, o.name) for o in outcomes] + [(shared[tier_of(o)], o.name) for o in outcomes]
        for i, (job_id, device) in enumerate(jobs):
            arch = ARCHS[i % 2]
            registry.set_result(ResultRecord(job_id, arch, 1.2345678901, {"fg_fi": 0.5}, 123_456, 7_890_123))
            registry.add_report(ReportRecord(job_id, arch, 0.9512, 0.1234, 3.0, 90, 10, 1.5, 2.25, device))
    return config.registry, recorder, outcomes, shared


def test_every_registry_listing_fits_100_columns_and_json_keeps_every_value(
    round_registry: tuple[str, RoundRecorder, list[DeviceOutcome], dict[str, str]],
) -> None:
    # Prepare
    url, _, outcomes, shared_jobs = round_registry
    # Execute
    tables = {what: _fits(_run("registry", "list", "--registry", url, "--what", what))
              for what in ("tenants", "devices", "jobs", "results", "reports")}  # fmt: skip
    jobs = json.loads(_run("registry", "list", "--registry", url, "--format", "json"))
    results = json.loads(_run("registry", "list", "--registry", url, "--what", "results", "--format", "json"))
    # Assert: short ids and archs in tables, one line per row; the whole values in JSON
    for shared in shared_jobs.values():
        shared_rows = [line for line in tables["jobs"] if line.startswith(shared[:8] + " ")]
        assert len(shared_rows) == 1 and "(shared baseline)" in shared_rows[0]
        assert shared not in shared_rows[0]
    for outcome in outcomes:
        (row,) = [line for line in tables["jobs"] if line.startswith(outcome.job_id[:8] + " ")]
        assert outcome.name in row and "(shared baseline)" not in row
    for arch in ARCHS:
        rows = [line for line in tables["results"] if short_arch(arch) in line]
        assert rows and all("123k" in row and "7.89M" in row for row in rows), tables["results"]
        assert any(short_arch(arch) in line for line in tables["reports"])
    assert short_arch(ARCHS[0]) != short_arch(ARCHS[1]), "same head, different digest"
    assert {job["id"] for job in jobs} == {o.job_id for o in outcomes} | set(shared_jobs.values())
    assert {r["arch"] for r in results} == set(ARCHS) and {r["params"] for r in results} == {123_456}
    by_id = {job["id"]: job for job in jobs}
    for shared in shared_jobs.values():
        assert by_id[shared]["options"]["role"] == "shared-baseline" and by_id[shared]["device"] is None


def test_registry_show_fits_100_columns_takes_a_prefix_and_marks_the_shared_baseline(
    round_registry: tuple[str, RoundRecorder, list[DeviceOutcome], dict[str, str]],
) -> None:
    url, _, _, shared_jobs = round_registry
    shared = shared_jobs["micro"]

    lines = _fits(_run("registry", "show", shared[:8], "--registry", url))

    text = "\n".join(lines)
    assert f"job {shared}" in text and "(shared baseline)" in text
    assert "characteristics" in text and '"characteristics":' not in text, "the hash, not the arrays"
    assert (
        json.loads(_run("registry", "show", shared[:8], "--registry", url, "--format", "json"))["job"]["id"]
        == shared
    )


def test_the_rounds_summary_table_fits_100_columns_with_one_line_per_device(
    round_registry: tuple[str, RoundRecorder, list[DeviceOutcome], dict[str, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: a wide terminal, and the devices as the round leaves them
    url, _, outcomes, shared_jobs = round_registry
    monkeypatch.setenv("COLUMNS", "240")
    recorder = RoundRecorder(url)
    with Registry(url) as registry:
        results = {
            job.id: r for job in registry.list_jobs() if (r := registry.get_result(job.id)) is not None
        }
    for outcome in outcomes:
        result = results[outcome.job_id]
        outcome.settle(result.arch, result.params, result.flops)
        outcome.report = messages.TrainingReport(
            outcome.job_id, result.arch, 0.9123, 0.2, 3.0, 4.5, 90, 10, 5
        )
        shared = shared_jobs[tier_of(outcome)]
        outcome.shared_report = messages.TrainingReport(
            shared, results[shared].arch, 0.9, 0.2, 3.0, 4.0, 90, 10, 5
        )
    recorder.shared_jobs = shared_jobs
    capsys.readouterr()
    # Execute
    recorder.finish(outcomes, results)
    # Assert
    printed = capsys.readouterr().out
    lines = _fits(printed)
    for outcome in outcomes:
        (row,) = [line for line in lines if outcome.name in line]
        assert short_arch(outcome.report.arch if outcome.report else "") in row
        assert (
            f"{outcome.profile.tier if outcome.profile else ''}: 200k/1.56M/100" in row
            and f"{compact(123_456)}/{compact(7_890_123)}" in row
        )
        assert "91.2/91.2/90.0" in row
    caption = " ".join(line.strip() for line in lines if "shared baselines:" in line or "job " in line)
    assert all(f"{tier} job {job[:8]}" in caption for tier, job in shared_jobs.items()), caption


def test_strategies_list_fits_100_columns() -> None:
    lines = _fits(_run("strategies", "list"))

    assert lines[0].split() == ["name", "origin", "description"]
    assert {"annealing", "cmaes", "evolution", "ga", "random"} <= {line.split()[0] for line in lines[1:]}
