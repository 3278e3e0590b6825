"""Two searchable convolutions: an example third-party nasfleet search space.

It is published through the ``nasfleet.spaces`` entry point in ``pyproject.toml`` (the entry point's name
equals ``TinyConvSpace.name``) and is never registered by import. The network: two stride-1 blocks (a
bias-free ``k x k`` convolution, batch norm, ReLU), global average pooling and a linear classifier. Each
block chooses its output channels and kernel size, so the genome has four genes in two segments, one per
block; the string of an arch is ``c<channels>k<kernel>-c<channels>k<kernel>``, e.g. ``c8k3-c16k5``.

Cost follows nasfleet's convention (`nasfleet.spaces.counting`): every parameter, and the multiply-
accumulates of convolutions and linear layers for one sample (batch norm, ReLU and pooling are free).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from nasfleet.spaces import ArchitectureError, Cost, Genome, InputShape, SearchSpace, Segment
from nasfleet.spaces.base import check_input_shape

__all__ = ["TinyConvSpace"]

CHANNELS = (4, 8, 16)
KERNELS = (1, 3, 5)
BLOCK = re.compile(r"c(\d+)k(\d+)")


class TinyConvNetwork(nn.Module):
    """Two convolution blocks, global average pooling and a linear classifier."""

    def __init__(self, in_channels: int, layers: list[tuple[int, int]], num_classes: int) -> None:
        super().__init__()
        blocks, c_in = [], in_channels
        for channels, kernel in layers:
            conv = nn.Conv2d(c_in, channels, kernel, padding=kernel // 2, bias=False)
            blocks.append(nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU()))
            c_in = channels
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(c_in, num_classes)

    @property
    def main_blocks(self) -> list[nn.Module]:
        """The blocks the proxies read (FG-NAS's main blocks)."""
        return list(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.classifier(x.mean(dim=(2, 3)))
        return logits


class TinyConvSpace(SearchSpace):
    """Two convolutions, each of 4, 8 or 16 channels and kernel 1, 3 or 5 (81 networks)."""

    name = "tinyconv"

    @property
    def choices(self) -> tuple[int, ...]:
        return (len(CHANNELS), len(KERNELS)) * 2

    @property
    def segments(self) -> tuple[Segment, ...]:
        return Segment("block0", 0, 2), Segment("block1", 2, 4)

    def _layers(self, arch: Genome) -> list[tuple[int, int]]:
        genome = self.validate(arch)
        return [(CHANNELS[genome[i]], KERNELS[genome[i + 1]]) for i in (0, 2)]

    def encode(self, arch: Genome) -> str:
        return "-".join(f"c{channels}k{kernel}" for channels, kernel in self._layers(arch))

    def decode(self, text: str) -> Genome:
        parts = text.strip().split("-")
        if len(parts) != 2:
            raise ArchitectureError(f"tinyconv: an arch string has 2 blocks 'c…k…-c…k…', but got {text!r}")
        genes: list[int] = []
        for part in parts:
            match = BLOCK.fullmatch(part)
            if match is None or int(match[1]) not in CHANNELS or int(match[2]) not in KERNELS:
                raise ArchitectureError(
                    f"tinyconv: a block must be c<{'|'.join(map(str, CHANNELS))}>k<"
                    f"{'|'.join(map(str, KERNELS))}>, but got {part!r}"
                )
            genes += [CHANNELS.index(int(match[1])), KERNELS.index(int(match[2]))]
        return tuple(genes)

    def build(
        self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)
    ) -> TinyConvNetwork:
        shape = check_input_shape(input_shape, num_classes)
        return TinyConvNetwork(shape[0], self._layers(arch), num_classes)

    def cost(self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> Cost:
        channels, height, width = check_input_shape(input_shape, num_classes)
        params = flops = 0
        for c_out, kernel in self._layers(arch):
            weights = kernel * kernel * channels * c_out
            params += weights + 2 * c_out  # the convolution and batch norm's scale and shift
            flops += weights * height * width  # stride 1, same padding: one output per input position
            channels = c_out
        classifier = channels * num_classes + num_classes
        return Cost(params + classifier, flops + classifier)
