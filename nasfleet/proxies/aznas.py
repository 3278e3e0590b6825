"""AZ-NAS: expressivity, progressivity and trainability proxies and their non-linear rank aggregation.

Method of Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture Search" (CVPR 2024,
arXiv 2403.19232), Sec. 3: four proxies, expressivity s_E, progressivity s_P, trainability s_T and
complexity s_C, read off one forward and one backward pass, and the aggregation
``s_AZ = sum_M log(Rank(s_M) / m)``. The paper's text was not available while this was written, so
equations are cited by the quantity they define (its numbering could not be checked here); each formula
was read from the authors' code (cvlab-yonsei/AZ-NAS, ``NB201/ZeroShotProxy/compute_az_nas_score.py``
and ``tss_general.ipynb``), and every reading we chose is stated where it is implemented.

Shared conventions (interpretations):

- The *features* f^0, ..., f^L are the input of the first main block (NB201: the stem's output, as the
  reference's ``extract_cell_features``) followed by the output of every main block, all recorded by the
  probe's own forward pass, so AZ-NAS adds no forward pass of its own. Where something sits between two
  blocks (COER's poolings), the step f^(l-1) -> f^l spans it, as the reference's consecutive features
  do. For transformers the reference's AutoFormer code takes two features per block (after the attention
  residual and after the MLP residual); here a block is one step, as in every other space.
- A feature is a matrix with one row per (sample, position) and one column per channel
  (`nasfleet.proxies.fgnas.feature_matrix`): a convolution's positions are its pixels, a transformer's its
  tokens (the reference's AutoFormer code reads tokens the same way), a flat output has one per sample.
- Inputs: the probe's batch. The published NB201 numbers use a batch of 64 N(0, 1) noise images; pass such
  a `ProbeBatch` to reproduce that setting. The reference re-initialises weights (Kaiming normal, fan-in)
  before scoring; a proxy must not change the shared network, so the space's own initialisation is used
  (in NB201 every convolution is followed by batch norm in training mode, which cancels the weights' scale).
- Complexity s_C is the registered ``flops`` proxy (`nasfleet.proxies.size.Flops`), as the reference
  takes FLOPs from the benchmark's API.
- Every proxy here is "higher is better", as in the reference's ranking.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

from nasfleet.proxies.aggregate import register_aggregate
from nasfleet.proxies.base import Proxy, ProxyError, register
from nasfleet.proxies.fgnas import MIN_SIGMA, feature_matrix, gradient_change
from nasfleet.proxies.hybrid import RankAggregate
from nasfleet.proxies.probe import Probe, rademacher, stream_seed, vector_jacobian
from nasfleet.proxies.size import Flops

AZ_STREAM = 0x415A  # "AZ": the Rademacher probes' own random stream
#: Trainability of a network with a block that is exactly the identity: the reference scores it -inf.
IDENTITY_TRAINABILITY = -1e12
#: A feature whose total variance is below this fraction of its mean squared norm is constant.
CONSTANT_FEATURE = 1e-20


def network_features(probe: Probe) -> list[torch.Tensor]:
    """f^0 (the first main block's input) and then every main block's output, from the probe's forward."""
    probe.logits  # noqa: B018 - the forward pass records the blocks
    if not probe.block_outputs:
        raise ProxyError("AZ-NAS needs the outputs of the network's main blocks, but the probe recorded none")
    return [probe.block_inputs[0], *probe.block_outputs]


def isotropy_entropy(feature: torch.Tensor) -> float:
    """Expressivity of one feature (AZ-NAS Sec. 3, s_E^l): entropy of its normalized covariance spectrum.

    ``Sigma = X_c^T X_c / N`` over the N rows of the feature matrix (centred over all samples and
    positions, the biased 1/N of the reference); with eigenvalues lambda_i and ``p_i = lambda_i / sum_j
    lambda_j``, ``s_E^l = -sum_i p_i ln p_i``: ln C for isotropic features in C channels, 0 when they
    span one direction. Interpretations: negative round-off eigenvalues are set to 0 and ``0 ln 0 = 0``
    (the reference adds 1e-8 inside the log instead); a constant feature (a dead block's zeros), whose
    spectrum is all zero, scores 0, the least expressive value (the reference gets NaN and then -inf).
    """
    features = feature_matrix(feature)
    rows = features.reshape(-1, features.shape[-1])
    centred = rows - rows.mean(dim=0, keepdim=True)
    eigenvalues = torch.linalg.eigvalsh(centred.T @ centred / rows.shape[0]).clamp_min(0.0)
    total = float(eigenvalues.sum())
    if total <= CONSTANT_FEATURE * float(rows.square().sum(dim=1).mean()) or total <= 0.0:
        return 0.0
    shares = eigenvalues[eigenvalues > 0] / total
    return float(-(shares * shares.log()).sum())


def expressivity(entropies: np.ndarray) -> float:
    """AZ-NAS s_E = sum_l s_E^l over every feature, f^0 included as in the reference."""
    return float(np.sum(entropies))


def progressivity(entropies: np.ndarray) -> float:
    """AZ-NAS s_P = min_l (s_E^l - s_E^(l-1)): the smallest step of expressivity from one feature to the
    next (negative when some block makes its features less isotropic than its input's)."""
    if len(entropies) < 2:
        raise ProxyError(f"progressivity needs at least 2 features, but got {len(entropies)}")
    return float(np.min(np.diff(entropies)))


def space_to_depth(grad: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A (B, C, H, W) input gradient laid out on the output's (height, width) grid, (B, C*rh*rw, h, w).

    As the reference's ``PixelUnshuffle(H / h)`` for a reduction block: each output position gets the
    rh x rw input positions it covers as extra channels. Interpretation for sizes that do not divide
    (a stride-2 layer maps n to ceil(n / 2)): rh = ceil(H / h), and the gradient is zero-padded at the
    bottom and right to h*rh x w*rw first, so padded positions add nothing.
    """
    batch, channels, in_height, in_width = grad.shape
    if in_height < height or in_width < width:
        raise ProxyError(
            f"trainability needs a block's input grid to be at least its output grid, but got "
            f"{in_height}x{in_width} in and {height}x{width} out"
        )
    rh, rw = math.ceil(in_height / height), math.ceil(in_width / width)
    padded = F.pad(grad, (0, width * rw - in_width, 0, height * rh - in_height))
    blocks = padded.reshape(batch, channels, height, rh, width, rw).permute(0, 1, 3, 5, 2, 4)
    return blocks.reshape(batch, channels * rh * rw, height, width)


def aligned_gradient(grad_in: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """``grad_in`` with one position for each of ``grad_out``'s, so the two can be paired position-wise."""
    if grad_in.dim() != grad_out.dim():
        raise ProxyError(
            f"trainability needs features of one kind, but got shapes {tuple(grad_in.shape)} and "
            f"{tuple(grad_out.shape)}"
        )
    if grad_in.dim() == 4 and grad_in.shape[2:] != grad_out.shape[2:]:
        return space_to_depth(grad_in, int(grad_out.shape[2]), int(grad_out.shape[3]))
    if grad_in.dim() == 3 and grad_in.shape[1] != grad_out.shape[1]:
        raise ProxyError(
            f"trainability needs a token block to keep its tokens, but got {grad_in.shape[1]} in and "
            f"{grad_out.shape[1]} out"
        )
    return grad_in


def channel_jacobian_norm(grad_in: torch.Tensor, grad_out: torch.Tensor) -> float:
    """AZ-NAS sigma^l: spectral norm of ``(1/N) sum_n g_in[n] v[n]^T`` over the N (sample, position) rows.

    ``v`` (``grad_out``) is a Rademacher vector over the block's output and ``g_in = J^T v`` its
    vector-Jacobian product (``grad_in``, aligned by `aligned_gradient`). As E[v v^T] = I, the matrix
    estimates J^T restricted to each position's own channels (C_in x C_out), averaged over positions,
    exactly as the reference does.
    """
    rows_in = feature_matrix(grad_in)
    rows_out = feature_matrix(grad_out)
    count = rows_out.shape[0] * rows_out.shape[1]
    matrix = rows_in.reshape(count, -1).T @ rows_out.reshape(count, -1) / count
    return float(torch.linalg.matrix_norm(matrix, ord=2))


def block_gains(probe: Probe) -> list[float | None]:
    """sigma^l for every pair (f^(l-1), f^l); None where the block is exactly the identity (J^T v == v).

    One Rademacher probe per pair (as the reference), drawn on the CPU from a generator seeded with
    (probe seed, "AZ"), and pushed back through that pair's sub-graph only; together the products cost
    about one backward pass. The probe's graph is kept for the other proxies. FG-NAS's
    `Probe.block_jacobian_sketches` keeps only Gram matrices of its products, from which this
    position-wise matrix cannot be rebuilt, so the two proxies do not share these passes.
    """

    def compute() -> list[float | None]:
        features = network_features(probe)
        generator = torch.Generator(device="cpu").manual_seed(stream_seed(probe.seed, AZ_STREAM))
        gains: list[float | None] = []
        for f_in, f_out in itertools.pairwise(features):
            v = rademacher(f_out.shape, generator).to(f_out)
            pushed = vector_jacobian(f_in, f_out, v)
            if pushed.shape == v.shape and torch.equal(pushed, v):
                gains.append(None)
                continue
            gains.append(channel_jacobian_norm(aligned_gradient(pushed, v), v))
        return gains

    return probe.memo(("aznas-gains",), compute)


def trainability(gains: list[float | None]) -> float:
    """AZ-NAS s_T = (1/L) sum_l (2 - sigma^l - 1/sigma^l): 0 when every block keeps gradient norms.

    The same functional form as FG-NAS's S_GC (`gradient_change`, eqs. 21-23), averaged over blocks.
    Interpretations: sigma is floored at 1e-6 (the reference adds 1e-6 to it in 1/sigma), so a dead block
    scores about -1e6; a block that is exactly the identity (None) makes the whole score
    `IDENTITY_TRAINABILITY`, the finite stand-in for the reference's -inf, so every such network ties
    below all others (the reference ranks it last; in NB201: cells whose output node takes only a skip
    from the input).
    """
    if not gains:
        raise ProxyError("trainability needs at least one block, but got none")
    if any(gain is None for gain in gains):
        return IDENTITY_TRAINABILITY
    sigmas = np.maximum(np.array(gains, dtype=float), MIN_SIGMA)
    return gradient_change(sigmas) / len(sigmas)


def feature_entropies(probe: Probe) -> np.ndarray:
    """s_E^l of every feature f^0 .. f^L, computed once per probe for s_E and s_P."""
    return probe.memo(
        ("aznas-entropies",), lambda: np.array([isotropy_entropy(f) for f in network_features(probe)])
    )


@register
class AZExpressivity(Proxy):
    """AZ-NAS expressivity s_E: summed spectral entropy of the block features (no extra pass)."""

    name = "az_expressivity"

    def compute(self, probe: Probe) -> float:
        return expressivity(feature_entropies(probe))


@register
class AZProgressivity(Proxy):
    """AZ-NAS progressivity s_P: the smallest block-to-block change of expressivity (no extra pass).

    Interpretation: computed on every space; the reference's AutoFormer code does not compute s_P (its
    embedding width is fixed) and aggregates three proxies there, which an aggregate here, whose inputs
    cannot depend on the space, does not copy.
    """

    name = "az_progressivity"

    def compute(self, probe: Probe) -> float:
        return progressivity(feature_entropies(probe))


@register
class AZTrainability(Proxy):
    """AZ-NAS trainability s_T from one Rademacher vector-Jacobian product per block; needs no labels."""

    name = "az_trainability"

    def compute(self, probe: Probe) -> float:
        return trainability(block_gains(probe))


def log_rank_sum(ranks: np.ndarray) -> np.ndarray:
    """AZ-NAS aggregation: ``sum_M ln(Rank(s_M) / m)`` of the (P, m) normalized ranks (best = 1).

    Each term is at most 0 and falls steeply for low ranks, so a network ranked low by any one proxy is
    pushed down more than a sum of ranks would push it. Ranks are the reference's (``rankdata``, average
    ties, ascending so the largest value gets m).
    """
    if np.any(ranks <= 0.0):
        raise ProxyError("log-rank aggregation needs positive ranks, but got a rank <= 0")
    return np.asarray(np.log(ranks).sum(axis=0), dtype=float)


@register_aggregate
class AZNAS(RankAggregate):
    """AZ-NAS: sum of log normalized ranks of s_E, s_P, s_T and s_C (``flops``); labels are not used."""

    name = "aznas"
    INPUTS = (AZExpressivity.name, AZProgressivity.name, AZTrainability.name, Flops.name)

    def fuse(self, ranks: np.ndarray) -> np.ndarray:
        return log_rank_sum(ranks)
