"""Saliency proxies of the zero-cost-nas baselines, plus LogSynflow.

Sources:

- Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021; reference code
  SamsungLabs/zero-cost-nas, ``foresight/pruners/measures/{grad_norm,snip,grasp,fisher,jacob_cov,synflow}.py``
  and ``foresight/pruners/p_utils.py``. Each per-weight array there is summed over every element of every
  ``nn.Conv2d`` / ``nn.Linear`` weight of the network (``sum_arr``); biases, batch norm and other
  parameters never count.
- Cavagnero et al., "FreeREA: Training-Free Evolution-based Architecture Search" (2022), which defines
  LogSynflow as Synflow with each gradient remapped by ``log(g + 1)``.

Interpretations shared by every proxy here:

- "Every Conv2d/Linear" means every one of ``probe.network.modules()`` (stem and classifier included, as
  in the reference); the probe records every one of them (``probe.layers``), so all their loss gradients
  come from its single loss backward.
- The loss is ``probe.loss`` (mean cross-entropy, batch norm in training mode), as in the reference's
  ``bn=True`` measures with ``split_data=1``.
- Equation numbers are not cited (except by LogSynflow, which cites the GA-rk paper's eqs. 5-7): the
  papers' text could not be checked here, so every definition follows the reference code named in its
  docstring, read from SamsungLabs/zero-cost-nas and FreeREA.
- A weight whose gradient is undefined (unused in the forward pass) contributes 0, as in the reference.
- Sums are accumulated in float64 so that the value does not depend on summation order.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from nasfleet.proxies.base import Proxy, ProxyError, register
from nasfleet.proxies.probe import Probe

WeightedLayer = nn.Conv2d | nn.Linear
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
JACOB_COV_EPS = 1e-5  # the reference's ``k`` in ``-sum(log(v + k) + 1 / (v + k))``
CONSTANT_ROW_TOLERANCE = 1e-12  # a Jacobian row this close to constant (relative) has no correlation


def weighted_layers(network: nn.Module) -> list[WeightedLayer]:
    """Every distinct Conv2d and Linear module of ``network``, in ``modules()`` order."""
    return [m for m in network.modules() if isinstance(m, WeightedLayer)]


def _total(terms: list[torch.Tensor]) -> float:
    return float(sum((t.double().sum() for t in terms), torch.zeros((), dtype=torch.float64)))


# -- loss gradients ----------------------------------------------------------------------------------------
def loss_gradients(probe: Probe) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(W, dL/dW)`` for every Conv2d/Linear weight of the network, from the probe's single loss backward."""

    def compute() -> list[tuple[torch.Tensor, torch.Tensor]]:
        grads = probe.weight_grads  # runs the forward pass, which lists every layer in ``probe.layers``
        return [(layer.module.weight.detach(), grad) for layer, grad in zip(probe.layers, grads, strict=True)]

    return probe.memo(("saliency", "loss-gradients"), compute)


@register
class GradNorm(Proxy):
    """Sum over layers of the Frobenius norm of the loss gradient: ``sum_l ||dL/dW_l||``.

    Reference: zero-cost-nas ``grad_norm.py`` (one norm per layer, then summed).
    """

    name = "grad_norm"
    needs_labels = True

    def compute(self, probe: Probe) -> float:
        return _total([grad.double().norm() for _, grad in loss_gradients(probe)])


@register
class Snip(Proxy):
    """SNIP connection sensitivity ``sum |W * dL/dW|`` (Lee et al., ICLR 2019).

    Reference: zero-cost-nas ``snip.py``: the gradient of the loss with respect to a multiplicative mask
    ``m = 1`` on each weight, which equals ``W * dL/dW``; its absolute value is summed.
    """

    name = "snip"
    needs_labels = True

    def compute(self, probe: Probe) -> float:
        return _total([(weight * grad).abs() for weight, grad in loss_gradients(probe)])


@register
class Grasp(Proxy):
    """GraSP ``-sum W * (H g)`` (Wang et al., ICLR 2020), with zero-cost-nas's sign.

    Reference: zero-cost-nas ``grasp.py`` with ``T = 1`` and ``num_iters = 1``: ``g = dL/dW`` (detached),
    ``z = sum g . dL/dW`` with the graph kept, ``H g = dz/dW``; the score is ``-W * Hg`` summed with its
    sign (zero-cost-nas negates GraSP's own score because accuracy correlated negatively with it).

    Interpretations: the reference takes ``g`` from a first forward/backward and ``dL/dW`` from a second,
    identical one (batch norm uses batch statistics, so both passes give the same values); here both
    come from one gradient, taken with ``create_graph`` on the probe's own forward pass. The Hessian-vector
    product keeps the probe's graph (``retain_graph``) so that other proxies can still use it.
    """

    name = "grasp"
    needs_labels = True

    def compute(self, probe: Probe) -> float:
        weights = [m.weight for m in weighted_layers(probe.network)]
        loss = probe.loss
        if not loss.requires_grad:
            return 0.0
        grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
        used = [(w, g) for w, g in zip(weights, grads, strict=True) if g is not None]
        z = sum(((g.detach() * g).sum() for _, g in used), torch.zeros((), device=loss.device))
        if not z.requires_grad:  # every gradient is constant in the weights: H g = 0
            return 0.0
        hessian_grads = torch.autograd.grad(z, [w for w, _ in used], retain_graph=True, allow_unused=True)
        terms = [-w.detach() * hg for (w, _), hg in zip(used, hessian_grads, strict=True) if hg is not None]
        return _total(terms)


