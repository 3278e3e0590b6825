"""The in-process search loop (`nasfleet.search`) and ``nasfleet search``, on a tiny NB201 space."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import nasfleet.search.local
from nasfleet.bounds import DEFAULT_AGGREGATE
from nasfleet.cli import app
from nasfleet.data.datasets import load_dataset
from nasfleet.proxies import get_aggregate
from nasfleet.proxies.engine import ScoreTable, add_aggregates, score_archs
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.search import (
    SearchConfig,
    SearchError,
    SearchResult,
    make_strategy,
    run_search,
    search_progress,
)
from nasfleet.spaces import Genome, NB201Space, SearchSpace, get_space
from nasfleet.strategies import (
    InfeasibleSearchError,
    RandomSearch,
    RegularizedEvolution,
    SearchLimits,
    Strategy,
    get_strategy,
)

SPACE = NB201Space(channels=4, cells_per_stage=1)
EVOLUTION = {"population_size": 4, "sample_size": 2}
runner = CliRunner()


@cache
def _batch(labeled: bool = True) -> ProbeBatch:
    return ProbeBatch.from_dataset(load_dataset("synthetic:64"), 8, seed=0, labeled=labeled)


def _config(strategy: str = "evolution", budget: int = 8, **fields: Any) -> SearchConfig:
    fields.setdefault("strategy_config", EVOLUTION if strategy == "evolution" else {})
    return SearchConfig("nb201", strategy, budget, **{"ask_size": 3, **fields})


def _search(config: SearchConfig, strategy: Strategy | None = None) -> SearchResult:
    searcher = strategy if strategy is not None else make_strategy(SPACE, config, _batch(config.labeled))
    return run_search(SPACE, searcher, _batch(config.labeled), config, progress=False)


@pytest.fixture
def scored(monkeypatch: pytest.MonkeyPatch) -> list[list[Genome]]:
    """The architectures of every `score_archs` call the loop makes, in order."""
    calls: list[list[Genome]] = []

    def spy(space: SearchSpace, archs: Sequence[Genome], *args: Any, **kwargs: Any) -> ScoreTable:
        calls.append(list(archs))
        return score_archs(space, archs, *args, **kwargs)

    monkeypatch.setattr(nasfleet.search.local, "score_archs", spy)
    return calls


class RepeatingRandom(RandomSearch):
    """Random search that, after its first step, proposes an architecture told before and one twice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.told_archs: list[Genome] = []

    def ask(self, n: int) -> list[Genome]:
        archs = super().ask(n)
        if self.told_archs and len(archs) >= 3:
            archs[0], archs[2] = self.told_archs[0], archs[1]
        return archs

    def tell(self, archs: Sequence[Genome], fitness: Sequence[float]) -> None:
        super().tell(archs, fitness)
        self.told_archs.extend(archs)


