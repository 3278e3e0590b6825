"""COER-NAS's four reconstructed dimensions and their fusions: defining properties on hand-made networks,
directions, every registered space, and the rank fusions on toy ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from toy_networks import Chain, Zero, conv_block, random_batch

import nasfleet.proxies.coer as coer
from nasfleet.proxies.aggregate import get_aggregate
from nasfleet.proxies.base import PROXIES, get_proxy
from nasfleet.proxies.probe import Probe, ProbeBatch
from nasfleet.proxies.scorer import ScoringJob
from nasfleet.spaces import SPACES, NB201Space, get_space
from nasfleet.testing import check_proxy
from nasfleet.testing.proxies import synthetic_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIMENSIONS = ("coer_robustness", "coer_isotropy", "coer_uncertainty", "coer_regularity")
DEAD_BLOCK_COST = math.log(1 / coer.EPS) / 2


class Scale(nn.Module):
    """``factor * x``: a block whose Jacobian is ``factor`` times the identity."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x


def batch(size: int = 32, side: int = 8, seed: int = 0) -> ProbeBatch:
    return random_batch(size, side, seed)


def value(name: str, network: nn.Module) -> float:
    return get_proxy(name)(Probe(network, batch()))


def chain(*blocks: nn.Module) -> Chain:
    torch.manual_seed(0)
    return Chain(*blocks)


# -- robustness --------------------------------------------------------------------------------------------
def test_noise_to_signal_is_minus_log_of_change_over_spread() -> None:
    clean = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # spread: mean squared distance to the mean, 1
    assert coer.noise_to_signal(clean, clean) == pytest.approx(-math.log(coer.EPS))
    assert coer.noise_to_signal(clean, clean + torch.tensor([0.0, 0.5])) == pytest.approx(-math.log(0.25))
    assert coer.noise_to_signal(clean, 2 * clean) == pytest.approx(0.0, abs=1e-9)


def test_a_network_whose_output_ignores_its_input_is_the_most_robust() -> None:
    assert value("coer_robustness", chain(Zero())) == pytest.approx(-math.log(coer.EPS))


def test_robustness_falls_as_more_perturbed_layers_compound() -> None:
    orthogonal = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)))[0]
    shallow = chain(conv_block(orthogonal))
    deep = chain(*(conv_block(orthogonal) for _ in range(12)))
    assert value("coer_robustness", deep) < value("coer_robustness", shallow)


def test_robustness_leaves_the_network_and_the_probes_backward_untouched() -> None:
    network = NB201Space(channels=4, cells_per_stage=1).build((3, 3, 1, 3, 0, 2), 10, (3, 16, 16))
    labeled = ProbeBatch(batch(8, 16).inputs, torch.arange(8) % 10, 10)
    reference = Probe(network, labeled)
    grads = [g.clone() for g in reference.weight_grads]
    probe = Probe(network, labeled)
    probe.logits  # noqa: B018 - forward first, so the side pass runs between forward and backward
    state = {k: v.clone() for k, v in network.state_dict().items()}  # batch-norm statistics included
    get_proxy("coer_robustness")(probe)
    assert all(torch.equal(a, b) for a, b in zip(grads, probe.weight_grads, strict=True))
    assert all(torch.equal(state[k], v) for k, v in network.state_dict().items())


# -- isotropy ----------------------------------------------------------------------------------------------
def test_channel_entropy_is_one_for_isotropic_and_zero_for_collapsed_features() -> None:
    signs = torch.tensor(
        [[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64
    )
    isotropic = signs[:, 1:].repeat(2, 1).reshape(2, 2, 2, 3).permute(0, 3, 1, 2)  # 3 uncorrelated channels
    assert coer.normalized_channel_entropy(isotropic) == pytest.approx(1.0)
    collapsed = (
        torch.randn(2, 1, 3, 3, dtype=torch.float64) * torch.tensor([1.0, -2.0, 0.5])[None, :, None, None]
    )
    assert coer.normalized_channel_entropy(collapsed) == pytest.approx(0.0, abs=1e-9)
    assert coer.normalized_channel_entropy(torch.zeros(2, 5, 3, 3)) == 0.0
    assert coer.normalized_channel_entropy(torch.randn(2, 1, 3, 3)) is None


def test_a_block_that_collapses_its_features_is_less_isotropic_than_a_rotation() -> None:
    orthogonal = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(2)))[0]
    rank_one = torch.ones(4, 1) @ torch.randn(1, 4, generator=torch.Generator().manual_seed(3))
    assert value("coer_isotropy", chain(conv_block(rank_one))) < value(
        "coer_isotropy", chain(conv_block(orthogonal))
    )
    assert value("coer_isotropy", chain(Zero())) == 0.0


