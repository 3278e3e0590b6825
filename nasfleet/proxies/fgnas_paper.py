"""FG-NAS as its paper writes it: the four proxies (eqs. 4-27) and the aggregation (eqs. 28-30), literally.

Source: "Efficient Zero-Cost Neural Architecture Search for Personalized AI Systems in Cloud-Edge
Networks", ``../shared/seeds/000_...``, Section III and Algorithm 1. This module sits beside nasfleet's
own reading (`nasfleet.proxies.fgnas`, the ``fgnas`` aggregate, chosen partly on development samples) and
takes every step from the paper's words instead. Where the words leave a choice, the docstring quotes them
and names the choice; ``docs/fgnas.md`` lists them side by side with nasfleet's reading.

Shared setting, from the paper:

- "The original feature matrix is denoted as F_i in R^{c x n} to represent the c-dimensional output
  characteristics of the i-th layer", and (Section III-D) "n is the feature dimension per channel". Here F
  of a main block has one row per channel and one column per (sample, position) of the probe batch:
  c x (B*H*W) for a convolutional block, c x (B*tokens) for a transformer block. (Reading: the paper's
  per-layer matrix costs depend on c, n and k but not on the batch size M, so one matrix spans the batch.)
- N, the number of "primary blocks", is the number of the network's ``main_blocks``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from nasfleet.proxies.aggregate import directed_ranks, register_aggregate
from nasfleet.proxies.base import PROXIES, Proxy, ProxyError, register
from nasfleet.proxies.fgnas import DEFAULT_VARIANCE, EPS, FGNAS, MIN_SIGMA, feature_matrix, kept_components
from nasfleet.proxies.probe import Probe, rademacher, vector_jacobian

PAPER_GAMMA = 0.6
PAPER_PROBES = 4


# -- feature proxies (eqs. 4-15) ----------------------------------------------------------------------------
def channel_rows(output: torch.Tensor) -> torch.Tensor:
    """F of eq. 4: a block output as a c x n matrix, a row per channel, a column per (sample, position)."""
    features = feature_matrix(output)  # (B, positions, C), double
    return features.reshape(-1, features.shape[-1]).T


def paper_reduce(output: torch.Tensor, variance: float = DEFAULT_VARIANCE) -> torch.Tensor:
    """Eqs. 4-7: the reduced c x k feature matrix ``f = F V``.

    - Eq. 4, "mean normalization on each column of the feature matrix (i.e., each feature), ensuring that
      the mean of each feature is zero": each of the n columns is centred over its c entries. (The printed
      formula subtracts the mean column instead, which would centre the rows; the words and eq. 5's n x n
      covariance over c observations both need centred columns.)
    - Eq. 5, ``C = F_bar^T F_bar / (n - 1)``, n x n: its non-zero eigenvalues and their eigenvectors are
      taken from the c x c Gram matrix ``F_bar F_bar^T`` (the same spectrum, as c << n); the 1/(n - 1)
      factor changes neither the eigenvectors nor eq. 6's ratios.
    - Eq. 6: the smallest k whose top-k eigenvalues hold a share >= v (0.9) of their sum.
    - Eq. 7, ``f_i = F_i V``: the *uncentred* F, as printed, times the n x k eigenvector matrix V.
    - Eigenvectors have no sign: each column of V is signed so that the largest-magnitude entry of
      ``F_bar V`` in that column is positive (scikit-learn's ``svd_flip``), which makes f deterministic.
      A block whose output never varies gives f = 0 (c x 1).
    """
    rows = channel_rows(output)
    centred = rows - rows.mean(dim=0, keepdim=True)
    eigenvalues, left = torch.linalg.eigh(centred @ centred.T)  # left singular vectors of F_bar, ascending
    eigenvalues, left = eigenvalues.flip(0).clamp_min(0.0), left.flip(1)
    total = float(eigenvalues.sum())
    if total <= EPS:
        return torch.zeros(rows.shape[0], 1, dtype=rows.dtype)
    kept = min(kept_components(eigenvalues, variance), int((eigenvalues > EPS * total).sum()))
    singular = eigenvalues[:kept].sqrt()
    basis = centred.T @ left[:, :kept] / singular  # V: the n x k right singular vectors of F_bar
    centred_scores = left[:, :kept] * singular  # F_bar V
    largest = centred_scores.abs().argmax(dim=0)
    signs = torch.sign(centred_scores[largest, torch.arange(kept)])
    return torch.as_tensor(rows @ (basis * torch.where(signs == 0, 1.0, signs)))


def layer_information(reduced: torch.Tensor) -> float:
    """Eqs. 10-11: ``S[f] = (ln(2 pi sigma^2) + 1) / 2``.

    "sigma is the variance of the feature matrix" while eq. 10 writes sigma^2 where a variance stands: here
    sigma^2 is the (population) variance of all c*k entries of f, floored at 1e-12 for a dead block.
    """
    return 0.5 * (math.log(2.0 * math.pi * max(float(reduced.var(unbiased=False)), EPS)) + 1.0)


def pearson_sum(reduced: torch.Tensor) -> float:
    """Eq. 13, summed: ``sum(P_f)``, all c x c entries (signed) of the Pearson matrix of f's rows.

    Each row's k entries are its "feature points". The printed denominator, the square root of one sum of
    products of squares, is read as Pearson's: the product of the two rows' root sums of squares. A row
    that is constant over its k entries (always so when k = 1) correlates 0 with the others and 1 with
    itself. The sum equals ``|sum_i z_i|^2`` of the unit-normalised centred rows z_i, so it is >= 0; it
    is floored at 1e-12.
    """
    centred = reduced - reduced.mean(dim=1, keepdim=True)
    norms = centred.norm(dim=1, keepdim=True)
    unit = torch.where(norms > EPS, centred / norms.clamp_min(EPS), torch.zeros_like(centred))
    pearson = unit @ unit.T
    pearson.diagonal().fill_(1.0)
    return max(float(pearson.sum()), EPS)


def correlation_term(reduced: torch.Tensor) -> float:
    """Eqs. 14-15, one block: ``||f||_nuc / sum(P_f)``, the nuclear norm ``tr(sqrt(f^T f))`` of f."""
    nuclear = float(torch.linalg.svdvals(reduced).sum())
    return nuclear / pearson_sum(reduced)


def _reduced(probe: Probe) -> list[torch.Tensor]:
    def compute() -> list[torch.Tensor]:
        probe.logits  # noqa: B018 - the forward pass records the blocks
        return [paper_reduce(output) for output in probe.block_outputs]

    return probe.memo("fgnas-paper-reduced", compute)


@register
class PaperFeatureInformation(Proxy):
    """S_FI as written (eq. 12): ``sum_l S[f_l]`` over the N main blocks."""

    name = "fgp_fi"

    def compute(self, probe: Probe) -> float:
        return sum(layer_information(f) for f in _reduced(probe))


@register
class PaperFeatureCorrelation(Proxy):
    """S_FC as written (eq. 15): ``sum_l ||f_l||_nuc / sum(P_{f_l})``."""

    name = "fgp_fc"

    def compute(self, probe: Probe) -> float:
        return sum(correlation_term(f) for f in _reduced(probe))


# -- gradient proxies (eqs. 16-27) --------------------------------------------------------------------------
def _channels(tensor: torch.Tensor) -> int:
    return int(tensor.shape[1] if tensor.dim() == 4 else tensor.shape[-1])


def _broadcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """One channel vector repeated at every (sample, position) of ``like``."""
    if like.dim() == 4:
        return v.view(1, -1, 1, 1).expand_as(like).to(like)
    return v.expand_as(like).to(like)


def _channel_sum(tensor: torch.Tensor) -> torch.Tensor:
    dims = [d for d in range(tensor.dim()) if d != (1 if tensor.dim() == 4 else tensor.dim() - 1)]
    return tensor.double().sum(dim=dims)


def block_jacobian(block_in: torch.Tensor, block_out: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """Eqs. 17-21: the Rademacher estimate ``J_l = (1/K) sum_k v'_k v_k^T`` of a block's c' x c Jacobian.

    Eq. 17 models a block as a linear map ``f_l = A_l f_{l-1}`` between channel spaces (J_l in R^{c' x c},
    and the cost analysis's SVD is "C_SVD(c, c')"), so each probe v_k (K x c', rows of ``probes``) is one
    Rademacher vector over the c' output channels, shared by every (sample, position); "the back
    propagation of the l-th layer" pushes it from the block's output to its input, and v'_k is that input
    gradient summed over (sample, position) per input channel and divided by the number of output
    (sample, position) pairs, so that a block that is exactly ``A`` at every position gives ``v'_k = A^T
    v_k``. Returns the c x c' matrix ``(1/K) sum_k v'_k v_k^T`` (eq. 18 writes the Jacobian as A^T; the
    spectral norm is the same either way); zeros when the output does not depend on the input.
    """
    rows = block_out.numel() // _channels(block_out)
    sums = [_channel_sum(vector_jacobian(block_in, block_out, _broadcast(v, block_out))) for v in probes]
    estimate: torch.Tensor = (torch.stack(sums) / rows).T @ probes.double() / len(probes)
    return estimate


def paper_sigmas(probe: Probe, n_probes: int = PAPER_PROBES) -> np.ndarray:
    """Eq. 22: ``sigma_l = ||J_l||_2``, the largest singular value of each block's estimate, floored at 1e-6.

    The paper asks for "multiple" probes and calls N_rad "a small constant" without a value: K = 4 here.
    """

    def compute() -> np.ndarray:
        probe.logits  # noqa: B018 - the forward pass records the blocks
        generator = torch.Generator(device="cpu").manual_seed(probe.seed)
        sigmas = []
        for block_in, block_out in zip(probe.block_inputs, probe.block_outputs, strict=True):
            probes = rademacher(torch.Size((n_probes, _channels(block_out))), generator).to(block_out.device)
            jacobian = block_jacobian(block_in, block_out, probes)
            sigmas.append(max(float(torch.linalg.matrix_norm(jacobian, ord=2)), MIN_SIGMA))
        return np.array(sigmas)

    return probe.memo(("fgnas-paper-sigmas", n_probes), compute)


def paper_important(sigmas: np.ndarray, gamma: float = PAPER_GAMMA) -> np.ndarray:
    """Eq. 27: the blocks with sigma_l in [k, m], km = 1, that number gamma*N: the round(gamma*N) (at least
    one) with the smallest |ln sigma_l|, as [k, 1/k] is symmetric around 1 in ln sigma. gamma = 0.6: the
    paper sets it "within [0.9, 0.5]" and Fig. 3 finds 0.6 costs only 0.008 of rho while saving time."""
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must lie in (0, 1], but got {gamma}")
    count = max(1, round(gamma * len(sigmas)))
    return np.sort(np.argsort(np.abs(np.log(sigmas)), kind="stable")[:count])


def block_gradient_ratio(per_sample: list[torch.Tensor]) -> float:
    """Eqs. 24-25 for one block: ``E[g] / Var[g]`` over the per-sample gradients of its parameters.

    - Eq. 24: ``E[g] = (1/M) sum_i |dL(x_i, y_i)/d theta|`` per parameter; eq. 25: ``Var[g] = (1/M)
      sum_i (dL_i/d theta - E[g])^2``, deviations from that mean of absolute values, as printed.
    - theta "is the parameter of the current layer", and a layer here is a main block: E[g] and Var[g] are
      each averaged over the block's convolution and linear weights, and the block's term is their ratio
      (a ratio of means: an element-wise ratio would be dominated by parameters of near-zero variance).
    - ``per_sample`` holds the per-sample terms of the batch-mean loss gradient, (B, numel) per weight; they
      are multiplied by B to give each sample's own dL_i/d theta. A block without such weights, or whose
      gradients never vary, contributes 0.
    """
    if not per_sample:
        return 0.0
    grads = torch.cat([g.double() * g.shape[0] for g in per_sample], dim=1)
    mean_abs = grads.abs().mean(dim=0)
    variance = ((grads - mean_abs) ** 2).mean(dim=0)
    spread = float(variance.mean())
    return float(mean_abs.mean()) / spread if spread > EPS else 0.0


@register
class PaperGradientChange(Proxy):
    """S_GC as written (eq. 23): ``sum_l (2 - sigma_l - 1/sigma_l)``; needs no labels."""

    name = "fgp_gc"

    def compute(self, probe: Probe) -> float:
        sigmas = paper_sigmas(probe)
        return float(np.sum(2.0 - sigmas - 1.0 / sigmas))


@register
class PaperImportantGradient(Proxy):
    """S_GI as written (eq. 26): the mean of ``E[g]/Var[g]`` over the gamma*N important blocks."""

    name = "fgp_gi"
    needs_labels = True

    def compute(self, probe: Probe) -> float:
        kept = paper_important(paper_sigmas(probe))
        by_block: dict[int, list[torch.Tensor]] = {int(b): [] for b in kept}
        probe.capture_output_grads([layer for layer in probe.layers if layer.block in by_block])
        for layer in probe.layers:
            if layer.block in by_block:
                by_block[layer.block].append(probe.per_sample_grads(layer))
        return float(np.mean([block_gradient_ratio(grads) for grads in by_block.values()]))


# -- aggregation (eqs. 28-30) -------------------------------------------------------------------------------
def paper_rank(name: str, values: Mapping[str, np.ndarray]) -> np.ndarray:
    """A proxy's ranking R: integer ranks 1..N, N for the best value, ties sharing their average.

    Ascending, so that the squares of eqs. 28-30 "emphasize high-ranking metrics"; not normalised, as the
    paper does not normalise; with ranks >= 1 every logarithm of eqs. 28-30 has a positive argument.
    """
    if name not in values:
        raise ProxyError(f"aggregate needs proxy {name!r}, but the values hold only {sorted(values)}")
    return directed_ranks(values[name], PROXIES[name].higher_is_better)


@register_aggregate
class PaperFGNAS(FGNAS):
    """R of eq. 30 from R_F (eq. 29) and R_G (eq. 28; R_G = R_GC when alpha = 0), as printed: the proxies'
    integer ranks (`paper_rank`), and eq. 30 takes R_F and R_G themselves (each >= 2 with integer ranks),
    not their ranks."""

    name = "fgnas_paper"
    INPUTS = ("fgp_fi", "fgp_fc", "fgp_gc", "fgp_gi")

    def rank(self, name: str, values: Mapping[str, np.ndarray]) -> np.ndarray:
        return paper_rank(name, values)

    def rerank(self, fused: np.ndarray) -> np.ndarray:
        return fused


@register_aggregate
class PaperFGNASWithoutFeatures(PaperFGNAS):
    """Table V's -FP: R = R_G."""

    name = "fgnas_paper_nofp"
    use_features = False


@register_aggregate
class PaperFGNASWithoutGradients(PaperFGNAS):
    """Table V's -GP: R = R_F."""

    name = "fgnas_paper_nogp"
    use_gradients = False


@register_aggregate
class PaperFGNASLinear(PaperFGNAS):
    """Table V's -NL ("Linear Aggregation"): every ``ln(ab) + a^2 + b^2`` replaced by ``a + b``."""

    name = "fgnas_paper_linear"
    nonlinear = False
