"""A MobileNetV2-style macro search space (OFA/ProxylessNAS style), its networks and exact costs.

Skeleton: a 3x3 conv stem (BN, ReLU6), a fixed inverted-residual block (expansion 1, kernel 3, 16
channels), six searchable stages of MBConv blocks (1x1 expand, BN, ReLU6; depthwise kxk, BN, ReLU6;
1x1 project, BN; a residual when the stride is 1 and the channels match) with MobileNetV2's widths
24, 32, 64, 96, 160, 320, then a 1x1 conv head (BN, ReLU6), global average pooling and a linear
classifier. Every channel count is scaled by the width multiplier and rounded to a multiple of 8 as
MobileNetV2 does, the head's 1280 too when ``scale_head`` is true (the default): at width 0.25 the head
has 320 channels and the cheapest arch 117,362 parameters (1x8x8, 10 classes), within the micro tier.
``scale_head=False`` is MobileNetV2's paper, torchvision's and OFA's convention: 1280 channels for every
multiplier up to 1, scaled only above it; the head and classifier then hold 220,170 of the 546,770
parameters of the cheapest width-0.5 arch.

Revision 2 (``revision``) changed the defaults to widths (0.25, 0.5, 0.75, 1.0) and ``scale_head=True``;
revision 1 is ``MBV2Space(widths=(0.5, 0.75, 1.0), scale_head=False)``. Arch strings are unchanged, so a
width-0.5 or 0.75 string now names a narrower head: cached proxy values are keyed on the revision, and a
result stored before the change rebuilds its network only with the revision-1 options.
Weights are initialised as torchvision's MobileNetV2 does; there is no dropout, so a forward pass is
deterministic.

Genome (55 genes with the defaults; the width gene has 4 options since revision 2), in segment order:

- ``width``: 1 gene, index into ``widths``;
- ``depth``: 6 genes, index into ``depths`` for each stage;
- ``expansion``: 6 x ``max(depths)`` genes, index into ``expansions`` for block ``j`` of stage ``s`` at
  position ``s * max(depths) + j``;
- ``kernel``: the same layout, indices into ``kernels``.

Expansion and kernel genes of blocks beyond their stage's depth are inactive; the canonical genome sets
them to 0.

String: ``w<width>-d<depths>-e<expansions>-k<kernels>``; depths are separated by ``,``; expansions and
kernels list the active blocks only, stages separated by ``,`` and blocks within a stage by ``.``, e.g.
``w0.75-d2,3,2,4,2,2-e6.3,4.4.6,3.3,6.6.6.6,4.3,6.6-k3.5,7.7.3,5.5,3.3.3.3,5.7,3.3``. Every value is
written exactly as the constructor's choice prints (``1.0``, not ``1``).

Strides: MobileNetV2 has stride 2 at the stem and at the first block of the 24-, 32-, 64- and 160-channel
stages. The stem keeps stride 2 only when the input's height and width are both >= 64 (smaller inputs
follow the CIFAR convention of a stride-1 stem); every other stride 2 is kept only while the current
feature map's height and width are both >= 4, so no feature map shrinks below 2x2 (or below the input,
if that is smaller). 224x224 gives the usual 7x7 final map; 32x32 and 8x8 give 2x2. A stride-2 layer
maps a size ``n`` to ``ceil(n / 2)`` (odd kernels, padding ``k // 2``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from nasfleet.spaces.base import (
    Cost,
    Genome,
    InputShape,
    SearchSpace,
    Segment,
    check_input_shape,
)
from nasfleet.spaces.text import is_int, option_index, prefixed_parts, split_exactly

STEM_CHANNELS = 32
FIRST_BLOCK_CHANNELS = 16
STAGES = ((24, 2), (32, 2), (64, 2), (96, 1), (160, 2), (320, 1))  # (channels, nominal stride) per stage
HEAD_CHANNELS = 1280
STEM_STRIDE_MIN_SIZE = 64
STRIDE_MIN_SIZE = 4


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going down by more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class BlockSpec(NamedTuple):
    """One inverted-residual block: channels, expansion, kernel, stride and its in/out spatial positions."""

    c_in: int
    c_out: int
    expansion: int
    kernel: int
    stride: int
    in_positions: int
    out_positions: int


class NetworkPlan(NamedTuple):
    """Everything that fixes a network's shape: stem, blocks in forward order and head."""

    stem_channels: int
    stem_stride: int
    stem_positions: int
    blocks: tuple[BlockSpec, ...]
    head_channels: int


