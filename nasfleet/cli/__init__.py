"""The ``nasfleet`` command line: the typer `app`, with each command group in its own module.

Names become classes only here, at the edge. `options` defines every option type the commands share,
`inputs` checks what they read, `outputs` is the one way they write files; each other module is one
command or command group. Heavy imports (torch, Celery, SQLAlchemy, FastAPI) wait inside the commands, so
``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from nasfleet import __version__
from nasfleet.cli.dashboard import dashboard
from nasfleet.cli.data import data_app
from nasfleet.cli.export import export
from nasfleet.cli.jobs import jobs_app
from nasfleet.cli.plugins import proxies_app, spaces_app
from nasfleet.cli.registry import registry_app
from nasfleet.cli.score import bench_app, score
from nasfleet.cli.search import search
from nasfleet.cli.serve import serve, tenants_app
from nasfleet.cli.service import orchestrate, worker
from nasfleet.cli.simulate import simulate
from nasfleet.cli.space import space_app
from nasfleet.cli.strategies import strategies_app

app = typer.Typer(
    help="Federated, multi-tenant, training-free neural architecture search.", no_args_is_help=True
)


def _version(shown: bool) -> None:
    if shown:
        typer.echo(f"nasfleet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Federated, multi-tenant, training-free neural architecture search."""


for command in (score, search, simulate, worker, orchestrate, serve, dashboard, export):
    app.command()(command)
for name, group in (("space", space_app), ("bench", bench_app), ("registry", registry_app),
                    ("tenants", tenants_app), ("strategies", strategies_app)):  # fmt: skip
    app.add_typer(group, name=name)
app.add_typer(jobs_app, name="jobs")
app.add_typer(spaces_app, name="spaces")
app.add_typer(proxies_app, name="proxies")
app.add_typer(data_app, name="data")


def main() -> None:
    """Entry point of the ``nasfleet`` console script."""
    app()
