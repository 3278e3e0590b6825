"""The best-so-far a search shows never goes down, although FG-NAS's relative score of the current best
can: ``best_percentile`` is the highest entry percentile of any arch (`nasfleet.search.loop`). Checked on
real searches: in process, recomputed from the archive, and through ``nasfleet search``'s JSON and
progress line."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nasfleet.bounds import DEFAULT_AGGREGATE
from nasfleet.cli import app
from nasfleet.data.datasets import load_dataset
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.search import SearchConfig, SearchResult, make_strategy, run_search
from nasfleet.search.loop import archive_fitness, entry_percentile
from nasfleet.spaces import NB201Space

SPACE = NB201Space(channels=4, cells_per_stage=1)
EVOLUTION = {"population_size": 4, "sample_size": 2}


def _search(seed: int, budget: int = 30) -> SearchResult:
    batch = ProbeBatch.from_dataset(load_dataset("synthetic:64"), 8, seed=0, labeled=True)
    config = SearchConfig("nb201", "evolution", budget, ask_size=3, seed=seed, strategy_config=EVOLUTION)
    return run_search(SPACE, make_strategy(SPACE, config, batch), batch, config, progress=False)


def _recomputed(result: SearchResult) -> list[float]:
    """The running maximum of each arch's percentile among the archive of the step that scored it."""
    archive, shown, best = result.archive, [], 0.0
    for step in range(1, result.steps + 1):
        members = [entry for entry in archive if entry.step <= step]
        values = {name: [entry.values[name] for entry in members] for name in members[0].values}
        fitness = archive_fitness([e.arch for e in members], values, DEFAULT_AGGREGATE, True)
        entered = [entry_percentile(fitness, i) for i, entry in enumerate(members) if entry.step == step]
        best = max([best, *entered])
        shown.append(best)
    return shown


def test_entry_percentile_is_the_textbook_percentile_rank() -> None:
    fitness = np.array([0.5, 2.0, 1.0, 1.0])

    assert entry_percentile(fitness, 1) == pytest.approx(100 * 3.5 / 4)  # the top one of 4
    assert entry_percentile(fitness, 2) == pytest.approx(100 * (1 + 0.5 * 2) / 4)  # tied with another
    assert entry_percentile(fitness, 0) == pytest.approx(100 * 0.5 / 4)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_best_so_far_never_decreases_while_the_relative_score_does(seed: int) -> None:
    # Execute
    result = _search(seed)
    # Assert
    shown = [entry.best_percentile for entry in result.history]
    scores = [entry.score for entry in result.history]
    assert all(later >= earlier for earlier, later in itertools.pairwise(shown)), shown
    assert any(later < earlier for earlier, later in itertools.pairwise(scores)), (
        "these seeds re-rank the best down: what the monotone quantity is for"
    )
    assert shown == pytest.approx(_recomputed(result))
    assert 0 < shown[0] < shown[-1] < 100


def test_nasfleet_search_carries_the_best_so_far_in_its_json_and_progress(tmp_path: Path) -> None:
    # Prepare
    out, registry = tmp_path / "result.json", f"sqlite:///{tmp_path / 'registry.db'}"
    command = [
        "search", "--strategy", "evolution", "--strategy-config", json.dumps(EVOLUTION),
        "--data", "synthetic:32", "--batch-size", "4", "--budget", "9", "--ask", "3", "--seed", "1",
        "--registry", registry, "--out", str(out),
    ]  # fmt: skip
    # Execute
    result = CliRunner().invoke(app, command)
    # Assert
    assert result.exit_code == 0, result.output
    history = json.loads(out.read_text())["history"]
    shown = [entry["best_percentile"] for entry in history]
    assert len(shown) == 3 and all(later >= earlier for earlier, later in itertools.pairwise(shown))
    assert {"score", "arch", "best_percentile"} <= set(history[-1])
    last = [line for line in result.stderr.splitlines() if line.startswith("search: 9/9, ")]
    assert len(last) == 1 and f"best so far p{shown[-1]:.1f}, current best " in last[0], result.stderr
    assert "(relative)" in last[0]
