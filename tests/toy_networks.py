"""Tiny hand-made networks for proxy tests: a chain of main blocks whose properties are known exactly."""

from __future__ import annotations

import torch
from torch import nn


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
