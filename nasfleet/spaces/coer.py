"""COER-NAS's progressive separable macro space, its networks and exact costs (a RECONSTRUCTION).

Only the abstract of COER-NAS survives in our copy (seed ``003``; no equations, no figure of the space). It
says the space is "a progressive representation dimensionality reduction separable architecture search
space", "where convolution and pooling are decoupled by their functional properties to reduce the solution
space scale and retain feature representations", and that the strategy "decomposes high-dimensional
architecture encodings into convolution segments, pooling segments and depth segments". Everything else
here is our reading of those words; ``docs/spaces.md`` separates what is quoted from what is guessed.

Network: a 3x3 conv stem (BN, ReLU) at the first stage's width, ``stages`` stages (4 by default), global
average pooling and a linear classifier. A stage is 1 to ``max(depths)`` conv layers, all of stride 1 and
all at the stage's width (the first one maps the previous width to it), and one *reduction*, placed before
or after those layers. Decoupling: conv layers never change the resolution, reductions never change the
channels. Layers are plain (conv kxk, BN, ReLU) or depthwise-separable (depthwise kxk, BN, ReLU; pointwise
1x1, BN, ReLU); reductions are none, 3x3 max or average pooling, or a learned pooling (depthwise 3x3 conv
of stride 2, BN), all of stride 2 and padding 1, so a size ``n`` becomes ``ceil(n / 2)``. There are no
residuals, and weights keep PyTorch's default initialisation (what FG-NAS's proxies assume).

Progressive reading: the representation's spatial dimension is reduced step by step (at most one halving
per stage, only by the pooling segment) while its channel dimension never shrinks: stage ``s`` has the width
of stage ``s - 1`` times a growth of 1, 1.5 or 2, rounded to a multiple of 8. So every reduction of the
spatial dimension is met by equal or more channels ("retain feature representations"), and the space holds
no network that narrows as it deepens ("reduce the solution space scale"). A reduction is dropped (left out
of the network) when the map's height or width is below 4, so no map shrinks below 2x2: 32x32 inputs end at
2x2 after four reductions, 8x8 digits at 2x2 after two.

Genome (28 genes with the defaults), in segment order:

- ``conv``: the base width (index into ``base_widths``; the stem's and first stage's width), one growth gene
  per later stage (index into `GROWTHS`), then one op gene (index into `OPS`) per layer slot, layer ``j`` of
  stage ``s`` at ``stages + s * max(depths) + j``;
- ``pool``: two genes per stage, the reduction (index into `POOLS`) and its position (into `POSITIONS`);
- ``depth``: one gene per stage, index into ``depths``.

Inactive genes, set to 0 by ``canonical``: the ops of layers beyond their stage's depth, and the position of
a ``none`` reduction. String: ``c<stages>-p<stages>-d<depths>``, stages separated by ``,``; a conv stage is
``<width>:<op>.<op>...`` (absolute widths, active layers only), a pool stage ``none`` or ``<op>@<position>``:
``c16:sep3x3.conv3x3,24:conv1x1,40:sep5x5,80:conv3x3.conv1x1-pmax@pre,none,avg@post,dwconv@pre-d2,1,1,2``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from nasfleet.spaces.base import (
    ArchitectureError,
    Cost,
    Genome,
    InputShape,
    SearchSpace,
    Segment,
    check_input_shape,
)
from nasfleet.spaces.text import is_int, option_index, prefixed_parts, split_exactly

#: Conv layer ops: name -> (separable, kernel).
OPS: dict[str, tuple[bool, int]] = {
    "conv1x1": (False, 1),
    "conv3x3": (False, 3),
    "conv5x5": (False, 5),
    "sep3x3": (True, 3),
    "sep5x5": (True, 5),
}
OP_NAMES = tuple(OPS)
POOLS = ("none", "max", "avg", "dwconv")
POSITIONS = ("pre", "post")
#: Width growth from one stage to the next, as written in errors, and in halves (so widths stay integers).
GROWTHS = ("1", "1.5", "2")
GROWTH_HALVES = (2, 3, 4)
WIDTH_STEP = 8
MIN_BASE_WIDTH = 16  # from 16 up, the three growths of a multiple of 8 give three distinct widths
MAX_STAGES = 6
REDUCTION_MIN_SIZE = 4


class LayerSpec(NamedTuple):
    """A searchable conv layer: op, channels and its spatial positions (stride 1: in = out)."""

    op: str
    c_in: int
    c_out: int
    positions: int


class ReductionSpec(NamedTuple):
    """A reduction (``max``, ``avg`` or ``dwconv``) of ``channels`` maps, with its output positions."""

    op: str
    channels: int
    out_positions: int


class NetworkPlan(NamedTuple):
    """Everything that fixes a network's shape: stem width and positions, stage contents, final width."""

    stem_channels: int
    stem_positions: int
    stages: tuple[tuple[LayerSpec | ReductionSpec, ...], ...]
    final_channels: int


