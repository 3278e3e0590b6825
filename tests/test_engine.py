"""The scoring engine, on tiny test proxies registered only for the duration of each test."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from nasfleet.data.datasets import synthetic_dataset
from nasfleet.proxies.aggregate import AGGREGATES, Aggregate, proxy_rank
from nasfleet.proxies.base import PROXIES, Proxy, ProxyError
from nasfleet.proxies.engine import (
    add_aggregates,
    check_device,
    expand_names,
    score_archs,
    time_proxies_in_isolation,
)
from nasfleet.proxies.probe import Probe, ProbeBatch
from nasfleet.spaces import Genome, NB201Space

SPACE = NB201Space(channels=4, cells_per_stage=1)


class ParamCount(Proxy):
    name = "t_params"

    def compute(self, probe: Probe) -> float:
        return float(sum(p.numel() for p in probe.network.parameters()))


class SeededRandom(Proxy):
    """Draws from torch's global generator: equal only if the engine seeds it the same way every time."""

    name = "t_random"

    def compute(self, probe: Probe) -> float:
        return float(torch.rand(()).item())


class ActivationCodes(Proxy):
    name = "t_codes"
    needs_activation_codes = True

    def compute(self, probe: Probe) -> float:
        probe.logits  # noqa: B018 - the forward pass records the codes
        if not probe.activation_codes:
            raise ProxyError("t_codes needs activation codes, but the probe recorded none")
        return float(sum(code.float().mean() for code in probe.activation_codes))


class LabelLoss(Proxy):
    name = "t_loss"
    needs_labels = True
    higher_is_better = False

    def compute(self, probe: Probe) -> float:
        return float(probe.loss.item())


class NotFinite(Proxy):
    name = "t_nan"

    def compute(self, probe: Probe) -> float:
        return math.nan


class RankSum(Aggregate):
    """Sum of ranks of the size proxy and, with labels, the loss."""

    name = "t_sum"

    def inputs(self, labeled: bool) -> tuple[str, ...]:
        return ("t_params", "t_loss") if labeled else ("t_params",)

    def combine(self, values: Mapping[str, np.ndarray], labeled: bool) -> np.ndarray:
        total: np.ndarray = sum((proxy_rank(name, values) for name in self.inputs(labeled)), np.zeros(1))
        return total


class LossRank(Aggregate):
    """Needs labels whatever the flag says, so it is not computable without them."""

    name = "t_lossrank"

    def inputs(self, labeled: bool) -> tuple[str, ...]:
        return ("t_loss",)

    def combine(self, values: Mapping[str, np.ndarray], labeled: bool) -> np.ndarray:
        return proxy_rank("t_loss", values)


TEST_PROXIES: tuple[type[Proxy], ...] = (ParamCount, SeededRandom, ActivationCodes, LabelLoss)
TEST_AGGREGATES: tuple[type[Aggregate], ...] = (RankSum, LossRank)


@contextmanager
def only_test_proxies(*extra: type[Proxy]) -> Iterator[None]:
    """Swap the registries' contents for the test proxies and aggregates, and restore them afterwards."""
    saved_proxies, saved_aggregates = dict(PROXIES), dict(AGGREGATES)
    PROXIES.clear()
    AGGREGATES.clear()
    PROXIES.update({cls.name: cls for cls in (*TEST_PROXIES, *extra)})
    AGGREGATES.update({cls.name: cls for cls in TEST_AGGREGATES})
    try:
        yield
    finally:
        PROXIES.clear()
        AGGREGATES.clear()
        PROXIES.update(saved_proxies)
        AGGREGATES.update(saved_aggregates)


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    with only_test_proxies(NotFinite):
        yield


def _batch(labeled: bool = True) -> ProbeBatch:
    return ProbeBatch.from_dataset(synthetic_dataset(32, input_shape=(3, 8, 8)), 8, seed=0, labeled=labeled)


def _archs(n: int, seed: int = 0) -> list[Genome]:
    rng = np.random.default_rng(seed)
    return [SPACE.sample(rng) for _ in range(n)]


NAMES = ("t_params", "t_random", "t_codes", "t_loss")


def test_same_seed_gives_identical_values_and_another_seed_other_weights() -> None:
    archs = _archs(4)
    first = score_archs(SPACE, archs, _batch(), NAMES, seed=3, progress=False)
    second = score_archs(SPACE, archs, _batch(), NAMES, seed=3, progress=False)
    other = score_archs(SPACE, archs, _batch(), NAMES, seed=4, progress=False)
    assert first.archs == tuple(SPACE.encode(a) for a in archs)
    assert list(first.values) == list(NAMES)
    for name in NAMES:
        np.testing.assert_array_equal(first.values[name], second.values[name])
    assert not np.array_equal(first.values["t_random"], other.values["t_random"])
    np.testing.assert_array_equal(first.values["t_params"], other.values["t_params"])
    assert first.seconds.shape == (4,) and np.all(first.seconds > 0)


