"""How the tables of the command line show values, so that every table fits 100 columns.

A table is for reading; ``--format json`` (and the registry itself) keeps every value whole. Here:

- `short_id`: the first 8 hex characters of a 32-character id, which every command taking a job id
  accepts as a prefix (it names one job unless two ids share it; then the command asks for more).
- `short_arch`: an arch string cut to its head, an ellipsis and a digest of the whole string (the first
  6 hex characters of its SHA-256), so that two archs with the same head still read differently, and the
  same arch reads the same in every table.
- `compact`: counts as ``123k`` / ``7.89M``, other numbers to 4 significant digits.
- `table_console`: a rich console at most `MAX_TABLE_WIDTH` columns wide, whatever the terminal.
"""

from __future__ import annotations

import hashlib

from rich import box
from rich.console import Console
from rich.table import Table

MAX_TABLE_WIDTH = 100
SHORT_ID = 8
ARCH_HEAD = 13  # characters of the arch string kept before the digest (nb201: the first operation)
ARCH_DIGEST = 6
ELLIPSIS = "…"


def short_id(value: str | None) -> str:
    """The first `SHORT_ID` characters of an id ("" for none)."""
    return (value or "")[:SHORT_ID]


def short_arch(arch: str | None) -> str:
    """*arch* as ``head…digest`` (at most 20 characters); a string that short already is kept whole."""
    if not arch:
        return ""
    if len(arch) <= ARCH_HEAD + 1 + ARCH_DIGEST:
        return arch
    digest = hashlib.sha256(arch.encode()).hexdigest()[:ARCH_DIGEST]
    return f"{arch[:ARCH_HEAD]}{ELLIPSIS}{digest}"


def compact(value: float | int | None, scale: float = 1.0) -> str:
    """A count as ``950`` / ``123k`` / ``7.89M`` / ``1.2G`` (3 significant digits); any other number
    (or a scaled count) to 4 significant digits; ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int) or scale != 1.0:
        return f"{value / scale:.4g}"
    for size, suffix in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k")):
        if abs(value) >= size * 0.9995:  # what rounds to 1000 of a unit is shown as 1 of the next
            return f"{value / size:.3g}{suffix}"
    return str(value)


def table_console(stderr: bool = False) -> Console:
    """A console as wide as the terminal, but never wider than `MAX_TABLE_WIDTH` columns."""
    console = Console(stderr=stderr)
    return Console(stderr=stderr, width=min(console.width, MAX_TABLE_WIDTH))


def make_table(title: str, header: list[str], gap: int = 2) -> Table:
    """An empty table in the one style of every listing: a rule under the header, no vertical lines or
    edges (they cost columns), *gap* spaces between columns; a cell too long for the width folds onto
    more lines, nothing is cut."""
    padding = (0, gap - 1, 0, 0)  # the box's column separator is one space already
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=padding)
    for name in header:
        table.add_column(name, overflow="fold")
    return table
