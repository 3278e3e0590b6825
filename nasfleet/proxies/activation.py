"""Activation-, kernel- and perturbation-based proxies: NASWOT, NI, ZiCo, TE-NAS (NTK, linear regions).

Sources (read while writing; each class docstring says exactly what was followed and what was read into it):

- NASWOT: Mellor et al., ICML 2021, reference code BayesWatch/nas-without-training (``score_networks.py``).
- NI: noise immunity as Hsieh & Tsai, "GA-based Training-Free NAS Algorithm with Hybrid Score Function"
  (GA-rk, 2023; ``shared/seeds/004``), Section 2.1, defines it after Wu et al. [18]; the authors' code
  (OEmiliatanO/Rank-Based-NAS ``score/ninaswot_score.py``) was read for sigma and for where it takes the maps.
- ZiCo: Li et al., ICLR 2023, reference code SLDGroup/ZiCo ``ZeroShotProxy/compute_zico.py``.
- TE-NAS: Chen et al., ICLR 2021, reference code VITA-Group/TENAS ``lib/procedures/ntk.py`` and
  ``linear_region_counter.py``, and ``prune_tenas.py`` for the settings.

Side passes (NI's clean and noisy forwards, the NTK's sub-batch forward) run on ``probe.network`` itself
with their own recording, in training mode, on copies of the network's buffers (`side_pass`), so neither the
probe's recorded tensors and graph nor the batch-norm running statistics change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from nasfleet.proxies.base import Proxy, ProxyError, register
from nasfleet.proxies.fgnas import gradient_signal
from nasfleet.proxies.probe import Probe, stream_seed

NI_SIGMA = 0.05
NI_STREAM = 0x4E49  # "NI"
NTK_MAX_SAMPLES = 16
MAX_CONDITION = 1e12
FLOAT32_EXACT = 2**23
GRAM_CHUNK = 2**16
EPS = 1e-12
POOLING_NAME = r"((adaptive_)?(avg|max|lp)_pool[123]d|fractional_max_pool[23]d)(_with_indices)?"
POOLING_FUNCTIONS = tuple(getattr(F, name) for name in dir(F) if re.fullmatch(POOLING_NAME, name))


# -- shared helpers --------------------------------------------------------------------------------------
@contextmanager
def side_pass(network: nn.Module) -> Iterator[None]:
    """Training mode for an extra forward pass that leaves every buffer of ``network`` untouched.

    Each buffer (batch-norm running statistics, batch counters) is swapped for a copy during the pass and
    the original tensor is put back afterwards: its values and its autograd version stay as they were, so
    the probe's own graph, which saved those tensors, can still run its backward pass.
    """
    originals = [
        (module, name, buffer)
        for module in network.modules()
        for name, buffer in module.named_buffers(recurse=False)
    ]
    was_training = network.training
    for module, name, buffer in originals:
        setattr(module, name, buffer.detach().clone())
    network.train()
    try:
        yield
    finally:
        for module, name, buffer in originals:
            setattr(module, name, buffer)
        network.train(was_training)


def hamming_kernel(codes: Sequence[torch.Tensor], samples: int) -> tuple[torch.Tensor, int]:
    """NASWOT's K_H = sum over units of c c^T + (1-c)(1-c)^T, i.e. K_ij = N_A - d_H(c_i, c_j), and N_A.

    ``codes`` holds one B x N_l boolean matrix per activation layer (none: K = 0, N_A = 0). Uses
    (1-c)(1-c)^T = N_l - s 1^T - 1 s^T + c c^T (s: row sums), so one product per layer; the products run in
    float32 on column chunks of at most 2^23 units, where every partial sum is an exact integer, and are
    accumulated in float64, so K is exact (off the CPU they run in float64, out of reach of TF32).
    """
    kernel = torch.zeros(samples, samples, dtype=torch.float64)
    units = 0
    for code in codes:
        flat = code.flatten(1)
        dtype = torch.float32 if flat.device.type == "cpu" else torch.float64
        for start in range(0, flat.shape[1], FLOAT32_EXACT):
            c = flat[:, start : start + FLOAT32_EXACT].to(dtype)
            sums = c.sum(1, keepdim=True).double().cpu()
            gram = (c @ c.T).double().cpu()
            kernel += 2.0 * gram - sums - sums.T + c.shape[1]
            units += int(c.shape[1])
    return kernel, units


def log_determinant(kernel: torch.Tensor) -> float:
    """Eq. s = log|K_H| (NASWOT), computed from the eigenvalues of the symmetric PSD kernel in float64.

    Singular guard (interpretation): K_H has integer entries, so a non-singular K_H has det >= 1 and
    s >= 0. A numerically singular K_H (an eigenvalue <= B * eps * lambda_max, numpy's rank tolerance; e.g.
    two identical codes) gets ``-(number of null eigenvalues)`` instead of -inf: finite, below every
    non-singular value, and lower the more codes coincide.
    """
    eigenvalues = torch.linalg.eigvalsh(kernel.double())
    top = float(eigenvalues[-1])
    tolerance = max(top, 0.0) * kernel.shape[0] * torch.finfo(torch.float64).eps
    null = int((eigenvalues <= tolerance).sum())
    if null or top <= 0.0:
        return -float(max(null, 1))
    return float(torch.log(eigenvalues).sum())


def distinct_codes(kernel: torch.Tensor, units: int) -> int:
    """Number of distinct activation patterns: codes i, j are equal iff K_ij = N_A (Hamming distance 0).

    As TE-NAS's ``calc_LR``: sum_i 1 / #{j : code_j = code_i}, which counts the equivalence classes.
    """
    equal = (kernel == float(units)).double()
    return round(float((1.0 / equal.sum(1)).sum()))


def condition_number(gram: torch.Tensor) -> float:
    """lambda_max / lambda_min of a symmetric PSD matrix (float64), capped at 1e12.

    Interpretation: eigenvalues below lambda_max / 1e12 are round-off, so lambda_min is floored there; an
    all-zero matrix (no gradient reaches any weight) gets the cap, the worst value.
    """
    eigenvalues = torch.linalg.eigvalsh(gram.double())
    top = float(eigenvalues[-1])
    if top <= 0.0:
        return MAX_CONDITION
    return top / max(float(eigenvalues[0]), top / MAX_CONDITION)


def _activation_kernel(probe: Probe) -> tuple[torch.Tensor, int]:
    if not probe.record_activation_codes:
        raise ProxyError(
            "activation-code proxies need Probe(record_activation_codes=True), but the probe records none"
        )
    probe.logits  # noqa: B018 - the forward pass records the codes
    return probe.memo(("hamming-kernel",), lambda: hamming_kernel(probe.activation_codes, probe.batch.size))


# -- NASWOT and TE-NAS -----------------------------------------------------------------------------------
@register
class NASWOT(Proxy):
    """NASWOT (Mellor et al. 2021, eqs. of K_H and s = log|K_H|): log-determinant of the Hamming kernel.

    Follows the reference code: the codes are the sign patterns (x > 0) of the INPUT of every ReLU (here
    also ReLU6) over the probe batch, summed over all such layers; batch norm in training mode. The
    reference's ``visited_backwards`` gate (count a ReLU only after a backward pass reached it) is dropped:
    it only excludes ReLUs disconnected from the output. Singular kernels: see `log_determinant`.
    """

    name = "naswot"
    needs_activation_codes = True

    def compute(self, probe: Probe) -> float:
        return log_determinant(_activation_kernel(probe)[0])


@register
class LinearRegions(Proxy):
    """TE-NAS expressivity (Chen et al. 2021): the number of distinct ReLU activation patterns.

    Reference code counts unique sign patterns of ReLU outputs (4-D inputs only) over 3 batches of 1000
    random 3x3 crops, on a separate one-cell, one-channel copy of the network. Interpretation: counted over
    the probe batch on the probe network itself, as ZenNAS's port of TE-NAS does (one batch, full
    network), from the NASWOT codes (all ReLU/ReLU6 layers). The value lies in [1, B] and saturates at B
    for most reasonably wide networks; ties are then left to the aggregate.
    """

    name = "linear_regions"
    needs_activation_codes = True

    def compute(self, probe: Probe) -> float:
        kernel, units = _activation_kernel(probe)
        return float(distinct_codes(kernel, units))


def ntk_gram(network: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Empirical NTK Theta_ij = <d sum_c f_c(x_i) / dW, d sum_c f_c(x_j) / dW> on ``inputs`` (float64).

    As TE-NAS's ``get_ntk_n``: one forward of ``inputs`` (batch norm in training mode), then one backward
    of ``logits[i].sum()`` per sample; W = every parameter whose name ends in "weight" (conv, batch norm
    and linear weights).
    """
    weights = [p for name, p in network.named_parameters() if name.endswith("weight") and p.requires_grad]
    samples = int(inputs.shape[0])
    gram = torch.zeros(samples, samples, dtype=torch.float64)
    with side_pass(network), torch.enable_grad():
        logits: torch.Tensor = network(inputs)
        rows = []
        for i in range(samples):
            grads = torch.autograd.grad(logits[i].sum(), weights, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([g.flatten() for g in grads if g is not None] or [logits.new_zeros(1)]))
        matrix = torch.stack(rows)
    for start in range(0, matrix.shape[1], GRAM_CHUNK):  # float64 products, a column block at a time
        block = matrix[:, start : start + GRAM_CHUNK].double()
        gram += (block @ block.T).cpu()
    return gram


