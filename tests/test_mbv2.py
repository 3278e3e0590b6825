"""Tests of the MobileNetV2-style macro search space: genome, strings, operators, networks and costs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nasfleet.spaces.base import ArchitectureError, Genome, InputShape
from nasfleet.spaces.counting import count_cost
from nasfleet.spaces.mbv2 import STAGES, MBV2Network, MBV2Space

DOC_EXAMPLE = "w0.75-d2,3,2,4,2,2-e6.3,4.4.6,3.3,6.6.6.6,4.3,6.6-k3.5,7.7.3,5.5,3.3.3.3,5.7,3.3"


@pytest.fixture(scope="module")
def space() -> MBV2Space:
    return MBV2Space()


def _samples(space: MBV2Space, n: int, seed: int = 0) -> list[Genome]:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def _uniform(space: MBV2Space, width: int, depth: int, expansion: int, kernel: int) -> Genome:
    """A genome with the same option everywhere in each segment."""
    blocks = len(STAGES) * space.slots
    genes = (width,) + (depth,) * len(STAGES) + (expansion,) * blocks + (kernel,) * blocks
    return space.canonical(genes)


def test_genome_layout_and_segments_cover_the_genome_contiguously(space: MBV2Space) -> None:
    segments = space.segments

    assert len(space.choices) == 1 + 6 + 2 * 6 * 4
    assert [s.name for s in segments] == ["width", "depth", "expansion", "kernel"]
    assert segments[0].start == 0 and segments[-1].stop == len(space.choices)
    assert all(a.stop == b.start for a, b in itertools.pairwise(segments))
    assert [len(s.genes) for s in segments] == [1, 6, 24, 24]


def test_encode_decode_round_trip(space: MBV2Space) -> None:
    for genome in _samples(space, 300):
        text = space.encode(genome)

        assert space.decode(text) == genome
        assert space.encode(space.decode(text)) == text


def test_documented_example_round_trips(space: MBV2Space) -> None:
    genome = space.decode(DOC_EXAMPLE)

    assert space.encode(genome) == DOC_EXAMPLE
    assert space.widths[genome[0]] == 0.75


def test_decode_of_encode_is_canonical_for_raw_genomes(space: MBV2Space) -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        raw = tuple(int(rng.integers(n)) for n in space.choices)

        assert space.decode(space.encode(raw)) == space.canonical(raw)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("w1.0-d2,2,2,2,2,2-e3.3,3.3,3.3,3.3,3.3,3.3", "4 parts"),
        ("x1.0-d2,2,2,2,2,2-e3.3,3.3,3.3,3.3,3.3,3.3-k3.3,3.3,3.3,3.3,3.3,3.3", "must start with 'w'"),
        (
            "w0.6-d2,2,2,2,2,2-e3.3,3.3,3.3,3.3,3.3,3.3-k3.3,3.3,3.3,3.3,3.3,3.3",
            "width must be one of 0.25, 0.5, 0.75, 1.0",
        ),
        ("w1-d2,2,2,2,2,2-e3.3,3.3,3.3,3.3,3.3,3.3-k3.3,3.3,3.3,3.3,3.3,3.3", "but got '1'"),
        ("w1.0-d2,2,2,2,2-e3.3,3.3,3.3,3.3,3.3-k3.3,3.3,3.3,3.3,3.3", "depths must be 6 values"),
        (
            "w1.0-d2,2,2,2,2,5-e3.3,3.3,3.3,3.3,3.3,3.3-k3.3,3.3,3.3,3.3,3.3,3.3",
            "depth of stage 5 must be one of",
        ),
        (
            "w1.0-d2,2,2,2,2,2-e3.3,3.3,3.3,3.3,3.3,3.3.3-k3.3,3.3,3.3,3.3,3.3,3.3",
            "of stage 5 must be 2 values",
        ),
        ("w1.0-d2,2,2,2,2,2-e3.3,3.3,3.3,3.3,3.3,3.3-k3.3,3.3,3.3,3.3,3.3,3.4", "kernel of stage 5 block 1"),
        ("w1.0-d2,2,2,2,2,2-e3.3,3.3,3.3,3.3,3.3-k3.3,3.3,3.3,3.3,3.3,3.3", "expansion stages must be 6"),
        ("w1.0-d2,2,2,2,2,2-e3.3,3.3,3.3,3.3,3.3,3.x-k3.3,3.3,3.3,3.3,3.3,3.3", "got 'x'"),
        ("", "4 parts"),
    ],
)
def test_malformed_strings_are_rejected_with_the_reason(space: MBV2Space, text: str, message: str) -> None:
    with pytest.raises(ArchitectureError, match="mbv2: ") as error:
        space.decode(text)

    assert message in str(error.value)


def test_canonical_zeroes_inactive_genes_only(space: MBV2Space) -> None:
    slots, expansion_start, kernel_start = 4, 7, 31
    genome = space.canonical((0,) + (0,) * 6 + (2,) * 24 + (1,) * 24)  # every stage at depth 2

    for stage in range(6):
        expansion = genome[expansion_start + stage * slots : expansion_start + (stage + 1) * slots]
        kernel = genome[kernel_start + stage * slots : kernel_start + (stage + 1) * slots]
        assert expansion == (2, 2, 0, 0) and kernel == (1, 1, 0, 0)
    assert space.canonical(genome) == genome


def test_genomes_differing_only_in_inactive_genes_are_equal(space: MBV2Space) -> None:
    a = (1,) + (0,) * 6 + (0,) * 48
    b = list(a)
    b[7 + 3] = 2  # stage 0, block 3: beyond depth 2
    b[31 + 2] = 1  # stage 0, block 2 kernel: beyond depth 2

    assert space.validate(a) == space.validate(b)
    assert space.encode(a) == space.encode(tuple(b))


def test_validate_rejects_bad_genomes(space: MBV2Space) -> None:
    with pytest.raises(ArchitectureError, match="55 genes"):
        space.validate((0,) * 10)
    with pytest.raises(ArchitectureError, match=r"gene 0 must lie in \[0, 4\)"):
        space.validate((4,) + (0,) * 54)


def test_operators_are_deterministic_under_a_seed_and_valid(space: MBV2Space) -> None:
    def run(seed: int) -> list[Genome]:
        rng = np.random.default_rng(seed)
        a, b = space.sample(rng), space.sample(rng)
        c, d = space.crossover(a, b, rng)
        return [a, b, c, d, space.mutate(a, rng), space.mutate(c, rng, rate=0.5)]

    first, second = run(7), run(7)

    assert first == second
    assert first != run(8)
    for genome in first:
        assert space.validate(genome) == genome


def test_crossover_children_take_whole_segments_from_parents(space: MBV2Space) -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        a, b = space.sample(rng), space.sample(rng)
        child, _ = space.crossover(a, b, rng)
        for segment in (space.segments[0], space.segments[1]):  # width and depth are never inactive
            genes = child[segment.start : segment.stop]
            assert genes in (a[segment.start : segment.stop], b[segment.start : segment.stop])


def test_mutate_always_changes_the_arch(space: MBV2Space) -> None:
    rng = np.random.default_rng(5)
    for parent in _samples(space, 200, seed=2):
        child = space.mutate(parent, rng)

        assert child != parent
        assert space.encode(child) != space.encode(parent)
        assert space.validate(child) == child


def test_vector_round_trip(space: MBV2Space) -> None:
    for genome in _samples(space, 100, seed=4):
        vector = space.to_vector(genome)

        assert vector.shape == (space.vector_size,) == (4 + 6 * 3 + 48 * 3,)
        assert space.from_vector(vector) == genome


def test_from_vector_output_is_canonical(space: MBV2Space) -> None:
    rng = np.random.default_rng(6)
    genome = space.from_vector(rng.normal(size=space.vector_size))

    assert space.canonical(genome) == genome


@pytest.mark.parametrize(
    ("input_shape", "final_size"),
    [((3, 32, 32), 4), ((1, 8, 8), 4), ((3, 64, 64), 4), ((3, 224, 224), 49), ((3, 2, 2), 4), ((3, 1, 1), 1)],
)
def test_strides_keep_the_final_map_at_least_2x2(
    space: MBV2Space, input_shape: InputShape, final_size: int
) -> None:
    plan = space.plan(_uniform(space, 0, 0, 0, 0), input_shape)

    assert plan.stem_stride == (2 if min(input_shape[1:]) >= 64 else 1)
    assert plan.blocks[-1].out_positions == final_size


@pytest.mark.parametrize(
    ("input_shape", "num_classes"), [((3, 32, 32), 10), ((1, 8, 8), 10), ((3, 64, 64), 7)]
)
def test_forward_pass_returns_logits(space: MBV2Space, input_shape: InputShape, num_classes: int) -> None:
    torch.manual_seed(0)
    genome = _samples(space, 1, seed=sum(input_shape))[0]
    model = space.build(genome, num_classes, input_shape)

    logits = model(torch.randn(2, *input_shape))

    assert isinstance(model, MBV2Network)
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()
    assert len(model.main_blocks) == 1 + sum(space.depths[g] for g in genome[1:7])


COST_CASES: list[tuple[InputShape, int]] = [
    ((3, 32, 32), 10),
    ((3, 32, 32), 100),
    ((1, 8, 8), 10),
    ((1, 8, 8), 2),
    ((3, 64, 64), 10),
    ((3, 17, 9), 5),  # odd and non-square sizes
]


def test_closed_form_cost_equals_hook_counted_cost(space: MBV2Space) -> None:
    genomes = [*_samples(space, 18, seed=11), _uniform(space, 2, 2, 2, 2), _uniform(space, 0, 0, 0, 0)]
    for index, genome in enumerate(genomes):
        input_shape, num_classes = COST_CASES[index % len(COST_CASES)]
        model = space.build(genome, num_classes, input_shape)

        cost = space.cost(genome, num_classes, input_shape)

        assert cost == count_cost(model, input_shape), (space.encode(genome), input_shape, num_classes)
        assert cost.params == sum(p.numel() for p in model.parameters())


def test_closed_form_cost_at_imagenet_resolution(space: MBV2Space) -> None:
    genome = _samples(space, 1, seed=12)[0]

    assert space.cost(genome, 1000, (3, 224, 224)) == count_cost(
        space.build(genome, 1000, (3, 224, 224)), (3, 224, 224)
    )


def test_cost_grows_with_width(space: MBV2Space) -> None:
    for genome in _samples(space, 30, seed=13):
        costs = [space.cost((width, *genome[1:])) for width in range(len(space.widths))]

        assert all(a.params < b.params and a.flops < b.flops for a, b in itertools.pairwise(costs))


def test_cost_rejects_bad_input_shape(space: MBV2Space) -> None:
    genome = _samples(space, 1)[0]

    with pytest.raises(ValueError, match="input_shape"):
        space.cost(genome, 10, (3, 0, 32))
    with pytest.raises(ValueError, match="num_classes"):
        space.build(genome, 1, (3, 32, 32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"kernels": (3, 4)}, "kernels must be distinct odd integers"), ({"depths": ()}, "depths must be")],
)
def test_invalid_configuration_is_reported_on_use(kwargs: dict[str, tuple[int, ...]], message: str) -> None:
    space = MBV2Space(**kwargs)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match=message):
        space.sample(np.random.default_rng(0))


def test_other_configurations_work() -> None:
    space = MBV2Space(widths=(1.0, 1.4), depths=(1, 2), expansions=(1, 6), kernels=(3,))
    genome = _samples(space, 1)[0]

    assert len(space.choices) == 1 + 6 + 2 * 6 * 2
    assert space.decode(space.encode(genome)) == genome
    assert space.cost(genome) == count_cost(space.build(genome), (3, 32, 32))


# -- the head and the tiers (revision 2) -------------------------------------------------------------------
LEGACY = {"widths": (0.5, 0.75, 1.0), "scale_head": False}  # revision 1's defaults


@pytest.mark.parametrize(
    ("options", "heads"),
    [
        ({}, [320, 640, 960, 1280]),
        (LEGACY, [1280, 1280, 1280]),
        ({"widths": (1.4,), "scale_head": False}, [1792]),
    ],
)
def test_the_head_scales_with_the_width_unless_scale_head_is_off(
    options: dict[str, object], heads: list[int]
) -> None:
    space = MBV2Space(**options)  # type: ignore[arg-type]
    genome = _samples(space, 1)[0]
    found = [space.plan((w, *genome[1:]), (3, 32, 32)).head_channels for w in range(len(space.widths))]
    networks = [space.build((w, *genome[1:])).classifier.in_features for w in range(len(space.widths))]

    assert found == networks == heads


def test_revision_1_defaults_are_the_legacy_options_and_their_costs_stay_exact() -> None:
    legacy = MBV2Space(**LEGACY)  # type: ignore[arg-type]
    cheapest = legacy.cheapest(10, (1, 8, 8))

    assert legacy.encode(cheapest) == "w0.5-d2,2,2,2,2,2-e3.3,3.3,3.3,3.3,3.3,3.3-k3.3,3.3,3.3,3.3,3.3,3.3"
    assert legacy.cost(cheapest, 10, (1, 8, 8)).params == 546_770  # the figure of issue 16
    for index, genome in enumerate(_samples(legacy, 4, seed=21)):
        input_shape, num_classes = COST_CASES[index % len(COST_CASES)]
        model = legacy.build(genome, num_classes, input_shape)
        assert legacy.cost(genome, num_classes, input_shape) == count_cost(model, input_shape)
    assert MBV2Space.revision == 2


def test_the_cheapest_arch_is_the_all_smallest_one_and_no_sample_is_cheaper(space: MBV2Space) -> None:
    cheapest = space.cheapest(10, (1, 8, 8))
    floor = space.cost(cheapest, 10, (1, 8, 8))

    assert cheapest == _uniform(space, 0, 0, 0, 0)
    assert (floor.params, floor.flops) == (117_362, 479_210)
    assert all(space.cost(g, 10, (1, 8, 8)).params > floor.params for g in _samples(space, 50, seed=22))


def test_scale_head_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="mbv2: scale_head must be true or false, but got 'yes'"):
        _ = MBV2Space(scale_head="yes").choices  # type: ignore[arg-type]
