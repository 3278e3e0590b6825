"""Data characteristics of a device's local data, with differentially private input sketches.

What is released
----------------
Exact metadata (input shape, class count, sample count, label histogram) and, unless the device opts out,
per-group sketches of the flattened inputs: a mean and a rank-r covariance factor per class (one pooled
group when the device has no labels). Only the sketches are covered by (epsilon, delta); the sample count
and the histogram are released exactly, as the message schema requires (its histogram must sum to
``num_samples``), and are treated as public.

Mechanism
---------
1. Each flattened sample x (D = C*H*W values) is clipped to L2 norm ``clip`` (default sqrt(D), i.e. a
   root-mean-square of 1 per value, the scale every loader standardises to).
2. It is projected onto a *public*, data-independent orthonormal basis P (k x D): the lowest
   ``frequencies`` 2-D DCT-II frequencies of each channel (k = C * min(H, f) * min(W, f)). Projection
   cannot grow a norm, so ||P x|| <= clip still holds. Natural images keep most of their energy there
   (about 86% for CIFAR-10 at f = 8), and the noise of a k x k release is far smaller than of D x D.
3. Per group g, the sum s_g = sum P x_i (L2 sensitivity clip) and the second-moment sum
   M_g = sum (P x_i)(P x_i)^T (Frobenius sensitivity clip^2, released as its upper triangle, whose norm is
   at most the Frobenius norm) each get i.i.d. Gaussian noise.
4. Everything after that is post-processing with public quantities (counts, clip, basis): means
   m_g = s_g / n_g, covariance M_g / n_g - m_g m_g^T, its top-r eigenpairs with negative eigenvalues set to
   0, lifted back to D dimensions: ``class_bases[g, i] = sqrt(lambda_i) * (P^T v_i)``. The mean is projected
   onto the ball of radius ``clip`` and the eigenvalues' sum capped at clip^2, both sets that contain the
   exact value of clipped data (so they can only bring the release closer to it).

Accounting (add/remove-one neighbouring datasets)
-------------------------------------------------
Adding or removing one sample changes one group's s_g by at most ``clip`` and its M_g by at most
``clip**2``. The groups are disjoint, so the concatenation over all groups has the same sensitivity
(parallel composition, nothing is paid per class). The sum and the second moment are two Gaussian
mechanisms with normalised sensitivities mu_s = clip / sigma_s and mu_m = clip**2 / sigma_m; together they
are one Gaussian mechanism of normalised sensitivity mu = sqrt(mu_s**2 + mu_m**2) (scale each part by its
sigma and concatenate). mu is the largest value for which the *analytic Gaussian mechanism* of Balle and
Wang (2018, "Improving the Gaussian Mechanism for Differential Privacy", ICML, Theorem 8) is
(epsilon, delta)-DP, found by bisection; `MEAN_SHARE` of mu**2 goes to the sum and the rest to the moment.
The noise comes from numpy's seeded PCG64 generator, which makes releases reproducible but is not a
hardened floating-point DP sampler (Mironov 2012); a production device should draw it from a secure source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import norm

from nasfleet.data.datasets import Dataset
from nasfleet.data.partition import label_histogram
from nasfleet.protocol.messages import MAX_SKETCH_RANK, DataCharacteristics

#: Default budget of one release. epsilon = 1 is at the strict end of the 1..8 commonly deployed per
#: release; the fidelity study (experiments/federation) found no loss in proxy-ranking fidelity down to it.
DEFAULT_EPSILON = 1.0
#: Default delta: well below 1/n for any partition up to 100,000 samples.
DEFAULT_DELTA = 1e-5
DEFAULT_RANK = 8
#: Lowest DCT frequencies kept per spatial axis in the public basis.
DEFAULT_FREQUENCIES = 8
#: Share of the squared normalised sensitivity budget mu**2 spent on the means (the rest: covariances).
MEAN_SHARE = 0.5
MAX_DELTA = 0.1
_BISECTION_STEPS = 200

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class NoiseScales:
    """Standard deviations of the Gaussian noise added to each group's sum and second-moment sum."""

    sum_sigma: float
    moment_sigma: float


@dataclass(frozen=True, eq=False)
class Sketches:
    """Per-group means (G, D) and covariance factors (G, r, D): covariance ~ ``bases[g].T @ bases[g]``."""

    means: npt.NDArray[np.float32]
    bases: npt.NDArray[np.float32]


# -- the analytic Gaussian mechanism ---------------------------------------------------------------------
def analytic_gaussian_delta(epsilon: float, mu: float) -> float:
    """Smallest delta for which a Gaussian mechanism of normalised sensitivity mu is (epsilon, delta)-DP.

    Balle & Wang (2018), Theorem 8, with mu = sensitivity / sigma:
    ``delta = Phi(mu/2 - epsilon/mu) - exp(epsilon) * Phi(-mu/2 - epsilon/mu)``. The second term is
    computed in log space so large epsilon does not overflow.
    """
    if mu <= 0:
        return 0.0
    first = float(norm.cdf(mu / 2 - epsilon / mu))
    second = math.exp(epsilon + float(norm.logcdf(-mu / 2 - epsilon / mu)))
    return max(0.0, first - second)


