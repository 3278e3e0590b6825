"""AZ-NAS and MeCo: formulas on hand-checkable cases, tiny networks, and every registered space."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from toy_networks import Chain, Zero, conv_block, random_batch

import nasfleet.proxies.aznas as az
import nasfleet.proxies.meco as meco
from nasfleet.proxies.aggregate import get_aggregate
from nasfleet.proxies.base import PROXIES, ProxyError, get_proxy
from nasfleet.proxies.probe import Probe, ProbeBatch
from nasfleet.proxies.scorer import ScoringJob
from nasfleet.spaces import SPACES, NB201Space, get_space
from nasfleet.testing import check_proxy
from nasfleet.testing.proxies import synthetic_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AZ = ("az_expressivity", "az_progressivity", "az_trainability")
NEW = (*AZ, "meco")


def hadamard(size: int) -> torch.Tensor:
    """A size x size matrix of +-1 with orthogonal columns (size a power of 2)."""
    matrix = torch.ones(1, 1, dtype=torch.float64)
    while matrix.shape[0] < size:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)], 0)
    return matrix


def as_feature_map(rows: torch.Tensor, batch: int, side: int) -> torch.Tensor:
    """(batch*side*side, C) rows, one per (sample, position), as a (batch, C, side, side) map."""
    return rows.reshape(batch, side, side, -1).permute(0, 3, 1, 2).contiguous()


def batch(size: int = 64, side: int = 8, seed: int = 0) -> ProbeBatch:
    return random_batch(size, side, seed)


def value(name: str, network: nn.Module, probe_batch: ProbeBatch | None = None, seed: int = 0) -> float:
    torch.manual_seed(0)
    return get_proxy(name)(Probe(network, probe_batch or batch(), seed=seed))


# -- expressivity and progressivity ------------------------------------------------------------------------
def test_isotropic_features_have_maximal_expressivity_ln_c() -> None:
    rows = hadamard(64)[:, 1:5] * 3.0  # 4 channels: mean 0, equal variance, uncorrelated
    assert az.isotropy_entropy(as_feature_map(rows, 4, 4)) == pytest.approx(math.log(4))


def test_expressivity_is_the_entropy_of_the_normalized_spectrum() -> None:
    rows = hadamard(64)[:, 1:3] * torch.tensor([math.sqrt(3.0), 1.0], dtype=torch.float64)  # variances 3, 1
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert az.isotropy_entropy(as_feature_map(rows, 4, 4)) == pytest.approx(expected)


def test_rank_one_and_constant_features_have_zero_expressivity() -> None:
    direction = torch.randn(16, 1, dtype=torch.float64)
    rank_one = direction * torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    assert az.isotropy_entropy(as_feature_map(rank_one, 1, 4)) == pytest.approx(0.0, abs=1e-9)
    assert az.isotropy_entropy(torch.zeros(2, 5, 3, 3)) == 0.0
    assert az.isotropy_entropy(torch.full((2, 5, 3, 3), 7.0)) == 0.0


def test_token_matrices_use_channels_as_features_and_tokens_as_positions() -> None:
    tokens = hadamard(16)[:, 1:5].reshape(2, 8, 4)  # (B, T, C), isotropic over the 4 channels
    assert az.isotropy_entropy(tokens) == pytest.approx(math.log(4))


def test_expressivity_sums_and_progressivity_takes_the_smallest_step() -> None:
    entropies = np.array([1.0, 3.0, 2.5, 4.0])
    assert az.expressivity(entropies) == 10.5
    assert az.progressivity(entropies) == -0.5
    with pytest.raises(ProxyError, match="at least 2 features"):
        az.progressivity(np.array([1.0]))


# -- trainability ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5])
def test_channel_jacobian_norm_of_a_scaled_orthogonal_map_is_its_scale(scale: float) -> None:
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    v = hadamard(64)[:, :4]  # Rademacher rows whose columns are orthogonal: (1/N) V^T V = I exactly
    pushed = v @ (scale * q)  # J^T v, row by row, for the block f -> scale * Q f
    sigma = az.channel_jacobian_norm(as_feature_map(pushed, 4, 4), as_feature_map(v, 4, 4))
    assert sigma == pytest.approx(scale)
    assert az.trainability([sigma]) == pytest.approx(2.0 - scale - 1.0 / scale, abs=1e-9)


def test_trainability_averages_blocks_and_ranks_identity_blocks_last() -> None:
    assert az.trainability([1.0, 2.0]) == pytest.approx(-0.25)  # (0 + (2 - 2 - 1/2)) / 2
    assert az.trainability([0.0]) == pytest.approx(2.0 - 1e-6 - 1e6)  # a dead block, floored at 1e-6
    assert az.trainability([1.0, None]) == az.IDENTITY_TRAINABILITY
    assert az.trainability([0.0, 0.0]) > az.IDENTITY_TRAINABILITY


def test_space_to_depth_is_pixel_unshuffle_and_zero_pads_odd_sizes() -> None:
    grad = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(az.space_to_depth(grad, 4, 4), nn.PixelUnshuffle(2)(grad))
    odd = torch.randn(2, 3, 7, 7)
    aligned = az.space_to_depth(odd, 4, 4)  # 7 -> ceil(7 / 2) = 4: padded to 8 first
    assert aligned.shape == (2, 12, 4, 4)
    torch.testing.assert_close(aligned.sum(), odd.sum())
    with pytest.raises(ProxyError, match="input grid to be at least its output grid"):
        az.space_to_depth(torch.randn(1, 2, 2, 2), 4, 4)
    with pytest.raises(ProxyError, match="keep its tokens"):
        az.aligned_gradient(torch.randn(1, 5, 4), torch.randn(1, 6, 4))


def test_orthogonal_linear_block_has_trainability_near_zero() -> None:
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(2)))
    assert value("az_trainability", Chain(conv_block(q))) == pytest.approx(0.0, abs=0.02)
    # 2Q doubles every gradient: 2 - 2 - 1/2, up to the one-probe estimate's noise (4096 rows)
    assert value("az_trainability", Chain(conv_block(2 * q))) == pytest.approx(-0.5, abs=0.05)


def test_identity_and_dead_blocks_get_the_references_worst_values() -> None:
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(2)))
    assert value("az_trainability", Chain(conv_block(q), nn.Identity())) == az.IDENTITY_TRAINABILITY
    dead = value("az_trainability", Chain(conv_block(q), Zero()))
    assert dead == pytest.approx((2.0 - 1e-6 - 1e6) / 2, rel=1e-3)  # one of two blocks dead


# -- MeCo --------------------------------------------------------------------------------------------------
def test_min_correlation_eigenvalue_on_hand_made_channels() -> None:
    orthogonal = hadamard(16)[1:5]  # 4 uncorrelated channels over 16 positions: P = I
    assert meco.min_correlation_eigenvalue(orthogonal) == pytest.approx(1.0)
    rank_one = torch.randn(1, 16, dtype=torch.float64) * torch.tensor(
        [[1.0], [-3.0], [0.5]], dtype=torch.float64
    )
    assert meco.min_correlation_eigenvalue(rank_one) == pytest.approx(0.0, abs=1e-9)
    rho = 0.6  # two channels with Pearson rho: eigenvalues 1 +- rho
    a, b = hadamard(16)[1], hadamard(16)[2]
    pair = torch.stack([a, rho * a + math.sqrt(1 - rho**2) * b])
    assert meco.min_correlation_eigenvalue(pair) == pytest.approx(1 - rho)
    with_constant = torch.cat([orthogonal, torch.full((1, 16), 2.0, dtype=torch.float64)])
    assert meco.min_correlation_eigenvalue(with_constant) == 0.0
    assert meco.min_correlation_eigenvalue(torch.randn(8, 8, dtype=torch.float64)) == 0.0  # P <= C: singular


def test_channel_observations_take_the_first_sample_rows_first() -> None:
    maps = torch.randn(3, 4, 2, 5)
    torch.testing.assert_close(meco.channel_observations(maps), maps[0].reshape(4, 10).double())
    tokens = torch.randn(3, 7, 6)
    torch.testing.assert_close(meco.channel_observations(tokens), tokens[0].double())
    assert meco.channel_observations(torch.randn(3, 10)) is None


def test_meco_sums_every_feature_map_output_of_one_datum() -> None:
    network = Chain(nn.Conv2d(4, 4, 3, padding=1, bias=False))
    probe_batch = batch(size=4)
    x = probe_batch.inputs[:1]
    stem = network.stem(x)
    block = network.blocks[0](stem)
    expected = sum(
        float(np.linalg.eigvalsh(np.corrcoef(out[0].reshape(4, -1).detach().double().numpy()))[0])
        for out in (stem, block)
    )  # the root and the head output flat logits; the ModuleList is never called
    assert value("meco", network, probe_batch) == pytest.approx(expected, rel=1e-9)


def test_meco_reads_only_the_first_sample_with_its_own_batch_norm_statistics() -> None:
    space = NB201Space(channels=8, cells_per_stage=1)
    arch = space.decode(
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|"
    )
    first, other = batch(8, 16, seed=0), batch(8, 16, seed=1)
    changed = ProbeBatch(torch.cat([first.inputs[:1], other.inputs[1:]]), None, 10)
    assert value("meco", space.build(arch, 10, (3, 16, 16)), first) == value(
        "meco", space.build(arch, 10, (3, 16, 16)), changed
    )


def test_meco_refuses_a_network_that_cannot_run_one_sample() -> None:
    network = Chain(
        nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 4), nn.BatchNorm1d(4), nn.Unflatten(1, (4, 1, 1)))
    )
    with pytest.raises(ProxyError, match="meco needs a forward pass of one sample"):
        value("meco", network)


# -- sharing, spaces, determinism ------------------------------------------------------------------------
def test_az_proxies_share_the_probe_forward_and_meco_adds_one_single_sample_pass() -> None:
    network = NB201Space(channels=8, cells_per_stage=1).build((3, 1, 2, 4, 3, 0), 10, (3, 16, 16))
    calls: list[int] = []
    network.register_forward_hook(lambda module, args, output: calls.append(int(args[0].shape[0])))
    probe = Probe(network, batch(8, 16))
    for name in AZ:
        get_proxy(name)(probe)
    assert calls == [8]
    get_proxy("meco")(probe)
    assert calls == [8, 1]


@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_every_registered_space_scores_finite_values(space_name: str) -> None:
    space = get_space(space_name)
    proxies = tuple(PROXIES[name] for name in (*NEW, "flops"))
    arch = space.sample(np.random.default_rng(7))
    job = ScoringJob(space, synthetic_batch(labeled=False), proxies, seed=0, device="cpu")
    values = job.values(arch, job.probe(arch, proxies), proxies)
    assert all(math.isfinite(v) for v in values), (space.encode(arch), values)


@pytest.mark.parametrize("name", NEW)
def test_new_proxies_follow_the_contract_on_nb201(name: str) -> None:
    check_proxy(PROXIES[name], spaces=[NB201Space(channels=8, cells_per_stage=2)])


def test_values_are_deterministic_and_only_trainability_depends_on_the_probe_seed() -> None:
    network = NB201Space(channels=8, cells_per_stage=1).build((3, 2, 3, 1, 3, 4), 10, (3, 16, 16))
    runs = [{name: get_proxy(name)(Probe(network, batch(8, 16), seed=s)) for name in NEW} for s in (0, 0, 5)]
    assert runs[0] == runs[1]
    assert runs[2]["az_trainability"] != runs[0]["az_trainability"]
    assert {k: runs[2][k] for k in NEW if k != "az_trainability"} == {
        k: runs[0][k] for k in NEW if k != "az_trainability"
    }


# -- aggregation -------------------------------------------------------------------------------------------
def test_aznas_sums_log_normalized_ranks_of_its_four_inputs() -> None:
    aggregate = get_aggregate("aznas")
    assert aggregate.inputs(True) == aggregate.inputs(False) == (*AZ, "flops")
    values = {  # four archs; their ranks (1 = worst, 4 = best) in the comments
        "az_expressivity": np.array([1.0, 2.0, 3.0, 4.0]),  # 1 2 3 4
        "az_progressivity": np.array([0.3, 0.1, 0.2, 0.4]),  # 3 1 2 4
        "az_trainability": np.array([-5.0, -1.0, -1.0, -9.0]),  # 2 3.5 3.5 1 (a tie shares the average)
        "flops": np.array([10.0, 40.0, 30.0, 20.0]),  # 1 4 3 2
    }
    ranks = np.array([[1, 2, 3, 4], [3, 1, 2, 4], [2, 3.5, 3.5, 1], [1, 4, 3, 2]]) / 4
    np.testing.assert_allclose(aggregate.combine(values, labeled=False), np.log(ranks).sum(axis=0))


def test_aznas_puts_a_consistent_arch_above_a_one_sided_one_with_the_same_rank_sum() -> None:
    ranks = {  # arch 0: third, third, third, first (sum 13); arch 1: first three times, last once (13)
        "az_expressivity": [3.0, 4.0, 1.0, 2.0],
        "az_progressivity": [3.0, 4.0, 2.0, 1.0],
        "az_trainability": [3.0, 4.0, 1.0, 2.0],
        "flops": [4.0, 1.0, 2.0, 3.0],
    }
    scores = get_aggregate("aznas").combine({k: np.array(v) for k, v in ranks.items()}, labeled=True)
    assert scores[0] == pytest.approx(3 * math.log(3 / 4))
    assert scores[1] == pytest.approx(math.log(1 / 4))
    assert scores[0] > scores[1]  # a mean of ranks would tie them
    with pytest.raises(ProxyError, match="positive ranks"):
        az.log_rank_sum(np.array([[0.0]]))
