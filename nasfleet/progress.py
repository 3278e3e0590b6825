"""The one progress display of long loops (scoring, timing, searches, federation rounds).

`progress` shows a rich bar on stderr when stderr is a terminal, and a plain line every 5% of the total
(and at the end) when it is not (a log file, CI), where a live bar would draw nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Update(Protocol):
    """``update(done, note="")``: ``done`` items of the total so far (an absolute count) and a short note."""

    def __call__(self, done: int, note: str = "") -> None: ...


PLAIN_LINES = 20  # a plain line every 1/20 (5%) of the total


def plain_line(label: str, done: int, total: int, note: str, elapsed: float) -> str:
    """The plain-text progress line: ``"label: done/total, note (elapsed s)"``, without an empty note."""
    shown = f", {note}" if note else ""
    return f"{label}: {done}/{total}{shown} ({elapsed:.0f} s)"


@contextmanager
def progress(label: str, total: int, enabled: bool) -> Iterator[Update]:
    """A progress display of ``total`` items on stderr; yields ``update(done, note="")``.

    On a terminal, a rich bar: label, bar, done/total, the note and the elapsed time. Otherwise a
    `plain_line` each time ``done`` crosses a multiple of 5% of ``total``, and when it reaches ``total``.
    Disabled, it shows nothing.
    """
    if not enabled:
        yield _ignore
        return
    console = Console(stderr=True)
    if not console.is_terminal:
        yield _plain(console, label, total)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=total, note="")

        def update(done: int, note: str = "") -> None:
            bar.update(task, completed=done, note=note)

        yield update


def _ignore(done: int, note: str = "") -> None:
    """The update of a disabled display."""


def _plain(console: Console, label: str, total: int) -> Update:
    step, started, shown = max(1, total // PLAIN_LINES), time.perf_counter(), [0]

    def update(done: int, note: str = "") -> None:
        if done // step > shown[0] // step or done == total:
            line = plain_line(label, done, total, note, time.perf_counter() - started)
            console.print(line, highlight=False, markup=False)
        shown[0] = done

    return update