def gaussian_mu(epsilon: float, delta: float) -> float:
    """The largest normalised sensitivity mu = sensitivity / sigma that stays (epsilon, delta)-DP.

    Inverts `analytic_gaussian_delta` (increasing in mu) by bisection (Balle & Wang 2018, Algorithm 1
    solves the same equation). Noise of standard deviation ``sensitivity / mu`` then suffices.
    """
    _check_privacy(epsilon, delta)
    low, high = 0.0, 1.0
    while analytic_gaussian_delta(epsilon, high) <= delta:
        low, high = high, 2 * high
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if analytic_gaussian_delta(epsilon, middle) <= delta else (low, middle)
    return low


def noise_scales(epsilon: float, delta: float, clip: float, mean_share: float = MEAN_SHARE) -> NoiseScales:
    """Noise for the sum (sensitivity ``clip``) and the second moment (``clip**2``), jointly (epsilon, delta).

    The joint mechanism's squared normalised sensitivity is ``mu_s**2 + mu_m**2 = gaussian_mu(...)**2``,
    split as ``mean_share`` and ``1 - mean_share``.
    """
    if not 0 < mean_share < 1:
        raise ValueError(f"mean_share must lie in (0, 1), but got {mean_share}")
    _check_clip(clip)
    mu = gaussian_mu(epsilon, delta)
    mu_sum, mu_moment = mu * math.sqrt(mean_share), mu * math.sqrt(1 - mean_share)
    return NoiseScales(clip / mu_sum, clip**2 / mu_moment)


# -- public basis and clipping ---------------------------------------------------------------------------
def dct_matrix(length: int, count: int) -> Floats:
    """The first ``count`` orthonormal DCT-II basis vectors of length ``length``, shape (count, length)."""
    positions = (np.arange(length) + 0.5) * math.pi / length
    matrix: Floats = np.cos(np.outer(np.arange(count), positions)) * math.sqrt(2 / length)
    matrix[0] /= math.sqrt(2)
    return matrix


def public_basis(input_shape: tuple[int, int, int], frequencies: int = DEFAULT_FREQUENCIES) -> Floats:
    """Orthonormal rows (k, D) spanning each channel's lowest 2-D DCT frequencies; data-independent."""
    channels, height, width = input_shape
    rows = dct_matrix(height, min(height, frequencies))
    cols = dct_matrix(width, min(width, frequencies))
    spatial = np.einsum("uh,vw->uvhw", rows, cols).reshape(rows.shape[0] * cols.shape[0], height * width)
    basis: Floats = np.kron(np.eye(channels), spatial)
    return basis


def clip_rows(rows: Floats, clip: float) -> Floats:
    """Each row scaled down to L2 norm at most ``clip`` (rows already inside the ball are unchanged)."""
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    scale = np.minimum(1.0, clip / np.maximum(norms, np.finfo(np.float64).tiny))
    clipped: Floats = rows * scale
    return clipped


def default_clip(input_shape: tuple[int, int, int]) -> float:
    """sqrt(C*H*W): a root-mean-square of 1 per value; depends on the (public) input shape only."""
    return math.sqrt(math.prod(input_shape))


# -- sketches --------------------------------------------------------------------------------------------
def sketch_dataset(
    dataset: Dataset,
    *,
    labeled: bool,
    rank: int,
    clip: float,
    noise: NoiseScales | None,
    seed: int,
    frequencies: int = DEFAULT_FREQUENCIES,
) -> Sketches:
    """Per-group mean and rank-``rank`` covariance sketches; ``noise=None`` releases them without noise.

    The noiseless mode is *not* private: it exists to measure what the noise costs (the fidelity
    experiment's "no noise" point). `extract_characteristics` always passes noise.
    """
    _check_rank(rank)
    _check_clip(clip)
    basis = public_basis(dataset.input_shape, frequencies)
    rows = clip_rows(dataset.images.reshape(len(dataset), -1).astype(np.float64), clip)
    projected = rows @ basis.T
    groups = dataset.labels if labeled else np.zeros(len(dataset), dtype=np.int64)
    count = dataset.num_classes if labeled else 1
    rng = np.random.default_rng(seed)
    dim = basis.shape[1]
    means, bases = np.zeros((count, dim)), np.zeros((count, rank, dim))
    for group in range(count):
        members = projected[groups == group]
        if len(members) == 0:
            continue  # nothing to release; the exact zero count is public
        mean, covariance = _noisy_moments(members, noise, clip, rng)
        means[group] = mean @ basis
        bases[group] = _low_rank_factor(covariance, rank, clip) @ basis
    return Sketches(means.astype(np.float32), bases.astype(np.float32))


