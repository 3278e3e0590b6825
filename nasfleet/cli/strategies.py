"""``nasfleet strategies``: the available search strategies, and the check of a ``--strategy`` name."""

from __future__ import annotations

import typer

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
def strategies_list() -> None:
    """Print every available strategy: name, origin (built-in or the distribution providing it), summary.

    A plug-in that cannot be used is left out and reported on stderr, naming its entry point.
    """
    from nasfleet.strategies import discover_strategies

    entries, problems = discover_strategies()
    rows = [("name", "origin", "description")]
    rows += [(entry.name, entry.origin, entry.summary) for entry in entries.values()]
    name_width, origin_width = (max(len(row[column]) for row in rows) for column in (0, 1))
    for name, origin, summary in rows:
        typer.echo(f"{name:<{name_width}}  {origin:<{origin_width}}  {summary}".rstrip())
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
