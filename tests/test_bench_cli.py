"""``nasfleet bench correlation`` end to end on a tiny ground truth: repeats, the noise probe, resuming."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_engine import only_test_proxies
from test_score_cli import _distinct_archs, _ground_truth
from typer.testing import CliRunner

from nasfleet.bench_store import PARTIAL, SETTINGS, TIMING
from nasfleet.cli import app
from nasfleet.cli.inputs import noise_source, probe_batch

runner = CliRunner()


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    with only_test_proxies():
        yield


# -- the noise probe batch -------------------------------------------------------------------------------
def test_noise_names_the_dataset_it_takes_its_shape_and_labels_from() -> None:
    assert noise_source("noise") == "cifar10"
    assert noise_source("noise:synthetic:64") == "synthetic:64"
    assert noise_source("cifar10") is None and noise_source("synthetic") is None


def test_the_noise_batch_is_seeded_standard_normal_in_the_datasets_shape() -> None:
    batch = probe_batch("noise:synthetic:64", 64, seed=3, labeled=True)
    assert tuple(batch.inputs.shape) == (64, 3, 32, 32) and batch.num_classes == 10
    assert batch.labels is not None and batch.labels.shape == (64,)
    assert np.bincount(batch.labels.numpy(), minlength=10).max() <= 8  # in proportion to the histogram
    values = batch.inputs.double()
    assert abs(values.mean().item()) < 0.01 and abs(values.std().item() - 1) < 0.01
    again = probe_batch("noise:synthetic:64", 64, seed=3, labeled=True)
    assert again.labels is not None and torch.equal(batch.labels, again.labels)
    assert torch.equal(batch.inputs, again.inputs)
    other = probe_batch("noise:synthetic:64", 64, seed=4, labeled=True)
    assert not torch.equal(batch.inputs, other.inputs)
    real = probe_batch("synthetic:64", 64, seed=3, labeled=True)
    assert not torch.equal(batch.inputs, real.inputs)
    assert probe_batch("noise:synthetic:64", 8, seed=3, labeled=False).labels is None


# -- the command -----------------------------------------------------------------------------------------
def _bench(truth: Path, out: Path, *options: str) -> tuple[int, str]:
    result = runner.invoke(app, [
        "bench", "correlation", "--ground-truth", str(truth), "--out", str(out), "--sample", "5",
        "--repeats", "2", "--seed", "1", "--data", "noise:synthetic:64", "--batch-size", "8",
        "--proxies", "t_params,t_random,t_sum", "--timing-sample", "1", *options,
    ])  # fmt: skip
    return result.exit_code, re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


def _report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def test_bench_measures_repeats_on_noise_and_resumes_the_same_command(tmp_path: Path) -> None:
    truth, out = _ground_truth(tmp_path / "truth.csv", _distinct_archs(8)), tmp_path / "bench"
    code, output = _bench(truth, out)
    assert code == 0, output
    report = _report(out)
    assert (report["sample"], report["n"], report["repeats"], report["repeat_seeds"]) == (5, 5, 2, [1, 2])
    assert 5 <= report["distinct_archs"] <= 8 and report["already_scored_at_start"] == 0
    assert report["probe"] == {
        "inputs": "noise", "source": "synthetic:64", "input_shape": [3, 32, 32], "num_classes": 10
    }  # fmt: skip
    assert report["top_fraction"] == 0.05 and report["top_count"] == 1
    params = next(r for r in report["results"] if r["name"] == "t_params")
    for column in ("cifar10_test", "cifar100_test", "imagenet16_test"):
        assert set(params["by_column"][column]) == {"spearman", "kendall", "precision_top", "ndcg_top"}
    assert params["by_column"]["cifar10_test"]["spearman"] == pytest.approx(1.0)
    assert params["std_by_column"]["cifar10_test"]["spearman"] == pytest.approx(0.0)
    assert params["precision_top"] == 1.0 and len(params["per_repeat"]) == 2
    text = (out / "report.md").read_text()
    assert "2 repeats of N = 5" in text and "Gaussian noise N(0, 1)" in text
    assert "| t_params | proxy | 1.000 ± 0.000 | 1.000 ± 0.000 | 1.000 ± 0.000 | 1.000 ± 0.000 |" in text
    assert {PARTIAL, SETTINGS, TIMING, "scores.csv", "spearman.png"} <= {p.name for p in out.iterdir()}
    scores = (out / "scores.csv").read_text()

    code, output = _bench(truth, out, "--processes", "2")  # the same run: nothing left to score
    assert code == 0, output
    assert _report(out)["already_scored_at_start"] == report["distinct_archs"]
    assert _strip_seconds(scores) == _strip_seconds((out / "scores.csv").read_text())


def _strip_seconds(csv_text: str) -> list[list[str]]:
    rows = [line.split(",") for line in csv_text.splitlines()]
    seconds = rows[0].index("seconds")
    return [row[:seconds] + row[seconds + 1 :] for row in rows]


def test_bench_refuses_to_resume_with_another_setting(tmp_path: Path) -> None:
    truth, out = _ground_truth(tmp_path / "truth.csv", _distinct_archs(8)), tmp_path / "bench"
    assert _bench(truth, out)[0] == 0
    code, output = _bench(truth, out, "--data", "synthetic:64")
    assert code == 2, output
    assert "started with data = 'noise:synthetic:64', but this run has data = 'synthetic:64'" in output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--sample", "many"), "must be 'all' or an integer in [3, 1000000], but got 'many'"),
        (("--sample", "all"), "repeats must be 1 when the sample is the whole file (8 rows)"),
        (("--repeats", "0"), "Invalid value for '--repeats'"),
    ],
)
def test_bench_rejects_a_bad_sample_or_repeats_before_writing(
    tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    truth, out = _ground_truth(tmp_path / "truth.csv", _distinct_archs(8)), tmp_path / "bench"
    code, output = _bench(truth, out, *options)
    assert code == 2 and message in output, output
    assert not out.exists()


def test_bench_scores_every_arch_of_the_file_with_sample_all(tmp_path: Path) -> None:
    truth, out = _ground_truth(tmp_path / "truth.csv", _distinct_archs(6)), tmp_path / "bench"
    code, output = _bench(truth, out, "--sample", "all", "--repeats", "1", "--proxies", "t_params")
    assert code == 0, output
    report = _report(out)
    assert (report["sample"], report["n"], report["distinct_archs"]) == ("all", 6, 6)
    assert "all 6 architectures" in (out / "report.md").read_text()