def _noisy_moments(
    members: Floats, noise: NoiseScales | None, clip: float, rng: np.random.Generator
) -> tuple[Floats, Floats]:
    """Mean and covariance (in the public basis) from the group's noisy sum and second-moment sum."""
    total, moment = members.sum(axis=0), members.T @ members
    if noise is not None:
        total = total + rng.normal(0.0, noise.sum_sigma, total.shape)
        moment = moment + _symmetric_noise(moment.shape[0], noise.moment_sigma, rng)
    mean = total / len(members)
    mean_norm = float(np.linalg.norm(mean))
    if mean_norm > clip:  # the exact mean of clipped samples lies in this ball
        mean *= clip / mean_norm
    covariance: Floats = moment / len(members) - np.outer(mean, mean)
    return mean, covariance


def _symmetric_noise(size: int, sigma: float, rng: np.random.Generator) -> Floats:
    """Gaussian noise on the upper triangle (diagonal included), mirrored: one draw per released entry."""
    upper = np.triu(rng.normal(0.0, sigma, (size, size)))
    symmetric: Floats = upper + np.triu(upper, 1).T
    return symmetric


def _low_rank_factor(covariance: Floats, rank: int, clip: float) -> Floats:
    """Rows sqrt(lambda_i) v_i of the top-``rank`` eigenpairs; negative eigenvalues become 0.

    The eigenvalues' sum is capped at ``clip**2``, which bounds the trace of any covariance of clipped
    samples. Fewer eigenpairs than ``rank`` (a tiny input) leave zero rows.
    """
    eigenvalues, eigenvectors = np.linalg.eigh((covariance + covariance.T) / 2)
    order = np.argsort(eigenvalues)[::-1][:rank]
    values = np.clip(eigenvalues[order], 0.0, None)
    if values.sum() > clip**2:
        values *= clip**2 / values.sum()
    factor = np.zeros((rank, covariance.shape[0]))
    factor[: len(order)] = np.sqrt(values)[:, None] * eigenvectors[:, order].T
    return factor


# -- the message -----------------------------------------------------------------------------------------
def extract_characteristics(
    dataset: Dataset,
    *,
    labeled: bool = True,
    epsilon: float = DEFAULT_EPSILON,
    delta: float = DEFAULT_DELTA,
    rank: int = DEFAULT_RANK,
    clip: float | None = None,
    seed: int,
    sketches: bool = True,
) -> DataCharacteristics:
    """The device's `DataCharacteristics`, with (epsilon, delta)-DP sketches unless ``sketches`` is False.

    Parameters
    ----------
    dataset
        The local data; it needs at least one sample and at least two classes.
    labeled
        Label availability alpha: with labels, one sketch per class and the exact histogram; without, one
        pooled sketch and an empty histogram.
    epsilon, delta
        Budget of the whole sketch release (all groups, means and covariances), analytic Gaussian
        mechanism (Balle & Wang 2018). The histogram and sample count are exact and not covered.
    rank
        Rank of each covariance sketch, in [1, `MAX_SKETCH_RANK`].
    clip
        L2 bound on each flattened sample; None means `default_clip` (sqrt(C*H*W)).
    seed
        Seed of the noise, so a release can be reproduced.
    sketches
        False opts out: no sketches are computed and epsilon/delta are None.
    """
    _check_dataset_and_seed(dataset, seed)
    histogram = tuple(int(v) for v in label_histogram(dataset.labels, dataset.num_classes)) if labeled else ()
    base = DataCharacteristics(dataset.input_shape, dataset.num_classes, len(dataset), histogram, labeled)
    if not sketches:
        return base
    _check_privacy(epsilon, delta)
    _check_rank(rank)
    bound = default_clip(dataset.input_shape) if clip is None else clip
    noise = noise_scales(epsilon, delta, bound)
    released = sketch_dataset(dataset, labeled=labeled, rank=rank, clip=bound, noise=noise, seed=seed)
    return DataCharacteristics(
        base.input_shape, base.num_classes, base.num_samples, histogram, labeled,
        released.means, released.bases, float(epsilon), float(delta),
    )  # fmt: skip


# -- checks ----------------------------------------------------------------------------------------------
def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_privacy(epsilon: float, delta: float) -> None:
    if not (_is_number(epsilon) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive finite number, but got {epsilon!r}")
    if not (_is_number(delta) and 0 < delta <= MAX_DELTA):
        raise ValueError(f"delta must lie in (0, {MAX_DELTA}], but got {delta!r}")


def _check_dataset_and_seed(dataset: Dataset, seed: int) -> None:
    if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, but got {seed!r}")
    if len(dataset) < 1 or dataset.num_classes < 2:
        raise ValueError(
            f"dataset must hold >= 1 sample and >= 2 classes, but got {len(dataset)} samples "
            f"and num_classes={dataset.num_classes}"
        )


def _check_rank(rank: int) -> None:
    if not (isinstance(rank, int) and not isinstance(rank, bool) and 1 <= rank <= MAX_SKETCH_RANK):
        raise ValueError(f"rank must be an integer in [1, {MAX_SKETCH_RANK}], but got {rank!r}")


def _check_clip(clip: float) -> None:
    if not (_is_number(clip) and math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a positive finite number, but got {clip!r}")
