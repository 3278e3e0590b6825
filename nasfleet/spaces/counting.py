"""Cost of a built network, counted the way the NAS-Bench-201 API counts it.

The API (``xautodl.utils.flop_benchmark.get_model_infos``) sums two kinds of module and ignores all
others (batch norm, activations, pooling, additions):

- ``Conv2d``: ``k_h * k_w * C_in * C_out / groups`` per output position (+ ``C_out`` per position for a bias);
- ``Linear``: ``in * out`` (+ ``out`` for a bias) per position it is applied at: once for a (batch, features)
  input, once per token for a transformer's (batch, tokens, features) one.

A third kind extends the API's rule to a transformer's attention, which it has no module for: `MatMul`, a
parameter-free product ``a @ b`` of two activations (attention's ``Q K^T`` and ``A V``), costs its inner
dimension per output element. AutoFormer's own complexity count (``get_complexity``) includes both products.

Interpretation: the API also hooks ``AvgPool2d``/``MaxPool2d`` but leaves them out of the sum (its
``compute_average_flops_cost`` has the pooling clause commented out), so pooling costs 0 FLOPs here. With
that rule the cheapest NB201 cell (all ``none``) costs 7.78 M FLOPs on CIFAR-10, the benchmark's published
minimum, and the all-``nor_conv_3x3`` cell 220.12 M.

FLOPs here are those multiply-accumulate counts for one sample, as an integer (the API reports them
divided by 1e6). Parameters are every parameter of the module, as ``count_parameters_in_MB`` counts them.
"""

from __future__ import annotations

import torch
from torch import nn

from nasfleet.spaces.base import Cost, InputShape


class MatMul(nn.Module):
    """``a @ b`` as a module, so that `count_cost` sees it (a product of two activations, no parameters)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b


def _module_flops(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    """MACs of one call of ``module`` on a batch of one sample (`count_cost` runs one)."""
    if isinstance(module, MatMul):
        return int(output.numel() * inputs[0].shape[-1])
    if isinstance(module, nn.Conv2d):
        positions = output.shape[2] * output.shape[3]
        k_h, k_w = module.kernel_size
        per_position = k_h * k_w * module.in_channels * module.out_channels // module.groups
        bias = module.out_channels if module.bias is not None else 0
        return int(positions * (per_position + bias))
    if isinstance(module, nn.Linear):
        positions = output.numel() // module.out_features
        bias = module.out_features if module.bias is not None else 0
        return int(positions * (module.in_features * module.out_features + bias))
    return 0


def count_cost(model: nn.Module, input_shape: InputShape) -> Cost:
    """Run one sample of ``input_shape`` through ``model`` and count its cost by hooks."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _module_flops(module, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    params = sum(p.numel() for p in model.parameters())
    return Cost(params=int(params), flops=int(total))
