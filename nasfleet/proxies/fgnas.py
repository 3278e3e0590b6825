"""FG-NAS: four zero-cost proxies and their dynamic nonlinear rank aggregation.

Method of "Efficient Zero-Cost NAS for Personalized AI Systems in Cloud-Edge Networks" (FG-NAS,
``../shared/seeds/000_...``). This is nasfleet's reading (the default scorer until stop 25): it was first
written from an account of the paper, and two of its readings (the feature-matrix layout and S_FC's
Pearson matrix) were chosen on development samples. `nasfleet.proxies.fgnas_paper` follows the paper's
printed words instead (the ``fgnas_paper`` aggregate); ``docs/fgnas.md`` compares the two step by step.
Every reading is written down in the docstring of the function that implements it.

Shared conventions (interpretations):

- A *main block* is an element of the network's ``main_blocks`` (NB201: the 15 cells and the 2 residual
  reduction blocks; MobileNetV2: the inverted-residual blocks). Stem and classifier are not blocks.
- A block's *feature matrix* is its output on the probe batch with one row per (sample, position) and
  one column per channel (`feature_matrix`), computed with batch norm in training mode and PyTorch's
  default initialisation.
- All four proxies are "higher is better".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np
import torch

from nasfleet.proxies.aggregate import Aggregate, normalized_rank, proxy_rank, register_aggregate
from nasfleet.proxies.base import Proxy, register
from nasfleet.proxies.probe import Layer, Probe

DEFAULT_VARIANCE = 0.9
DEFAULT_GAMMA = 0.65
DEFAULT_PROBES = 1
EPS = 1e-12
MIN_SIGMA = 1e-6


@dataclass(frozen=True)
class ReducedFeatures:
    """PCA of one block's feature matrix: the kept component variances (unbiased, 1/(N-1)) and N, the
    number of (sample, position) rows they were computed over."""

    variances: np.ndarray
    rows: int

    @property
    def nuclear_norm(self) -> float:
        """Nuclear norm of the N x d matrix Z of component scores, without forming Z.

        Z = X_c E (centred rows times the kept eigenvectors) has orthogonal columns with
        ``Z^T Z = (N - 1) diag(variances)``, so its singular values are ``sqrt((N - 1) variance_j)``:
        exactly what an SVD of Z returns (up to rounding), at no cost.
        """
        return float(np.sqrt(max(self.rows - 1, 1) * self.variances).sum())


def feature_matrix(output: torch.Tensor) -> torch.Tensor:
    """A block output as a feature matrix: one row per (sample, position), one column per channel.

    Interpretation: a feature of a convolutional block is a channel, and every spatial position of every
    sample is one observation of the C-dimensional feature vector. Outputs without spatial dimensions
    (B x D) have one position per sample. A 3-D output is a transformer's token matrix (B, tokens, C): its
    features are the C embedding channels and every token (the class token too) is a position. (Rows =
    samples over C*H*W features is the other reading; on our development sample it gave Spearman 0.62 for
    S_FI against 0.88 for this one, see docs/fgnas.md.)
    """
    matrix = output.detach().double()
    if matrix.dim() == 2:
        return matrix[:, None, :]
    if matrix.dim() == 3:
        return matrix
    return matrix.flatten(2).transpose(1, 2)  # (B, H*W, C)


def _principal_components(
    output: torch.Tensor, variance: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centred rows (N x C), the kept eigenvalues (d) and eigenvectors (C x d) of eqs. 4-8; a block whose
    output never varies keeps one component of variance 0."""
    features = feature_matrix(output)
    rows = features.reshape(-1, features.shape[-1])
    centred = rows - rows.mean(dim=0, keepdim=True)
    count = max(rows.shape[0] - 1, 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred / count)
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0.0), eigenvectors.flip(1)
    total = float(eigenvalues.sum())
    if total <= EPS:
        return centred, torch.zeros(1, dtype=rows.dtype), torch.zeros(rows.shape[1], 1, dtype=rows.dtype)
    kept = kept_components(eigenvalues, variance)
    return centred, eigenvalues[:kept], eigenvectors[:, :kept]


def kept_components(eigenvalues: torch.Tensor, variance: float) -> int:
    """Eq. 6: the smallest d whose top d of the descending ``eigenvalues`` (sum > 0) hold a share >=
    ``variance`` of their sum, at most all of them (round-off can leave the full sum's share just below 1)."""
    explained = torch.cumsum(eigenvalues, 0) / float(eigenvalues.sum())
    kept = int(torch.searchsorted(explained, torch.tensor(variance - 1e-12, dtype=explained.dtype))) + 1
    return min(kept, len(eigenvalues))


