"""The four COER-NAS dimensions: robustness, isotropy, uncertainty and regularity (RECONSTRUCTED).

COER-NAS (2026; only its abstract and tables are available, seed 003 of this project) assesses candidates
"from four dimensions, namely robustness, isotropy, uncertainty and regularity, and merges
multi-dimensional scores into a comprehensive indicator through a rank-driven nonlinear geometric fusion
mechanism". No equation of it was found (pages and code corpora, queries on "COER-NAS", its dimension
names and its fusion), so each dimension here is a RECONSTRUCTION from its name, its direction fixed from
the word's meaning. Two to three readings per dimension were pre-registered and one was chosen per
dimension by the highest Kendall tau on CIFAR-10 over a 200-arch development sample disjoint from every
reported sample (`experiments/correlation/coer_dev.py`, docs/coer.md). Their fusion is the ``coer``
aggregate below (``coer_linear``: the linear variant of the paper's ablation).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from nasfleet.proxies.activation import side_pass
from nasfleet.proxies.aggregate import register_aggregate
from nasfleet.proxies.aznas import isotropy_entropy
from nasfleet.proxies.base import Proxy, register
from nasfleet.proxies.fgnas import feature_matrix
from nasfleet.proxies.hybrid import RankAggregate
from nasfleet.proxies.probe import Probe, stream_seed

EPS = 1e-12
#: Relative size of the multiplicative weight noise of `CoerRobustness`.
WEIGHT_NOISE = 0.1
WEIGHT_STREAM = 0xC0E2  # the weight noise's own random stream


def noise_to_signal(clean: torch.Tensor, perturbed: torch.Tensor) -> float:
    """-ln(eps + N / (D + eps)) of two (B, K) outputs of the same batch; higher is more stable.

    N = mean_i ||perturbed_i - clean_i||^2 is the change a perturbation causes, D = mean_i ||clean_i -
    mean_j clean_j||^2 the outputs' own spread over the batch, so the ratio is free of the logits' scale.
    Outputs that neither change nor vary (a network whose output ignores its input) score -ln(eps), the
    most stable value.
    """
    clean, perturbed = clean.detach().double(), perturbed.detach().double()
    change = float((perturbed - clean).pow(2).sum(dim=1).mean())
    spread = float((clean - clean.mean(dim=0, keepdim=True)).pow(2).sum(dim=1).mean())
    return -math.log(EPS + change / (spread + EPS))


def perturbed_weights(network: nn.Module, sigma: float, seed: int) -> dict[str, torch.Tensor]:
    """``w (1 + sigma z)`` for the weight of every Conv2d and Linear layer, z ~ N(0, 1) per element.

    Layer i of ``network.modules()`` draws its z from a CPU generator seeded ``seed + i``; the network's
    own parameters are left untouched (the values are new tensors, for `torch.func.functional_call`).
    """
    weights = {}
    for i, (name, module) in enumerate(network.named_modules()):
        if isinstance(module, nn.Conv2d | nn.Linear):
            weight = module.weight.detach()
            generator = torch.Generator(device="cpu").manual_seed(seed + i)
            noise = torch.randn(tuple(weight.shape), generator=generator).to(weight)
            weights[f"{name}.weight" if name else "weight"] = weight * (1 + sigma * noise)
    return weights


@register
class CoerRobustness(Proxy):
    """COER robustness (RECONSTRUCTION): stability of the logits under a perturbation of the weights.

    Reads "robustness" as stable under perturbation, higher is better: `noise_to_signal` of the probe's
    logits and those of one extra no-grad forward pass of the same batch with every conv/linear weight
    multiplied by (1 + 0.1 z) (`perturbed_weights`, stream `WEIGHT_STREAM`), batch norm in training mode
    on copies of its buffers (`side_pass`). Chosen over the input-gradient norm (revision 1) and the same
    ratio under input noise, the three pre-registered readings, on the development sample; every one of
    the three ranks NB201 archs against accuracy there (tau -0.20, -0.44, -0.46; docs/coer.md).

    Revision 2 (revision 1: -ln(eps + mean_i ||d sum_c f_c / d x_i||), the input-gradient norm).
    """

    name = "coer_robustness"
    revision = 2

    def compute(self, probe: Probe) -> float:
        weights = perturbed_weights(probe.network, WEIGHT_NOISE, stream_seed(probe.seed, WEIGHT_STREAM))
        with side_pass(probe.network), torch.no_grad():
            perturbed = functional_call(probe.network, weights, (probe.batch.inputs,), strict=False)
        return noise_to_signal(probe.logits, perturbed)


def normalized_channel_entropy(output: torch.Tensor) -> float | None:
    """AZ-NAS's channel-spectrum entropy s_E^l of a block output over its maximum ln C, in [0, 1].

    1: variance spread equally over the C channel directions; 0: one direction, or a constant feature.
    None for a single-channel output, which has no direction to spread over.
    """
    channels = feature_matrix(output).shape[-1]
    return isotropy_entropy(output) / math.log(channels) if channels > 1 else None


@register
class CoerIsotropy(Proxy):
    """COER isotropy (RECONSTRUCTION): mean over main blocks of `normalized_channel_entropy`.

    Reads "isotropy" as how evenly a block output spreads its variance over the directions of its channel
    space (rows: every sample and position, as AZ-NAS's expressivity), higher is better; 0 for a network
    whose blocks output constants. Chosen on the development sample over the sample-space effective rank
    (revision 1) and the effective rank of the input gradients.

    Revision 2 (revision 1: the effective-rank ratio of the centred B x (C H W) block outputs).
    """

    name = "coer_isotropy"
    revision = 2

    def compute(self, probe: Probe) -> float:
        probe.logits  # noqa: B018 - the forward pass records the block outputs
        shares = [normalized_channel_entropy(output) for output in probe.block_outputs]
        kept = [share for share in shares if share is not None]
        return float(np.mean(kept)) if kept else 0.0


@register
class CoerUncertainty(Proxy):
    """COER uncertainty (RECONSTRUCTION): mean normalised predictive entropy H(softmax(f(x))) / ln K.

    Reads "uncertainty" as a quality scored higher-is-better like the other three: at initialisation a
    well-conditioned classifier stays close to the uniform prediction (value 1) instead of committing to
    classes before training (value 0). Label-free. Kept on the development sample over the entropy of the
    batch's mean prediction and the least-confidence score.
    """

    name = "coer_uncertainty"

    def compute(self, probe: Probe) -> float:
        log_p = torch.log_softmax(probe.logits.detach().double(), dim=1)
        entropy = -(log_p.exp() * log_p).sum(dim=1)
        return float(entropy.mean()) / math.log(probe.logits.shape[1])


@register
class CoerRegularity(Proxy):
    """COER regularity (RECONSTRUCTION): -mean over main blocks of |ln g_l| / 2, g_l the backward gain.

    Reads "regularity" as regular gradient propagation, higher is better: each block passes gradients
    back neither amplified nor attenuated. g_l = ||J_l^T v||^2 / ||v||^2 for one Rademacher vector v over
    the block's output (the whole batch), J_l the block's Jacobian from its input
    (`Probe.block_jacobian_sketches`, the sketch FG-NAS shares), an unbiased estimate of ||J_l||_F^2 /
    dim(out): 1 (score 0, the best) for a block whose Jacobian is an isometry in mean square. A dead
    block (g = 0) costs ln(1e12) / 2. Chosen on the development sample over the forward gain |ln rms(out) -
    ln rms(in)| (revision 1) and the change of the mean cosine between samples.

    Revision 2 (revision 1: -mean over blocks of |ln rms(out) - ln rms(in)|, the forward gain).
    """

    name = "coer_regularity"
    revision = 2

    def compute(self, probe: Probe) -> float:
        gains = [float(p.trace() / v.trace()) for v, p in probe.block_jacobian_sketches(1)]
        return -float(np.mean([abs(math.log(EPS + gain)) for gain in gains])) / 2


@register_aggregate
class COER(RankAggregate):
    """COER-NAS (RECONSTRUCTED): geometric mean of the normalized ranks of its four dimensions.

    The paper's "rank-driven nonlinear geometric fusion", read as prod_k r_k^(w_k) with equal weights.
    """

    name = "coer"
    INPUTS = (CoerRobustness.name, CoerIsotropy.name, CoerUncertainty.name, CoerRegularity.name)
    WEIGHTS: ClassVar[tuple[float, ...]] = (0.25, 0.25, 0.25, 0.25)

    def fuse(self, ranks: np.ndarray) -> np.ndarray:
        weights = np.asarray(self.WEIGHTS, dtype=float)[:, None]
        return np.asarray(np.exp((weights * np.log(ranks)).sum(axis=0)), dtype=float)


@register_aggregate
class COERLinear(RankAggregate):
    """COER-NAS's linear fusion (RECONSTRUCTED): the mean of the same four normalized ranks (Table 2, "L")."""

    name = "coer_linear"
    INPUTS = COER.INPUTS
