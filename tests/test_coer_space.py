"""Tests of the COER-NAS-style separable space (a reconstruction): strings, costs, operators, search."""

from __future__ import annotations

import csv
import itertools
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.clients.device import DEVICE_TIERS
from nasfleet.data.datasets import load_dataset
from nasfleet.proxies.engine import score_archs
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.search import SearchConfig, make_strategy, run_search
from nasfleet.spaces import SPACES
from nasfleet.spaces.base import ArchitectureError, Genome, InputShape, SearchSpace
from nasfleet.spaces.coer import GROWTHS, POOLS, COERSpace, ConvLayer, grow
from nasfleet.spaces.counting import count_cost
from nasfleet.strategies import SearchLimits
from nasfleet.strategies.genetic_operators import GAOptions, segment_crossover, segment_mutation
from nasfleet.testing.spaces import check_space

DOC_EXAMPLE = (
    "c16:sep3x3.conv3x3,24:conv1x1,40:sep5x5,80:conv3x3.conv1x1-pmax@pre,none,avg@post,dwconv@pre-d2,1,1,2"
)
SHAPES: tuple[InputShape, ...] = ((3, 32, 32), (1, 8, 8))
SPACE = COERSpace()
FULL_DEPTH = SPACE.depths.index(max(SPACE.depths))


def _samples(space: COERSpace, n: int, seed: int = 0) -> list[Genome]:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def _set(arch: Genome, **genes: int) -> Genome:
    """``arch`` with the genes named ``g<index>`` set, canonicalised."""
    genome = list(arch)
    for name, value in genes.items():
        genome[int(name[1:])] = value
    return SPACE.canonical(tuple(genome))


def _exact(space: SearchSpace, arch: Genome, classes: int, shape: InputShape) -> None:
    built = count_cost(space.build(arch, classes, shape), shape)
    assert space.cost(arch, classes, shape) == built, (space.encode(arch), shape)


# -- the contract, the layout and the strings ------------------------------------------------------------
@pytest.mark.parametrize(
    "space", [SPACE, COERSpace(stages=2, base_widths=(32,), depths=(2, 1))], ids=["default", "small"]
)
def test_the_space_passes_the_search_space_contract(space: COERSpace) -> None:
    check_space(space)


def test_the_genome_is_split_into_conv_pool_and_depth_segments() -> None:
    assert [(s.name, s.start, s.stop) for s in SPACE.segments] == [
        ("conv", 0, 16),
        ("pool", 16, 24),
        ("depth", 24, 28),
    ]
    assert SPACE.choices == (3, 3, 3, 3) + (5,) * 12 + (4, 2) * 4 + (3,) * 4


def test_the_documented_example_round_trips() -> None:
    genome = SPACE.decode(DOC_EXAMPLE)

    assert SPACE.encode(genome) == DOC_EXAMPLE
    assert SPACE.widths(genome) == (16, 24, 40, 80)


def test_strings_round_trip_and_decode_gives_the_canonical_genome() -> None:
    for genome in _samples(SPACE, 300):
        assert SPACE.decode(SPACE.encode(genome)) == genome
    rng = np.random.default_rng(1)
    for _ in range(100):
        raw = tuple(int(rng.integers(n)) for n in SPACE.choices)
        assert SPACE.decode(SPACE.encode(raw)) == SPACE.canonical(raw)