@register
class NTKCondition(Proxy):
    """TE-NAS trainability (Chen et al. 2021): condition number lambda_max / lambda_min of the NTK.

    Follows ``get_ntk_n`` with ``train_mode=True`` (as ``prune_tenas.py`` calls it) on a sub-batch: the
    first min(16, B) probe samples (16 = TE-NAS's ``--batch_size`` for the NTK), in a separate forward pass
    so that batch-norm statistics are those of the sub-batch, as in TE-NAS. Cost: one forward and up to
    16 backward passes of the sub-batch. Lower is better. Round-off guard: see `condition_number`.
    """

    name = "ntk_cond"
    higher_is_better = False

    def compute(self, probe: Probe) -> float:
        inputs = probe.batch.inputs[: min(NTK_MAX_SAMPLES, probe.batch.size)]
        return condition_number(ntk_gram(probe.network, inputs))


# -- noise immunity ---------------------------------------------------------------------------------------
def _is_pooling(func: Any) -> bool:
    return func in POOLING_FUNCTIONS


def _is_global_average(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A tensor ``mean`` over every axis after the channel axis: global average pooling without a module."""
    if not (func is torch.Tensor.mean or func is torch.mean) or not args:
        return False
    tensor, dim = args[0], kwargs.get("dim", args[1] if len(args) > 1 else None)
    if not isinstance(tensor, torch.Tensor) or tensor.dim() < 3 or dim is None:
        return False
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return sorted(d % tensor.dim() for d in dims) == list(range(2, tensor.dim()))


class PoolingMaps(TorchFunctionMode):
    """Records the output of every pooling layer a forward pass runs, in call order.

    A pooling layer is every call of a ``torch.nn.functional`` pooling function (which every pooling
    module, e.g. NAS-Bench-201's cell ``avg_pool_3x3`` and its reduction blocks' ``AvgPool2d``, calls) and
    every global average pooling written as a tensor ``mean`` over all spatial axes (nasfleet's skeletons
    pool that way before the classifier). Nested calls (``lp_pool2d`` calls ``avg_pool2d``) count once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.maps: list[torch.Tensor] = []

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if _is_pooling(func) or _is_global_average(func, args, kwargs):
            self.maps.append((result[0] if isinstance(result, tuple) else result).detach())
        return result


def pooled_features(network: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """The feature maps NI compares: the output of every pooling layer of one forward pass (`PoolingMaps`).

    Reading of "feature maps captured at all pooling layers" (GA-rk paper, Section 2.1): the maps the
    pooling layers produce, i.e. their outputs, as "the feature map of a layer" names that layer's output
    (the authors' code keeps their inputs instead; see `NoiseImmunity`). "All" pooling layers: every one
    the forward pass runs, including one whose result does not reach the logits. A network that runs none
    has no NI: `ProxyError`.
    """
    recorder = PoolingMaps()
    with torch.no_grad(), recorder:
        network(inputs)
    if not recorder.maps:
        raise ProxyError(
            f"NI needs at least one pooling layer (a pooling function or a global spatial mean), but "
            f"{type(network).__name__} ran none"
        )
    return recorder.maps


def noise_immunity(clean: Sequence[torch.Tensor], noisy: Sequence[torch.Tensor]) -> float:
    """GA-rk paper, Section 2.1 (NI has no equation number there): eta = sum_l ||tau_l - tau'_l||^2.

    "computing the difference of square of each feature maps captured at all pooling layers, denoted
    eta": tau_l is the feature map of pooling layer l for the clean batch X, tau'_l for the noisy batch
    X' = X + z. Readings: "difference of square" is the squared difference (tau - tau')^2, not
    tau^2 - tau'^2 (which can be negative, so "the small eta the better" would reward a network that
    amplifies the noise); it is summed over every element, sample and layer, with no normalisation, no
    logarithm and no epsilon, none of which the paper names. Computed in float64.
    """
    if len(clean) != len(noisy):
        raise ProxyError(f"NI needs one noisy map per clean map, but got {len(noisy)} and {len(clean)}")
    total = torch.zeros((), dtype=torch.float64)
    for layer, (tau, tau_noisy) in enumerate(zip(clean, noisy, strict=True)):
        if tau.shape != tau_noisy.shape:
            raise ProxyError(
                f"NI needs equal clean and noisy map shapes, but layer {layer} has "
                f"{tuple(tau.shape)} and {tuple(tau_noisy.shape)}"
            )
        total += (tau.double() - tau_noisy.double()).pow(2).sum().cpu()
    return float(total)


@register
class NoiseImmunity(Proxy):
    """NI, noise immunity (Wu et al. [18], as the GA-rk paper, Section 2.1, defines it): eta, lower is better.

    The paper: "The score function picks a mini-batch of data, denoted X, and then applies Gaussian noise
    on it ... X' = X + z where z is the Gaussian noise. By passing X and X' through the untrained
    architecture, then computing the difference of square of each feature maps captured at all pooling
    layers, denoted eta ... the small eta the better the noise immunity of the architecture is."

    - z ~ N(0, sigma^2) per input element, sigma = 0.05: the paper gives no sigma; 0.05 is the one of the
      authors' experiments (OEmiliatanO/Rank-Based-NAS: its stored result files carry sigma 0.05).
      It is drawn from a CPU generator seeded from (``probe.seed``, `NI_STREAM`) (`stream_seed`).
    - "passing X and X' through the untrained architecture": two separate no-grad forward passes of
      ``probe.network`` with batch norm in training mode, each with its own batch statistics, on copies
      of the buffers (`side_pass`).
    - eta: `noise_immunity` of the outputs of all pooling layers (`pooled_features`). Development-sample
      disclosure: both readings of "captured at" (outputs, and the inputs the authors' code keeps) were
      measured on 60 NB201 archs drawn with seed 11 (and 60 with seed 12) against CIFAR-10 accuracy
      before choosing; ranked as "smaller is better", the input reading gave rho = -0.12 (-0.19), the
      output reading +0.15 (-0.05). See docs/garank.md.
    - A network whose pooled maps do not depend on its input (e.g. an NB201 cell of only ``none``) scores
      0, the best value: the authors' later version keeps such architectures out through its search
      encoding ("preserving the critical path"), not through the score.

    Revision 2 (revision 1: the later ``ln(eps + sum of per-sample mean squared differences)`` at the
    pooling inputs, with the last main block's output standing in for the global pooling).
    """

    name = "ni"
    higher_is_better = False
    revision = 2

    def compute(self, probe: Probe) -> float:
        clean_inputs = probe.batch.inputs.detach()
        generator = torch.Generator(device="cpu").manual_seed(stream_seed(probe.seed, NI_STREAM))
        noise = torch.randn(clean_inputs.shape, generator=generator).to(clean_inputs)
        with side_pass(probe.network):
            clean = pooled_features(probe.network, clean_inputs)
            noisy = pooled_features(probe.network, clean_inputs + NI_SIGMA * noise)
        return noise_immunity(clean, noisy)


# -- ZiCo ------------------------------------------------------------------------------------------------
def zico_layer_term(grads: torch.Tensor) -> float | None:
    """One layer's ZiCo term log(sum_theta mean|g_theta| / std g_theta); None when that sum is 0.

    ``grads`` is (samples, parameters). As the reference: population std (np.std), parameters whose std is
    exactly 0 are left out, and a layer whose sum is 0 contributes nothing (the log of the SUM over the
    layer's parameters, not a sum of logs).
    """
    return gradient_signal(grads, min_std=0.0)


@register
class ZiCo(Proxy):
    """ZiCo (Li et al., ICLR 2023): sum over layers of log(sum_theta E|g_theta| / sqrt(Var g_theta)).

    Gradient statistics (interpretation, the cheapest faithful option): the reference takes mean and std
    over the weight gradients of >= 2 mini-batches (its ``getzico`` never zeroes them between batches, so
    they are cumulative); the paper's theory is about gradients "across different samples". Here the
    statistics run over the B per-sample terms of the probe's single loss backward
    (`Probe.per_sample_grads`), which costs no extra pass; each term is (1/B) x the sample's gradient, and
    the ratio is scale-free. Layers: every Conv2d/Linear layer the probe records, stem and classifier
    included, as in the reference. Needs labels (cross-entropy loss).
    """

    name = "zico"
    needs_labels = True

    def compute(self, probe: Probe) -> float:
        probe.weight_grads  # noqa: B018 - one backward pass for every layer
        terms = (zico_layer_term(probe.per_sample_grads(layer)) for layer in probe.layers)
        return float(sum(term for term in terms if term is not None))
