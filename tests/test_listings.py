"""Every listing takes ``--format table|json``: JSON carries every field (full arch strings, unrounded
numbers), through the real commands on a real SQLite registry."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.server.registry import Registry, ResultRecord

ARCH = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|"


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.stdout


def _registry(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry(url) as registry:
        registry.create_tenant("acme")
        registry.create_api_key("acme")
        job = registry.create_job("acme", space="nb201", strategy="random", characteristics_hash="c" * 64,
                                  budget=20)  # fmt: skip
        registry.set_result(ResultRecord(job.id, ARCH, 1.2345678901, {"fg_fi": 0.5}, 123_456, 7_890_123, []))
    return url


def test_registry_list_as_json_has_every_field_and_the_full_arch(tmp_path: Path) -> None:
    url = _registry(tmp_path)
    jobs = json.loads(_run("registry", "list", "--registry", url, "--format", "json"))
    assert [job["tenant"] for job in jobs] == ["acme"] and len(jobs[0]["id"]) == 32
    assert "strategy_state" not in jobs[0] and jobs[0]["budget"] == 20
    assert jobs[0]["created_at"].startswith("20")  # ISO 8601
    results = json.loads(_run("registry", "list", "--registry", url, "--what", "results", "--format", "json"))
    assert results[0]["arch"] == ARCH and results[0]["score"] == 1.2345678901
    assert (
        json.loads(_run("registry", "list", "--registry", url, "--what", "reports", "--format", "json")) == []
    )


def test_registry_list_as_a_table_is_the_default(tmp_path: Path) -> None:
    table = _run("registry", "list", "--registry", _registry(tmp_path), "--what", "tenants")
    assert "tenants (1)" in table and "acme" in table


def test_tenants_and_strategies_list_as_json(tmp_path: Path) -> None:
    url = _registry(tmp_path)
    (tenant,) = json.loads(_run("tenants", "list", "--registry", url, "--format", "json"))
    assert tenant["tenant"] == "acme" and len(tenant["active_keys"]) == 1 and tenant["revoked_keys"] == []
    assert _run("tenants", "list", "--registry", url).startswith("acme\tcreated ")
    strategies = json.loads(_run("strategies", "list", "--format", "json"))
    assert {"random", "evolution", "annealing", "ga", "cmaes"} <= {s["name"] for s in strategies}


def test_an_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["registry", "list", "--registry", _registry(tmp_path), "--format", "yaml"]
    )
    assert result.exit_code == 2
    assert "Invalid value for '--format': 'yaml' is not one of 'table', 'json'" in " ".join(
        result.output.split()
    )
