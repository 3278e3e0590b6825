"""Tiny hand-made networks for proxy tests: a chain of main blocks whose properties are known exactly."""

from __future__ import annotations

import torch
from torch import nn

from nasfleet.proxies.probe import ProbeBatch


class Chain(nn.Module):
    """A 1x1-conv stem, the given main blocks, global pooling and a classifier, no batch norm."""

    def __init__(self, *blocks: nn.Module, channels: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 1, bias=False)
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, 10)

    @property
    def main_blocks(self) -> list[nn.Module]:
        return list(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(x.mean(dim=(2, 3)))
        return logits


class Zero(nn.Module):
    """A block whose output ignores its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def conv_block(weight: torch.Tensor) -> nn.Conv2d:
    """A bias-free 1x1 convolution with the (out, in) matrix ``weight``."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(weight[:, :, None, None])
    return conv


def random_batch(size: int, side: int = 8, seed: int = 0) -> ProbeBatch:
    """``size`` unlabeled N(0, 1) images of 3 x side x side, 10 classes."""
    return ProbeBatch(
        torch.randn(size, 3, side, side, generator=torch.Generator().manual_seed(seed)), None, 10
    )
