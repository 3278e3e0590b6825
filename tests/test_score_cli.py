"""``nasfleet score`` and ``nasfleet bench correlation``, driven as a user would, on test proxies."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_engine import NotFinite, only_test_proxies
from typer.testing import CliRunner

import nasfleet.bench
from nasfleet.cli import app
from nasfleet.proxies.base import PROXIES, Proxy
from nasfleet.proxies.probe import Probe
from nasfleet.spaces import get_space

runner = CliRunner()
SPACE = get_space("nb201")
SMALL = ("--data", "synthetic:64", "--batch-size", "8")
ACCURACY_COLUMNS = ("cifar10_test", "cifar10_valid", "cifar100_test", "imagenet16_test")


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    with only_test_proxies():
        yield


def _run(*args: str) -> tuple[int, str]:
    """Exit code and output, with rich's error-box borders and line wraps collapsed to single spaces."""
    result = runner.invoke(app, list(args))
    return result.exit_code, re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


def _distinct_archs(n: int, seed: int = 0) -> list[str]:
    rng, archs = np.random.default_rng(seed), dict[str, None]()
    while len(archs) < n:
        archs.setdefault(SPACE.encode(SPACE.sample(rng)))
    return list(archs)


@pytest.fixture
def archs_file(tmp_path: Path) -> Path:
    path = tmp_path / "archs.txt"
    path.write_text("# five archs\n\n" + "\n".join(_distinct_archs(5)) + "\n")
    return path


def _score(archs: Path, out: Path, *options: str) -> tuple[int, str]:
    return _run("score", "--archs", str(archs), "--out", str(out), *SMALL, *options)


# -- score -----------------------------------------------------------------------------------------------
def test_score_writes_raw_values_aggregates_and_seconds(tmp_path: Path, archs_file: Path) -> None:
    out = tmp_path / "scores.csv"
    code, output = _score(archs_file, out, "--proxies", "t_random,t_sum")
    assert code == 0, output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["arch", "t_random", "t_params", "t_loss", "t_sum", "seconds"]
    assert [row["arch"] for row in rows] == _distinct_archs(5)
    for row in rows:
        assert float(row["t_params"]) == SPACE.cost(SPACE.decode(row["arch"])).params
        assert float(row["seconds"]) > 0
    sums = [float(row["t_sum"]) for row in rows]
    assert min(sums) >= 2 / 5 and max(sums) <= 2.0  # two normalized ranks in (0, 1] each


def test_score_is_reproducible_and_unlabeled_leaves_out_label_proxies(
    tmp_path: Path, archs_file: Path
) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert _score(archs_file, first, "--proxies", "all", "--unlabeled", "--seed", "3")[0] == 0
    assert _score(archs_file, second, "--proxies", "all", "--unlabeled", "--seed", "3")[0] == 0
    header, *rows = list(csv.reader(first.open()))
    assert header == ["arch", "t_codes", "t_params", "t_random", "t_sum", "seconds"]
    again = list(csv.reader(second.open()))[1:]
    assert [row[:-1] for row in rows] == [row[:-1] for row in again]  # all but the seconds


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--proxies", "t_params,t_nope"), "Invalid value for --proxies: proxies must name registered"),
        (("--proxies", "t_nope"), "but got 't_nope'; proxies: t_codes, t_loss, t_params, t_random"),
        (("--proxies", "t_loss", "--unlabeled"), "proxy 't_loss' needs labels"),
        (("--proxies", "t_params", "--batch-size", "65"), "batch_size must lie in [2, 64], but got 65"),
        (("--proxies", "t_params", "--data", "mnist"), "Invalid value for --data: dataset spec must be"),
        (("--proxies", "t_params", "--device", "tpu"), "device must be one of ('cpu', 'cuda')"),
    ],
)
def test_score_rejects_bad_options_and_writes_nothing(
    tmp_path: Path, archs_file: Path, options: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "scores.csv"
    code, output = _score(archs_file, out, *options)
    assert code == 2 and message in output, output
    assert not out.exists()


def test_a_bad_arch_line_is_named_and_nothing_is_written(tmp_path: Path, archs_file: Path) -> None:
    archs_file.write_text(archs_file.read_text() + "|nor_conv_3x3~0|+|bad|\n")
    out = tmp_path / "scores.csv"
    out.write_text("previous results\n")
    code, output = _score(archs_file, out, "--proxies", "t_params")
    assert code == 2 and "Invalid value for --archs: line 8: nb201:" in output, output
    assert out.read_text() == "previous results\n"


def test_a_non_finite_value_fails_the_run_and_writes_nothing(
    tmp_path: Path, archs_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PROXIES, NotFinite.name, NotFinite)
    out = tmp_path / "scores.csv"
    code, output = _score(archs_file, out, "--proxies", "t_params,t_nan")
    assert code == 1 and "scoring failed, nothing written: arch |" in output, output
    assert "proxy 't_nan' must be finite, but got nan" in output
    assert not out.exists()


# -- bench correlation -----------------------------------------------------------------------------------
class FewerParams(Proxy):
    """Minus the parameter count, declared lower-is-better: in its better direction it is the size again."""

    name = "t_fewer"
    higher_is_better = False

    def compute(self, probe: Probe) -> float:
        return -float(sum(p.numel() for p in probe.network.parameters()))


def _ground_truth(path: Path, archs: list[str]) -> Path:
    """A fake table: cifar10_test rises with the parameter count, cifar10_valid falls with it."""
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["index", "arch_str", *ACCURACY_COLUMNS])
        for index, arch in enumerate(archs):
            params = SPACE.cost(SPACE.decode(arch)).params
            writer.writerow([index, arch, 50 + params / 1e4, 90 - params / 1e4, *rng.uniform(0, 70, 2)])
    return path