def test_scoring_leaves_the_callers_random_stream_and_threads_alone() -> None:
    threads, state = torch.get_num_threads(), torch.random.get_rng_state()
    score_archs(SPACE, _archs(1), _batch(), ["t_random"], seed=0, progress=False)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.slow  # spawns two processes that import torch
def test_two_workers_give_the_same_values_as_one() -> None:
    archs = _archs(4, seed=1)
    serial = score_archs(SPACE, archs, _batch(), NAMES, seed=0, progress=False)
    pooled = score_archs(SPACE, archs, _batch(), NAMES, seed=0, workers=2, progress=False)
    assert pooled.archs == serial.archs
    for name in NAMES:
        np.testing.assert_array_equal(pooled.values[name], serial.values[name])


def test_a_non_finite_value_names_the_arch_and_the_proxy() -> None:
    arch = _archs(1)[0]
    with pytest.raises(ProxyError, match=r"arch \|.*proxy 't_nan' must be finite, but got nan"):
        score_archs(SPACE, [arch], _batch(), ["t_params", "t_nan"], seed=0, progress=False)


def test_score_archs_checks_its_arguments() -> None:
    archs = _archs(2)
    with pytest.raises(ProxyError, match="'t_sum' is an aggregate"):
        score_archs(SPACE, archs, _batch(), ["t_sum"], seed=0, progress=False)
    with pytest.raises(ValueError, match="workers must be >= 1, but got 0"):
        score_archs(SPACE, archs, _batch(), ["t_params"], seed=0, workers=0, progress=False)
    with pytest.raises(ValueError, match="distinct"):
        score_archs(SPACE, archs, _batch(), ["t_params", "t_params"], seed=0, progress=False)
    with pytest.raises(ValueError, match="device must be one of"):
        score_archs(SPACE, archs, _batch(), ["t_params"], seed=0, device="tpu", progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        check_device("cuda")


def test_expand_names_pulls_in_aggregate_inputs_in_order_without_repeats() -> None:
    assert expand_names("t_random, t_sum,t_params", labeled=True) == (
        ("t_random", "t_params", "t_loss"),
        ("t_sum",),
    )
    assert expand_names("t_sum", labeled=False) == (("t_params",), ("t_sum",))


def test_all_is_every_computable_proxy_and_aggregate() -> None:
    proxies, aggregates = expand_names("all", labeled=True)
    assert set(proxies) == set(PROXIES) and set(aggregates) == {"t_sum", "t_lossrank"}
    proxies, aggregates = expand_names("all", labeled=False)
    assert "t_loss" not in proxies and aggregates == ("t_sum",)


@pytest.mark.parametrize(
    ("spec", "labeled", "message"),
    [
        ("t_params,t_nope", True, r"but got 't_nope'; proxies: t_codes, t_loss, .*aggregates: t_lossrank"),
        (" , ", True, "at least one"),
        ("t_loss", False, "proxy 't_loss' needs labels"),
        ("t_lossrank", False, "aggregate 't_lossrank' reads proxy 't_loss', which needs labels"),
    ],
)
def test_expand_names_rejects(spec: str, labeled: bool, message: str) -> None:
    with pytest.raises(ProxyError, match=message):
        expand_names(spec, labeled)


def test_aggregates_rank_the_whole_population() -> None:
    archs = _archs(5, seed=2)
    proxies, aggregates = expand_names("t_sum", labeled=True)
    table = score_archs(SPACE, archs, _batch(), proxies, seed=0, progress=False)
    columns = add_aggregates(table, aggregates, labeled=True)
    expected = proxy_rank("t_params", table.values) + proxy_rank("t_loss", table.values)
    np.testing.assert_allclose(columns["t_sum"], expected)
    header, rows = table.rows(columns)
    assert header == ["arch", "t_params", "t_loss", "t_sum", "seconds"] and len(rows) == 5
    only_size = score_archs(SPACE, archs, _batch(), ["t_params"], seed=0, progress=False)
    with pytest.raises(ProxyError, match=r"needs proxy columns \['t_loss'\]"):
        add_aggregates(only_size, ["t_sum"], labeled=True)


def test_isolation_timing_covers_every_proxy_and_aggregate() -> None:
    archs = _archs(6)
    timing = time_proxies_in_isolation(
        SPACE, archs, _batch(), ["t_params", "t_codes"], seed=0, aggregate_names=["t_sum"], sample=2,
        progress=False,
    )  # fmt: skip
    assert set(timing.seconds) == {"t_params", "t_codes", "t_sum"}
    assert len(timing.archs) == 2 and set(timing.archs) <= {SPACE.encode(a) for a in archs}
    assert timing.reference > 0 and all(seconds > 0 for seconds in timing.seconds.values())
    assert timing.ratio("t_codes") == timing.seconds["t_codes"] / timing.reference
