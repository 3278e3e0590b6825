"""The closed loop's parts: checked reports, the simulated benchmark device, the per-device model, and a
small real fleet run (real scoring on a tiny NB201 space, a synthetic accuracy table)."""

from __future__ import annotations

import math
import re
from functools import cache
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from nasfleet.bounds import DEFAULT_AGGREGATE
from nasfleet.data.datasets import load_dataset
from nasfleet.personalization import (
    BenchmarkDevice,
    DeviceModel,
    LoopSettings,
    Observation,
    Report,
    ReportError,
    arch_features,
    check_report,
    read_table,
    run_fleet,
)
from nasfleet.personalization.model import priors
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.search import SearchConfig
from nasfleet.spaces import NB201Space, get_space

SPACE = NB201Space(channels=4, cells_per_stage=1)
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def cell(ops: tuple[str, ...]) -> str:
    a, b, c, d, e, f = ops
    return f"|{a}~0|+|{b}~0|{c}~1|+|{d}~0|{e}~1|{f}~2|"


@cache
def every_cell() -> tuple[str, ...]:
    return tuple(cell(ops) for ops in product(OPS, repeat=6))


def conv_table(weight: float = 8.0) -> dict[str, float]:
    """A synthetic 'benchmark': accuracy (%) grows with the number of 3x3 convolutions in the cell."""
    return {arch: 40.0 + weight * arch.count("nor_conv_3x3") for arch in every_cell()}


# -- reports ---------------------------------------------------------------------------------------------
GOOD = Report("acme", "cam-1", cell(("nor_conv_3x3",) * 6), 0.9, 1)


def test_a_good_report_passes() -> None:
    assert check_report(GOOD, "acme", {GOOD.arch}) is GOOD


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"accuracy": math.nan}, "accuracy", "finite"),
        ({"accuracy": 1.5}, "accuracy", "a fraction in [0, 1]"),
        ({"accuracy": -0.1}, "accuracy", "a fraction in [0, 1]"),
        ({"accuracy": "0.9"}, "accuracy", "a number"),
        ({"tenant": "other"}, "tenant", "the fleet's tenant 'acme'"),
        ({"arch": cell(("none",) * 6)}, "arch", "a SubNet sent to device 'cam-1'"),
        ({"round": 0}, "round", "an integer >= 1"),
    ],
)
def test_a_bad_report_is_refused_naming_field_rule_and_value(change: dict, field: str, rule: str) -> None:
    report = Report(**{**GOOD.__dict__, **change})
    with pytest.raises(ReportError, match="^" + re.escape(f"{field} must be {rule}, but got")):
        check_report(report, "acme", {GOOD.arch})


def test_the_benchmark_device_counts_every_read_and_refuses_beyond_its_budget() -> None:
    table = conv_table()
    device = BenchmarkDevice("d", "cifar10_test", table, budget=3, seed=0)
    arch = GOOD.arch
    values = [device.report(arch).accuracy for _ in range(3)]
    assert device.reads == 3
    assert len(set(values)) == 3, "each read draws its own seed-to-seed noise"
    assert all(abs(v * 100 - table[arch]) < 5 * device.noise for v in values)
    with pytest.raises(ReportError, match="at most 3 reports"):
        device.report(arch)
    assert device.reads == 3


def test_the_benchmark_device_reads_the_shared_table_and_checks_its_inputs() -> None:
    with pytest.raises(ReportError, match="task must be one of"):
        BenchmarkDevice("d", "cifar10_valid", {}, budget=1)
    with pytest.raises(ReportError, match="arch must be a NAS-Bench-201 cell"):
        BenchmarkDevice("d", "cifar10_test", {}, budget=1).report("|x~0|")
    table = read_table(get_table_path(), "cifar100_test")
    assert len(table) == 15625 and max(table.values()) == pytest.approx(73.5133)


def get_table_path() -> str:
    return str(
        Path(__file__).resolve().parents[2] / "shared" / "data" / "nas-bench-201" / "nb201-accuracy-200ep.csv"
    )


# -- the model -------------------------------------------------------------------------------------------
def test_arch_features_mark_one_value_per_gene() -> None:
    space = get_space("nb201")
    genomes = [space.decode(a) for a in every_cell()[:50]]
    rows = arch_features(space, genomes)
    assert rows.shape == (50, sum(space.choices)) and np.all(rows.sum(axis=1) == len(space.choices))


