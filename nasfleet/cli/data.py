"""``nasfleet data``: fetch the datasets that do not ship with nasfleet (today: CIFAR-10).

The work is `nasfleet.data.download.fetch_cifar10`, which imports urllib, tarfile and numpy only when it
runs, so ``--help`` stays light. Progress goes to stderr (`nasfleet.progress`: a bar on a terminal, a
line every 5% otherwise); the last line, on stdout, says how to point nasfleet at the data.
"""

from __future__ import annotations

import shlex
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from nasfleet.data.download import (
    CIFAR10_MD5,
    CIFAR10_URL,
    DownloadError,
    check_md5,
    check_url,
    fetch_cifar10,
)

if TYPE_CHECKING:
    from nasfleet.progress import Update

MIB = 1 << 20

data_app = typer.Typer(help="Fetch datasets that do not ship with nasfleet.", no_args_is_help=True)


@data_app.command("cifar10")
def cifar10(
    directory: Annotated[
        Path,
        typer.Option(
            "--dir", help="Directory to put cifar-10-batches-py/ in (created if missing).", show_default=False
        ),
    ],
    url: Annotated[
        str, typer.Option("--url", help="Where to download the archive from (a mirror, or a file:// URL).")
    ] = CIFAR10_URL,
    md5: Annotated[str, typer.Option("--md5", help="The archive's expected MD5.")] = CIFAR10_MD5,
    force: Annotated[
        bool, typer.Option("--force", help="Download and replace even a complete copy already in --dir.")
    ] = False,
) -> None:
    """Download the official CIFAR-10 python archive, verify its MD5 and extract it into --dir.

    Nothing is half-written: on any failure (network, checksum, archive) --dir is left as it was.

    A complete copy already in --dir is kept and nothing is downloaded, unless --force.
    """
    for option, check, value in (("--url", check_url, url), ("--md5", check_md5, md5)):
        try:
            check(value)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint=option) from None
    with ExitStack() as stack:
        try:
            fetched = fetch_cifar10(directory, url, md5, force, _Reporter(stack, url).report)
        except DownloadError as error:
            raise click.ClickException(str(error)) from None
    if fetched.downloaded:
        typer.echo(f"nasfleet data: verified and extracted {fetched.size / MIB:.1f} MiB", err=True)
    else:
        typer.echo(
            f"nasfleet data: {fetched.path} already holds a complete CIFAR-10; nothing downloaded "
            "(--force downloads it again)",
            err=True,
        )
    parent = shlex.quote(str(directory.resolve()))
    batches = shlex.quote(str(fetched.path.resolve()))
    typer.echo(
        f"CIFAR-10 is in {batches}: export NASFLEET_DATA={parent} and use the dataset cifar10 "
        f"(--data cifar10, simulate --dataset cifar10), or name the folder: cifar10:{batches}"
    )


class _Reporter:
    """Opens the progress display once the download's size is known, then forwards byte counts to it."""

    def __init__(self, stack: ExitStack, url: str) -> None:
        self.stack, self.url = stack, url
        self.update: Update | None = None

    def report(self, done: int, total: int | None) -> None:
        if self.update is None:
            self.update = self._open(total)
        self.update(done, f"{done / MIB:.1f}/{total / MIB:.1f} MiB" if total else f"{done / MIB:.1f} MiB")

    def _open(self, total: int | None) -> Update:
        from nasfleet.progress import progress

        size = f"{total / MIB:.1f} MiB" if total else "size not announced"
        typer.echo(f"nasfleet data: downloading {self.url} ({size})", err=True)
        if not total:
            return lambda done, note="": None
        return self.stack.enter_context(progress("downloading", total, enabled=True))