BASE = "c16:conv1x1,16:conv1x1,16:conv1x1,16:conv1x1-pmax@pre,max@pre,max@pre,max@pre-d1,1,1,1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "3 parts 'c…-p…-d…'"),
        (BASE.replace("-d1,1,1,1", ""), "3 parts"),
        (BASE.replace("c16", "x16"), "must start with 'c'"),
        (BASE.replace("d1,1,1,1", "d1,1,1"), "depths must be 4 values separated by ','"),
        (BASE.replace("d1,1,1,1", "d1,1,1,4"), "depth of stage 3 must be one of 1, 2, 3, but got '4'"),
        (BASE.replace("c16:", "c8:"), "width of stage 0 must be one of 16, 24, 32, but got '8'"),
        (
            BASE.replace(",16:", ",20:", 1),
            "width of stage 1 (stage 0's 16 grown by 1, 1.5, 2) must be one of",
        ),
        (BASE.replace(",16:conv1x1-", ",8:conv1x1-"), "width of stage 3 (stage 2's 16 grown by"),
        (
            BASE.replace("c16:conv1x1", "c16:conv1x1.sep3x3"),
            "ops of stage 0 must be 1 values separated by '.'",
        ),
        (BASE.replace("c16:conv1x1", "c16:conv7x7"), "op of stage 0 layer 0 must be one of conv1x1"),
        (BASE.replace("c16:conv1x1", "c16"), "op of stage 0 layer 0 must be one of"),
        (BASE.replace("pmax@pre", "pmin@pre"), "reduction of stage 0 must be one of none, max, avg, dwconv"),
        (BASE.replace("pmax@pre", "pmax@mid"), "position of stage 0 must be one of pre, post, but got 'mid'"),
        (BASE.replace("pmax@pre", "pmax"), "reduction of stage 0: 'max' needs a position"),
        (BASE.replace("pmax@pre", "pnone@pre"), "reduction of stage 0: 'none' takes no position"),
        (BASE.replace(",max@pre-", "-"), "pool stages must be 4 values"),
    ],
)
def test_bad_strings_are_refused_with_the_reason(text: str, message: str) -> None:
    SPACE.decode(BASE)  # the base string itself is valid
    with pytest.raises(ArchitectureError, match=r"^coer: ") as error:
        SPACE.decode(text)

    assert message in str(error.value)


def test_canonical_zeroes_only_the_ops_beyond_depth_and_the_position_of_none() -> None:
    raw = (0, 0, 0, 0) + (4,) * 12 + (POOLS.index("none"), 1, 1, 1) * 2 + (0, 1, 2, 0)
    genome = SPACE.canonical(raw)

    assert genome[4:16] == (4, 0, 0, 4, 4, 0, 4, 4, 4, 4, 0, 0)
    assert genome[16:24] == (0, 0, 1, 1, 0, 0, 1, 1)
    assert SPACE.canonical(genome) == genome
    assert SPACE.encode(raw) == SPACE.encode(genome)


def test_widths_never_shrink_and_every_growth_gives_a_distinct_width() -> None:
    assert grow(24, GROWTHS.index("1.5")) == 40  # 36 rounded to a multiple of 8
    for genome in itertools.product(range(3), repeat=4):
        widths = SPACE.widths(genome)
        assert all(a <= b and b % 8 == 0 for a, b in itertools.pairwise(widths))
        assert len({grow(widths[-1], g) for g in range(len(GROWTHS))}) == len(GROWTHS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stages": 0}, "stages must be an integer in [1, 6], but got 0"),
        ({"base_widths": (12, 16)}, "base_widths must be distinct multiples of 8 that are >= 16"),
        ({"base_widths": (16, 16)}, "base_widths must be distinct"),
        ({"depths": (0, 1)}, "depths must be distinct integers >= 1, but got (0, 1)"),
    ],
)
def test_a_bad_configuration_is_reported_on_use(kwargs: dict[str, object], message: str) -> None:
    space = COERSpace(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^coer: ") as error:
        _ = space.choices

    assert message in str(error.value)


# -- networks and exact costs ----------------------------------------------------------------------------
def _active_variants(arch: Genome, gene: int, option: int) -> Genome:
    """``arch`` with ``gene`` set to ``option`` and made active: full depth for op genes, a reduction that
    is not ``none`` for position genes."""
    pool_start, depth_start = SPACE.segments[1].start, SPACE.segments[2].start
    genes = {f"g{gene}": option}
    if 4 <= gene < pool_start:
        genes |= {f"g{depth_start + s}": FULL_DEPTH for s in range(SPACE.stages)}
    if pool_start <= gene < depth_start and (gene - pool_start) % 2:
        genes[f"g{gene - 1}"] = max(arch[gene - 1], POOLS.index("max"))
    return _set(arch, **genes)


def test_cost_equals_the_built_network_for_every_option_of_every_gene() -> None:
    bases = [SPACE.cheapest(), SPACE.decode(DOC_EXAMPLE)]  # every op, reduction and position of both
    checked = set()
    for index, options in enumerate(SPACE.choices):
        for option in range(options):
            for base in bases:
                arch = _active_variants(base, index, option)
                assert arch[index] == option
                if arch not in checked:
                    checked.add(arch)
                    for shape in SHAPES:
                        _exact(SPACE, arch, 10, shape)
    assert len(checked) > 120


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 8, 8), (3, 15, 21), (2, 4, 5)])
def test_cost_equals_the_built_network_on_random_archs_and_odd_shapes(shape: InputShape) -> None:
    for arch in _samples(SPACE, 15, seed=sum(shape)):
        _exact(SPACE, arch, 7, shape)


