"""NASWOT, NI, ZiCo, TE-NAS and COER: hand-computable cases, tiny real networks, and the hybrid rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nasfleet.proxies.activation import (
    MAX_CONDITION,
    condition_number,
    distinct_codes,
    hamming_kernel,
    log_determinant,
    side_pass,
    zico_layer_term,
)
from nasfleet.proxies.aggregate import get_aggregate
from nasfleet.proxies.base import PROXIES, ProxyError, get_proxy
from nasfleet.proxies.hybrid import LOGSYNFLOW
from nasfleet.proxies.probe import Probe, ProbeBatch
from nasfleet.spaces import NB201Space

PROXY_NAMES = (
    "naswot",
    "linear_regions",
    "ntk_cond",
    "ni",
    "zico",
    "coer_robustness",
    "coer_isotropy",
    "coer_uncertainty",
    "coer_regularity",
)
CONV_ARCH = (3, 3, 1, 3, 0, 2)
ALL_NONE = (0,) * 6
ALL_SKIP = (1,) * 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _codes(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def _batch(labeled: bool = True, seed: int = 0) -> ProbeBatch:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(8, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 10, (8,), generator=generator) if labeled else None
    return ProbeBatch(inputs, labels, 10)


def _nb201_probe(arch: tuple[int, ...], labeled: bool = True, seed: int = 0) -> Probe:
    torch.manual_seed(seed)
    network = NB201Space(channels=4, cells_per_stage=1).build(arch, 10, (3, 16, 16))
    return Probe(network, _batch(labeled), seed=seed, record_activation_codes=True)


class SignNetwork(nn.Module):
    """One main block that is a bare ReLU on the input, so the activation codes are the input's signs."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.ReLU())
        self.head = nn.Linear(features, 2)

    @property
    def main_blocks(self) -> list[nn.Module]:
        return [self.block]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.block(x).flatten(1))
        return out


def _sign_probe(signs: list[list[int]]) -> Probe:
    inputs = (torch.tensor(signs, dtype=torch.float32) * 2 - 1)[:, None, None, :]  # +1 / -1, (B, 1, 1, N)
    return Probe(SignNetwork(inputs.shape[-1]), ProbeBatch(inputs, None, 2), record_activation_codes=True)


# -- NASWOT kernel and linear regions ---------------------------------------------------------------------
def test_hamming_kernel_counts_agreeing_units_over_all_layers() -> None:
    generator = torch.Generator().manual_seed(1)
    layers = [torch.rand(5, 7, generator=generator) > 0.5, torch.rand(5, 3, 2, generator=generator) > 0.5]
    kernel, units = hamming_kernel(layers, samples=5)
    codes = torch.cat([layer.flatten(1) for layer in layers], 1)
    expected = (codes[:, None, :] == codes[None, :, :]).sum(-1).double()  # N_A - Hamming distance
    assert units == 13
    assert torch.equal(kernel, expected)


def test_naswot_of_identical_codes_is_the_negative_nullity() -> None:
    kernel, _ = hamming_kernel([_codes([[1, 0, 1], [1, 0, 1], [1, 0, 1]])], samples=3)
    assert log_determinant(kernel) == -2.0  # K = 3 * ones: rank 1, two null directions


def test_naswot_of_orthogonal_codes_is_the_log_determinant() -> None:
    kernel, _ = hamming_kernel([_codes([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])], samples=3)
    # every pair differs in 2 of 4 units: K = [[4,2,2],[2,4,2],[2,2,4]], eigenvalues 8, 2, 2.
    assert log_determinant(kernel) == pytest.approx(math.log(32.0))
    assert log_determinant(kernel) > 0 > log_determinant(torch.full((3, 3), 3.0, dtype=torch.float64))


def test_no_activation_layer_gives_one_region_and_a_finite_naswot() -> None:
    kernel, units = hamming_kernel([], samples=4)
    assert units == 0
    assert distinct_codes(kernel, units) == 1
    assert log_determinant(kernel) == -4.0


def test_naswot_and_linear_regions_read_the_relu_inputs_of_the_network() -> None:
    signs = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]]
    probe = _sign_probe(signs)
    assert get_proxy("linear_regions")(probe) == 3.0  # rows 2 and 4 share a pattern
    assert get_proxy("naswot")(probe) == -1.0  # ... so K has one null direction
    assert get_proxy("naswot")(_sign_probe(signs[:3])) == pytest.approx(math.log(32.0))


def test_activation_proxies_need_recorded_codes() -> None:
    torch.manual_seed(0)
    network = NB201Space(channels=4, cells_per_stage=1).build(CONV_ARCH, 10, (3, 16, 16))
    with pytest.raises(ProxyError, match="record_activation_codes"):
        get_proxy("naswot")(Probe(network, _batch()))


# -- NTK, NI and ZiCo formulas ----------------------------------------------------------------------------
def test_condition_number_of_known_spectra() -> None:
    assert condition_number(torch.diag(torch.tensor([4.0, 1.0]))) == pytest.approx(4.0)
    assert condition_number(torch.zeros(3, 3)) == MAX_CONDITION
    assert condition_number(torch.diag(torch.tensor([1.0, 0.0]))) == pytest.approx(MAX_CONDITION)


def test_zico_layer_term_skips_constant_parameters() -> None:
    grads = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # param 0: mean|g| 2, std 1; param 1: std 0, left out
    assert zico_layer_term(grads) == pytest.approx(math.log(2.0))
    assert zico_layer_term(torch.ones(4, 3)) is None


