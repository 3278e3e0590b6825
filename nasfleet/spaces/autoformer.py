"""An AutoFormer-style vision-transformer search space (Chen et al., ICCV 2021; FG-NAS Table IV).

The network is `nasfleet.spaces.vit.VisionTransformer` (patch embedding, class token, position embedding,
pre-norm blocks, LayerNorm, classifier); what is searched is AutoFormer's: one embedding dimension and one
depth for the whole network, and each block's MLP ratio and number of attention heads (q/k/v width
``heads * 64``). The presets are AutoFormer's three supernets (``experiments/supernet/supernet-*.yaml``):

========  ===============  ========  =============  ========
preset    embed            depth     MLP ratio      heads
========  ===============  ========  =============  ========
tiny      192, 216, 240    12-14     3.5, 4         3, 4
small     320, 384, 448    12-14     3, 3.5, 4      5, 6, 7
base      528, 576, 624    14-16     3, 3.5, 4      9, 10
edge      64, 96, 128      3-5       2, 3, 4        1, 2
========  ===============  ========  =============  ========

``edge`` is nasfleet's, not AutoFormer's: the smallest Tiny subnet (4.9 M parameters at 3x32x32) exceeds
every device tier's parameter limit (200k, 400k, 800k), so the space registered as ``autoformer-edge``
(`AutoFormerEdgeSpace`) spans the tiers with the same structure; ``autoformer`` is the Tiny supernet.

Each option list can be overridden (e.g. ``mlp_ratios=(3.0, 3.5, 4.0)`` holds the published AutoFormer-T
subnet, whose MLP ratios include 3.0, outside its own supernet's choices).

Image size: the input's height and width come from ``input_shape`` (as in every space), giving
``(H // patch_size) * (W // patch_size)`` patches; the default ``patch_size`` 4 turns a 32x32 CIFAR image
into 8x8 = 64 patches (65 tokens), the usual ViT-on-CIFAR choice and the same order of tokens as
AutoFormer's 196 at 224x224 with patch 16, while 8x8 digits still give 2x2 patches. Use
``patch_size=16`` with 224x224 inputs for AutoFormer's own setting.

FG-NAS: the transformer blocks are the ``main_blocks``; each outputs a token matrix (batch, tokens,
embed), read as eq. 4's feature matrix with c = the ``embed`` channels and n = every token of every sample
(class token included), as a convolutional block's channels are observed at every position
(`nasfleet.proxies.fgnas.feature_matrix`).

Genome (2 + 2 x max depth genes), in segment order: ``global`` = (embed, depth), then ``layer<i>`` =
(MLP ratio, heads) of block i for every block the deepest option has; the genes of blocks beyond the
depth are inactive and the canonical genome sets them to 0.

String: ``e<embed>-d<depth>-r<ratios>-h<heads>``, ratios and heads of the active blocks separated by
``,``, e.g. ``e192-d12-r3.5,4.0,…-h3,4,…``; every value is written as its option prints (ratios as floats).

Costs are exact (`nasfleet.spaces.vit.plan_cost`): FLOPs are MACs, attention's ``Q K^T`` and ``A V``
included. AutoFormer's searched subnets (``experiments/subnet/AutoFormer-*.yaml``) at 224x224, patch 16,
1000 classes, against its paper:

====  ======================  ==========  ================  ==========
net   parameters (here)       published   MACs (here)       published
====  ======================  ==========  ================  ==========
T     5,768,104 (+1.2 %)      5.7 M       1.288 G (-1 %)    1.3 G
S     22,791,592 (-0.5 %)     22.9 M      4.783 G (-6 %)    5.1 G
B     53,584,168 (-0.8 %)     54 M        11.059 G (+0.5 %) 11 G
====  ======================  ==========  ================  ==========

Without the attention products the MACs would be 1.089, 4.395 and 10.413 G, well below. AutoFormer's own
``get_complexity`` counts the same MACs with small differences: no linear biases, but LayerNorm (one per
element), the classifier on every token, the position-embedding addition, 198 instead of 197 tokens inside
the blocks (a +1 applied twice) and, with its ``--relative_position``, relative-position terms; without
those terms it gives 1.33, 4.88 and 11.22 G on these configurations. The relative-position tables (7,680
parameters per block) are not built here: with them T would have 5.87 M (+2.9 % against the paper's 5.7 M,
+1.2 % against the 5.8 M of AutoFormer's README).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from nasfleet.spaces.base import (
    Cost,
    Genome,
    InputShape,
    SearchSpace,
    Segment,
    check_input_shape,
)
from nasfleet.spaces.text import is_int, option_index, prefixed_parts, split_exactly
from nasfleet.spaces.vit import HEAD_DIM, LayerSpec, TransformerPlan, VisionTransformer, plan_cost


class Options(NamedTuple):
    """The choices of each decision of an AutoFormer space."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    num_heads: tuple[int, ...]


