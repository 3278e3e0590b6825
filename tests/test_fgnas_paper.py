"""FG-NAS as its paper writes it (`nasfleet.proxies.fgnas_paper`): each equation on a hand-computable case,
and the four proxies and the aggregate on real (tiny) networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nasfleet.proxies.aggregate import get_aggregate
from nasfleet.proxies.base import ProxyError, get_proxy
from nasfleet.proxies.fgnas_paper import (
    block_gradient_ratio,
    block_jacobian,
    channel_rows,
    layer_information,
    paper_important,
    paper_rank,
    paper_reduce,
    pearson_sum,
)
from nasfleet.proxies.probe import Probe, ProbeBatch
from nasfleet.spaces import get_space

PAPER = ("fgp_fi", "fgp_fc", "fgp_gc", "fgp_gi")


def _literal_reduction(rows: np.ndarray, variance: float = 0.9) -> np.ndarray:
    """Eqs. 4-7 with the n x n covariance built explicitly, as printed (columns centred over the c rows)."""
    centred = rows - rows.mean(axis=0, keepdims=True)
    covariance = centred.T @ centred / (rows.shape[1] - 1)  # eq. 5: n x n
    eigenvalues, vectors = np.linalg.eigh(covariance)
    eigenvalues, vectors = eigenvalues[::-1], vectors[:, ::-1]
    kept = int(np.searchsorted(np.cumsum(eigenvalues) / eigenvalues.sum(), variance - 1e-12)) + 1
    return rows @ vectors[:, :kept]  # eq. 7: f = F V


def test_feature_matrix_has_a_row_per_channel_and_a_column_per_sample_position() -> None:
    output = torch.arange(2 * 3 * 2 * 2, dtype=torch.float).reshape(2, 3, 2, 2)
    rows = channel_rows(output)
    assert rows.shape == (3, 8)
    np.testing.assert_array_equal(rows[1].numpy(), [4, 5, 6, 7, 16, 17, 18, 19])  # channel 1, both samples
    assert channel_rows(torch.zeros(4, 5, 6)).shape == (6, 20)  # tokens: (B, T, C) -> C x (B*T)


def test_reduction_equals_the_explicit_n_by_n_covariance_up_to_column_signs() -> None:
    generator = torch.Generator().manual_seed(0)
    output = torch.randn(2, 5, 3, 3, generator=generator) * torch.tensor([4.0, 3.0, 2.0, 1.0, 0.1]).view(
        1, 5, 1, 1
    )
    reduced = paper_reduce(output).numpy()
    expected = _literal_reduction(channel_rows(output).numpy())
    assert reduced.shape == expected.shape == (5, expected.shape[1])
    assert 1 <= expected.shape[1] < 5
    np.testing.assert_allclose(np.abs(reduced), np.abs(expected), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(np.abs((reduced * expected).sum(0)), (expected**2).sum(0), rtol=1e-8)


def test_reduction_is_deterministic_and_a_dead_block_reduces_to_zero() -> None:
    output = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(paper_reduce(output), paper_reduce(output.clone()))
    assert torch.equal(paper_reduce(torch.ones(2, 4, 3, 3)), torch.zeros(4, 1, dtype=torch.double))


def test_information_is_the_gaussian_entropy_of_the_matrix_variance() -> None:
    f = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.double)  # population variance 1
    assert layer_information(f) == pytest.approx(0.5 * (math.log(2 * math.pi) + 1))
    assert layer_information(2 * f) == pytest.approx(0.5 * (math.log(2 * math.pi * 4) + 1))


def test_pearson_sum_adds_every_signed_entry_of_the_row_correlation_matrix() -> None:
    rising = torch.tensor([1.0, 2.0, 3.0], dtype=torch.double)
    assert pearson_sum(torch.stack([rising, 2 * rising, rising + 5])) == pytest.approx(9.0)
    assert pearson_sum(torch.stack([rising, -rising])) == pytest.approx(1e-12)  # 1 + 1 - 1 - 1, floored
    assert pearson_sum(torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.double)) == pytest.approx(3.0)  # k = 1


def test_jacobian_of_a_per_position_linear_block_is_estimated_from_its_matrix() -> None:
    conv = nn.Conv2d(3, 2, kernel_size=1, bias=False)
    matrix = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    conv.weight.data = matrix.view(2, 3, 1, 1)
    block_in = torch.randn(4, 3, 5, 5, requires_grad=True)
    probes = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    estimate = block_jacobian(block_in, conv(block_in), probes)
    expected = sum(matrix.T @ v[:, None] @ v[None, :] for v in probes) / 2  # (1/K) sum_k (A^T v_k) v_k^T
    torch.testing.assert_close(estimate, expected.double())


def test_important_blocks_are_the_gamma_share_closest_to_unit_gain() -> None:
    sigmas = np.array([1.0, 2.0, 0.5, 10.0, 0.1])
    np.testing.assert_array_equal(paper_important(sigmas, 0.6), [0, 1, 2])
    np.testing.assert_array_equal(paper_important(sigmas, 0.1), [0])  # at least one block
    with pytest.raises(ValueError, match="gamma must lie in"):
        paper_important(sigmas, 0.0)


def test_gradient_ratio_follows_eqs_24_and_25_as_printed() -> None:
    # Per-sample terms of a batch-mean gradient (B = 2): each sample's own gradient is twice its term.
    assert block_gradient_ratio([torch.tensor([[1.0], [3.0]])]) == pytest.approx(4.0 / 4.0)
    # Eq. 25 measures deviations from eq. 24's mean of absolute values: gradients -2, 2 give E 2, Var 8.
    assert block_gradient_ratio([torch.tensor([[-1.0], [1.0]])]) == pytest.approx(2.0 / 8.0)
    assert block_gradient_ratio([]) == 0.0
    assert block_gradient_ratio([torch.ones(3, 4)]) == 0.0  # gradients that never vary


def test_aggregate_uses_integer_ranks_and_fuses_eqs_28_to_30_as_printed() -> None:
    values = {
        "fgp_fi": np.array([1.0, 2.0, 3.0]),
        "fgp_fc": np.array([3.0, 1.0, 2.0]),
        "fgp_gc": np.array([-5.0, -1.0, -3.0]),
        "fgp_gi": np.array([0.2, 0.1, 0.3]),
    }
    fi, fc, gc, gi = (paper_rank(name, values) for name in ("fgp_fi", "fgp_fc", "fgp_gc", "fgp_gi"))
    np.testing.assert_array_equal(fi, [1, 2, 3])
    r_f = np.log(fi * fc) + fi**2 + fc**2
    r_g = np.log(gi * gc) + gi**2 + gc**2
    expected = np.log(r_f * r_g) + r_f**2 + r_g**2
    np.testing.assert_allclose(get_aggregate("fgnas_paper").combine(values, labeled=True), expected)
    unlabeled = np.log(r_f * gc) + r_f**2 + gc**2
    np.testing.assert_allclose(get_aggregate("fgnas_paper").combine(values, labeled=False), unlabeled)
    np.testing.assert_allclose(get_aggregate("fgnas_paper_nogp").combine(values, labeled=True), r_f)
    np.testing.assert_allclose(get_aggregate("fgnas_paper_linear").combine(values, True), fi + fc + gi + gc)
    assert get_aggregate("fgnas_paper_nofp").inputs(labeled=False) == ("fgp_gc",)
    with pytest.raises(ProxyError, match="finite"):
        paper_rank("fgp_fi", {"fgp_fi": np.array([1.0, np.nan])})


@pytest.mark.parametrize("space_name", ["nb201", "mbv2", "coer", "autoformer-edge"])
def test_paper_proxies_are_finite_and_deterministic_on_every_space(space_name: str) -> None:
    space = get_space(space_name)
    generator = torch.Generator().manual_seed(0)
    batch = ProbeBatch(torch.randn(4, 3, 32, 32, generator=generator), torch.arange(4) % 10, 10)
    arch = space.sample(np.random.default_rng(2))

    def scores() -> list[float]:
        torch.manual_seed(0)
        probe = Probe(space.build(arch, batch.num_classes, batch.input_shape), batch, seed=3)
        return [get_proxy(name)(probe) for name in PAPER]

    first = scores()
    assert first == scores()
    assert all(math.isfinite(value) for value in first)


def test_captured_output_gradients_equal_those_of_the_full_weight_pass() -> None:
    space = get_space("nb201")
    batch = ProbeBatch(
        torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(4), 10
    )
    arch = space.sample(np.random.default_rng(5))

    def probe() -> Probe:
        torch.manual_seed(0)
        return Probe(space.build(arch, 10, batch.input_shape), batch, seed=3)

    captured, full = probe(), probe()
    captured.logits, full.logits  # noqa: B018 - record the layers
    chosen = [layer for layer in captured.layers if layer.block in (2, 5)]
    assert chosen
    captured.capture_output_grads(chosen)
    assert "weight_grads" not in captured.__dict__  # the full pass did not run
    for layer in chosen:
        twin = full.layers[captured.layers.index(layer)]
        torch.testing.assert_close(
            captured.per_sample_grads(layer), full.per_sample_grads(twin), rtol=0, atol=0
        )
    assert "weight_grads" not in captured.__dict__