def reduce_features(output: torch.Tensor, variance: float = DEFAULT_VARIANCE) -> ReducedFeatures:
    """Eqs. 4-8: centre the feature matrix and keep the principal components explaining ``variance``.

    Interpretations: rows are (sample, position) pairs and columns channels (`feature_matrix`); the
    number kept is the smallest d whose cumulative explained variance reaches ``variance``; component
    variances use the unbiased 1/(N-1). A block whose output never varies keeps one component of
    variance 0.
    """
    centred, eigenvalues, _ = _principal_components(output, variance)
    return ReducedFeatures(eigenvalues.numpy(), centred.shape[0])


def reduced_scores(output: torch.Tensor, variance: float = DEFAULT_VARIANCE) -> np.ndarray:
    """The reduced feature matrix itself, every sample's component scores at every position, shape
    (B, positions, d). S_FI and S_FC need only its variances (`ReducedFeatures`)."""
    centred, _, eigenvectors = _principal_components(output, variance)
    samples = output.shape[0]
    return (centred @ eigenvectors).reshape(samples, -1, eigenvectors.shape[1]).numpy()


def gaussian_entropy(variances: np.ndarray) -> float:
    """Eqs. 9-11: differential entropy ``sum_j (ln(2 pi sigma_j^2) + 1) / 2`` of the reduced features.

    Interpretation: each kept component is an independent Gaussian with its own variance sigma_j^2 (the
    entropy of N(0, diag(sigma^2))); variances are floored at 1e-12 so a dead block stays finite.
    """
    floored = np.maximum(np.asarray(variances, dtype=float), EPS)
    return float(np.sum(0.5 * (np.log(2.0 * math.pi * floored) + 1.0)))


def channel_correlation(output: torch.Tensor) -> float:
    """Eqs. 13-15, the denominator: the sum of the Pearson correlation matrix of a block's features.

    Interpretations: the principal components of the reduced matrix are uncorrelated over the population
    by construction, so their own Pearson matrix would be the identity; the matrix is therefore that of
    the block's C channels, computed **per sample over its spatial positions** (the feature-map Pearson
    matrix of MeCo, NeurIPS 2023). Absolute entries are summed and averaged over samples, so the sum lies
    in [C, C^2]: the more a sample's channels move together, the larger it is. A channel constant over the
    positions correlates 0 with the others and 1 with itself; without spatial positions the matrix is the
    identity. Chosen among three readings on a development sample, see ``docs/fgnas.md``.
    """
    features = feature_matrix(output)  # (B, positions, C)
    _, positions, channels = features.shape
    if positions < 2:
        return float(channels)
    centred = features - features.mean(dim=1, keepdim=True)
    norms = centred.norm(dim=1, keepdim=True)
    unit = torch.where(norms > EPS, centred / norms.clamp_min(EPS), torch.zeros_like(centred))
    pearson = (unit.transpose(1, 2) @ unit).abs()
    pearson.diagonal(dim1=1, dim2=2).fill_(1.0)
    return float(pearson.sum(dim=(1, 2)).mean())


def correlation_ratio(reduced: ReducedFeatures, pearson_sum: float) -> float:
    """Eqs. 13-15: nuclear norm of the (B*positions) x d reduced feature matrix over the Pearson sum."""
    return reduced.nuclear_norm / pearson_sum


def spectral_norm_estimate(v_gram: torch.Tensor, pushed_gram: torch.Tensor) -> float:
    """Eqs. 16-20: normalised spectral norm of the Rademacher estimate of a block Jacobian.

    With K probes v_k and v'_k = J^T v_k, the estimate ``J_hat = (1/K) sum_k v'_k v_k^T`` (E[v' v^T] = J^T)
    has rank <= K, and ``||J_hat||_2^2 = lambda_max(V'^T V' . V^T V) / K^2`` needs only the two K x K Gram
    matrices. Interpretation: a rank-K estimate of an n x n Jacobian is scaled by the probes themselves,
    so we divide by what the same probes estimate for the identity,
    ``||V V^T / K||_2 = lambda_max(V^T V) / K``: an identity block gives sigma = 1, ``c * Q`` (Q orthogonal)
    gives exactly c, and for K = 1 this is ``||J^T v|| / ||v||``, the block's gain on the probe.
    """
    product = (pushed_gram @ v_gram).numpy()
    largest = float(np.max(np.real(np.linalg.eigvals(product))))
    identity_norm = float(torch.linalg.eigvalsh(v_gram)[-1])
    return math.sqrt(max(largest, 0.0)) / identity_norm


