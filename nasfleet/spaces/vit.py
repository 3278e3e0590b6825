"""A plain pre-norm vision transformer, as AutoFormer builds its subnets, and its exact costs.

Network (ViT/DeiT, as in AutoFormer's ``model/supernet_transformer.py`` with ``--change_qkv``): a patch
embedding (a convolution of kernel = stride = patch size, with bias), a learned class token prepended to the
patch tokens, a learned absolute position embedding added to every token, pre-norm transformer blocks, a
final LayerNorm and a linear classifier on the class token. A block is

    x = x + proj(attention(qkv(LayerNorm(x))));    x = x + fc2(GELU(fc1(LayerNorm(x))))

with its own head count h: q, k and v are each ``h * head_dim`` wide (head_dim = 64, AutoFormer's
``sample_q_embed_dim = heads * 64``), ``qkv`` and ``proj`` have biases (AutoFormer trains with
``qkv_bias=True``), and the MLP is ``embed -> int(embed * ratio) -> embed`` (AutoFormer's ``int``).
Left out: dropout and drop-path (so a forward pass is deterministic) and AutoFormer's optional relative
position embeddings (its ``--relative_position``: 4 tables of 30 x 64 per block). AutoFormer's published
runs (``--gp``) classify the mean of the patch tokens; here, as in ViT, the classifier reads the class
token (the same parameters and MACs: pooling counts 0).

Patches: an input of height H and width W gives ``(H // p) * (W // p)`` patches (a remainder of the
image is dropped, as the strided convolution and AutoFormer's ``num_patches`` both do), so ``n = patches
+ 1`` tokens. Weights are initialised as AutoFormer does: normal (std 0.02) for linear weights, the
class token and the position embedding; zero biases; LayerNorm 1 and 0; PyTorch's default for the
patch convolution.

Costs (`plan_cost`) follow `nasfleet.spaces.counting`: parameters are every parameter; FLOPs are the
multiply-accumulates of the convolution, of every linear layer once per token it is applied to, and of
attention's two products ``Q K^T`` and ``A V`` (`MatMul`, ``n * n * h * head_dim`` MACs each); LayerNorm,
softmax, GELU and the additions count 0, as batch norm and activations do in the other spaces.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from nasfleet.spaces.base import Cost
from nasfleet.spaces.counting import MatMul

HEAD_DIM = 64
INIT_STD = 0.02


class LayerSpec(NamedTuple):
    """One transformer block: its MLP's hidden width and its number of attention heads."""

    hidden: int
    heads: int


class TransformerPlan(NamedTuple):
    """Everything that fixes a vision transformer's shape."""

    in_channels: int
    patch_size: int
    patches: int
    embed: int
    layers: tuple[LayerSpec, ...]
    num_classes: int
    head_dim: int = HEAD_DIM

    @property
    def tokens(self) -> int:
        """The patch tokens and the class token."""
        return self.patches + 1


class PatchEmbedding(nn.Module):
    """Non-overlapping patches to embedding vectors: (B, C, H, W) to (B, patches, embed)."""

    def __init__(self, in_channels: int, embed: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches: torch.Tensor = self.proj(x).flatten(2).transpose(1, 2)
        return patches


class Attention(nn.Module):
    """Multi-head self-attention whose q, k and v are ``heads * head_dim`` wide, whatever the embedding."""

    def __init__(self, embed: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(embed, 3 * heads * head_dim)
        self.scores = MatMul()  # Q K^T, counted by `count_cost`
        self.mix = MatMul()  # softmax(Q K^T / sqrt(d)) V
        self.proj = nn.Linear(heads * head_dim, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = (self.scores(q, k.transpose(-2, -1)) * self.head_dim**-0.5).softmax(dim=-1)
        mixed = self.mix(weights, v).transpose(1, 2).reshape(batch, tokens, self.heads * self.head_dim)
        out: torch.Tensor = self.proj(mixed)
        return out


class TransformerBlock(nn.Module):
    """A pre-norm transformer block; input and output are token matrices (batch, tokens, embed)."""

    def __init__(self, embed: int, spec: LayerSpec, head_dim: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(embed)
        self.attn = Attention(embed, spec.heads, head_dim)
        self.mlp_norm = nn.LayerNorm(embed)
        self.mlp = nn.Sequential(nn.Linear(embed, spec.hidden), nn.GELU(), nn.Linear(spec.hidden, embed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        out: torch.Tensor = x + self.mlp(self.mlp_norm(x))
        return out


class VisionTransformer(nn.Module):
    """Patch embedding, class token, position embedding, transformer blocks, LayerNorm and classifier."""

    def __init__(self, plan: TransformerPlan) -> None:
        super().__init__()
        self.patch_embed = PatchEmbedding(plan.in_channels, plan.embed, plan.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, plan.embed))
        self.pos_embed = nn.Parameter(torch.zeros(1, plan.tokens, plan.embed))
        self.blocks = nn.ModuleList(TransformerBlock(plan.embed, spec, plan.head_dim) for spec in plan.layers)
        self.norm = nn.LayerNorm(plan.embed)
        self.head = nn.Linear(plan.embed, plan.num_classes)
        _init_weights(self)

    @property
    def main_blocks(self) -> list[nn.Module]:
        """The transformer blocks, in forward order; each outputs a (batch, tokens, embed) token matrix."""
        return list(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(patches.shape[0], -1, -1), patches), dim=1)
        tokens = tokens + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        logits: torch.Tensor = self.head(self.norm(tokens[:, 0]))
        return logits


def _init_weights(model: VisionTransformer) -> None:
    """AutoFormer's initialisation (its ``_init_weights`` and the token/position ``trunc_normal_``).

    AutoFormer's ``trunc_normal_(std=.02)`` truncates at -2 and 2, a hundred standard deviations: the same
    distribution as a plain normal for any practical purpose, which is several times faster to draw.
    """
    nn.init.normal_(model.cls_token, std=INIT_STD)
    nn.init.normal_(model.pos_embed, std=INIT_STD)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=INIT_STD)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _linear(c_in: int, c_out: int) -> int:
    """Parameters of a linear layer with bias, and its MACs per token (`counting` adds the bias)."""
    return c_in * c_out + c_out


def plan_cost(plan: TransformerPlan) -> Cost:
    """Exact parameters and MACs of ``plan``'s network for one sample (see the module's docstring)."""
    embed, tokens = plan.embed, plan.tokens
    patch = _linear(plan.in_channels * plan.patch_size**2, embed)
    head = _linear(embed, plan.num_classes)
    # patch conv, class token, position embedding, final LayerNorm, classifier
    params = patch + embed + tokens * embed + 2 * embed + head
    flops = plan.patches * patch + head
    for spec in plan.layers:
        width = spec.heads * plan.head_dim
        linear = _linear(embed, 3 * width) + _linear(width, embed)
        linear += _linear(embed, spec.hidden) + _linear(spec.hidden, embed)
        params += linear + 4 * embed  # and two LayerNorms
        flops += tokens * linear + 2 * tokens * tokens * width  # and Q K^T, A V
    return Cost(params=params, flops=flops)
