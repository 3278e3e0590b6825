"""``nasfleet dashboard``: the web dashboard alone, over a registry, with no API, orchestrator or workers.

``nasfleet serve`` serves the same dashboard at ``/dashboard`` beside the API; this command is for looking
at a registry that nothing serves (the one ``nasfleet simulate`` filled, or a copy of a production one).
It only reads the registry. Tenants log in with their API keys (``nasfleet tenants add-key NAME``).
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from nasfleet.bounds import DEFAULT_REGISTRY_URL
from nasfleet.cli.options import RegistryOption
from nasfleet.cli.registry import open_registry
from nasfleet.cli.serve import _bind


def dashboard(
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "warning",
) -> None:
    """Serve the web dashboard alone (read-only): jobs, their progress and archives, the fleet.

    Open http://HOST:PORT/dashboard/ and log in with a tenant's API key.
    """
    listening = _bind(host, port)  # a taken port is an error before the registry is opened
    import uvicorn

    from nasfleet.dashboard import MOUNT, standalone_app

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with listening, open_registry(registry) as store:
        shown = f"[{host}]" if ":" in host else host
        typer.echo(f"nasfleet dashboard: http://{shown}:{port}{MOUNT}/ (log in with an API key)", err=True)
        config = uvicorn.Config(standalone_app(store), log_level=log_level,
                                access_log=log_level in ("info", "debug", "trace"))  # fmt: skip
        uvicorn.Server(config).run(sockets=[listening])