class ConvBNReLU6(nn.Sequential):
    """Bias-free convolution, batch norm, ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2's MBConv block; an expansion of 1 has no expand convolution, as in MobileNetV2."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        hidden = spec.c_in * spec.expansion
        layers: list[nn.Module] = [] if spec.expansion == 1 else [ConvBNReLU6(spec.c_in, hidden, 1)]
        layers += [
            ConvBNReLU6(hidden, hidden, spec.kernel, spec.stride, groups=hidden),
            nn.Conv2d(hidden, spec.c_out, 1, bias=False),
            nn.BatchNorm2d(spec.c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = spec.stride == 1 and spec.c_in == spec.c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return x + out if self.use_residual else out


class MBV2Network(nn.Module):
    """Stem, inverted-residual blocks, 1x1 head, global average pooling and a linear classifier."""

    def __init__(self, plan: NetworkPlan, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = ConvBNReLU6(in_channels, plan.stem_channels, 3, plan.stem_stride)
        self.blocks = nn.ModuleList(InvertedResidual(spec) for spec in plan.blocks)
        self.head = ConvBNReLU6(plan.blocks[-1].c_out, plan.head_channels, 1)
        self.classifier = nn.Linear(plan.head_channels, num_classes)
        _init_weights(self)

    @property
    def main_blocks(self) -> list[nn.Module]:
        """The fixed first block and the searchable blocks, in forward order."""
        return list(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.classifier(self.head(x).mean(dim=(2, 3)))
        return logits


def _init_weights(model: nn.Module) -> None:
    """torchvision's MobileNetV2 initialisation (the reference networks of this space use it)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


@functools.cache
def _channels(multiplier: float, scale_head: bool) -> tuple[int, int, tuple[int, ...], int]:
    """Stem, first-block, per-stage and head channels at a width multiplier (cached: plans are hot)."""
    stages = tuple(make_divisible(channels * multiplier) for channels, _ in STAGES)
    # MobileNetV2 (and torchvision) never narrow the head below 1280; scale_head narrows it with the rest.
    head = make_divisible(HEAD_CHANNELS * (multiplier if scale_head else max(1.0, multiplier)))
    return (
        make_divisible(STEM_CHANNELS * multiplier),
        make_divisible(FIRST_BLOCK_CHANNELS * multiplier),
        stages,
        head,
    )


@functools.cache
def _config_choices(
    widths: tuple[float, ...],
    depths: tuple[int, ...],
    expansions: tuple[int, ...],
    kernels: tuple[int, ...],
    scale_head: bool,
) -> tuple[int, ...]:
    """Validate a space's configuration, stored unchecked by its constructor, and return its ``choices``.

    Cached because ``choices`` is read on every ``validate`` and costs are computed thousands of times.
    """
    rules: tuple[tuple[str, tuple[float, ...], str, bool], ...] = (
        ("widths", widths, "positive numbers", all(w > 0 for w in widths)),
        ("depths", depths, "integers >= 1", all(is_int(d, 1) for d in depths)),
        ("expansions", expansions, "integers >= 1", all(is_int(e, 1) for e in expansions)),
        ("kernels", kernels, "odd integers", all(is_int(k, 1) and k % 2 for k in kernels)),
    )
    for name, values, rule, ok in rules:
        if not (ok and values and len(set(values)) == len(values)):
            raise ValueError(f"mbv2: {name} must be distinct {rule}, but got {values}")
    if not isinstance(scale_head, bool):
        raise ValueError(f"mbv2: scale_head must be true or false, but got {scale_head!r}")
    blocks = len(STAGES) * max(depths)
    return (
        (len(widths),) + (len(depths),) * len(STAGES) + (len(expansions),) * blocks + (len(kernels),) * blocks
    )


