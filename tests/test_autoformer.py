"""The AutoFormer vision-transformer space: contract, exact costs, published subnets, FG-NAS and search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nasfleet.spaces
from nasfleet.data.datasets import load_dataset
from nasfleet.proxies.engine import score_archs
from nasfleet.proxies.fgnas import feature_matrix
from nasfleet.proxies.probe import Probe, ProbeBatch
from nasfleet.search import SearchConfig, make_strategy, run_search
from nasfleet.spaces.autoformer import AutoFormerSpace
from nasfleet.spaces.base import ArchitectureError, Cost, InputShape
from nasfleet.spaces.counting import count_cost
from nasfleet.strategies import SearchLimits
from nasfleet.strategies.base import Feasibility
from nasfleet.testing import check_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # several threads only contend on this work

PRESETS = ("tiny", "small", "base")
IMAGENET: InputShape = (3, 224, 224)

# AutoFormer's searched subnets (microsoft/Cream, AutoFormer/experiments/subnet/AutoFormer-{T,S,B}.yaml,
# RETRAIN), and the parameters and FLOPs its paper publishes for them at 224x224, patch 16, 1000 classes.
PUBLISHED = {
    "T": (
        AutoFormerSpace("tiny", 16, mlp_ratios=(3.0, 3.5, 4.0)),  # its ratios include 3.0, outside Tiny's
        "e192-d13-r3.5,3.5,3.0,3.5,3.0,3.0,4.0,4.0,3.5,4.0,3.5,4.0,3.5-h3,3,3,3,3,3,3,3,3,3,4,3,3",
        5.7e6,
        1.3e9,
    ),
    "S": (
        AutoFormerSpace("small", 16),
        "e384-d13-r3.0,3.5,3.0,3.5,4.0,4.0,4.0,4.0,4.0,4.0,4.0,3.5,4.0-h6,6,5,7,5,5,5,6,6,7,7,6,7",
        22.9e6,
        5.1e9,
    ),
    "B": (
        AutoFormerSpace("base", 16),
        "e576-d14-r3.5,3.5,4.0,3.5,4.0,3.5,3.5,3.0,4.0,4.0,3.0,4.0,3.0,3.5-h9,9,9,9,9,10,9,9,10,9,10,9,9,10",
        54e6,
        11e9,
    ),
}


def _counted_on_meta(space: AutoFormerSpace, arch: tuple[int, ...], classes: int, shape: InputShape) -> Cost:
    """The built network's counted cost, built and run on the meta device: real modules and shapes, no data
    (so that 224x224 Base networks count in milliseconds)."""
    with torch.device("meta"):
        return count_cost(space.build(arch, classes, shape), shape)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_passes_the_space_contract(preset: str) -> None:
    check_space(AutoFormerSpace(preset), samples=8)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(
    ("patch", "classes", "shape"), [(4, 10, (3, 32, 32)), (16, 1000, IMAGENET), (3, 7, (1, 10, 13))]
)
def test_cost_equals_the_built_network_for_random_archs(
    preset: str, patch: int, classes: int, shape: InputShape
) -> None:
    space = AutoFormerSpace(preset, patch)
    archs = {space.sample(np.random.default_rng([len(preset), patch, i])) for i in range(5)}
    archs |= {space.cheapest(classes, shape), tuple(n - 1 for n in space.choices)}  # least and most
    for arch in archs:
        assert space.cost(arch, classes, shape) == _counted_on_meta(space, arch, classes, shape), arch


def test_cost_of_a_real_network_counts_attention_and_every_token() -> None:
    """On a real (not meta) network: patches, tokens and attention products as the closed form says."""
    space = AutoFormerSpace("tiny", 8, embed_dims=(16,), depths=(1,), mlp_ratios=(2.0,), num_heads=(2,))
    arch = space.sample(np.random.default_rng(0))
    network, cost = space.build(arch, 5, (3, 32, 32)), space.cost(arch, 5, (3, 32, 32))
    tokens, width, hidden = 4 * 4 + 1, 2 * 64, 32
    linear = 16 * 3 * width + 3 * width + width * 16 + 16 + 16 * hidden + hidden + hidden * 16 + 16
    expected = 16 * (3 * 64 * 16 + 16) + tokens * linear + 2 * tokens * tokens * width + 16 * 5 + 5
    assert cost.flops == expected == count_cost(network, (3, 32, 32)).flops
    assert cost.params == sum(p.numel() for p in network.parameters())
    assert len(network.main_blocks) == 1
    assert network(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_subnets_match_autoformers_parameter_counts(name: str) -> None:
    space, text, params, flops = PUBLISHED[name]
    arch = space.decode(text)
    cost = space.cost(arch, 1000, IMAGENET)
    assert space.encode(arch) == text
    assert cost == _counted_on_meta(space, arch, 1000, IMAGENET)
    assert abs(cost.params - params) / params < 0.02, cost
    # MACs with attention's products; AutoFormer's own count differs in small terms (module docstring)
    assert abs(cost.flops - flops) / flops < 0.10, cost


def test_genome_layout_strings_and_inactive_layers() -> None:
    space = AutoFormerSpace("small")
    assert space.choices == (3, 3) + (3, 3) * 14
    assert [s.name for s in space.segments] == ["global"] + [f"layer{i}" for i in range(14)]
    arch = space.decode("e320-d12-r" + ",".join(["3.0"] * 12) + "-h" + ",".join(["7"] * 12))
    assert arch == (0, 0) + (0, 2) * 12 + (0, 0) * 2
    assert space.validate((0, 0) + (0, 2) * 12 + (2, 1) * 2) == arch  # blocks 13 and 14 are inactive
    for bad, match in [
        ("e320-d12-r3.0-h7", "12 values"),
        ("e999-d12-r3.0-h7", "embed must be one of 320, 384, 448"),
        ("e320-d12-r" + ",".join(["3"] * 12) + "-h" + ",".join(["7"] * 12), "MLP ratio of block 0"),
        ("x320-d12-r3.0-h7", "must start with 'e'"),
    ]:
        with pytest.raises(ArchitectureError, match=match):
            space.decode(bad)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"preset": "huge"}, "preset must be one of"),
        ({"patch_size": 0}, "patch_size must be an integer >= 1, but got 0"),
        ({"mlp_ratios": (3.0, 3.0)}, "mlp_ratios must be distinct positive finite numbers"),
        ({"num_heads": (0,)}, r"num_heads must be distinct integers >= 1, but got \(0,\)"),
        ({"embed_dims": (1,), "mlp_ratios": (0.5,)}, "hidden width"),
    ],
)
def test_bad_options_are_refused_naming_the_field(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _ = AutoFormerSpace(**options).choices  # type: ignore[arg-type]


def test_inputs_smaller_than_a_patch_are_refused() -> None:
    space = AutoFormerSpace("tiny", 16)
    with pytest.raises(ValueError, match="patch_size 16"):
        space.cost(space.sample(np.random.default_rng(0)), 10, (3, 8, 8))


def _batch(size: int = 8, labeled: bool = True) -> ProbeBatch:
    return ProbeBatch.from_dataset(load_dataset("synthetic:64"), size, seed=0, labeled=labeled)


def test_fgnas_reads_token_matrices_of_the_transformer_blocks() -> None:
    space, batch = AutoFormerSpace("tiny"), _batch()
    arch = space.sample(np.random.default_rng(3))
    torch.manual_seed(0)
    network = space.build(arch, batch.num_classes, batch.input_shape)
    with Probe(network, batch) as probe:
        probe.logits  # noqa: B018 - runs the forward pass that records the blocks
        embed = space.plan(arch).embed
        assert [tuple(o.shape) for o in probe.block_outputs] == [(8, 65, embed)] * len(network.main_blocks)
        # eq. 4's feature matrix: c = the embedding channels, every token of every sample an observation
        assert tuple(feature_matrix(probe.block_outputs[0]).shape) == (8, 65, embed)
        for layer, grad in zip(probe.layers, probe.weight_grads, strict=True):  # summed over the tokens
            per_sample = probe.per_sample_grads(layer)
            torch.testing.assert_close(per_sample.sum(0), grad.flatten(), rtol=1e-4, atol=1e-6)
    table = score_archs(space, [arch], batch, ("fg_fi", "fg_fc", "fg_gc", "fg_gi"), seed=0, progress=False)
    assert all(np.isfinite(values).all() for values in table.values.values()), table.values


def test_table_iv_limits_at_imagenet_scale() -> None:
    """Table IV's rows, labels unswapped (AutoFormer-T is the 74.7 % model): Tiny (5 M, 1.5 G) and Small
    (25 M, 5 G). At 224x224 with 1000 classes no Tiny subnet has 5 M parameters (the published AutoFormer-T
    has 5.7 M), and the error says so; AutoFormer-S's size is within Small's limits."""
    tiny = Feasibility(AutoFormerSpace("tiny", 16), SearchLimits(5_000_000, 1_500_000_000), 1000, IMAGENET)
    message = str(tiny.nothing_found(1000))
    assert "the limits exclude the whole space, whose cheapest arch is e192-d12-" in message
    assert "5,273,896 params" in message
    small, text = PUBLISHED["S"][0], PUBLISHED["S"][1]
    assert Feasibility(small, SearchLimits(25_000_000, 5_000_000_000), 1000, IMAGENET)(small.decode(text))


@pytest.mark.parametrize(
    ("preset", "max_params", "max_flops", "labeled"),
    [("small", 25e6, 5e9, False), ("tiny", 6e6, 1.5e9, True)],
)
def test_constrained_search_returns_subnets_within_table_iv_limits(
    monkeypatch: pytest.MonkeyPatch, preset: str, max_params: float, max_flops: float, labeled: bool
) -> None:
    """An evolution search on 32x32 inputs under Table IV's limits: every architecture it scores fits.

    Small takes Table IV's (25 M, 5 G). Tiny takes 6 M, not the table's 5 M: 5 M is below the published
    AutoFormer-T (5.7 M) and, at 224x224, below every Tiny subnet; at 32x32 (patch 4) it leaves a corner
    of the space too small for a random start (none in 3000 samples); 6 M is the round limit that holds
    AutoFormer-T. Small searches label-free (FG-NAS with alpha = 0), as S_GI's per-sample gradients of its
    20 M parameters are what would make the test slow.
    """
    limits = SearchLimits(int(max_params), int(max_flops))
    monkeypatch.setitem(nasfleet.spaces.SPACES, "autoformer", AutoFormerSpace)  # the lead registers it
    space, batch = AutoFormerSpace(preset, 16), _batch(4, labeled)  # 2x2 patches: fast to score
    config = SearchConfig(
        "autoformer", "evolution", 4, ask_size=2, constraints=limits, labeled=labeled,
        strategy_config={"population_size": 2, "sample_size": 1},
    )  # fmt: skip
    result = run_search(space, make_strategy(space, config, batch), batch, config, progress=False)
    assert result.evaluations == 4 and len(result.archive) >= 2
    for entry in result.archive:
        cost = space.cost(space.decode(entry.arch), batch.num_classes, batch.input_shape)
        assert cost.params <= max_params and cost.flops <= max_flops, (entry.arch, cost)
    assert result.best_params <= max_params and result.best_flops <= max_flops
