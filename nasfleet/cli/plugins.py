"""``nasfleet spaces list`` and ``nasfleet proxies list``: the built-in and plug-in spaces and proxies.

Each lists its kind's built-ins and the plug-ins installed through entry points (``nasfleet.spaces``,
``nasfleet.proxies``), with where each comes from: ``built-in`` or the providing distribution and its
version. A plug-in that cannot be used is left out and reported on stderr, naming its entry point.
(``nasfleet strategies list`` does the same for strategies.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import typer

from nasfleet.cli.options import FormatOption

spaces_app = typer.Typer(help="Search spaces: the built-ins and installed plug-ins.", no_args_is_help=True)
proxies_app = typer.Typer(
    help="Zero-cost proxies: the built-ins and installed plug-ins.", no_args_is_help=True
)


def _print(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str], output_format: str) -> None:
    """``rows`` as a JSON list, or as a table of ``columns`` at most 100 columns wide."""
    if output_format == "json":
        typer.echo(json.dumps(list(rows)))
        return
    from nasfleet.display import make_table, table_console

    table = make_table(title, list(columns))
    for column in table.columns[:-1]:  # only the last column, the description, folds onto more lines
        column.no_wrap = True
    for row in rows:
        table.add_row(*(str(row[column]) for column in columns))
    table_console().print(table)


def _warn(problems: Sequence[object]) -> None:
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)


@spaces_app.command("list")
def spaces_list(output_format: FormatOption = "table") -> None:
    """Print every available search space: name, origin (built-in or the distribution providing it) and
    summary; ``--format json`` adds the entry point and the revision."""
    from nasfleet.spaces import discover_spaces

    entries, problems = discover_spaces()
    rows = [
        {"name": entry.name, "origin": entry.origin, "description": entry.summary,
         "entry_point": entry.entry_point, "revision": entry.cls.revision}
        for entry in entries.values()
    ]  # fmt: skip
    _print("search spaces", rows, ("name", "origin", "description"), output_format)
    _warn(problems)


@proxies_app.command("list")
def proxies_list(output_format: FormatOption = "table") -> None:
    """Print every available zero-cost proxy: name, origin (built-in or the distribution providing it),
    whether higher is better, whether it needs labels, and summary; ``--format json`` adds the entry point
    and the revision. The aggregates that ``--proxies`` also accepts are not proxies and are not listed."""
    from nasfleet.proxies import discover_proxies

    entries, problems = discover_proxies()
    rows = [
        {"name": entry.name, "origin": entry.origin, "better": _direction(entry.cls.higher_is_better),
         "labels": "needed" if entry.cls.needs_labels else "-", "description": entry.summary,
         "higher_is_better": entry.cls.higher_is_better, "needs_labels": entry.cls.needs_labels,
         "entry_point": entry.entry_point, "revision": entry.cls.revision}
        for entry in entries.values()
    ]  # fmt: skip
    if output_format == "json":
        rows = [{k: v for k, v in row.items() if k not in ("better", "labels")} for row in rows]
    _print("zero-cost proxies", rows, ("name", "origin", "better", "labels", "description"), output_format)
    _warn(problems)


def _direction(higher_is_better: bool) -> str:
    return "higher" if higher_is_better else "lower"
