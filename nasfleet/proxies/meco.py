"""MeCo: the minimum eigenvalue of the feature maps' Pearson correlation matrices, from one datum.

Method of Jiang, Wang & Bie, "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum
Eigenvalue of Correlation" (NeurIPS 2023): ``MeCo = sum_i lambda_min(P(f^i(X; theta)))`` over the
network's layers i, where P is the Pearson correlation matrix of layer i's feature-map channels for one
input X. The paper's text was not available while this was written, so the definition is cited by name
(its equation number could not be checked here); the details were read from the authors' code
(HamsterMimi/MeCo, ``correlation/NAS_Bench_201.py``, the script behind the NATS-Bench-TSS correlations).

Variant: plain MeCo, the one the paper's abstract reports rho = 0.89 with on NATS-Bench-TSS (NB201) CIFAR-10.
MeCo_opt (the reference's ``meco_opt``: per layer, the minimum eigenvalue over 8 randomly drawn channels,
scaled by channels / 8) targets spaces whose widths vary (the reference's ``compute_rho.py`` reads it
for NATS-Bench-SSS) and is not implemented.

Readings of the reference, and our interpretations:

- One datum: the first sample of the probe batch, in its own forward pass of batch size 1 in training
  mode (the reference scores a batch of 1 with a freshly built, hence training-mode, network, so batch
  norm normalizes over that one image's positions). The pass runs on copies of the buffers
  (`nasfleet.proxies.activation.side_pass`) and without gradients; it costs a small fraction of the
  probe's forward, which MeCo does not use.
- Layers: the output of every module call of the network (``named_modules``, containers and the network
  itself included, as the reference's hooks), so a container's output, equal to its last child's, counts
  again, as in the reference. Outputs that are not feature maps (flat logits) are skipped; in the
  reference their correlation matrix is all NaN, set to 0, and adds 0.
- Rows and observations: as the reference's hook, the first sample of an output is a matrix whose rows
  are its first dimension and whose observations are all the rest: a (B, C, H, W) map gives C channels
  observed at H*W positions. The reference was run on CNNs only; applied as written to a transformer
  (interpretation), a (B, T, C) token matrix gives the T x T correlation of its tokens over the C
  embedding channels (how distinct the tokens stay), and attention's (B, heads, T, T) products give one
  row per head (a single head is a 1 x 1 matrix, lambda_min = 1). AZ-NAS and FG-NAS here read tokens as
  positions instead; with one sample, that C x C matrix over T tokens would be singular for every
  AutoFormer-T subnet at 32x32 (C >= 192 > T = 65).
- Exact zeros: a channel constant over the positions has an undefined correlation, set to 0 by the
  reference, so the matrix is singular; so is any map with no more positions than channels (rank <=
  positions - 1; e.g. NB201's 64-channel 8x8 maps at 32x32 input, or a ViT's T tokens when the
  embedding is at most T). Both give exactly 0 here, where the reference gets round-off around 0.
  Round-off below 0 elsewhere is set to 0: a correlation matrix is positive semi-definite.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nasfleet.proxies.activation import side_pass
from nasfleet.proxies.base import Proxy, ProxyError, register
from nasfleet.proxies.probe import Probe

#: Relative spread below which a channel is constant: features are computed in float32.
FLOAT32_RESOLUTION = float(torch.finfo(torch.float32).eps)


def channel_observations(output: torch.Tensor) -> torch.Tensor | None:
    """The first sample of a module output as a (rows, observations) float64 matrix, or None.

    As the reference's ``output[0].reshape(output[0].shape[0], -1)``: the rows are the sample's first
    dimension and everything after it is observations. (B, C, H, W) -> C channels x H*W positions;
    (B, T, C) -> T tokens x C channels; a flat (B, D) output has no rows to correlate -> None.
    """
    if output.dim() < 3:
        return None
    sample = output[0].detach().double()
    return sample.reshape(sample.shape[0], -1)


def min_correlation_eigenvalue(observations: torch.Tensor) -> float:
    """lambda_min of the Pearson correlation matrix of the rows (channels) of ``observations``, C x P.

    0 when a channel is constant over the P observations or when P <= C (the matrix is singular); else
    the smallest eigenvalue of ``D^-1/2 Cov D^-1/2``, which lies in [0, 1].
    """
    channels, positions = observations.shape
    if positions <= channels:
        return 0.0
    centred = observations - observations.mean(dim=1, keepdim=True)
    norms = centred.norm(dim=1)
    spread = norms / positions**0.5
    if bool((spread <= FLOAT32_RESOLUTION * observations.abs().amax(dim=1)).any()):
        return 0.0  # a constant channel (zeros included); what varies below float32 resolution is round-off
    unit = centred / norms[:, None]
    return max(float(torch.linalg.eigvalsh(unit @ unit.T)[0]), 0.0)


def meco_terms(network: nn.Module, datum: torch.Tensor) -> list[float]:
    """lambda_min of every feature-map output of ``network`` on ``datum`` (1 x C x H x W), in call order."""
    terms: list[float] = []

    def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        # Computed at once: a later in-place activation may overwrite the tensor (MobileNetV2's ReLU6).
        if isinstance(output, torch.Tensor) and (matrix := channel_observations(output)) is not None:
            terms.append(min_correlation_eigenvalue(matrix))

    handles = [module.register_forward_hook(record) for module in network.modules()]
    try:
        with side_pass(network), torch.no_grad():
            network(datum)
    except ValueError as error:  # e.g. batch norm over a single value per channel
        raise ProxyError(
            f"meco needs a forward pass of one sample, but the network refused it: {error}"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return terms


@register
class MeCo(Proxy):
    """MeCo (NeurIPS 2023): sum over layers of lambda_min of the channel Pearson matrix, on one datum."""

    name = "meco"

    def compute(self, probe: Probe) -> float:
        return sum(meco_terms(probe.network, probe.batch.inputs[:1]))