def grow(width: int, growth: int) -> int:
    """``width`` (a multiple of 8) grown by ``GROWTHS[growth]``, rounded to a multiple of 8."""
    return WIDTH_STEP * ((width * GROWTH_HALVES[growth] // 2 + WIDTH_STEP // 2) // WIDTH_STEP)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class ConvLayer(nn.Sequential):
    """One searchable layer: a plain kxk conv, or a depthwise kxk and a pointwise 1x1 conv (separable)."""

    def __init__(self, spec: LayerSpec) -> None:
        separable, kernel = OPS[spec.op]
        if separable:
            layers = _conv_bn_relu(spec.c_in, spec.c_in, kernel, groups=spec.c_in)
            layers += _conv_bn_relu(spec.c_in, spec.c_out, 1)
        else:
            layers = _conv_bn_relu(spec.c_in, spec.c_out, kernel)
        super().__init__(*layers)


def _reduction(spec: ReductionSpec) -> nn.Module:
    if spec.op == "max":
        return nn.MaxPool2d(3, stride=2, padding=1)
    if spec.op == "avg":
        return nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
    c = spec.channels  # dwconv: a learned pooling, per channel like max and avg
    return nn.Sequential(nn.Conv2d(c, c, 3, stride=2, padding=1, groups=c, bias=False), nn.BatchNorm2d(c))


class COERNetwork(nn.Module):
    """Stem, stages of conv layers and reductions, global average pooling and a linear classifier."""

    def __init__(self, plan: NetworkPlan, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, plan.stem_channels, 3))
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvLayer(s) if isinstance(s, LayerSpec) else _reduction(s) for s in stage))
            for stage in plan.stages
        )
        self.classifier = nn.Linear(plan.final_channels, num_classes)

    @property
    def main_blocks(self) -> list[nn.Module]:
        """The searchable conv layers, in forward order; stem, reductions and classifier are not blocks."""
        return [layer for layer in self.stages.modules() if isinstance(layer, ConvLayer)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        logits: torch.Tensor = self.classifier(x.mean(dim=(2, 3)))
        return logits


@functools.cache
def _config_choices(stages: int, base_widths: tuple[int, ...], depths: tuple[int, ...]) -> tuple[int, ...]:
    """Validate a configuration, stored unchecked by the constructor, and return its ``choices``."""
    if not (is_int(stages, 1) and stages <= MAX_STAGES):
        raise ValueError(f"coer: stages must be an integer in [1, {MAX_STAGES}], but got {stages!r}")
    widths_ok = all(is_int(w, MIN_BASE_WIDTH) and w % WIDTH_STEP == 0 for w in base_widths)
    if not (widths_ok and base_widths and len(set(base_widths)) == len(base_widths)):
        raise ValueError(
            f"coer: base_widths must be distinct multiples of {WIDTH_STEP} that are >= {MIN_BASE_WIDTH}, "
            f"but got {base_widths}"
        )
    if not (all(is_int(d, 1) for d in depths) and depths and len(set(depths)) == len(depths)):
        raise ValueError(f"coer: depths must be distinct integers >= 1, but got {depths}")
    conv = (len(base_widths),) + (len(GROWTHS),) * (stages - 1) + (len(OPS),) * (stages * max(depths))
    return conv + (len(POOLS), len(POSITIONS)) * stages + (len(depths),) * stages


class COERSpace(SearchSpace):
    """COER-NAS-style macro space (reconstructed): conv, pool and depth segments; widths never shrink."""

    name = "coer"

    def __init__(
        self, stages: int = 4, base_widths: Sequence[int] = (16, 24, 32), depths: Sequence[int] = (1, 2, 3)
    ) -> None:
        self.stages = stages
        self.base_widths = tuple(base_widths)
        self.depths = tuple(depths)

    @property
    def choices(self) -> tuple[int, ...]:
        return _config_choices(self.stages, self.base_widths, self.depths)

    def _offsets(self) -> tuple[int, int, int]:
        """Layer slots per stage, and the first gene of the pool and of the depth segment."""
        choices, slots = self.choices, max(self.depths)
        pool_start = self.stages * (1 + slots)
        return slots, pool_start, len(choices) - self.stages

    @property
    def segments(self) -> tuple[Segment, ...]:
        """``conv`` (widths and layer ops), ``pool`` (reduction and position per stage), ``depth``."""
        _, pool_start, depth_start = self._offsets()
        return (
            Segment("conv", 0, pool_start),
            Segment("pool", pool_start, depth_start),
            Segment("depth", depth_start, depth_start + self.stages),
        )

    def canonical(self, arch: Genome) -> Genome:
        """Set the ops of layers beyond each stage's depth, and the position of a ``none`` reduction, to 0."""
        genome = list(arch)
        slots, pool_start, depth_start = self._offsets()
        for stage in range(self.stages):
            first_op = self.stages + stage * slots
            for slot in range(self.depths[genome[depth_start + stage]], slots):
                genome[first_op + slot] = 0
            if POOLS[genome[pool_start + 2 * stage]] == "none":
                genome[pool_start + 2 * stage + 1] = 0
        return tuple(genome)

    def cheapest(self, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> Genome:
        """The arch of least (params, FLOPs), built directly: smallest base width, growth 1, smallest depth,
        ``conv1x1`` layers and a ``max@pre`` reduction in every stage.

        Exact for every input: each parameter term grows with the widths and every layer adds parameters,
        so the fewest parameters need the smallest widths and depths, a reduction without parameters (none,
        max or avg) and, per layer, ``conv1x1`` (``c_in*c_out + 2*c_out``, below every other op at any
        widths). Among those, a max (or equal avg) reduction placed first leaves every layer the fewest
        positions, hence the fewest FLOPs (a dropped reduction ties with none).
        """
        check_input_shape(input_shape, num_classes)
        slots, pool_start, depth_start = self._offsets()
        genome = [0] * len(self.choices)  # growth 0 is x1, position 0 is pre
        genome[0] = self.base_widths.index(min(self.base_widths))
        genome[self.stages : pool_start] = [OP_NAMES.index("conv1x1")] * (self.stages * slots)
        genome[pool_start:depth_start:2] = [POOLS.index("max")] * self.stages
        genome[depth_start:] = [self.depths.index(min(self.depths))] * self.stages
        return self.canonical(tuple(genome))

    def widths(self, arch: Genome) -> tuple[int, ...]:
        """The width of every stage of ``arch`` (the stem has the first's)."""
        widths = [self.base_widths[arch[0]]]
        for growth in arch[1 : self.stages]:
            widths.append(grow(widths[-1], growth))
        return tuple(widths)

    def _stages(self, genome: Genome) -> list[tuple[int, list[str], str, str]]:
        """Per stage: width, the ops of its active layers, its reduction and that reduction's position."""
        slots, pool_start, depth_start = self._offsets()
        stages = []
        for stage, width in enumerate(self.widths(genome)):
            first = self.stages + stage * slots
            depth = self.depths[genome[depth_start + stage]]
            ops = [OP_NAMES[gene] for gene in genome[first : first + depth]]
            pool, position = genome[pool_start + 2 * stage : pool_start + 2 * stage + 2]
            stages.append((width, ops, POOLS[pool], POSITIONS[position]))
        return stages

    def encode(self, arch: Genome) -> str:
        stages = self._stages(self.validate(arch))
        conv = ",".join(f"{width}:{'.'.join(ops)}" for width, ops, _, _ in stages)
        pool = ",".join(p if p == "none" else f"{p}@{where}" for _, _, p, where in stages)
        depth = ",".join(str(len(ops)) for _, ops, _, _ in stages)
        return f"c{conv}-p{pool}-d{depth}"

    def decode(self, text: str) -> Genome:
        parts = prefixed_parts(self.name, text, "cpd")
        depth_texts = split_exactly(self.name, "depths", parts[2], ",", self.stages)
        depth_genes = [
            option_index(self.name, f"depth of stage {s}", t, self.depths) for s, t in enumerate(depth_texts)
        ]
        conv_genes = self._decode_conv(parts[0], depth_genes)
        pool_genes: list[int] = []
        for stage, item in enumerate(split_exactly(self.name, "pool stages", parts[1], ",", self.stages)):
            pool, at, position = item.partition("@")
            pool_genes.append(option_index(self.name, f"reduction of stage {stage}", pool, POOLS))
            if (pool == "none") == bool(at):
                rule = "'none' takes no position" if at else f"'{pool}' needs a position, as '{pool}@pre'"
                raise ArchitectureError(f"coer: reduction of stage {stage}: {rule}, but got {item!r}")
            where = f"position of stage {stage}"
            pool_genes.append(option_index(self.name, where, position, POSITIONS) if at else 0)
        return (*conv_genes, *pool_genes, *depth_genes)

    def _decode_conv(self, text: str, depth_genes: list[int]) -> list[int]:
        """The conv segment's genes: base width, growths, then the ops (inactive layers set to 0)."""
        slots = max(self.depths)
        widths: list[int] = []  # genes: the base width's, then each growth's
        ops = [0] * (self.stages * slots)
        for stage, item in enumerate(split_exactly(self.name, "conv stages", text, ",", self.stages)):
            width_text, _, ops_text = item.partition(":")
            if stage == 0:
                widths.append(option_index(self.name, "width of stage 0", width_text, self.base_widths))
                current = self.base_widths[widths[0]]
            else:
                options = [grow(current, g) for g in range(len(GROWTHS))]
                what = f"width of stage {stage} (stage {stage - 1}'s {current} grown by {', '.join(GROWTHS)})"
                widths.append(option_index(self.name, what, width_text, options))
                current = options[widths[-1]]
            depth = self.depths[depth_genes[stage]]
            stage_ops = split_exactly(self.name, f"ops of stage {stage}", ops_text, ".", depth)
            for slot, op in enumerate(stage_ops):
                where = f"op of stage {stage} layer {slot}"
                ops[stage * slots + slot] = option_index(self.name, where, op, OP_NAMES)
        return widths + ops

    def plan(self, arch: Genome, input_shape: InputShape) -> NetworkPlan:
        """Channels and spatial positions of every layer and reduction of ``arch`` for ``input_shape``."""
        stages = self._stages(self.validate(arch))
        _, height, width = input_shape
        channels = stem = stages[0][0]
        planned: list[tuple[LayerSpec | ReductionSpec, ...]] = []
        for c_out, ops, pool, position in stages:
            items: list[LayerSpec | ReductionSpec] = []
            if pool != "none" and position == "pre":
                height, width = _reduce(items, pool, channels, height, width)
            for op in ops:
                items.append(LayerSpec(op, channels, c_out, height * width))
                channels = c_out
            if pool != "none" and position == "post":
                height, width = _reduce(items, pool, channels, height, width)
            planned.append(tuple(items))
        return NetworkPlan(stem, input_shape[1] * input_shape[2], tuple(planned), channels)

    def build(
        self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)
    ) -> COERNetwork:
        shape = check_input_shape(input_shape, num_classes)
        return COERNetwork(self.plan(arch, shape), shape[0], num_classes)

    def cost(self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> Cost:
        shape = check_input_shape(input_shape, num_classes)
        plan = self.plan(arch, shape)
        stem, final = plan.stem_channels, plan.final_channels
        params = 9 * shape[0] * stem + 2 * stem + final * num_classes + num_classes
        flops = 9 * shape[0] * stem * plan.stem_positions + final * num_classes + num_classes
        for stage in plan.stages:
            for item in stage:
                item_params, item_flops = _item_cost(item)
                params += item_params
                flops += item_flops
        return Cost(params=params, flops=flops)


def _reduce(
    items: list[LayerSpec | ReductionSpec], pool: str, channels: int, h: int, w: int
) -> tuple[int, int]:
    """Append the reduction ``pool`` unless the map is too small to halve; return the new size."""
    if min(h, w) < REDUCTION_MIN_SIZE:
        return h, w  # dropped: the map would shrink below 2x2
    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    items.append(ReductionSpec(pool, channels, h * w))
    return h, w


def _item_cost(item: LayerSpec | ReductionSpec) -> tuple[int, int]:
    """Parameters and MACs of a layer or reduction (`nasfleet.spaces.counting`: BN 2 params a channel)."""
    if isinstance(item, ReductionSpec):
        if item.op != "dwconv":
            return 0, 0
        return 9 * item.channels + 2 * item.channels, 9 * item.channels * item.out_positions
    separable, kernel = OPS[item.op]
    c_in, c_out, area = item.c_in, item.c_out, kernel * kernel
    if separable:
        per_position = area * c_in + c_in * c_out
        return per_position + 2 * c_in + 2 * c_out, per_position * item.positions
    return area * c_in * c_out + 2 * c_out, area * c_in * c_out * item.positions