def test_convs_keep_the_resolution_reductions_keep_the_channels_and_maps_stop_at_2x2() -> None:
    seen: list[tuple[bool, torch.Size, torch.Size]] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        seen.append((isinstance(module, ConvLayer), args[0].shape, output.shape))

    for arch in [*_samples(SPACE, 20, seed=3), SPACE.cheapest()]:
        reductions = SPACE.encode(arch).split("-")[1].count("@")
        for shape, room in (((3, 32, 32), 4), ((1, 8, 8), 2)):  # halvings before a map would be below 2x2
            network, seen[:] = SPACE.build(arch, 10, shape), []
            for stage in network.stages:
                for module in stage.children():  # a stage's conv layers and its reduction
                    module.register_forward_hook(hook)
            network(torch.zeros(2, *shape))

            assert sum(conv for conv, _, _ in seen) == len(network.main_blocks)
            assert sum(not conv for conv, _, _ in seen) == min(reductions, room)
            for conv, before, after in seen:
                kept = slice(2, 4) if conv else slice(1, 2)  # convs keep H and W, reductions C
                assert before[kept] == after[kept]
            final = shape[1] // 2 ** min(reductions, room)
            assert seen[-1][2][2:] == (final, final)


# -- cheapest and the device tiers -----------------------------------------------------------------------
def test_cheapest_is_exact_against_every_arch_of_a_small_configuration() -> None:
    space = COERSpace(stages=2, base_widths=(24, 16), depths=(1,))
    genomes = {space.canonical(g) for g in itertools.product(*(range(n) for n in space.choices))}
    assert len(genomes) == 2 * 3 * 5**2 * 7**2
    for shape in SHAPES:
        least = min((space.cost(g, 10, shape).params, space.cost(g, 10, shape).flops) for g in genomes)
        cheapest = space.cost(space.cheapest(10, shape), 10, shape)

        assert (cheapest.params, cheapest.flops) == least


def test_the_cheapest_arch_fits_every_device_tier_and_no_sample_is_cheaper() -> None:
    cheapest = SPACE.cheapest()
    assert SPACE.encode(cheapest) == BASE
    assert SPACE.cost(cheapest) == SPACE.cost(SearchSpace.cheapest(SPACE))  # the generic coordinate descent
    for shape in SHAPES:
        cost = SPACE.cost(cheapest, 10, shape)
        assert cost.params <= 150_000
        for tier in DEVICE_TIERS:
            limits = tier.constraints_for(shape)
            assert limits.max_params is not None and limits.max_flops is not None
            assert cost.params <= limits.max_params and cost.flops <= limits.max_flops, tier.name
        for arch in _samples(SPACE, 500, seed=9):
            other = SPACE.cost(arch, 10, shape)
            assert (other.params, other.flops) >= (cost.params, cost.flops)


# -- segment-wise genetic operators ----------------------------------------------------------------------
def _parents(rng: np.random.Generator) -> tuple[Genome, Genome]:
    """Two random genomes sharing their depth segment, every reduction not ``none``: no gene is inactive
    in a child of theirs, so a child's conv and pool segments are exactly its parents'."""
    pool_start, depth_start = SPACE.segments[1].start, SPACE.segments[2].start
    depths = [int(rng.integers(len(SPACE.depths))) for _ in range(SPACE.stages)]
    parents = []
    for _ in range(2):
        genome = list(SPACE.sample(rng))
        genome[pool_start:depth_start:2] = [
            1 + int(rng.integers(len(POOLS) - 1)) for _ in range(SPACE.stages)
        ]
        genome[depth_start:] = depths
        parents.append(SPACE.canonical(tuple(genome)))
    return parents[0], parents[1]


def test_crossover_children_take_the_conv_and_pool_segments_whole_from_one_parent() -> None:
    rng, combinations = np.random.default_rng(4), set()
    for seed in range(20):
        a, b = _parents(rng)
        for child in SPACE.crossover(a, b, np.random.default_rng(seed)):
            sources = []
            for segment in SPACE.segments[:2]:
                genes = child[segment.start : segment.stop]
                assert genes in (a[segment.start : segment.stop], b[segment.start : segment.stop]), segment
                sources.append(genes == a[segment.start : segment.stop])
            combinations.add(tuple(sources))
    assert combinations == set(itertools.product((True, False), repeat=2))