class SpyEvolution(RegularizedEvolution):
    """Regularized evolution that records every tell and refresh."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tells: list[dict[Genome, float]] = []
        self.refreshes: list[dict[Genome, float]] = []

    def tell(self, archs: Sequence[Genome], fitness: Sequence[float]) -> None:
        self.tells.append(dict(zip(archs, fitness, strict=True)))
        super().tell(archs, fitness)

    def refresh(self, fitness: Mapping[Genome, float]) -> None:
        self.refreshes.append(dict(fitness))
        super().refresh(fitness)


def _aggregate(result: SearchResult, last_step: int) -> dict[str, float]:
    """The aggregate over the archive as it was after ``last_step``, recomputed from the raw values."""
    members = [entry for entry in result.archive if entry.step <= last_step]
    names = list(members[0].values)
    values = {name: np.array([entry.values[name] for entry in members]) for name in names}
    table = ScoreTable(tuple(entry.arch for entry in members), values, np.zeros(len(members)))
    scores = add_aggregates(table, [result.config.aggregate], result.config.labeled)[result.config.aggregate]
    return dict(zip(table.archs, scores.tolist(), strict=True))


# -- the loop --------------------------------------------------------------------------------------------
def test_the_budget_is_spent_exactly_and_no_arch_is_scored_twice(scored: list[list[Genome]]) -> None:
    config = _config("random", budget=10, ask_size=4)
    strategy = RepeatingRandom(SPACE, 0, 10)

    result = _search(config, strategy)

    assert strategy.done and strategy.told == result.evaluations == 10
    assert len(strategy.told_archs) == 10 and len(set(strategy.told_archs)) == 8  # two repeats told
    flat = [arch for call in scored for arch in call]
    assert len(flat) == len(set(flat)) == result.unique_evaluations == len(result.archive) == 8
    assert set(flat) == set(strategy.told_archs)
    assert [entry.evaluations for entry in result.history] == [4, 8, 10]


def test_the_strategy_is_told_and_refreshed_with_the_current_aggregate() -> None:
    config = _config(budget=9)
    strategy = SpyEvolution(SPACE, config.seed, config.budget, EVOLUTION)

    result = _search(config, strategy)

    assert len(strategy.refreshes) == len(strategy.tells) == result.steps == 3
    for step, (told, refreshed) in enumerate(zip(strategy.tells, strategy.refreshes, strict=True), start=1):
        then = {SPACE.decode(arch): score for arch, score in _aggregate(result, step).items()}
        assert refreshed == then  # every archive member, at its value after this step's aggregation
        assert all(told[arch] == then[arch] for arch in told)
    final = {SPACE.decode(entry.arch): entry.fitness for entry in result.archive}
    assert strategy.refreshes[-1] == final
    first = next(iter(strategy.refreshes[0]))
    assert len({refreshed[first] for refreshed in strategy.refreshes}) > 1  # ranks moved as the archive grew


def test_best_so_far_is_as_known_then_and_the_best_by_the_final_aggregate() -> None:
    result = _search(_config(budget=9))

    for entry in result.history:
        then = _aggregate(result, entry.step)
        assert entry.score == max(then.values()) and then[entry.arch] == entry.score
    final = _aggregate(result, result.steps)
    assert (
        result.best_arch == max(final, key=lambda arch: final[arch])
        and result.best_score == final[result.best_arch]
    )
    best = next(entry for entry in result.archive if entry.arch == result.best_arch)
    assert result.best_values == best.values
    assert set(best.values) == set(get_aggregate(DEFAULT_AGGREGATE).inputs(labeled=True))
    cost = SPACE.cost(SPACE.decode(result.best_arch), 10, (3, 32, 32))
    assert (result.best_params, result.best_flops) == (cost.params, cost.flops)


def test_every_archive_arch_meets_max_params() -> None:
    rng = np.random.default_rng(0)
    params = [SPACE.cost(SPACE.sample(rng)).params for _ in range(200)]
    limit = int(np.percentile(params, 30))
    result = _search(_config(budget=8, constraints=SearchLimits(max_params=limit)))

    costs = [SPACE.cost(SPACE.decode(entry.arch)).params for entry in result.archive]
    assert max(costs) <= limit and result.best_params <= limit
    assert result.config.to_dict()["constraints"]["max_params"] == limit


def test_impossible_constraints_raise_before_anything_is_scored(scored: list[list[Genome]]) -> None:
    config = _config(constraints=SearchLimits(max_params=1))

    with pytest.raises(InfeasibleSearchError, match=r"no architecture of nb201 meeting .*max_params=1"):
        _search(config)
    assert scored == []


def test_a_strategy_proposing_an_infeasible_arch_breaks_the_contract() -> None:
    config = _config("random", constraints=SearchLimits(max_params=1))
    unconstrained = get_strategy("random", SPACE, 0, config.budget)  # built without the feasibility check

    with pytest.raises(SearchError, match=r"strategy 'random' must propose only feasible architectures"):
        _search(config, unconstrained)


def test_the_same_seed_gives_the_same_search() -> None:
    def outcome(seed: int) -> dict[str, Any]:
        data = _search(_config(budget=6, seed=seed)).to_dict()
        for entry in data["archive"]:
            entry.pop("seconds")
        return {key: data[key] for key in ("best", "history", "archive", "strategy_state")}

    first = outcome(3)
    assert outcome(3) == first
    assert outcome(4)["archive"] != first["archive"]


def test_the_result_reports_timing_overhead_and_a_resumable_state() -> None:
    result = _search(_config(budget=4, labeled=False))

    data = json.loads(result.to_json())
    assert set(data) == {
        "version", "config", "probe", "best", "evaluations", "unique_evaluations", "steps", "timing",
        "history", "archive", "strategy_state",
    }  # fmt: skip
    assert set(data["best"]) == {"arch", "score", "values", "params", "flops"}
    assert set(data["best"]["values"]) == set(get_aggregate(DEFAULT_AGGREGATE).inputs(labeled=False))
    timing = data["timing"]
    assert timing["wall_seconds"] >= timing["scoring_seconds"] > 0
    assert timing["overhead_seconds"] == pytest.approx(timing["wall_seconds"] - timing["scoring_seconds"])
    assert 0 <= timing["overhead_fraction"] < 1 and result.overhead_fraction == timing["overhead_fraction"]
    assert data["probe"] == {"batch_size": 8, "input_shape": [3, 32, 32], "num_classes": 10, "labeled": False}
    fresh = make_strategy(SPACE, result.config, _batch(False))
    fresh.load_state_dict(data["strategy_state"])
    assert fresh.done and fresh.told == 4


def test_an_unlabeled_search_scores_only_the_inputs_that_need_no_labels() -> None:
    result = _search(_config(budget=4, labeled=False, aggregate="fgnas"))

    values = result.to_dict()["best"]["values"]
    assert set(values) == {"fg_fi", "fg_fc", "fg_gc"}  # no S_GI: it needs labels
    assert "fg_gi" in get_aggregate("fgnas").inputs(labeled=True)


def test_progress_prints_plain_lines_when_stderr_is_no_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with search_progress(40, enabled=True) as show:
        for done in range(4, 41, 4):
            show(done, 1.0 + done / 100)

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("search: 40/40, best 1.4 (")


# -- the shared proxy-value cache ------------------------------------------------------------------------
def _outcome(result: SearchResult, seconds: bool = True) -> dict[str, Any]:
    data = result.to_dict()
    if not seconds:
        for entry in data["archive"]:
            entry.pop("seconds")
    return {key: data[key] for key in ("best", "history", "archive", "strategy_state", "evaluations")}


def test_a_cached_rerun_gives_identical_results_and_scores_nothing_new(scored: list[list[Genome]]) -> None:
    config = _config(budget=9)
    cache: dict[str, tuple[dict[str, float], float]] = {}
    first = run_search(SPACE, make_strategy(SPACE, config, _batch()), _batch(), config, progress=False,
                       cache=cache)  # fmt: skip
    assert sorted(cache) == sorted(entry.arch for entry in first.archive)
    assert all(cache[entry.arch] == (entry.values, entry.seconds) for entry in first.archive)
    assert first.cached_evaluations == 0 and first.cached_scoring_seconds == 0.0
    calls = len(scored)

    again = run_search(SPACE, make_strategy(SPACE, config, _batch()), _batch(), config, progress=False,
                       cache=cache)  # fmt: skip

    assert len(scored) == calls  # nothing scored
    assert _outcome(again) == _outcome(first)  # values and original seconds, history, decisions
    assert again.cached_evaluations == again.unique_evaluations == first.unique_evaluations
    assert again.scoring_seconds == 0.0
    assert again.cached_scoring_seconds == pytest.approx(sum(entry.seconds for entry in first.archive))
    assert again.uncached_wall_seconds == pytest.approx(again.wall_seconds + again.cached_scoring_seconds)
    timing = again.to_dict()["timing"]
    assert timing["cached_evaluations"] == again.unique_evaluations
    assert timing["uncached_overhead_fraction"] == pytest.approx(
        again.overhead_seconds / again.uncached_wall_seconds
    )


def test_a_cache_filled_with_the_same_scoring_inputs_changes_only_what_is_scored(
    scored: list[list[Genome]],
) -> None:
    config = _config("random", budget=12, seed=4, scoring_seed=0)
    plain = _search(config)
    own_seed = _search(_config("random", budget=12, seed=4))  # scoring seeded by the strategy's seed
    assert [e.arch for e in own_seed.archive] == [e.arch for e in plain.archive]
    assert [e.values for e in own_seed.archive] != [e.values for e in plain.archive]
    cache: dict[str, tuple[dict[str, float], float]] = {}
    other = _config("random", budget=6, seed=3, scoring_seed=0)  # another strategy seed fills it too
    run_search(SPACE, make_strategy(SPACE, other, _batch()), _batch(), other, progress=False, cache=cache)
    some = [SPACE.decode(entry.arch) for entry in plain.archive[::2]]
    table = score_archs(SPACE, some, _batch(), config.proxy_names, seed=0, progress=False)
    for i, arch in enumerate(table.archs):
        cache[arch] = ({name: float(table.values[name][i]) for name in table.values}, 1.5)
    known = set(cache)
    before = sum(len(call) for call in scored)

    cached = run_search(SPACE, make_strategy(SPACE, config, _batch()), _batch(), config, progress=False,
                        cache=cache)  # fmt: skip

    hits = [entry.arch for entry in plain.archive if entry.arch in known]
    assert len(hits) == len(some) and cached.cached_evaluations == len(hits)
    assert cached.cached_scoring_seconds == pytest.approx(1.5 * len(hits))
    assert sum(len(call) for call in scored) - before == plain.unique_evaluations - len(hits)
    assert _outcome(cached, seconds=False) == _outcome(plain, seconds=False)  # same values and decisions
    assert config.proxy_seed == 0 and _config(seed=7).proxy_seed == 7


# -- validation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"budget": 0}, "budget must be an integer >= 1, but got 0"),
        ({"ask_size": 0}, "ask_size must be an integer >= 1, but got 0"),
        ({"seed": -1}, "seed must be an integer >= 0, but got -1"),
        ({"scoring_seed": -1}, "scoring_seed must be None or an integer >= 0, but got -1"),
        (
            {"space": "nope"},
            "space must be one of ['autoformer', 'autoformer-edge', 'coer', 'mbv2', 'nb201'], but got 'nope'",
        ),
        ({"aggregate": "fg_fi"}, "aggregate must be the name of one aggregate, but got 'fg_fi'"),
        ({"aggregate": "nope"}, "aggregate: proxies must name registered proxies"),
        ({"strategy_config": {"x": object()}}, "strategy_config must be JSON data"),
    ],
)
def test_a_bad_config_names_the_field_the_rule_and_the_value(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"space": "nb201", "strategy": "random", "budget": 4, **fields}
    with pytest.raises(SearchError) as error:
        SearchConfig(**values)
    assert message in str(error.value)


def test_run_search_checks_the_strategy_and_batch_against_the_config() -> None:
    config = _config("random", budget=4)
    with pytest.raises(SearchError, match=r"strategy.budget must be 4 \(config.budget\), but got 5"):
        run_search(SPACE, get_strategy("random", SPACE, 0, 5), _batch(), config, progress=False)
    with pytest.raises(SearchError, match=r"batch labels must be present \(labeled=True\), but got 'absent'"):
        run_search(SPACE, get_strategy("random", SPACE, 0, 4), _batch(False), config, progress=False)
    with pytest.raises(SearchError, match=r"workers must be an integer >= 1, but got 0"):
        run_search(SPACE, get_strategy("random", SPACE, 0, 4), _batch(), config, progress=False, workers=0)


# -- the command -----------------------------------------------------------------------------------------
def _run(*args: str) -> tuple[int, str]:
    """Exit code and output, with rich's error-box borders and line wraps collapsed to single spaces."""
    result = runner.invoke(app, list(args))
    return result.exit_code, re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


