"""The search-space contract: every check a space, built-in or plug-in, must pass.

The checks: a genome layout whose segments partition it; seeded, canonical, valid samples of plain ints;
canonical strings that round-trip and garbage that `ArchitectureError` refuses; mutation, crossover and the
vector relaxation stay inside the space; and an exact ``cost`` whose parameters and FLOPs equal the built
network's counted ones (`nasfleet.spaces.counting`), for two class counts and two input shapes, with a
network that declares ``main_blocks`` and returns finite logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from nasfleet.spaces.base import ArchitectureError, Genome, InputShape, SearchSpace
from nasfleet.spaces.counting import count_cost
from nasfleet.testing.contract import Check, expect, raises, run_checks

SpaceCheck = Callable[[SearchSpace, list[Genome]], None]
COST_SAMPLES = 3  # networks built to compare against the closed-form cost
INPUT_SHAPE: InputShape = (3, 32, 32)
SMALL_INPUT_SHAPE: InputShape = (1, 8, 8)  # the digits data of the main job


def _is_genome(arch: object) -> bool:
    return isinstance(arch, tuple) and all(type(gene) is int for gene in arch)


def check_layout(space: SearchSpace, samples: list[Genome]) -> None:
    """A name, positive choices with something to choose, and segments that partition the genome in order."""
    expect(isinstance(getattr(space, "name", None), str) and bool(space.name), "name must be a non-empty str")
    choices = space.choices
    expect(
        all(type(n) is int and n >= 1 for n in choices) and any(n > 1 for n in choices),
        f"choices must be positive ints, at least one above 1, but got {choices}",
    )
    position = 0
    for segment in space.segments:
        expect(
            segment.start == position < segment.stop, f"segment {segment} does not start at gene {position}"
        )
        position = segment.stop
    expect(position == len(choices), f"segments end at gene {position}, but the genome has {len(choices)}")
    names = [segment.name for segment in space.segments]
    expect(len(set(names)) == len(names), f"segment names must be unique, but got {names}")


def check_sampling(space: SearchSpace, samples: list[Genome]) -> None:
    """Samples are canonical, valid tuples of plain ints, and the same under the same seed."""
    for arch in samples:
        expect(_is_genome(arch), f"sample must return a tuple of plain ints, but got {arch!r}")
        expect(space.validate(arch) == arch, f"sample must return canonical genomes, but got {arch}")
    again = [space.sample(np.random.default_rng([0, i])) for i in range(len(samples))]
    expect(again == samples, "sample must return the same genomes under the same seed")
    expect(len(set(samples)) > 1, f"{len(samples)} samples are all the same genome {samples[0]}")


def check_strings(space: SearchSpace, samples: list[Genome]) -> None:
    """``decode(encode(a)) == a``; bad strings and bad genomes raise `ArchitectureError`."""
    for arch in samples:
        text = space.encode(arch)
        expect(isinstance(text, str), f"encode must return a str, but got {text!r}")
        expect(
            space.decode(text) == arch, f"decode(encode({arch})) must be {arch}, but got {space.decode(text)}"
        )
    for garbage in ("", "not an architecture"):
        expect(
            raises(ArchitectureError, space.decode, garbage) is not None,
            f"decode({garbage!r}) must raise ArchitectureError",
        )
    too_long = (*samples[0], 0)
    out_of_range = tuple(n for n in space.choices)
    for bad in (too_long, out_of_range):
        expect(
            raises(ArchitectureError, space.validate, bad) is not None,
            f"validate({bad}) must raise ArchitectureError",
        )


def check_operators(space: SearchSpace, samples: list[Genome]) -> None:
    """Mutation changes and stays valid, crossover stays valid, both deterministic; vectors round-trip."""
    for index, arch in enumerate(samples):
        child = space.mutate(arch, np.random.default_rng(index))
        expect(child != arch and space.validate(child) == child, f"mutate({arch}) gave {child}")
        expect(child == space.mutate(arch, np.random.default_rng(index)), "mutate must be deterministic")
        pair = space.crossover(arch, samples[index - 1], np.random.default_rng(index))
        expect(
            pair == space.crossover(arch, samples[index - 1], np.random.default_rng(index)),
            "crossover must be deterministic",
        )
        for genome in pair:
            expect(space.validate(genome) == genome, f"crossover gave a non-canonical genome {genome}")
        vector = space.to_vector(arch)
        expect(vector.shape == (space.vector_size,), f"to_vector must have shape ({space.vector_size},)")
        expect(space.from_vector(vector) == arch, f"from_vector(to_vector({arch})) must be {arch}")


def check_cost(space: SearchSpace, samples: list[Genome]) -> None:
    """``cost`` is positive, deterministic and exact: the built network's parameters, and its FLOPs as
    `nasfleet.spaces.counting` counts them (the NAS-Bench-201 convention), for two class counts and two
    input shapes, on which the network returns finite logits."""
    for arch in samples[:COST_SAMPLES]:
        for classes, shape in ((10, INPUT_SHAPE), (7, INPUT_SHAPE), (10, SMALL_INPUT_SHAPE)):
            _check_cost_of(space, arch, classes, shape)


def _check_cost_of(space: SearchSpace, arch: Genome, classes: int, shape: InputShape) -> None:
    cost = space.cost(arch, classes, shape)
    where = f"cost({arch}, {classes} classes, input {shape})"
    expect(cost.params > 0 and cost.flops > 0, f"{where} must be positive, but got {cost}")
    expect(cost == space.cost(arch, classes, shape), f"{where} must be deterministic")
    torch.manual_seed(0)
    network = space.build(arch, classes, shape)
    counted = count_cost(network, shape)
    expect(
        cost.params == counted.params,
        f"{where}.params must equal the built network's {counted.params}, but got {cost.params}",
    )
    expect(
        cost.flops == counted.flops,
        f"{where}.flops must equal the built network's counted {counted.flops}, but got {cost.flops}",
    )
    expect(len(getattr(network, "main_blocks", ())) > 0, "a built network must declare main_blocks")
    with torch.no_grad():
        logits = network.eval()(torch.randn(2, *shape))
    expect(
        tuple(logits.shape) == (2, classes) and bool(torch.isfinite(logits).all()),
        f"the network of {arch} must return finite logits of shape (2, {classes}) on input {shape}, "
        f"but got {tuple(logits.shape)}",
    )


CHECKS: tuple[SpaceCheck, ...] = (check_layout, check_sampling, check_strings, check_operators, check_cost)


def space_checks(space: SearchSpace, samples: int = 12, skip: Iterable[str] = ()) -> list[Check]:
    """Every contract check of ``space`` on ``samples`` seeded random genomes, less those in ``skip``."""
    skipped = set(skip)
    names = {check.__name__ for check in CHECKS}
    if not skipped <= names:
        raise ValueError(f"skip must name checks among {sorted(names)}, but got {sorted(skipped - names)}")
    genomes = [space.sample(np.random.default_rng([0, i])) for i in range(samples)]
    label = getattr(space, "name", type(space).__qualname__)

    def bound(check: SpaceCheck) -> Check:
        return Check(f"{label}-{check.__name__.removeprefix('check_')}", lambda: check(space, genomes))

    return [bound(check) for check in CHECKS if check.__name__ not in skipped]


def check_space(space: SearchSpace, samples: int = 12, skip: Iterable[str] = ()) -> None:
    """Run every contract check on ``space``; one `ContractError` lists every failure."""
    run_checks(space_checks(space, samples, skip))