def _downsample(height: int, width: int, stride: int, min_size: int) -> tuple[int, int, int]:
    """The stride actually used for a nominal ``stride``, and the output size of a same-padded conv."""
    if stride == 1 or min(height, width) < min_size:
        return 1, height, width
    return stride, (height - 1) // stride + 1, (width - 1) // stride + 1


class MBV2Space(SearchSpace):
    """MobileNetV2-style macro space: width, per-stage depth, per-block expansion ratio and kernel size."""

    name = "mbv2"
    revision = 2  # 2: defaults widths (0.25, 0.5, 0.75, 1.0) and scale_head=True (see the module's docstring)

    def __init__(
        self,
        widths: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
        depths: Sequence[int] = (2, 3, 4),
        expansions: Sequence[int] = (3, 4, 6),
        kernels: Sequence[int] = (3, 5, 7),
        scale_head: bool = True,
    ) -> None:
        self.widths = tuple(widths)
        self.depths = tuple(depths)
        self.expansions = tuple(expansions)
        self.kernels = tuple(kernels)
        self.scale_head = scale_head

    @property
    def slots(self) -> int:
        """Number of block positions per stage: the largest depth."""
        return max(self.depths)

    def _offsets(self) -> tuple[int, int, int]:
        """Block slots per stage, and the first gene of the expansion and of the kernel segment."""
        slots = max(self.depths)
        return slots, 1 + len(STAGES), 1 + len(STAGES) * (1 + slots)

    @property
    def choices(self) -> tuple[int, ...]:
        return _config_choices(self.widths, self.depths, self.expansions, self.kernels, self.scale_head)

    @property
    def segments(self) -> tuple[Segment, ...]:
        """``width``, ``depth`` (all stages), ``expansion`` (all blocks) and ``kernel`` (all blocks)."""
        slots, expansion_start, kernel_start = self._offsets()
        return (
            Segment("width", 0, 1),
            Segment("depth", 1, expansion_start),
            Segment("expansion", expansion_start, kernel_start),
            Segment("kernel", kernel_start, kernel_start + len(STAGES) * slots),
        )

    def canonical(self, arch: Genome) -> Genome:
        """Set the expansion and kernel genes of blocks beyond each stage's depth to 0."""
        genome = list(arch)
        slots, expansion_start, kernel_start = self._offsets()
        for stage in range(len(STAGES)):
            for block in range(stage * slots + self.depths[genome[1 + stage]], (stage + 1) * slots):
                genome[expansion_start + block] = genome[kernel_start + block] = 0
        return tuple(genome)

    def _stages(self, genome: Genome) -> list[list[tuple[int, int]]]:
        """The (expansion, kernel) values of the active blocks of each stage."""
        slots, expansion_start, kernel_start = self._offsets()
        stages = []
        for stage in range(len(STAGES)):
            blocks = range(stage * slots, stage * slots + self.depths[genome[1 + stage]])
            stages.append(
                [
                    (self.expansions[genome[expansion_start + b]], self.kernels[genome[kernel_start + b]])
                    for b in blocks
                ]
            )
        return stages

    def encode(self, arch: Genome) -> str:
        genome = self.validate(arch)
        stages = self._stages(genome)
        depths = ",".join(str(len(blocks)) for blocks in stages)
        expansions = ",".join(".".join(str(e) for e, _ in blocks) for blocks in stages)
        kernels = ",".join(".".join(str(k) for _, k in blocks) for blocks in stages)
        return f"w{self.widths[genome[0]]}-d{depths}-e{expansions}-k{kernels}"

    def decode(self, text: str) -> Genome:
        parts = prefixed_parts(self.name, text, "wdek")
        width = option_index(self.name, "width", parts[0], self.widths)
        depth_texts = split_exactly(self.name, "depths", parts[1], ",", len(STAGES))
        depth_genes = [
            option_index(self.name, f"depth of stage {s}", t, self.depths) for s, t in enumerate(depth_texts)
        ]
        expansion_genes = self._decode_blocks("expansion", parts[2], depth_genes, self.expansions)
        kernel_genes = self._decode_blocks("kernel", parts[3], depth_genes, self.kernels)
        return (width, *depth_genes, *expansion_genes, *kernel_genes)

    def _decode_blocks(
        self, what: str, text: str, depth_genes: list[int], options: tuple[int, ...]
    ) -> list[int]:
        """Genes of one per-block segment, with inactive blocks set to 0."""
        genes = [0] * (len(STAGES) * self.slots)
        stage_texts = split_exactly(self.name, f"{what} stages", text, ",", len(STAGES))
        for stage, stage_text in enumerate(stage_texts):
            values = split_exactly(
                self.name, f"{what} values of stage {stage}", stage_text, ".", self.depths[depth_genes[stage]]
            )
            for block, value in enumerate(values):
                genes[stage * self.slots + block] = option_index(
                    self.name, f"{what} of stage {stage} block {block}", value, options
                )
        return genes

    def plan(self, arch: Genome, input_shape: InputShape) -> NetworkPlan:
        """Channels, strides and spatial sizes of every layer of ``arch``'s network for ``input_shape``."""
        genome = self.validate(arch)
        stem_channels, c_in, stage_channels, head = _channels(self.widths[genome[0]], self.scale_head)
        stem_stride, height, width = _downsample(input_shape[1], input_shape[2], 2, STEM_STRIDE_MIN_SIZE)
        positions = height * width
        blocks = [BlockSpec(stem_channels, c_in, 1, 3, 1, positions, positions)]
        for (_, nominal_stride), c_out, stage in zip(
            STAGES, stage_channels, self._stages(genome), strict=True
        ):
            for index, (expansion, kernel) in enumerate(stage):
                stride = nominal_stride if index == 0 else 1
                stride, height, width = _downsample(height, width, stride, STRIDE_MIN_SIZE)
                blocks.append(BlockSpec(c_in, c_out, expansion, kernel, stride, positions, height * width))
                c_in, positions = c_out, height * width
        return NetworkPlan(stem_channels, stem_stride, blocks[0].in_positions, tuple(blocks), head)

    def build(
        self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)
    ) -> MBV2Network:
        shape = check_input_shape(input_shape, num_classes)
        return MBV2Network(self.plan(arch, shape), shape[0], num_classes)

    def cost(self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> Cost:
        shape = check_input_shape(input_shape, num_classes)
        plan = self.plan(arch, shape)
        stem, last, head = plan.stem_channels, plan.blocks[-1].c_out, plan.head_channels
        params = 9 * shape[0] * stem + 2 * stem + last * head + 2 * head + head * num_classes + num_classes
        flops = 9 * shape[0] * stem * plan.stem_positions + head * num_classes + num_classes
        flops += last * head * plan.blocks[-1].out_positions
        for spec in plan.blocks:
            block_params, block_flops = _block_cost(spec)
            params += block_params
            flops += block_flops
        return Cost(params=params, flops=flops)


def _block_cost(spec: BlockSpec) -> tuple[int, int]:
    """Parameters and MACs of one block; batch norm has 2 parameters per channel and counts 0 MACs."""
    hidden = spec.c_in * spec.expansion
    params = flops = 0
    if spec.expansion != 1:
        params += spec.c_in * hidden + 2 * hidden
        flops += spec.c_in * hidden * spec.in_positions
    per_position = spec.kernel * spec.kernel * hidden + hidden * spec.c_out
    params += per_position + 2 * hidden + 2 * spec.c_out
    flops += per_position * spec.out_positions
    return params, flops
