"""Resuming the correlation benchmark: what is scored once stays scored, and only the same run resumes."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_engine import SPACE, only_test_proxies

from nasfleet.bench import (
    CorrelationRun,
    draw_samples,
    read_arch_strings,
    run_correlation,
    sample_arch_strings,
)
from nasfleet.bench_store import PARTIAL, ResumeError, open_checkpoint
from nasfleet.data.datasets import synthetic_dataset
from nasfleet.proxies.engine import time_proxies_in_isolation
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.proxies.scorer import score_one

COLUMNS = ("cifar10_test", "cifar100_test", "imagenet16_test")
PROXIES = "t_params,t_random,t_sum"  # t_sum reads t_params and t_loss


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    with only_test_proxies():
        yield


def _batch(seed: int = 0) -> ProbeBatch:
    return ProbeBatch.from_dataset(synthetic_dataset(32, input_shape=(3, 8, 8)), 8, seed=seed)


@pytest.fixture
def truth(tmp_path: Path) -> Path:
    """Nine distinct archs of the tiny test space; cifar10_test rises with the parameter count."""
    rng, archs = np.random.default_rng(0), dict[str, None]()
    while len(archs) < 9:
        archs.setdefault(SPACE.encode(SPACE.sample(rng)))
    path = tmp_path / "truth.csv"
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["index", "arch_str", *COLUMNS])
        for index, arch in enumerate(archs):
            params = SPACE.cost(SPACE.decode(arch)).params
            writer.writerow([index, arch, 50 + params / 1e3, *rng.uniform(0, 70, 2)])
    return path


def _run(truth: Path, **changes: Any) -> CorrelationRun:
    run = CorrelationRun(
        SPACE, truth, "cifar10_test", 6, 1, "synthetic:32", _batch(), PROXIES, timing_sample=1, progress=False
    )
    return dataclasses.replace(run, **changes)


class Scorings:
    """Counts the archs `nasfleet.bench_store` scores in this process; raises KeyboardInterrupt (as a
    Ctrl-C would) instead of starting arch number ``interrupt_at``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count, self.interrupt_at = 0, 0
        original = score_one

        def counted(*args: Any) -> Any:
            if self.count + 1 == self.interrupt_at:
                raise KeyboardInterrupt
            self.count += 1
            return original(*args)

        monkeypatch.setattr("nasfleet.proxies.scorer.score_one", counted)


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def _values(path: Path) -> list[list[str]]:
    """The rows of a scores.csv without the wall times."""
    rows = _rows(path)
    seconds = rows[0].index("seconds")
    return [row[:seconds] + row[seconds + 1 :] for row in rows]


def _interrupted(run: CorrelationRun, out: Path, scorings: Scorings, after: int) -> None:
    scorings.interrupt_at = after + 1
    with pytest.raises(KeyboardInterrupt):
        run_correlation(run, out)
    scorings.interrupt_at = 0
    assert len(_rows(out / PARTIAL)) == 1 + after and not (out / "report.json").exists()


def test_a_resumed_run_scores_only_the_missing_archs_and_matches_an_uninterrupted_one(
    tmp_path: Path, truth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorings = Scorings(monkeypatch)
    _interrupted(_run(truth), tmp_path / "resumed", scorings, after=3)
    scorings.count = 0
    report = run_correlation(_run(truth), tmp_path / "resumed")
    assert scorings.count == 3 and report["already_scored_at_start"] == 3
    scorings.count = 0
    again = run_correlation(_run(truth), tmp_path / "resumed")  # complete: nothing left to score
    assert scorings.count == 0 and again["already_scored_at_start"] == 6
    run_correlation(_run(truth), tmp_path / "fresh")
    assert _values(tmp_path / "resumed" / "scores.csv") == _values(tmp_path / "fresh" / "scores.csv")
    assert [r["name"] for r in report["results"]][:1] == ["t_params"]
    assert report["results"][0]["by_column"]["cifar10_test"]["spearman"] == pytest.approx(1.0)


def test_a_run_resumed_on_two_workers_gives_the_same_values(
    tmp_path: Path, truth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupted(_run(truth), tmp_path / "resumed", Scorings(monkeypatch), after=2)
    run_correlation(_run(truth, workers=2), tmp_path / "resumed")
    monkeypatch.undo()
    with only_test_proxies():
        run_correlation(_run(truth), tmp_path / "fresh")
    assert _values(tmp_path / "resumed" / "scores.csv") == _values(tmp_path / "fresh" / "scores.csv")


def test_a_half_written_last_line_is_dropped_and_its_arch_scored_again(
    tmp_path: Path, truth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, scorings = tmp_path / "bench", Scorings(monkeypatch)
    _interrupted(_run(truth), out, scorings, after=2)
    with (out / PARTIAL).open("a") as stream:
        stream.write("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none")  # killed mid-write
    scorings.count = 0
    run_correlation(_run(truth), out)
    assert scorings.count == 4 and len(_rows(out / PARTIAL)) == 1 + 6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 2}, "started with seed = 1, but this run has seed = 2"),
        ({"proxies": "t_params,t_random"}, "started with proxies = "),
        ({"repeats": 2}, "started with repeats = 1, but this run has repeats = 2"),
        ({"sample": 7}, "started with sample = 6"),
        ({"data": "synthetic:33"}, "started with data = 'synthetic:32'"),
        ({"batch": _batch(seed=5)}, "started with probe_batch = "),
        ({"labeled": False, "proxies": "t_params"}, "started with labeled = True"),
    ],
)
def test_a_resume_with_another_setting_is_refused_and_leaves_the_checkpoint(
    tmp_path: Path, truth: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], message: str
) -> None:
    out = tmp_path / "bench"
    _interrupted(_run(truth), out, Scorings(monkeypatch), after=2)
    before = (out / PARTIAL).read_bytes()
    with pytest.raises(ResumeError, match="holds a run ") as refused:
        run_correlation(_run(truth, **change), out)
    assert message in str(refused.value) and "use another --out" in str(refused.value)
    assert (out / PARTIAL).read_bytes() == before