def test_crossover_with_the_depth_segment_canonicalises_a_whole_segment_choice() -> None:
    rng = np.random.default_rng(5)
    for seed in range(20):
        a, b = SPACE.sample(rng), SPACE.sample(rng)
        whole = {
            SPACE.canonical(
                tuple(g for s, p in zip(SPACE.segments, src, strict=True) for g in p[s.start : s.stop])
            )
            for src in itertools.product((a, b), repeat=3)
        }
        assert set(SPACE.crossover(a, b, np.random.default_rng(seed))) <= whole


def test_the_ga_operators_keep_genes_inside_their_segments() -> None:
    options, rng = GAOptions(segment_crossover_prob=0.5), np.random.default_rng(6)
    operators = set()
    for _ in range(40):
        a, b = _parents(rng)
        child, applied = segment_crossover(a, b, SPACE.segments, rng, options)
        for segment, operator in zip(SPACE.segments, applied, strict=True):
            genes, sources = child[segment.start : segment.stop], (a, b)
            if operator == "none":
                assert genes in (p[segment.start : segment.stop] for p in sources)
            assert all(child[g] in (a[g], b[g]) for g in segment.genes)
            operators.add((segment.name, operator))
        mutated, drawn = segment_mutation(a, SPACE, [0.3, 0.3, 0.3], rng)
        changed = {
            s for s, segment in enumerate(SPACE.segments) if any(mutated[g] != a[g] for g in segment.genes)
        }
        assert changed and changed <= set(drawn)
    assert {name for name, op in operators if op != "none"} == {"conv", "pool", "depth"}


# -- proxies and search ----------------------------------------------------------------------------------
@cache
def _batch(spec: str, size: int) -> ProbeBatch:
    return ProbeBatch.from_dataset(load_dataset(spec), size, seed=0)


@pytest.mark.parametrize("spec", ["synthetic:64", "digits"])
def test_fgnas_and_pooling_proxies_run_on_built_networks(spec: str) -> None:
    archs = [SPACE.cheapest(), SPACE.decode(DOC_EXAMPLE), *_samples(SPACE, 2, seed=11)]
    names = ["fg_fi", "fg_fc", "fg_gc", "fg_gi", "ni", "naswot"]

    table = score_archs(SPACE, archs, _batch(spec, 8), names, seed=0, progress=False)

    for name in names:
        assert np.all(np.isfinite(table.values[name])), name
    assert len(set(table.values["fg_fi"])) == len(archs)  # the proxies see different networks


def test_a_ga_search_under_a_params_limit_returns_feasible_archs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SPACES, "coer", COERSpace)  # this test only: the lead registers the space
    limit, batch = 40_000, _batch("digits", 8)
    config = SearchConfig(
        "coer", "ga", 16, ask_size=8, strategy_config={"population_size": 8},
        constraints=SearchLimits(max_params=limit),
    )  # fmt: skip

    result = run_search(SPACE, make_strategy(SPACE, config, batch), batch, config, progress=False)

    assert result.evaluations == 16 and result.unique_evaluations >= 8
    for entry in result.archive:
        assert SPACE.cost(SPACE.decode(entry.arch), batch.num_classes, batch.input_shape).params <= limit
    assert result.best_params <= limit
    assert SPACE.decode(result.best_arch) in {SPACE.decode(entry.arch) for entry in result.archive}
    assert any(SPACE.cost(arch, 10, (1, 8, 8)).params > limit for arch in _samples(SPACE, 50))


def test_nasfleet_score_computes_the_fgnas_proxies_and_aggregate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(SPACES, "coer", COERSpace)  # this test only: the lead registers the space
    archs, out = tmp_path / "archs.txt", tmp_path / "scores.csv"
    archs.write_text("\n".join([DOC_EXAMPLE, BASE, SPACE.encode(_samples(SPACE, 1, seed=12)[0])]) + "\n")
    options = ("--archs", str(archs), "--out", str(out), "--data", "digits", "--batch-size", "8")

    result = CliRunner().invoke(app, ["score", "--space", "coer", "--proxies", "fgnas", *options])

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [row["arch"] for row in rows] == archs.read_text().split()
    for column in ("fg_fi", "fg_fc", "fg_gc", "fg_gi", "fgnas"):
        assert all(np.isfinite(float(row[column])) for row in rows), column