@register
class Fisher(Proxy):
    """Channel Fisher information (Theis et al., 2018; Turner et al., BlockSwap, ICLR 2020).

    Per output channel ``k`` of a layer with output ``a`` and loss gradient ``dL/da``:
    ``Delta_k = 1/2 * mean_n (sum_spatial a * dL/da)_{n,k} ** 2``. Reference: zero-cost-nas ``fisher.py``,
    which broadcasts ``Delta_k`` to the ``fan_in = C_in/groups * k_h * k_w`` weights of channel ``k`` and
    sums them, so the score is ``sum_layers sum_k Delta_k * fan_in``.

    Interpretations: every Conv2d/Linear layer counts, stem and classifier included, as in the reference;
    a layer called more than once in a forward pass counts its last call (the probe keeps one output),
    where the reference adds every call. A layer whose output does not reach the loss contributes 0.
    """

    name = "fisher"
    needs_labels = True

    def compute(self, probe: Probe) -> float:
        probe.weight_grads  # noqa: B018 - the loss backward captures every layer's output gradient
        seen: set[int] = set()
        terms = []
        for layer in probe.layers:
            if id(layer.module) in seen or layer.output is None or layer.grad_output is None:
                continue
            seen.add(id(layer.module))
            product = layer.output.detach().double() * layer.grad_output.double()
            per_channel = product.sum(dim=tuple(range(2, product.dim()))) if product.dim() > 2 else product
            delta = per_channel.pow(2).mean(0).mul(0.5)
            terms.append(delta.sum() * layer.module.weight[0].numel())
        return _total(terms)


# -- input Jacobian ----------------------------------------------------------------------------------------
def jacob_cov_score(jacobian: torch.Tensor) -> float:
    """``-sum_i (ln(v_i + k) + 1 / (v_i + k))`` over the eigenvalues ``v`` of the rows' correlation matrix.

    Mellor et al., "Neural Architecture Search without Training" (arXiv v1, 2020), with ``k = 1e-5`` as in
    zero-cost-nas ``jacob_cov.py`` (``np.corrcoef`` of the ``N x D`` Jacobian, then its eigenvalues).

    Interpretations: the reference returns NaN when a row is constant (its correlation is 0/0); here such a
    row (centred norm at most 1e-12 of its norm) is uncorrelated with every row, itself included, so it adds
    an eigenvalue 0 -- the heaviest penalty, as for a sample that carries no input signal. The matrix stays
    positive semi-definite; eigenvalues come from the symmetric solver in float64 and are clamped at 0
    against rounding.
    """
    rows = jacobian.detach().double().flatten(1)
    centred = rows - rows.mean(dim=1, keepdim=True)
    norms = centred.norm(dim=1)
    live = norms > CONSTANT_ROW_TOLERANCE * rows.norm(dim=1)
    unit = torch.where(live[:, None], centred / torch.where(live, norms, 1.0)[:, None], 0.0)
    correlation = unit @ unit.T
    correlation.diagonal().copy_(live.double())
    eigenvalues = torch.linalg.eigvalsh(correlation).clamp_min(0.0) + JACOB_COV_EPS
    return float(-(eigenvalues.log() + eigenvalues.reciprocal()).sum())


@register
class JacobCov(Proxy):
    """Correlation of per-sample input gradients (Mellor et al. 2020 v1; zero-cost-nas ``jacob_cov``).

    The Jacobian row of sample ``n`` is ``d(sum_c y_nc)/dx_n`` (``probe.input_jacobian``, batch norm in
    training mode, as the reference's ``y.backward(ones)``); the score is `jacob_cov_score` of it.
    """

    name = "jacob_cov"

    def compute(self, probe: Probe) -> float:
        return jacob_cov_score(probe.input_jacobian)


# -- synaptic flow -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynapticFlow:
    """``|W|`` and ``dR/dW`` of every Conv2d/Linear weight of the linearised float64 copy."""

    weights: list[torch.Tensor]
    grads: list[torch.Tensor]


