"""GA-rk: NI at the pooling layers (hand-checkable nets), its direction, and the rank-sum combination."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from nasfleet.proxies.activation import NI_SIGMA, NI_STREAM, noise_immunity, pooled_features
from nasfleet.proxies.aggregate import get_aggregate, normalized_rank
from nasfleet.proxies.base import PROXIES, ProxyError, get_proxy
from nasfleet.proxies.probe import Probe, ProbeBatch, stream_seed
from nasfleet.spaces import NB201Space

SEED = 3
SHAPE = (4, 2, 6, 6)
POOL_ARCH = (4, 4, 3, 1, 0, 3)  # two avg_pool_3x3 edges per cell
ALL_NONE = (0,) * 6
REL = 1e-4  # the maps are float32: (X + z) - X differs from z by rounding


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class PoolNet(nn.Module):
    """Input times ``gain``, then pooling layers; no weights or batch norm, so every map is hand-checkable."""

    def __init__(self, pool: nn.Module | None, gain: float = 1.0, global_mean: bool = False) -> None:
        super().__init__()
        self.block = nn.Identity() if pool is None else pool
        self.gain, self.global_mean = gain, global_mean

    @property
    def main_blocks(self) -> list[nn.Module]:
        return [self.block]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.gain * x)
        features = x.mean(dim=(2, 3)) if self.global_mean else x.flatten(1)
        return features[:, :2]


def _inputs() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(99))


def _noise() -> torch.Tensor:
    """The z of X' = X + z that NI draws for ``SEED`` (unit Gaussian, scaled by sigma)."""
    generator = torch.Generator().manual_seed(stream_seed(SEED, NI_STREAM))
    return NI_SIGMA * torch.randn(SHAPE, generator=generator)


def _ni(network: nn.Module) -> float:
    return get_proxy("ni")(Probe(network, ProbeBatch(_inputs(), None, 2), seed=SEED))


# -- eta on hand-checkable networks -----------------------------------------------------------------------
def test_ni_of_an_identity_pooling_layer_is_the_noise_own_squared_norm() -> None:
    eta = _ni(PoolNet(nn.AvgPool2d(1)))  # a 1x1 pooling passes X and X' unchanged: eta = sum z^2
    assert eta == pytest.approx(float(_noise().double().pow(2).sum()), rel=REL)
    assert eta == pytest.approx(NI_SIGMA**2 * _noise()[0].numel() * SHAPE[0], rel=0.2)  # E z^2 = sigma^2


def test_ni_compares_the_pooling_layer_outputs_not_inputs() -> None:
    expected = float(F.avg_pool2d(_noise(), 2).double().pow(2).sum())
    assert _ni(PoolNet(nn.AvgPool2d(2))) == pytest.approx(expected, rel=REL)
    assert expected < 0.5 * float(_noise().pow(2).sum())  # averaging 4 values damps independent noise


def test_a_global_spatial_mean_counts_as_a_pooling_layer() -> None:
    expected = float(_noise().mean(dim=(2, 3)).double().pow(2).sum())
    assert _ni(PoolNet(None, global_mean=True)) == pytest.approx(expected, rel=REL)
    both = _ni(PoolNet(nn.AvgPool2d(1), global_mean=True))  # two pooling layers: their terms add up
    assert both == pytest.approx(expected + float(_noise().double().pow(2).sum()), rel=REL)


def test_a_network_without_pooling_layers_has_no_ni() -> None:
    with pytest.raises(ProxyError, match=r"at least one pooling layer.*PoolNet ran none"):
        _ni(PoolNet(None))


def test_smaller_eta_ranks_first() -> None:
    damped, amplified = _ni(PoolNet(nn.AvgPool2d(1), gain=0.5)), _ni(PoolNet(nn.AvgPool2d(1), gain=2.0))
    assert amplified == pytest.approx(16.0 * damped, rel=REL)  # eta scales with the squared gain
    assert not PROXIES["ni"].higher_is_better
    np.testing.assert_array_equal(normalized_rank(np.array([amplified, damped]), False), [0.5, 1.0])


def test_noise_immunity_is_the_plain_sum_of_squared_differences() -> None:
    clean = [torch.zeros(2, 3, 2, 2), torch.ones(2, 5)]
    noisy = [torch.full((2, 3, 2, 2), 0.5), torch.ones(2, 5) * 3.0]
    assert noise_immunity(clean, noisy) == pytest.approx(24 * 0.25 + 10 * 4.0)  # no mean, no log
    assert noise_immunity(clean, clean) == 0.0
    with pytest.raises(ProxyError, match="one noisy map per clean map"):
        noise_immunity(clean, noisy[:1])
    with pytest.raises(ProxyError, match=r"layer 1 has \(2, 5\) and \(2, 4\)"):
        noise_immunity(clean, [noisy[0], torch.ones(2, 4)])


# -- NAS-Bench-201 ----------------------------------------------------------------------------------------
def _nb201(arch: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    return NB201Space(channels=4, cells_per_stage=1).build(arch, 10, (3, 16, 16))


@pytest.mark.parametrize(("arch", "maps"), [(POOL_ARCH, 3 * 2 + 2 + 1), (ALL_NONE, 0 + 2 + 1)])
def test_nb201_pooling_layers_are_cell_pools_reduction_pools_and_the_global_mean(
    arch: tuple[int, ...], maps: int
) -> None:
    features = pooled_features(_nb201(arch), torch.randn(4, 3, 16, 16))
    assert len(features) == maps
    assert tuple(features[-1].shape) == (4, 16)  # the global average pooling's output, before the classifier


def test_a_dead_nb201_network_scores_zero_and_a_live_one_more() -> None:
    batch = ProbeBatch(torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1)), None, 10)
    dead = get_proxy("ni")(Probe(_nb201(ALL_NONE), batch, seed=0))
    live = get_proxy("ni")(Probe(_nb201(POOL_ARCH), batch, seed=0))
    assert dead == 0.0 < live


# -- the rank combination ---------------------------------------------------------------------------------
def test_garank_adds_the_three_ranks_each_in_its_own_direction() -> None:
    values = {
        "ni": np.array([1.0, 4.0, 2.0, 3.0]),  # lower is better: ranks 1, 4, 2, 3
        "naswot": np.array([10.0, 40.0, 30.0, 20.0]),  # higher is better: ranks 4, 1, 2, 3
        "logsynflow": np.array([5.0, 6.0, 6.0, 1.0]),  # higher is better, a tie: 3, 1.5, 1.5, 4
    }
    rank_sums = np.array([8.0, 6.5, 5.5, 10.0])  # 1 = best under each score; the smallest sum is best
    n = 4
    scores = get_aggregate("garank").combine(values, labeled=False)
    np.testing.assert_allclose(scores, (n + 1) / n - rank_sums / (3 * n))
    assert list(np.argsort(-scores)) == [2, 1, 0, 3]


def test_garank_flips_with_the_ni_direction_only() -> None:
    values = {"ni": np.array([1.0, 2.0]), "naswot": np.array([1.0, 1.0]), "logsynflow": np.array([3.0, 3.0])}
    assert list(get_aggregate("garank").combine(values, labeled=False)) == pytest.approx([5 / 6, 2 / 3])
    values["ni"] = values["ni"][::-1].copy()
    assert list(get_aggregate("garank").combine(values, labeled=False)) == pytest.approx([2 / 3, 5 / 6])