TINY = ("--data", "synthetic:32", "--batch-size", "4", "--budget", "4", "--ask", "2")


def test_search_command_writes_the_result(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    config = json.dumps(EVOLUTION)
    code, output = _run(
        "search", "--strategy", "evolution", "--strategy-config", config, "--max-params", "1000000",
        "--seed", "1", "--out", str(out), "--registry", f"sqlite:///{tmp_path / 'registry.db'}", *TINY,
    )  # fmt: skip

    assert code == 0, output
    data = json.loads(out.read_text())
    assert data["evaluations"] == 4 and data["steps"] == 2 and data["data"] == "synthetic:32"
    assert (
        data["config"]["strategy_config"] == EVOLUTION
        and data["config"]["constraints"]["max_params"] == 10**6
    )
    space = get_space("nb201")
    assert data["best"]["params"] == space.cost(space.decode(data["best"]["arch"])).params <= 10**6
    assert data["command"].startswith("nasfleet search --strategy evolution")
    assert "strategy overhead" in output and "4 evaluations" in output
    assert data["service"]["mode"] == "embedded" and data["service"]["tenant"] == "default"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--strategy", "nope"), "Invalid value for --strategy: must be one of ["),
        (
            ("--strategy-config", '{"population_size": 1}'),
            "'population_size' must be an integer >= 2, but got 1",
        ),
        (("--strategy-config", '{"bogus": 1}'), "config options must be among"),
        (("--strategy-config", "{bad"), "Invalid value for --strategy-config: must be a JSON object, but"),
        (("--strategy-config", "[1]"), "must be a JSON object, but got '[1]'"),
        (("--max-params", "0"), "'--max-params': 0 is not in the range 1<=x<=1000000000000000"),
        (("--max-flops", "-5"), "'--max-flops': -5 is not in the range 1<=x<=1000000000000000"),
        (("--seed", "-1"), "Invalid value for '--seed': -1 is not in the range 0<=x<=2147483647"),
        (("--aggregate", "fg_fi"), "aggregate must be the name of one aggregate, but got 'fg_fi'"),
        (("--space", "nope"), "Invalid value for --space"),
        (("--max-params", "1"), "no architecture of nb201 meeting SearchLimits(max_params=1"),
        (("--local-workers", "0"), "Invalid value for --local-workers: must be at least 1 without --broker"),
        (("--tenant", "a/b"), "Invalid value for --tenant: tenant must be 1-64 characters"),
        (("--broker", "kafka://x", "--local-workers", "0"), "broker must be a URL with a scheme of"),
    ],
)
def test_search_command_rejects_bad_options_and_writes_nothing(
    tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "result.json"
    out.write_text("previous result\n")
    arguments = ["search", "--strategy", "evolution", "--out", str(out), *TINY]
    code, output = _run(*arguments, *options)

    assert code == 2 and message in output, output
    assert out.read_text() == "previous result\n"
