"""The probe: one network's passes over one mini-batch, shared by every proxy.

A `Probe` runs the forward pass once, with hooks on the declared main blocks and on every convolution and
linear layer of the network, and the loss backward pass at most once. Proxies read what they need;
anything costly beyond that (Rademacher vector-Jacobian products, per-sample gradients, the input
Jacobian) is computed on first use and cached, so proxies that share a need share the work.

Batch norm runs in training mode (batch statistics), as in the zero-cost-proxy literature. Per-sample
gradients are the per-sample terms of the batch gradient (input activation x output gradient of each
sample); with batch norm the output gradients already hold the cross-sample terms, so the terms add up
exactly to the batch gradient.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_weight

from nasfleet.data.datasets import Dataset

ACTIVATIONS = (nn.ReLU, nn.ReLU6)
T = TypeVar("T")


@dataclass(frozen=True)
class ProbeBatch:
    """The mini-batch proxies are computed on; ``labels`` is None when labels are unavailable (alpha = 0)."""

    inputs: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int

    def __post_init__(self) -> None:
        if self.inputs.dim() != 4 or self.inputs.shape[0] < 2:
            raise ValueError(f"inputs must have shape (B>=2, C, H, W), but got {tuple(self.inputs.shape)}")
        if not torch.isfinite(self.inputs).all():
            raise ValueError("inputs must be finite, but hold NaN or inf")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, but got {self.num_classes}")
        if self.labels is not None:
            labels = self.labels
            if labels.shape != (self.inputs.shape[0],):
                raise ValueError(
                    f"labels must have shape ({self.inputs.shape[0]},), but got {tuple(labels.shape)}"
                )
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise ValueError(
                    f"labels must lie in [0, {self.num_classes}), but got [{labels.min()}, {labels.max()}]"
                )

    @classmethod
    def from_dataset(cls, dataset: Dataset, batch_size: int, seed: int, labeled: bool = True) -> ProbeBatch:
        """A deterministic random mini-batch of ``dataset``."""
        if not 2 <= batch_size <= len(dataset):
            raise ValueError(f"batch_size must lie in [2, {len(dataset)}], but got {batch_size}")
        index = np.random.default_rng(seed).choice(len(dataset), size=batch_size, replace=False)
        labels = torch.from_numpy(dataset.labels[index]) if labeled else None
        return cls(torch.from_numpy(dataset.images[index]), labels, dataset.num_classes)

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.inputs.shape
        return int(c), int(h), int(w)

    def to(self, device: torch.device | str) -> ProbeBatch:
        labels = None if self.labels is None else self.labels.to(device)
        return ProbeBatch(self.inputs.to(device), labels, self.num_classes)


OUTSIDE_BLOCKS = -1


@dataclass
class Layer:
    """A convolution or linear layer of the network, the index of its main block (`OUTSIDE_BLOCKS` for the
    stem and the classifier) and the tensors it saw in the probe's passes."""

    module: nn.Conv2d | nn.Linear
    block: int
    input: torch.Tensor | None = None
    output: torch.Tensor | None = None
    grad_output: torch.Tensor | None = None
    live_output: torch.Tensor | None = None  # the output in the graph, for gradients with respect to it


def main_blocks_of(network: nn.Module) -> list[nn.Module]:
    """The network's declared ``main_blocks``; every network a proxy scores must declare them."""
    blocks = getattr(network, "main_blocks", None)
    if blocks is None or len(blocks) == 0:
        raise ValueError(f"{type(network).__name__} must declare a non-empty `main_blocks` to be probed")
    return list(blocks)