def linearised_copy(network: nn.Module) -> nn.Module:
    """A float64 deep copy with every parameter and buffer replaced by its absolute value, batch norm
    replaced by identity, in eval mode (zero-cost-nas ``copynet(bn=False)`` and ``linearize``).

    Eval mode only switches off dropout, so that the value is deterministic; batch norm is gone anyway.
    """
    linear = copy.deepcopy(network).double().eval()
    for parent in list(linear.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BATCH_NORMS):
                setattr(parent, name, nn.Identity())
    with torch.no_grad():
        for tensor in linear.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    return linear


def synaptic_flow(probe: Probe) -> SynapticFlow:
    """The one data-free forward/backward pass shared by `Synflow` and `LogSynflow`, computed once.

    ``R = sum f(1)`` for an all-ones input of shape ``(1, C, H, W)``, on `linearised_copy`, in float64.
    Float64 keeps every value finite up to about 1.8e308 (float32 overflows above 3.4e38, which deep or
    wide networks reach); beyond that the proxy fails with a `ProxyError` naming the overflow.
    """

    def compute() -> SynapticFlow:
        linear = linearised_copy(probe.network)
        layers = weighted_layers(linear)
        weights = [m.weight for m in layers]
        ones = torch.ones(1, *probe.batch.input_shape, dtype=torch.float64, device=probe.batch.inputs.device)
        total = linear(ones).sum()
        if not torch.isfinite(total):
            raise ProxyError(
                f"synflow needs R = sum f(1) finite in float64, but got R = {float(total.detach())}"
            )
        grads: tuple[torch.Tensor | None, ...] = (None,) * len(weights)
        if weights and total.requires_grad:
            grads = torch.autograd.grad(total, weights, allow_unused=True)
        dense = [
            torch.zeros_like(w) if g is None else g.detach() for w, g in zip(weights, grads, strict=True)
        ]
        if not all(bool(torch.isfinite(g).all()) for g in dense):
            raise ProxyError(
                f"synflow needs dR/dW finite in float64, but some overflow (R = {float(total.detach()):.3e})"
            )
        return SynapticFlow([w.detach() for w in weights], dense)

    return probe.memo(("saliency", "synaptic-flow"), compute)


@register
class Synflow(Proxy):
    """Synaptic flow ``sum |W * dR/dW|`` (Tanaka et al., NeurIPS 2020), data-free.

    Reference: zero-cost-nas ``synflow.py`` (``bn=False``): see `synaptic_flow` for the pass.
    """

    name = "synflow"

    def compute(self, probe: Probe) -> float:
        flow = synaptic_flow(probe)
        value = _total([(w * g).abs() for w, g in zip(flow.weights, flow.grads, strict=True)])
        if not math.isfinite(value):
            raise ProxyError(f"synflow must fit in float64, but sum |W * dR/dW| = {value}")
        return value


@register
class LogSynflow(Proxy):
    """LogSynFlow (Cavagnero et al. [13]) as the GA-rk paper states it: sum_i theta_i * log(dL/dtheta_i + 1).

    GA-rk paper, eq. 7: "S(theta) = theta * log(dL/dtheta + 1)", LogSynFlow "simply scaling down the
    gradient" of SynFlow, whose saliency is eq. 5, "S_p(theta) = dL/dtheta (.) theta", summed into an
    architecture's score by eq. 6, "S_n = sum_i^N S_p(theta)_i" ("summing synaptic saliency score over all
    parameters in the model"). Readings:

    - L is SynFlow's own objective (the paper names eq. 5 "SynFlow", after Tanaka et al. [11]): R = sum f(1)
      on the linearised network, whose parameters theta are the absolute values of the weights; see
      `synaptic_flow` (one data-free pass shared with `Synflow`).
    - "all parameters": every Conv2d/Linear weight, as in the code of [12] (zero-cost-nas) and the GA-rk
      authors' (OEmiliatanO/Rank-Based-NAS ``score/logsynflow_score.py``); biases never count, and batch
      norm is not in the linearised network.
    - Higher is better: the paper states no direction; its Table 1 gives LogSynFlow a positive correlation
      with accuracy (Spearman 0.81 on CIFAR-10), as for SynFlow.
    - Every dR/dtheta is >= 0 in networks of ReLU, pooling and sums on the all-ones input, so the logarithm
      is defined; the gradient enters as |dR/dtheta|, which changes nothing there and keeps the logarithm
      defined where a layer (e.g. LayerNorm) makes a gradient negative. ``log1p`` keeps small gradients exact.
    """

    name = "logsynflow"

    def compute(self, probe: Probe) -> float:
        flow = synaptic_flow(probe)
        return _total([w * g.abs().log1p() for w, g in zip(flow.weights, flow.grads, strict=True)])
