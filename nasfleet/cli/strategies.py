"""``nasfleet strategies``: the available search strategies, and the check of a ``--strategy`` name."""

from __future__ import annotations

import json
import textwrap

import typer

from nasfleet.cli.options import FormatOption
from nasfleet.display import MAX_TABLE_WIDTH

strategies_app = typer.Typer(
    help="Search strategies: the built-ins and installed plug-ins.", no_args_is_help=True
)


def check_strategy_name(name: str) -> None:
    """Nothing if ``name`` is an available strategy; else a ``--strategy`` error listing the known ones."""
    from nasfleet.strategies import discover_strategies

    entries, problems = discover_strategies()
    if name in entries:
        return
    for problem in problems:
        if problem.name == name:
            raise typer.BadParameter(str(problem), param_hint="--strategy")
    raise typer.BadParameter(f"must be one of {sorted(entries)}, but got {name!r}", param_hint="--strategy")


@strategies_app.command("list")
def strategies_list(output_format: FormatOption = "table") -> None:
    """Print every available strategy: name, origin (built-in or the distribution providing it), summary.

    The table fits 100 columns (a long description wraps under itself); --format json has it on one line.

    A plug-in that cannot be used is left out and reported on stderr, naming its entry point.
    """
    from nasfleet.strategies import discover_strategies

    entries, problems = discover_strategies()
    listed = [(entry.name, entry.origin, entry.summary) for entry in entries.values()]
    if output_format == "json":
        typer.echo(
            json.dumps([dict(zip(("name", "origin", "description"), row, strict=True)) for row in listed])
        )
    else:
        rows = [("name", "origin", "description"), *listed]
        name_width, origin_width = (max(len(row[column]) for row in rows) for column in (0, 1))
        indent = " " * (name_width + origin_width + 4)
        for name, origin, summary in rows:
            # The description wraps under itself, so that every line fits MAX_TABLE_WIDTH columns.
            lines = textwrap.wrap(summary, max(MAX_TABLE_WIDTH - len(indent), 20)) or [""]
            typer.echo(f"{name:<{name_width}}  {origin:<{origin_width}}  {lines[0]}".rstrip())
            for line in lines[1:]:
                typer.echo(indent + line)
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