def test_the_isolation_timing_is_measured_once(
    tmp_path: Path, truth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = time_proxies_in_isolation

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["sample"])
        return original(*args, **kwargs)

    monkeypatch.setattr("nasfleet.bench.time_proxies_in_isolation", counted)
    first = run_correlation(_run(truth), tmp_path / "bench")
    second = run_correlation(_run(truth), tmp_path / "bench")
    assert calls == [1] and first["timing"] == second["timing"]
    run_correlation(_run(truth, timing_sample=2), tmp_path / "bench")  # timing is not a scoring setting
    assert calls == [1, 2]


def test_repeats_score_each_distinct_arch_once(
    tmp_path: Path, truth: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorings = Scorings(monkeypatch)
    report = run_correlation(_run(truth, sample=5, repeats=3), tmp_path / "bench")
    strings = read_arch_strings(truth)
    union = set().union(*(sample_arch_strings(strings, 5, seed) for seed in (1, 2, 3)))
    assert scorings.count == report["distinct_archs"] == len(union) < 15
    assert report["repeat_seeds"] == [1, 2, 3] and report["n"] == 5
    for result in report["results"]:
        rhos = [r["cifar10_test"]["spearman"] for r in result["per_repeat"]]
        assert len(rhos) == 3
        if None not in rhos:
            assert result["spearman"] == pytest.approx(np.mean(rhos))
            assert result["std_by_column"]["cifar10_test"]["spearman"] == pytest.approx(np.std(rhos, ddof=1))
    assert "±" in (tmp_path / "bench" / "report.md").read_text()


def test_draw_samples_takes_every_row_or_one_seeded_sample_per_repeat() -> None:
    strings = [f"a{i}" for i in range(10)]
    assert draw_samples(strings, None, 0, 1) == [strings]
    assert draw_samples(strings, 4, 7, 2) == [
        sample_arch_strings(strings, 4, 7),
        sample_arch_strings(strings, 4, 8),
    ]
    with pytest.raises(ValueError, match="repeats must be 1 when the sample is the whole file"):
        draw_samples(strings, None, 0, 2)
    with pytest.raises(ValueError, match=r"repeats must lie in \[1, 100\], but got 0"):
        draw_samples(strings, 4, 0, 0)


def test_a_checkpoint_is_written_by_one_run_at_a_time_and_must_be_well_formed(tmp_path: Path) -> None:
    settings, archs = {"seed": 0}, ["a", "b"]
    with open_checkpoint(tmp_path, settings, ["p"], archs) as checkpoint:
        checkpoint.append("a", ([1.5], 0.25))
        with (
            pytest.raises(ResumeError, match="another run is writing"),
            open_checkpoint(tmp_path, settings, ["p"], archs),
        ):
            pass  # pragma: no cover
    with open_checkpoint(tmp_path, settings, ["p"], archs) as checkpoint:
        assert checkpoint.scored == {"a": ([1.5], 0.25)}
    with (tmp_path / PARTIAL).open("a") as stream:
        stream.write("b,nan,0.5\n")
    refused = pytest.raises(ResumeError, match=f"{PARTIAL} line 3 must hold finite numbers")
    with refused, open_checkpoint(tmp_path, settings, ["p"], archs):
        pass  # pragma: no cover