def test_before_any_report_the_model_is_the_zero_cost_prior() -> None:
    model = DeviceModel(SPACE, "d").fit([])
    mean, std = model.predict(every_cell()[:3], [0.2, 0.9, 0.5])
    assert mean.tolist() == [0.2, 0.9, 0.5] and std.tolist() == [0.0, 0.0, 0.0]


def test_the_model_learns_from_reports_what_the_prior_does_not_know() -> None:
    """The prior is uninformative (constant); 24 reports of one device are enough to rank unseen archs."""
    rng = np.random.default_rng(0)
    table, archs = conv_table(), list(every_cell())
    seen = [archs[int(i)] for i in rng.choice(len(archs), 24, replace=False)]
    own = [Observation("d", a, table[a] / 100, 0.5) for a in seen]
    model = DeviceModel(SPACE, "d").fit(own)
    unseen = [archs[int(i)] for i in rng.choice(len(archs), 200, replace=False) if archs[int(i)] not in seen]
    mean, _ = model.predict(unseen, [0.5] * len(unseen))
    assert spearmanr(mean, [table[a] for a in unseen]).statistic > 0.9


def test_the_fleet_prior_carries_other_devices_reports_and_fleet_weight_zero_ignores_them() -> None:
    rng = np.random.default_rng(1)
    table, archs = conv_table(), list(every_cell())
    fleet = [
        Observation("other", archs[int(i)], table[archs[int(i)]] / 100, 0.5)
        for i in rng.choice(len(archs), 24, replace=False)
    ]
    unseen = [archs[int(i)] for i in rng.choice(len(archs), 200, replace=False)]
    warm = DeviceModel(SPACE, "d", fleet_weight=1.0).fit(fleet)
    cold = DeviceModel(SPACE, "d", fleet_weight=0.0).fit(fleet)
    assert spearmanr(warm.predict(unseen, [0.5] * 200)[0], [table[a] for a in unseen]).statistic > 0.9
    assert cold.regressor is None and cold.predict(unseen, [0.5] * 200)[0].tolist() == [0.5] * 200


@pytest.mark.parametrize(("fields", "message"), [({"fleet_weight": 2.0}, "fleet_weight must lie in"),
                                                 ({"kappa": -1.0}, "kappa must be >= 0")])  # fmt: skip
def test_bad_model_settings_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeviceModel(SPACE, "d", **fields)


def test_bad_loop_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"rounds must be an integer >= 1, but got 0"):
        LoopSettings(rounds=0)


# -- the fleet's loop ------------------------------------------------------------------------------------
@cache
def batch() -> ProbeBatch:
    return ProbeBatch.from_dataset(load_dataset("synthetic:64"), 8, seed=0, labeled=True)


def fleet_config(budget: int = 16) -> SearchConfig:
    return SearchConfig("nb201", "evolution", budget, seed=0, ask_size=4,
                        strategy_config={"population_size": 4, "sample_size": 2})  # fmt: skip


def test_a_fleet_runs_rounds_spreads_its_reports_and_lets_the_model_drive_the_search() -> None:
    settings = LoopSettings(rounds=3, first_budget=8, round_budget=4)
    tables = {"a": conv_table(8.0), "b": conv_table(4.0)}
    sources = {name: BenchmarkDevice(name, "cifar10_test", t, budget=3, tenant="acme", seed=i)
               for i, (name, t) in enumerate(tables.items())}  # fmt: skip
    runs = run_fleet(SPACE, sources, batch(), fleet_config(), settings, tenant="acme")
    sent = [arch for run in runs.values() for arch in run.sent]
    assert len(sent) == len(set(sent)) == 6, "every report of the fleet is on a different SubNet"
    for name, run in runs.items():
        assert sources[name].reads == 3 and [r.round for r in run.reports] == [1, 2, 3]
        assert [r.arch for r in run.reports] == run.sent and set(run.sent) <= set(run.loop.archive.archs)
        assert [record.evaluations for record in run.rounds] == [8, 12, 16]
        assert [record.reports for record in run.rounds] == [1, 2, 3]
        # From round 2 on the search ranks by the device's model, not the zero-cost aggregate.
        archive = run.loop.archive
        prior = run.zero_cost_priors()
        expected = run.model.predict(archive.archs, [prior[a] for a in archive.archs])[0]
        assert run.loop.rank is not None and np.allclose(run.loop.fitness(), expected)
        assert not np.allclose(run.loop.fitness(), archive.fitness(DEFAULT_AGGREGATE, True))
        best = max(run.reports, key=lambda r: r.accuracy)
        assert (run.rounds[-1].arch, run.rounds[-1].reported) == (best.arch, best.accuracy)