def _bench(truth: Path, out: Path, *options: str) -> tuple[int, str]:
    return _run(
        "bench", "correlation", "--ground-truth", str(truth), "--column", "cifar10_test", "--sample", "6",
        "--seed", "1", "--out", str(out), "--timing-sample", "2", *SMALL, *options,
    )  # fmt: skip


def test_bench_measures_a_monotone_proxy_as_perfectly_correlated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PROXIES, FewerParams.name, FewerParams)
    truth = _ground_truth(tmp_path / "truth.csv", _distinct_archs(9))
    out = tmp_path / "bench"
    code, output = _bench(truth, out, "--proxies", "t_params,t_random,t_sum,t_fewer")
    assert code == 0, output
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    assert {"command", "n", "batch_size", "seed", "data", "column", "timing", "results"} <= set(report)
    assert report["command"].startswith("nasfleet bench correlation --out ")
    assert (report["n"], report["batch_size"], report["seed"], report["data"]) == (6, 8, 1, "synthetic:64")
    results = {result["name"]: result for result in report["results"]}
    assert set(results) == {"t_params", "t_random", "t_loss", "t_sum", "t_fewer"}
    for name in ("t_params", "t_fewer"):
        assert results[name]["spearman"] == pytest.approx(1.0)
        assert results[name]["kendall"] == pytest.approx(1.0)
    assert results["t_fewer"]["higher_is_better"] is False
    assert results["t_params"]["by_column"]["cifar10_valid"]["spearman"] == pytest.approx(-1.0)
    assert results["t_sum"]["kind"] == "aggregate" and results["t_sum"]["ratio_to_forward_backward"] > 0
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 6 and list(rows[0])[-5:] == ["seconds", *ACCURACY_COLUMNS]
    assert all(float(row["t_fewer"]) == -float(row["t_params"]) for row in rows)  # raw values, not negated
    assert "| t_params | proxy | 1.000 | 1.000 |" in (out / "report.md").read_text()
    assert (out / "spearman.png").stat().st_size > 0 and (out / "scatter_t_params.png").is_file()


def test_bench_reads_accuracies_only_after_scoring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    truth = _ground_truth(tmp_path / "truth.csv", _distinct_archs(9))
    events: list[str] = []
    for name in ("score_resumably", "add_aggregates", "time_proxies_in_isolation", "read_accuracies"):
        original = getattr(nasfleet.bench, name)

        def recorded(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            events.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(nasfleet.bench, name, recorded)
    assert _bench(truth, tmp_path / "bench", "--proxies", "t_params")[0] == 0
    # add_aggregates runs twice: over every scored arch (scores.csv) and over the one repeat's sample
    assert events == [
        "score_resumably", "add_aggregates", "add_aggregates", "time_proxies_in_isolation", "read_accuracies"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--column", "accuracy"), "column must be one of the accuracy columns"),
        (("--sample", "10"), "sample must lie in [3, 9] (rows of the file), but got 10"),
        (("--proxies", "t_loss", "--unlabeled"), "proxy 't_loss' needs labels"),
    ],
)
def test_bench_rejects_bad_options_and_writes_nothing(
    tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    truth = _ground_truth(tmp_path / "truth.csv", _distinct_archs(9))
    out = tmp_path / "bench"
    code, output = _bench(truth, out, *options)
    assert code == 2 and message in output, output
    assert not out.exists()