def block_sigmas(probe: Probe, n_probes: int = DEFAULT_PROBES) -> np.ndarray:
    """sigma_l of every main block (eqs. 16-20), floored at 1e-6 so that a dead block stays finite."""

    def compute() -> np.ndarray:
        sketches = probe.block_jacobian_sketches(n_probes)
        return np.array([max(spectral_norm_estimate(v, p), MIN_SIGMA) for v, p in sketches])

    return probe.memo(("fgnas-sigmas", n_probes), compute)


def gradient_change(sigmas: np.ndarray) -> float:
    """Eqs. 21-23: ``S_GC = sum_l (2 - sigma_l - 1/sigma_l)``, at most 0, reached when every sigma_l = 1."""
    return float(np.sum(2.0 - sigmas - 1.0 / sigmas))


def important_blocks(sigmas: np.ndarray, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """Eqs. 26-27: blocks whose sigma_l lies in [k, m] with k * m = 1, keeping a fraction gamma of them.

    Interpretation: [k, 1/k] is symmetric around 1 on a log scale, so the kept blocks are the ceil(gamma*L)
    with the smallest |ln sigma_l| (ties broken by block order); a "layer" of S_GI is a convolution or
    linear layer inside a kept block.
    """
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must lie in (0, 1], but got {gamma}")
    count = math.ceil(gamma * len(sigmas))
    order = np.argsort(np.abs(np.log(sigmas)), kind="stable")
    return np.sort(order[:count])


def gradient_signal(per_sample: torch.Tensor, min_std: float = EPS) -> float | None:
    """Eqs. 24-26, one layer: ``ln sum_theta E_i|g_theta,i| / std_i(g_theta,i)`` over per-sample gradients.

    Interpretation: "mean / variance ratio" is read as ZiCo's mean absolute gradient over its (population)
    standard deviation, which is scale-free, here over the samples of the probe batch; parameters whose
    gradient std is at most ``min_std`` are left out, and a layer with none left contributes nothing (None).
    ZiCo's own layer term is this function with ``min_std = 0``.
    """
    grads = per_sample.double()
    std = grads.std(dim=0, unbiased=False)
    varying = std > min_std
    if not bool(varying.any()):
        return None
    ratio = grads.abs().mean(dim=0)[varying] / std[varying]
    return math.log(float(ratio.sum()))


@register
class FeatureInformation(Proxy):
    """S_FI (eqs. 4-12): sum over main blocks of the Gaussian entropy of their PCA-reduced features."""

    name = "fg_fi"

    def __init__(self, variance: float = DEFAULT_VARIANCE) -> None:
        self.variance = variance

    def compute(self, probe: Probe) -> float:
        return sum(gaussian_entropy(r.variances) for r in _reduced(probe, self.variance))


@register
class FeatureCorrelation(Proxy):
    """S_FC (eqs. 13-15): sum over main blocks of nuclear norm over Pearson-matrix sum."""

    name = "fg_fc"
    revision = 2  # 1: Pearson matrix of the reduced components (see docs/fgnas.md)

    def __init__(self, variance: float = DEFAULT_VARIANCE) -> None:
        self.variance = variance

    def compute(self, probe: Probe) -> float:
        reduced = _reduced(probe, self.variance)  # runs the forward pass that records the block outputs
        pairs = zip(reduced, probe.block_outputs, strict=True)
        return sum(correlation_ratio(r, channel_correlation(output)) for r, output in pairs)


@register
class GradientChange(Proxy):
    """S_GC (eqs. 16-23) from Rademacher estimates of every main block's Jacobian; needs no labels."""

    name = "fg_gc"

    def __init__(self, n_probes: int = DEFAULT_PROBES) -> None:
        self.n_probes = n_probes

    def compute(self, probe: Probe) -> float:
        return gradient_change(block_sigmas(probe, self.n_probes))


@register
class ImportantLayerGradient(Proxy):
    """S_GI (eqs. 24-27): per-sample gradient signal summed over the layers of the important blocks."""

    name = "fg_gi"
    needs_labels = True

    def __init__(self, gamma: float = DEFAULT_GAMMA, n_probes: int = DEFAULT_PROBES) -> None:
        self.gamma = gamma
        self.n_probes = n_probes

    def compute(self, probe: Probe) -> float:
        kept = set(important_blocks(block_sigmas(probe, self.n_probes), self.gamma).tolist())
        probe.capture_output_grads([layer for layer in probe.layers if layer.block in kept])
        total = 0.0
        for index, layer in enumerate(probe.layers):  # block_sigmas ran the forward pass that lists them
            if layer.block in kept:
                term = probe.memo(("fgnas-signal", index), partial(_layer_signal, probe, layer))
                total += 0.0 if term is None else term
        return total


def _layer_signal(probe: Probe, layer: Layer) -> float | None:
    return gradient_signal(probe.per_sample_grads(layer))


def _reduced(probe: Probe, variance: float) -> list[ReducedFeatures]:
    def compute() -> list[ReducedFeatures]:
        probe.logits  # noqa: B018 - the forward pass records the blocks
        return [reduce_features(output, variance) for output in probe.block_outputs]

    return probe.memo(("fgnas-reduced", variance), compute)


def nonlinear_fusion(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Eqs. 28-30, the form they share: ``ln(a * b) + a^2 + b^2`` of two normalized ranks in (0, 1].

    Interpretations (nasfleet's, not printed in the paper): ranks are normalized to (0, 1] with 1 the best
    of the population (raw integer ranks would let the squares swamp the logarithm); the fused values of
    eqs. 28 (R_G) and 29 (R_F) are ranked again before eq. 30, whose logarithm needs positive arguments.
    """
    fused: np.ndarray = np.log(a * b) + a**2 + b**2
    return fused


def linear_fusion(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The -NL ablation: ``a + b`` in place of the nonlinear fusion."""
    summed: np.ndarray = a + b
    return summed


@register_aggregate
class FGNAS(Aggregate):
    """Dynamic nonlinear rank aggregation (eqs. 28-30); R_G = R_GC when labels are unavailable (alpha = 0)."""

    name = "fgnas"
    INPUTS: ClassVar[tuple[str, str, str, str]] = ("fg_fi", "fg_fc", "fg_gc", "fg_gi")
    use_features: ClassVar[bool] = True
    use_gradients: ClassVar[bool] = True
    nonlinear: ClassVar[bool] = True

    def inputs(self, labeled: bool) -> tuple[str, ...]:
        fi, fc, gc, gi = self.INPUTS
        features = (fi, fc) if self.use_features else ()
        gradients = ((gc, gi) if labeled else (gc,)) if self.use_gradients else ()
        return features + gradients

    def rank(self, name: str, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """A proxy's ranking R_x: here normalized to (0, 1], best 1 (see `nonlinear_fusion`)."""
        return proxy_rank(name, values)

    def rerank(self, fused: np.ndarray) -> np.ndarray:
        """What eq. 30 takes of eqs. 28-29's values: here their normalized ranks."""
        return normalized_rank(fused)

    def combine(self, values: Mapping[str, np.ndarray], labeled: bool) -> np.ndarray:
        fuse = nonlinear_fusion if self.nonlinear else linear_fusion
        fi, fc, gc, gi = self.INPUTS
        branches = []
        if self.use_features:  # eq. 29
            branches.append(self.rerank(fuse(self.rank(fi, values), self.rank(fc, values))))
        if self.use_gradients:  # eq. 28
            gradient = self.rank(gc, values)
            branches.append(self.rerank(fuse(gradient, self.rank(gi, values))) if labeled else gradient)
        if len(branches) == 1:
            return np.asarray(branches[0], dtype=float)
        return fuse(branches[0], branches[1])  # eq. 30


@register_aggregate
class FGNASWithoutFeatures(FGNAS):
    """Ablation -FP: gradient proxies only."""

    name = "fgnas_nofp"
    use_features = False


@register_aggregate
class FGNASWithoutGradients(FGNAS):
    """Ablation -GP: feature proxies only."""

    name = "fgnas_nogp"
    use_gradients = False


@register_aggregate
class FGNASLinear(FGNAS):
    """Ablation -NL: linear instead of nonlinear rank fusion."""

    name = "fgnas_linear"
    nonlinear = False