def test_without_spreading_devices_with_one_archive_train_the_same_best_and_never_one_twice() -> None:
    # Prepare: two devices whose searches are identical (same config and probe), so are their archives
    settings = LoopSettings(rounds=3, first_budget=16, round_budget=0, spread=False)
    sources = {name: BenchmarkDevice(name, "cifar10_test", conv_table(), budget=3, tenant="acme", seed=i)
               for i, name in enumerate("ab")}  # fmt: skip
    # Execute
    runs = run_fleet(SPACE, sources, batch(), fleet_config(), settings, tenant="acme")
    # Assert: each gets the zero-cost best in round 1 (spreading would give "b" the second best); no
    # device is sent an arch twice; the later rounds choose within the archive (no more evaluations)
    a, b = runs["a"], runs["b"]
    best = max(a.zero_cost_priors().items(), key=lambda item: item[1])[0]
    assert a.sent[0] == b.sent[0] == best
    for run in (a, b):
        assert len(run.sent) == len(set(run.sent)) == 3 and set(run.sent) <= set(run.loop.archive.archs)
        assert [record.evaluations for record in run.rounds] == [16, 16, 16]


def test_keeping_by_the_model_picks_the_reported_arch_of_highest_mean_and_sends_the_same() -> None:
    # Prepare: a device whose reports are mostly noise (sd 30 points on a 0-48 point table)
    def fleet(keep: str) -> dict:
        sources = {name: BenchmarkDevice(name, "cifar10_test", conv_table(), budget=5, tenant="acme",
                                         seed=i, noise=30.0) for i, name in enumerate("abc")}  # fmt: skip
        settings = LoopSettings(rounds=5, first_budget=16, round_budget=0, keep=keep)
        return run_fleet(SPACE, sources, batch(), fleet_config(), settings, tenant="acme")

    # Execute
    by_report, by_model = fleet("report"), fleet("model")
    # Assert: the rule changes only what a device keeps, never what it is sent or reports
    picks = []
    for name, run in by_model.items():
        assert run.sent == by_report[name].sent
        assert [r.accuracy for r in run.reports] == [r.accuracy for r in by_report[name].reports]
        prior = run.zero_cost_priors()
        mean = run.model.predict([r.arch for r in run.reports], [prior[r.arch] for r in run.reports])[0]
        kept = run.reports[int(np.argmax(mean))]
        assert (run.rounds[-1].arch, run.rounds[-1].reported) == (kept.arch, kept.accuracy)
        best = max(by_report[name].reports, key=lambda r: r.accuracy)
        assert by_report[name].rounds[-1].arch == best.arch
        picks.append(kept.arch != best.arch)
    assert any(picks), "with this much noise the model's pick differs from the best report somewhere"
    with pytest.raises(ValueError, match=r"keep must be one of \('report', 'model'\), but got 'best'"):
        LoopSettings(keep="best")


class LyingDevice(BenchmarkDevice):
    def report(self, arch: str, round: int = 1) -> Report:
        return Report(self.tenant, self.name, arch, float("nan"), round)


def test_a_refused_report_drops_only_that_device_and_is_not_used() -> None:
    sources = {
        "liar": LyingDevice("liar", "cifar10_test", conv_table(), budget=2, tenant="acme"),
        "good": BenchmarkDevice("good", "cifar10_test", conv_table(), budget=2, tenant="acme"),
    }
    settings = LoopSettings(rounds=2, first_budget=8, round_budget=4)
    runs = run_fleet(SPACE, sources, batch(), fleet_config(12), settings, tenant="acme")
    assert runs["liar"].error == "round 1: accuracy must be finite, but got nan"
    assert runs["liar"].reports == [] and runs["liar"].loop.told == 8
    assert runs["good"].error == "" and len(runs["good"].reports) == 2 and runs["good"].loop.told == 12


def test_one_report_per_device_says_nothing_relative_so_the_model_stays_the_prior() -> None:
    archs = list(every_cell())
    fleet = [Observation(f"d{i}", archs[i], 0.5 + 0.1 * i, 0.5) for i in range(3)]
    model = DeviceModel(SPACE, "d0").fit(fleet)
    assert model.regressor is None
    assert model.predict(archs[:2], [0.3, 0.7])[0].tolist() == [0.3, 0.7]


def test_priors_rank_the_best_first_and_break_ties_by_order() -> None:
    ranked = priors(["a", "b", "c", "d"], np.array([0.2, 0.9, 0.2, 0.5]))
    assert ranked == {"b": 1.0, "d": 0.75, "a": 0.5, "c": 0.25}