class Probe:
    """Forward and backward passes of ``network`` on ``batch``, computed once and shared."""

    def __init__(
        self,
        network: nn.Module,
        batch: ProbeBatch,
        *,
        blocks: Sequence[nn.Module] | None = None,
        seed: int = 0,
        record_activation_codes: bool = False,
    ) -> None:
        self.network = network
        self.batch = batch
        self.blocks = list(blocks) if blocks is not None else main_blocks_of(network)
        self.seed = seed
        self.record_activation_codes = record_activation_codes
        self.block_inputs: list[torch.Tensor] = []
        self.block_outputs: list[torch.Tensor] = []
        self.layers: list[Layer] = []
        self.activation_codes: list[torch.Tensor] = []
        self._capturing_gradients = False
        self._memo: dict[Hashable, Any] = {}

    # -- forward -------------------------------------------------------------------------------------------
    @cached_property
    def logits(self) -> torch.Tensor:
        """Logits of the instrumented forward pass (batch norm in training mode)."""
        self.network.train()
        handles = [b.register_forward_hook(self._record_block) for b in self.blocks]
        block_of = {id(m): index for index, block in enumerate(self.blocks) for m in block.modules()}
        for module in self.network.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                self.layers.append(Layer(module, block_of.get(id(module), OUTSIDE_BLOCKS)))
                handles.append(module.register_forward_hook(self._layer_recorder(len(self.layers) - 1)))
        if self.record_activation_codes:
            for module in self.network.modules():
                if isinstance(module, ACTIVATIONS):
                    handles.append(module.register_forward_hook(self._record_code))
        try:
            output: torch.Tensor = self.network(self.inputs)
        finally:
            for handle in handles:
                handle.remove()
        return output

    @cached_property
    def inputs(self) -> torch.Tensor:
        """The batch's inputs as a leaf that records gradients (for input-Jacobian proxies)."""
        return self.batch.inputs.detach().clone().requires_grad_(True)

    def _record_block(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        self.block_inputs.append(args[0])
        self.block_outputs.append(output)

    def _layer_recorder(self, index: int) -> Any:
        # Hooks hold the probe weakly: autograd nodes keep hooks alive from C++, where the garbage
        # collector cannot see a cycle through them, so a strong reference would leak every probe's graph.
        probe_ref = weakref.ref(self)

        def record_gradient(grad: torch.Tensor) -> None:
            probe = probe_ref()
            if probe is not None and probe._capturing_gradients:
                probe.layers[index].grad_output = grad.detach()

        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            probe = probe_ref()
            if probe is None:
                return
            layer = probe.layers[index]
            layer.input, layer.output = args[0].detach(), output.detach()
            if output.requires_grad:
                layer.live_output = output
                output.register_hook(record_gradient)  # type: ignore[no-untyped-call]

        return hook

    def _record_code(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        self.activation_codes.append((args[0].detach() > 0).flatten(1))

    def close(self) -> None:
        """Release every tensor and graph this probe holds; call it when the network is scored."""
        self.block_inputs.clear()
        self.block_outputs.clear()
        self.layers.clear()
        self.activation_codes.clear()
        self._memo.clear()
        for name in ("logits", "inputs", "loss", "weight_grads", "input_jacobian"):
            self.__dict__.pop(name, None)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- backward ------------------------------------------------------------------------------------------
    @cached_property
    def loss(self) -> torch.Tensor:
        """Mean cross-entropy of the batch; needs labels."""
        if self.batch.labels is None:
            raise ValueError("the loss needs labels, but the probe batch has none (alpha = 0)")
        return F.cross_entropy(self.logits, self.batch.labels)

    @cached_property
    def weight_grads(self) -> list[torch.Tensor]:
        """Loss gradient of each layer's weight, in `layers` order; runs the single loss backward pass."""
        loss = self.loss
        weights = [layer.module.weight for layer in self.layers]
        self._capturing_gradients = True
        try:
            grads = torch.autograd.grad(loss, weights, retain_graph=True, allow_unused=True)
        finally:
            self._capturing_gradients = False
        return [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads, strict=True)]

    def capture_output_grads(self, layers: Sequence[Layer]) -> None:
        """Loss gradients of these layers' outputs only, so `per_sample_grads` can read them without the
        full `weight_grads` pass: the backward then skips every weight gradient (about a third of it).
        The gradients are the same tensors `weight_grads` would capture."""
        needed = [layer for layer in layers if layer.grad_output is None and layer.live_output is not None]
        if not needed or "weight_grads" in self.__dict__:
            return
        outputs = [cast(torch.Tensor, layer.live_output) for layer in needed]
        grads = torch.autograd.grad(self.loss, outputs, retain_graph=True, allow_unused=True)
        for layer, output, grad in zip(needed, outputs, grads, strict=True):
            layer.grad_output = torch.zeros_like(output) if grad is None else grad.detach()

    def per_sample_grads(self, layer: Layer) -> torch.Tensor:
        """Per-sample loss gradients of a layer's weight, shape (B, weight.numel())."""
        if layer.grad_output is None:
            self.weight_grads  # noqa: B018 - runs the backward pass that captures output gradients
        if layer.grad_output is None or layer.input is None:
            return torch.zeros(self.batch.size, layer.module.weight.numel(), device=self.inputs.device)
        return per_sample_weight_grads(layer.module, layer.input, layer.grad_output)

    def block_jacobian_sketches(self, n_probes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each block, the Gram matrices ``(V^T V, V'^T V')`` of K Rademacher probes, each (K, K).

        Column k of V is a Rademacher vector v_k over the block's output (the whole batch); column k of V'
        is ``v'_k = J^T v_k``, pushed back through the block's own sub-graph only (from its output to its
        input). These two small matrices are all that the spectral norm of ``(1/K) sum_k v'_k v_k^T``
        needs. A block whose output does not depend on its input has ``V' = 0``.
        """
        if n_probes < 1:
            raise ValueError(f"n_probes must be >= 1, but got {n_probes}")

        def compute() -> list[tuple[torch.Tensor, torch.Tensor]]:
            self.logits  # noqa: B018 - the forward pass records the blocks
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            sketches = []
            for block_in, block_out in zip(self.block_inputs, self.block_outputs, strict=True):
                probes = [rademacher(block_out.shape, generator).to(block_out) for _ in range(n_probes)]
                pushed = [vector_jacobian(block_in, block_out, v) for v in probes]
                v_matrix = torch.stack([v.flatten() for v in probes]).double()
                p_matrix = torch.stack([p.flatten() for p in pushed]).double()
                sketches.append((v_matrix @ v_matrix.T, p_matrix @ p_matrix.T))
            return sketches

        return self.memo(("jacobian-sketches", n_probes), compute)

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """Compute a derived quantity once per probe, so proxies that share it share the work."""
        if key not in self._memo:
            self._memo[key] = compute()
        return cast(T, self._memo[key])

    @cached_property
    def input_jacobian(self) -> torch.Tensor:
        """Per-sample gradient of the summed logits with respect to the input, shape (B, C*H*W)."""
        logits = self.logits
        if not logits.requires_grad:
            return torch.zeros_like(self.inputs).flatten(1)
        (grad,) = torch.autograd.grad(logits.sum(), self.inputs, retain_graph=True, allow_unused=True)
        return (torch.zeros_like(self.inputs) if grad is None else grad).flatten(1)


def vector_jacobian(block_in: torch.Tensor, block_out: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``J^T v``: ``v`` (shaped like ``block_out``) pushed back from ``block_out`` to ``block_in`` through
    their sub-graph only, keeping the graph for other proxies; zeros shaped like ``block_in`` where the
    output does not depend on the input (a dead block)."""
    if not (block_out.requires_grad and block_in.requires_grad):
        return torch.zeros_like(block_in)
    (grad,) = torch.autograd.grad(block_out, block_in, v, retain_graph=True, allow_unused=True)
    return torch.zeros_like(block_in) if grad is None else grad


def stream_seed(seed: int, stream: int) -> int:
    """A seed for a proxy's own random stream, derived from (``seed``, ``stream``), not ``seed`` itself.

    A generator seeded with ``seed`` alone may be the one that drew the batch; its draws would then repeat
    the batch's (NI's noise would equal the inputs, X' = (1 + sigma) X, which batch norm all but cancels).
    """
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def rademacher(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """A tensor of independent +1/-1 entries with equal probability."""
    return torch.randint(0, 2, tuple(shape), generator=generator).mul_(2).sub_(1).float()


def per_sample_weight_grads(
    module: nn.Module, inputs: torch.Tensor, grad_output: torch.Tensor
) -> torch.Tensor:
    """Per-sample weight gradients of a Conv2d or Linear layer from its input and output gradient."""
    batch = inputs.shape[0]
    if isinstance(module, nn.Linear):  # summed over every position it saw (a transformer's tokens)
        positions_in = inputs.reshape(batch, -1, module.in_features)
        positions_out = grad_output.reshape(batch, -1, module.out_features)
        return torch.einsum("bpo,bpi->boi", positions_out, positions_in).reshape(batch, -1)
    if not isinstance(module, nn.Conv2d):
        raise TypeError(
            f"per-sample gradients need a Conv2d or Linear layer, but got {type(module).__name__}"
        )
    if isinstance(module.padding, str):
        raise ValueError(f"per-sample gradients need numeric conv padding, but got {module.padding!r}")
    # Each sample becomes its own group of one big convolution, so a single weight-gradient call returns
    # every sample's gradient (several times faster than unfolding patches).
    groups = module.groups * batch
    folded_input = inputs.reshape(1, -1, *inputs.shape[2:])
    folded_grad = grad_output.reshape(1, -1, *grad_output.shape[2:])
    shape = (batch * module.out_channels, module.in_channels // module.groups, *module.kernel_size)
    grads: torch.Tensor = conv2d_weight(  # type: ignore[no-untyped-call]
        folded_input, shape, folded_grad, module.stride, module.padding, module.dilation, groups
    )
    return grads.reshape(batch, -1)