PRESETS: dict[str, Options] = {
    "tiny": Options((192, 216, 240), (12, 13, 14), (3.5, 4.0), (3, 4)),
    "small": Options((320, 384, 448), (12, 13, 14), (3.0, 3.5, 4.0), (5, 6, 7)),
    "base": Options((528, 576, 624), (14, 15, 16), (3.0, 3.5, 4.0), (9, 10)),
    # nasfleet's own, not AutoFormer's: Tiny's smallest subnet (4.9 M parameters) exceeds every device
    # tier, so this one spans them (108k-1.0M parameters, 8.3M-70M MACs at 3x32x32; the cheapest fits micro)
    "edge": Options((64, 96, 128), (3, 4, 5), (2.0, 3.0, 4.0), (1, 2)),
}
GLOBAL_GENES = 2  # embed, depth
LAYER_GENES = 2  # MLP ratio, heads
BLOCKS_NOTE = " (one per block of the depth)"


def _is_ratio(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf


def _distinct(name: str, values: tuple[object, ...], rule: str, ok: bool) -> None:
    if not (ok and values and len(set(values)) == len(values)):
        raise ValueError(f"autoformer: {name} must be distinct {rule}, but got {values}")


@functools.cache
def _resolve(
    preset: str,
    patch_size: int,
    head_dim: int,
    embed_dims: tuple[int, ...] | None,
    depths: tuple[int, ...] | None,
    mlp_ratios: tuple[float, ...] | None,
    num_heads: tuple[int, ...] | None,
) -> Options:
    """Validate a space's configuration, stored unchecked by its constructor, and return its options.

    Cached because the options are read on every ``validate`` and costs are computed thousands of times.
    """
    if preset not in PRESETS:
        raise ValueError(f"autoformer: preset must be one of {sorted(PRESETS)}, but got {preset!r}")
    for name, value in (("patch_size", patch_size), ("head_dim", head_dim)):
        if not is_int(value):
            raise ValueError(f"autoformer: {name} must be an integer >= 1, but got {value!r}")
    default = PRESETS[preset]
    embeds = default.embed_dims if embed_dims is None else embed_dims
    depths = default.depths if depths is None else depths
    ratios = default.mlp_ratios if mlp_ratios is None else mlp_ratios
    heads = default.num_heads if num_heads is None else num_heads
    _distinct("embed_dims", embeds, "integers >= 1", all(is_int(e) for e in embeds))
    _distinct("depths", depths, "integers >= 1", all(is_int(d) for d in depths))
    _distinct("mlp_ratios", ratios, "positive finite numbers", all(_is_ratio(r) for r in ratios))
    _distinct("num_heads", heads, "integers >= 1", all(is_int(h) for h in heads))
    floats = tuple(float(r) for r in ratios)
    if int(min(embeds) * min(floats)) < 1:
        raise ValueError(
            f"autoformer: every MLP must have a hidden width int(embed * ratio) >= 1, but the smallest "
            f"embed {min(embeds)} with the smallest MLP ratio {min(floats)} gives 0"
        )
    return Options(embeds, depths, floats, heads)


class AutoFormerSpace(SearchSpace):
    """AutoFormer's vision-transformer space: embedding and depth, per-block MLP ratio and head count."""

    name = "autoformer"

    def __init__(
        self,
        preset: str = "tiny",
        patch_size: int = 4,
        *,
        head_dim: int = HEAD_DIM,
        embed_dims: Sequence[int] | None = None,
        depths: Sequence[int] | None = None,
        mlp_ratios: Sequence[float] | None = None,
        num_heads: Sequence[int] | None = None,
    ) -> None:
        self.preset = preset
        self.patch_size = patch_size
        self.head_dim = head_dim
        self.embed_dims = None if embed_dims is None else tuple(embed_dims)
        self.depths = None if depths is None else tuple(depths)
        self.mlp_ratios = None if mlp_ratios is None else tuple(mlp_ratios)
        self.num_heads = None if num_heads is None else tuple(num_heads)

    @property
    def options(self) -> Options:
        """The preset's choices, with any overridden list in its place (validated)."""
        return _resolve(
            self.preset, self.patch_size, self.head_dim,
            self.embed_dims, self.depths, self.mlp_ratios, self.num_heads,
        )  # fmt: skip

    @property
    def slots(self) -> int:
        """Number of block positions in the genome: the largest depth."""
        return max(self.options.depths)

    @property
    def choices(self) -> tuple[int, ...]:
        options = self.options
        layer = (len(options.mlp_ratios), len(options.num_heads))
        return (len(options.embed_dims), len(options.depths)) + layer * max(options.depths)

    @property
    def segments(self) -> tuple[Segment, ...]:
        """``global`` (embed, depth), then ``layer<i>`` (MLP ratio, heads) for each block position."""
        layers = tuple(
            Segment(f"layer{i}", GLOBAL_GENES + LAYER_GENES * i, GLOBAL_GENES + LAYER_GENES * (i + 1))
            for i in range(self.slots)
        )
        return (Segment("global", 0, GLOBAL_GENES), *layers)

    def canonical(self, arch: Genome) -> Genome:
        """Set the MLP-ratio and head genes of the blocks beyond the depth to 0."""
        depth = self.options.depths[arch[1]]
        start = GLOBAL_GENES + LAYER_GENES * depth
        return (*arch[:start], *(0,) * (len(arch) - start))

    def _active(self, genome: Genome) -> tuple[int, int, list[float], list[int]]:
        """Embed, depth, and the MLP ratios and head counts of the active blocks."""
        options = self.options
        depth = options.depths[genome[1]]
        layers = [
            genome[GLOBAL_GENES + LAYER_GENES * i : GLOBAL_GENES + LAYER_GENES * (i + 1)]
            for i in range(depth)
        ]
        ratios = [options.mlp_ratios[ratio] for ratio, _ in layers]
        heads = [options.num_heads[head] for _, head in layers]
        return options.embed_dims[genome[0]], depth, ratios, heads

    def encode(self, arch: Genome) -> str:
        embed, depth, ratios, heads = self._active(self.validate(arch))
        return f"e{embed}-d{depth}-r{','.join(map(str, ratios))}-h{','.join(map(str, heads))}"

    def decode(self, text: str) -> Genome:
        parts = prefixed_parts(self.name, text, "edrh")
        options = self.options
        embed = option_index(self.name, "embed", parts[0], options.embed_dims)
        depth = option_index(self.name, "depth", parts[1], options.depths)
        count = options.depths[depth]
        ratios = split_exactly(self.name, "MLP ratios", parts[2], ",", count, BLOCKS_NOTE)
        heads = split_exactly(self.name, "heads", parts[3], ",", count, BLOCKS_NOTE)
        genome = [embed, depth] + [0] * (LAYER_GENES * self.slots)
        for i, (ratio, head) in enumerate(zip(ratios, heads, strict=True)):
            genome[GLOBAL_GENES + LAYER_GENES * i] = option_index(
                self.name, f"MLP ratio of block {i}", ratio, options.mlp_ratios
            )
            genome[GLOBAL_GENES + LAYER_GENES * i + 1] = option_index(
                self.name, f"heads of block {i}", head, options.num_heads
            )
        return tuple(genome)

    def plan(
        self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)
    ) -> TransformerPlan:
        """The shape of every layer of ``arch``'s network for ``num_classes`` and ``input_shape``."""
        channels, height, width = check_input_shape(input_shape, num_classes)
        patch = self.patch_size
        embed, _, ratios, heads = self._active(self.validate(arch))
        if min(height, width) < patch:
            raise ValueError(
                f"autoformer: input_shape's height and width must be >= patch_size {patch}, "
                f"but got {(channels, height, width)}"
            )
        layers = tuple(LayerSpec(int(embed * r), h) for r, h in zip(ratios, heads, strict=True))
        patches = (height // patch) * (width // patch)
        return TransformerPlan(channels, patch, patches, embed, layers, num_classes, self.head_dim)

    def build(
        self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)
    ) -> VisionTransformer:
        return VisionTransformer(self.plan(arch, num_classes, input_shape))

    def cost(self, arch: Genome, num_classes: int = 10, input_shape: InputShape = (3, 32, 32)) -> Cost:
        return plan_cost(self.plan(arch, num_classes, input_shape))


class AutoFormerEdgeSpace(AutoFormerSpace):
    """The ``edge`` preset under its own name, so that a job, a device and ``--space`` can name it."""

    name = "autoformer-edge"

    def __init__(self, patch_size: int = 4, **overrides: Any) -> None:
        super().__init__("edge", patch_size, **overrides)