# -- uncertainty -------------------------------------------------------------------------------------------
def test_uniform_predictions_are_the_most_uncertain_and_sharp_ones_score_less() -> None:
    uniform, sharp = chain(nn.Identity()), chain(nn.Identity())
    with torch.no_grad():
        uniform.head.weight.zero_()
        uniform.head.bias.zero_()
        sharp.head.weight.mul_(1000.0)
    assert value("coer_uncertainty", uniform) == pytest.approx(1.0)
    assert value("coer_uncertainty", sharp) < value("coer_uncertainty", chain(nn.Identity())) < 1.0


# -- regularity --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("factor", "expected"), [(1.0, 0.0), (2.0, -math.log(2.0)), (0.5, -math.log(2.0))])
def test_regularity_is_minus_the_log_backward_gain_of_each_block(factor: float, expected: float) -> None:
    assert value("coer_regularity", chain(Scale(factor), Scale(factor))) == pytest.approx(expected)


def test_a_dead_block_costs_half_the_log_of_one_over_eps() -> None:
    assert value("coer_regularity", chain(Scale(1.0), Zero())) == pytest.approx(-DEAD_BLOCK_COST / 2)


# -- the proxies together ----------------------------------------------------------------------------------
def test_directions_and_revisions() -> None:
    assert all(PROXIES[name].higher_is_better and not PROXIES[name].needs_labels for name in DIMENSIONS)
    assert {name: PROXIES[name].revision for name in DIMENSIONS} == {
        "coer_robustness": 2, "coer_isotropy": 2, "coer_uncertainty": 1, "coer_regularity": 2,
    }  # fmt: skip


@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_every_registered_space_scores_finite_values_on_its_cheapest_arch(space_name: str) -> None:
    space = get_space(space_name)
    proxies = tuple(PROXIES[name] for name in DIMENSIONS)
    arch = space.cheapest()
    job = ScoringJob(space, synthetic_batch(labeled=False), proxies, seed=0, device="cpu")
    values = job.values(arch, job.probe(arch, proxies), proxies)
    assert all(math.isfinite(v) for v in values), (space.encode(arch), values)


@pytest.mark.parametrize("name", DIMENSIONS)
def test_dimensions_follow_the_contract_on_nb201(name: str) -> None:
    check_proxy(PROXIES[name], spaces=[NB201Space(channels=8, cells_per_stage=2)])


# -- fusion ------------------------------------------------------------------------------------------------
def toy_values() -> dict[str, np.ndarray]:
    """Arch 0 is second under all four dimensions; arch 1 first under three and last under one."""
    values = {name: np.array([3.0, 4.0, 2.0, 1.0]) for name in DIMENSIONS}
    values["coer_regularity"] = np.array([3.0, 1.0, 4.0, 2.0])
    return values


def test_coer_is_the_geometric_and_coer_linear_the_arithmetic_mean_of_the_ranks() -> None:
    # ranks (best 1, worst 1/4) per arch: 0: 3/4 x4; 1: 1, 1, 1, 1/4; 2: 1/2 x3, 1; 3: 1/4 x3, 1/2.
    geometric = get_aggregate("coer").combine(toy_values(), labeled=False)
    linear = get_aggregate("coer_linear").combine(toy_values(), labeled=False)
    np.testing.assert_allclose(geometric, [0.75, 0.25**0.25, 0.125**0.25, (0.25**3 * 0.5) ** 0.25])
    np.testing.assert_allclose(linear, [0.75, 0.8125, 0.625, 0.3125])


def test_the_geometric_fusion_prefers_the_balanced_arch_the_linear_one_the_one_sided() -> None:
    geometric = get_aggregate("coer").combine(toy_values(), labeled=True)
    linear = get_aggregate("coer_linear").combine(toy_values(), labeled=True)
    assert geometric[0] > geometric[1] and linear[1] > linear[0]
    assert get_aggregate("coer").inputs(False) == get_aggregate("coer_linear").inputs(True) == DIMENSIONS
