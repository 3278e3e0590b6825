"""``nasfleet space``: sample, enumerate and cost the architectures of a search space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from nasfleet.cli.inputs import parse_input_shape, read_archs, space_named
from nasfleet.cli.options import MAX_ARCHS, MAX_CLASSES, ArchsOption, SeedOption, SpaceOption
from nasfleet.cli.outputs import check_output, write_csv

space_app = typer.Typer(
    help="Inspect search spaces: sample, enumerate and cost architectures.", no_args_is_help=True
)


@space_app.command("sample")
def space_sample(
    space: SpaceOption = "nb201",
    n: Annotated[int, typer.Option("--n", min=1, max=MAX_ARCHS, help="How many architectures.")] = 10,
    seed: SeedOption = 0,
) -> None:
    """Print N random architectures as canonical strings, one a line."""
    search_space, rng = space_named(space), np.random.default_rng(seed)
    for _ in range(n):
        typer.echo(search_space.encode(search_space.sample(rng)))


@space_app.command("enumerate")
def space_enumerate(space: SpaceOption = "nb201") -> None:
    """Print every architecture of a finite space (nb201: all 15,625), one a line."""
    search_space = space_named(space)
    all_archs = getattr(search_space, "all_archs", None)
    if all_archs is None:
        raise typer.BadParameter(f"space {space!r} is too large to enumerate", param_hint="--space")
    for arch in all_archs():
        typer.echo(search_space.encode(arch))


@space_app.command("cost")
def space_cost(
    archs: ArchsOption,
    out: Annotated[Path, typer.Option("--out", help="CSV to write (- for stdout): arch,params,flops.")],
    space: SpaceOption = "nb201",
    num_classes: Annotated[
        int, typer.Option("--num-classes", min=2, max=MAX_CLASSES, help="Classifier outputs.")
    ] = 10,
    input_shape: Annotated[str, typer.Option("--input-shape", help="Input C,H,W.")] = "3,32,32",
) -> None:
    """Exact parameters and FLOPs (multiply-accumulates, NAS-Bench-201 API convention) of each arch."""
    search_space, shape = space_named(space), parse_input_shape(input_shape)
    check_output(out)
    rows: list[list[object]] = []
    for text, genome in read_archs(search_space, archs):
        try:
            cost = search_space.cost(genome, num_classes, shape)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--input-shape") from None
        rows.append([text, cost.params, cost.flops])
    where = write_csv(out, ["arch", "params", "flops"], rows)
    typer.echo(f"wrote {len(rows)} rows to {where}", err=True)
