"""FG-NAS equations on hand-computable cases, and the four proxies on real (tiny) networks."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from nasfleet.proxies.aggregate import get_aggregate
from nasfleet.proxies.base import ProxyError, get_proxy
from nasfleet.proxies.fgnas import (
    block_sigmas,
    channel_correlation,
    correlation_ratio,
    gaussian_entropy,
    gradient_change,
    gradient_signal,
    important_blocks,
    nonlinear_fusion,
    reduce_features,
    reduced_scores,
    spectral_norm_estimate,
)
from nasfleet.proxies.probe import Probe, ProbeBatch
from nasfleet.spaces import NB201Space

FG = ("fg_fi", "fg_fc", "fg_gc", "fg_gi")


def _orthogonal_features(scales: list[float], samples: int = 8) -> torch.Tensor:
    """Centred features whose principal components have exactly the given standard deviations."""
    hadamard = torch.tensor([[1.0]])
    while hadamard.shape[0] < samples:
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)], 0)
    columns = hadamard[:, 1 : len(scales) + 1] * torch.tensor(scales) * math.sqrt((samples - 1) / samples)
    return columns  # each column: mean 0, unbiased variance scale^2, mutually orthogonal


def test_pca_keeps_the_components_that_explain_ninety_percent() -> None:
    reduced = reduce_features(_orthogonal_features([3.0, 2.0, 1.0, 0.5]), variance=0.9)
    # variances 9, 4, 1, 0.25 (total 14.25): 9/14.25 = 0.63, 13/14.25 = 0.91 >= 0.9, so two are kept.
    np.testing.assert_allclose(reduced.variances, [9.0, 4.0], rtol=1e-6)
    assert reduced_scores(_orthogonal_features([3.0, 2.0, 1.0, 0.5])).shape == (8, 1, 2)  # one position each
    assert len(reduce_features(_orthogonal_features([3.0, 2.0, 1.0, 0.5]), variance=0.95).variances) == 3


def test_channels_are_the_features_and_positions_are_observations() -> None:
    # 2 samples x 3 channels x 2 x 2 positions; channel 2 = 2 * channel 0, channel 1 independent.
    base = torch.tensor([[[1.0, -1.0], [2.0, 0.0]], [[0.0, 3.0], [-2.0, -1.0]]])
    other = torch.tensor([[[0.5, 0.5], [-1.0, 0.0]], [[1.0, -1.0], [0.0, 0.0]]])
    output = torch.stack([base, other, 2 * base], dim=1)
    reduced = reduce_features(output, variance=0.999)
    rows = output.permute(0, 2, 3, 1).reshape(-1, 3).double()
    expected = torch.linalg.eigvalsh(torch.cov(rows.T)).flip(0)[:2].numpy()
    np.testing.assert_allclose(reduced.variances, expected, rtol=1e-9)
    assert reduced_scores(output, variance=0.999).shape == (2, 4, 2)  # rank 2: the third channel adds none


def test_entropy_of_known_gaussian_components() -> None:
    expected = sum(0.5 * (math.log(2 * math.pi * v) + 1) for v in (9.0, 4.0))
    assert gaussian_entropy(np.array([9.0, 4.0])) == pytest.approx(expected)
    assert math.isfinite(gaussian_entropy(np.array([0.0])))


def test_dead_block_reduces_to_one_zero_component() -> None:
    reduced = reduce_features(torch.zeros(6, 4, 2, 2))
    assert reduced.variances.tolist() == [0.0]


def test_channel_correlation_is_the_per_sample_pearson_sum_over_positions() -> None:
    # Sample 0: channel 1 = -2 x channel 0 over the 4 positions, channel 2 constant; sample 1: orthogonal
    first = torch.tensor([[1.0, -2.0, 5.0], [-1.0, 2.0, 5.0], [3.0, -6.0, 5.0], [-3.0, 6.0, 5.0]])
    second = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [-1.0, -1.0, 0.0]])
    output = torch.stack([first, second]).transpose(1, 2).reshape(2, 3, 2, 2)  # (B, C, H, W)
    # |Pearson| sums: 3 (diagonal) + 2 (channels 0 and 1) for the first, 3 for the second
    assert channel_correlation(output) == pytest.approx((5.0 + 3.0) / 2)
    assert channel_correlation(torch.randn(4, 3)) == 3.0  # no positions: the identity


def test_correlation_ratio_is_the_nuclear_norm_over_the_pearson_sum() -> None:
    output = torch.randn(2, 5, 3, 3, generator=torch.Generator().manual_seed(0))
    scores = reduced_scores(output)
    nuclear = np.linalg.svd(scores.reshape(-1, scores.shape[-1]), compute_uv=False).sum()
    assert correlation_ratio(reduce_features(output), 4.0) == pytest.approx(nuclear / 4.0, rel=1e-9)


def test_correlated_channels_score_lower() -> None:
    draw = partial(torch.randn, generator=torch.Generator().manual_seed(0))
    independent = draw(4, 6, 8, 8)
    shared = draw(4, 1, 8, 8) + 0.05 * draw(4, 6, 8, 8)
    assert 6.0 <= channel_correlation(independent) < channel_correlation(shared) <= 36.0


class LinearBlockNet(nn.Module):
    """Two linear blocks with chosen weights; main blocks are the two layers."""

    def __init__(self, first: torch.Tensor, second: torch.Tensor) -> None:
        super().__init__()
        self.first = nn.Linear(first.shape[1], first.shape[0], bias=False)
        self.second = nn.Linear(second.shape[1], second.shape[0], bias=False)
        with torch.no_grad():
            self.first.weight.copy_(first)
            self.second.weight.copy_(second)
        self.main_blocks = [self.first, self.second]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.second(self.first(x.flatten(1)))
        return logits


@pytest.mark.parametrize("n_probes", [1, 2, 5])
def test_sigma_of_a_scaled_orthogonal_block_is_its_scale(n_probes: int) -> None:
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
    net = LinearBlockNet(2.5 * q, 0.4 * q[:10])
    batch = ProbeBatch(torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 3]), 10)
    sigmas = block_sigmas(Probe(net, batch), n_probes)
    assert sigmas[0] == pytest.approx(2.5, rel=1e-5)
    assert sigmas[1] < 0.4 + 1e-6  # rows of an orthogonal matrix: gain 0.4 on its 10-dim image


def test_spectral_norm_of_the_rank_k_estimate() -> None:
    v = torch.tensor([[1.0, -1.0, 1.0, 1.0], [1.0, 1.0, -1.0, 1.0]], dtype=torch.float64)
    pushed = 3.0 * v  # J = 3 I
    assert spectral_norm_estimate(v @ v.T, pushed @ pushed.T) == pytest.approx(3.0)


def test_gradient_change_peaks_at_unit_gain() -> None:
    assert gradient_change(np.ones(5)) == 0.0
    assert gradient_change(np.array([2.0])) == pytest.approx(-0.5)
    assert gradient_change(np.array([0.5])) == pytest.approx(-0.5)


def test_important_blocks_keep_a_gamma_fraction_symmetric_in_log_sigma() -> None:
    sigmas = np.array([1.0, 4.0, 0.25, 1.5, 0.1, 0.9, 8.0, 1.1, 0.7, 3.0])
    kept = important_blocks(sigmas, gamma=0.6)
    assert kept.tolist() == [0, 3, 5, 7, 8, 9]
    k = min(sigmas[kept].min(), 1 / sigmas[kept].max())
    assert all(k - 1e-12 <= s <= 1 / k + 1e-12 for s in sigmas[kept])
    with pytest.raises(ValueError, match="gamma"):
        important_blocks(sigmas, gamma=0.0)


def test_gradient_signal_of_known_per_sample_gradients() -> None:
    grads = torch.tensor([[1.0, 2.0, 5.0], [3.0, 2.0, 5.0]])  # mean|g| = 2, 2, 5; std = 1, 0, 0
    assert gradient_signal(grads) == pytest.approx(math.log(2.0))
    assert gradient_signal(torch.ones(4, 3)) is None


def test_nonlinear_fusion_is_monotone_and_log_penalises_a_weak_component() -> None:
    assert nonlinear_fusion(np.array([1.0]), np.array([1.0]))[0] == pytest.approx(2.0)
    strong_and_weak = nonlinear_fusion(np.array([1.0]), np.array([0.01]))[0]
    balanced = nonlinear_fusion(np.array([0.5]), np.array([0.5]))[0]
    assert balanced > strong_and_weak


@pytest.fixture(scope="module")
def tiny() -> tuple[NB201Space, ProbeBatch]:
    generator = torch.Generator().manual_seed(0)
    batch = ProbeBatch(torch.randn(8, 3, 16, 16, generator=generator), torch.arange(8) % 4, 4)
    return NB201Space(channels=4, cells_per_stage=1), batch


def _scores(space: NB201Space, batch: ProbeBatch, genome: tuple[int, ...]) -> list[float]:
    torch.manual_seed(0)
    probe = Probe(space.build(genome, batch.num_classes, batch.input_shape), batch, seed=3)
    return [get_proxy(name)(probe) for name in FG]


def test_proxies_are_deterministic_and_finite_even_for_dead_cells(
    tiny: tuple[NB201Space, ProbeBatch],
) -> None:
    space, batch = tiny
    for genome in [(3, 2, 3, 1, 3, 4), (0,) * 6, (1,) * 6, (4,) * 6]:
        first, second = _scores(space, batch, genome), _scores(space, batch, genome)
        assert first == second
        assert all(math.isfinite(v) for v in first)


def test_label_free_probe_rejects_s_gi_but_computes_the_rest(tiny: tuple[NB201Space, ProbeBatch]) -> None:
    space, batch = tiny
    unlabeled = ProbeBatch(batch.inputs, None, batch.num_classes)
    probe = Probe(space.build((3,) * 6, 4, unlabeled.input_shape), unlabeled)
    assert all(math.isfinite(get_proxy(name)(probe)) for name in ("fg_fi", "fg_fc", "fg_gc"))
    with pytest.raises(ProxyError, match="needs labels"):
        get_proxy("fg_gi")(probe)


def test_aggregate_switches_on_label_availability() -> None:
    fgnas = get_aggregate("fgnas")
    assert fgnas.inputs(labeled=True) == FG
    assert fgnas.inputs(labeled=False) == ("fg_fi", "fg_fc", "fg_gc")
    assert get_aggregate("fgnas_nofp").inputs(labeled=True) == ("fg_gc", "fg_gi")
    assert get_aggregate("fgnas_nogp").inputs(labeled=False) == ("fg_fi", "fg_fc")


def test_an_architecture_best_on_every_proxy_gets_the_top_aggregate() -> None:
    rng = np.random.default_rng(1)
    values = {name: rng.normal(size=20) for name in FG}
    for name in FG:
        values[name][7] = values[name].max() + 1.0
    for aggregate in ("fgnas", "fgnas_nofp", "fgnas_nogp", "fgnas_linear"):
        for labeled in (True, False):
            scores = get_aggregate(aggregate).combine(values, labeled)
            assert int(np.argmax(scores)) == 7
            assert np.all(np.isfinite(scores))


def test_aggregate_reports_missing_columns_and_nan() -> None:
    with pytest.raises(ProxyError, match="fg_gi"):
        get_aggregate("fgnas").combine({n: np.ones(3) for n in FG[:3]}, labeled=True)
    with pytest.raises(ProxyError, match="finite"):
        get_aggregate("fgnas").combine({n: np.array([1.0, np.nan, 2.0]) for n in FG}, labeled=True)