def test_side_pass_restores_buffers_mode_and_versions() -> None:
    norm = nn.BatchNorm2d(4)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), norm)
    network.eval()
    mean = norm.running_mean
    assert mean is not None
    before = (mean.clone(), mean._version)
    with side_pass(network):
        assert network.training
        network(torch.randn(4, 3, 8, 8))
    assert not network.training
    assert norm.running_mean is mean
    assert torch.equal(mean, before[0]) and mean._version == before[1]


# -- proxies on tiny NB201 networks -----------------------------------------------------------------------
@pytest.mark.parametrize("arch", [CONV_ARCH, ALL_NONE, ALL_SKIP])
def test_every_proxy_is_finite(arch: tuple[int, ...]) -> None:
    probe = _nb201_probe(arch)
    for name in PROXY_NAMES:
        assert math.isfinite(get_proxy(name)(probe)), name


def test_proxies_are_deterministic_for_a_fixed_seed() -> None:
    first, second = _nb201_probe(CONV_ARCH), _nb201_probe(CONV_ARCH)
    for name in PROXY_NAMES:
        assert get_proxy(name)(first) == get_proxy(name)(second), name


def test_side_passes_leave_the_probe_and_its_backward_intact() -> None:
    reference = _nb201_probe(CONV_ARCH)
    grads = [g.clone() for g in reference.weight_grads]
    probe = _nb201_probe(CONV_ARCH)
    probe.logits  # noqa: B018 - forward first, so the side passes run between forward and backward
    buffers = [b.clone() for b in probe.network.buffers()]
    get_proxy("ni")(probe)
    get_proxy("ntk_cond")(probe)
    assert all(torch.equal(a, b) for a, b in zip(buffers, probe.network.buffers(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(grads, probe.weight_grads, strict=True))


def test_a_dead_network_is_recognised_where_the_score_can_tell() -> None:
    dead, live = _nb201_probe(ALL_NONE), _nb201_probe(CONV_ARCH)
    assert get_proxy("linear_regions")(dead) == 1.0 < get_proxy("linear_regions")(live)
    assert get_proxy("naswot")(dead) < 0 < get_proxy("naswot")(live)
    assert get_proxy("ntk_cond")(dead) == MAX_CONDITION
    assert get_proxy("coer_isotropy")(dead) == 0.0


def test_zico_needs_labels() -> None:
    assert PROXIES["zico"].needs_labels
    with pytest.raises(ProxyError, match="needs labels"):
        get_proxy("zico")(_nb201_probe(CONV_ARCH, labeled=False))


# -- hybrid rankings --------------------------------------------------------------------------------------
def _dominated_population(names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Architecture 0 is best under every input, in each input's own direction."""
    values = {}
    for offset, name in enumerate(names):
        column = np.array([3.0, 1.0, 2.0, 0.5]) + offset
        higher = PROXIES[name].higher_is_better if name in PROXIES else True
        values[name] = column if higher else -column
    return values


@pytest.mark.parametrize("name", ["tenas", "coer", "garank"])
def test_an_architecture_best_under_every_input_gets_the_top_score(name: str) -> None:
    aggregate = get_aggregate(name)
    scores = aggregate.combine(_dominated_population(aggregate.inputs(True)), labeled=True)
    assert int(np.argmax(scores)) == 0
    assert scores[0] == pytest.approx(1.0)
    assert scores.shape == (4,)


@pytest.mark.parametrize("name", ["tenas", "coer", "garank"])
def test_aggregates_need_no_labels(name: str) -> None:
    aggregate = get_aggregate(name)
    assert aggregate.inputs(False) == aggregate.inputs(True)
    assert not any(PROXIES[p].needs_labels for p in aggregate.inputs(False) if p in PROXIES)
    values = _dominated_population(aggregate.inputs(False))
    np.testing.assert_array_equal(aggregate.combine(values, False), aggregate.combine(values, True))


@pytest.mark.parametrize("name", ["tenas", "coer", "garank"])
def test_aggregates_name_a_missing_input_column(name: str) -> None:
    aggregate = get_aggregate(name)
    values = _dominated_population(aggregate.inputs(True))
    dropped = aggregate.inputs(True)[-1]
    del values[dropped]
    with pytest.raises(ProxyError, match=dropped):
        aggregate.combine(values, labeled=True)


def test_aggregates_refuse_columns_of_different_lengths() -> None:
    values = {"ntk_cond": np.array([1.0, 2.0]), "linear_regions": np.array([1.0, 2.0, 3.0])}
    with pytest.raises(ProxyError, match="one value per architecture"):
        get_aggregate("tenas").combine(values, labeled=True)


def test_tenas_adds_ascending_ntk_and_descending_region_ranks() -> None:
    values = {"ntk_cond": np.array([1.0, 2.0, 3.0]), "linear_regions": np.array([8.0, 2.0, 5.0])}
    # ntk ranks (lower is better): 1, 2/3, 1/3; region ranks: 1, 1/3, 2/3; mean: 1, 1/2, 1/2.
    np.testing.assert_allclose(get_aggregate("tenas").combine(values, True), [1.0, 0.5, 0.5])


def test_coer_is_the_geometric_mean_of_the_four_ranks() -> None:
    names = get_aggregate("coer").inputs(True)
    values = {name: np.array([1.0, 2.0]) for name in names}
    values[names[0]] = np.array([2.0, 1.0])  # arch 0 wins one dimension, arch 1 the other three
    # ranks of arch 0: 1, 1/2, 1/2, 1/2 -> (1/8)^(1/4); arch 1: 1/2, 1, 1, 1 -> (1/2)^(1/4).
    np.testing.assert_allclose(get_aggregate("coer").combine(values, True), [0.125**0.25, 0.5**0.25])


def test_garank_reads_logsynflow_by_name() -> None:
    assert LOGSYNFLOW in get_aggregate("garank").inputs(True)
