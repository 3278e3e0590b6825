"""``nasfleet serve`` (the tenant HTTP API) and ``nasfleet tenants`` (tenants and their API keys).

``nasfleet serve`` takes the broker, registry and queue options of ``nasfleet worker``: by default an
SQLite broker file and an SQLite registry in the current directory (no server needed), else
``--broker redis://…|amqp://…`` and ``--registry postgresql+psycopg://…``. It starts ``--local-workers``
Celery workers of its own (0: only ``nasfleet worker``s on the same broker score). Unless
``--no-orchestrate``, it runs the submitted jobs too (one orchestrator per registry: give further API
servers ``--no-orchestrate``).

``nasfleet tenants create NAME`` prints the new tenant's API key on stdout, once; the registry keeps only
a salted hash of it. With ``--key-file PATH`` the key goes to a new file instead (mode 0600), which is
created before the tenant, only if nothing is at PATH: a key file is never overwritten, so running the
command twice cannot lose the only copy of a key (as ``> acme.key`` would: the shell empties the file
before the command fails).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nasfleet.bounds import DEFAULT_BROKER_URL, DEFAULT_QUEUE, DEFAULT_REGISTRY_URL, MAX_BUDGET
from nasfleet.cli.options import (
    BrokerOption,
    ConcurrencyOption,
    FormatOption,
    LocalWorkersOption,
    MaxInFlightOption,
    MaxJobsPerTenantOption,
    QueueOption,
    RegistryOption,
    StateDirOption,
)  # fmt: skip
from nasfleet.cli.outputs import ExclusiveFile
from nasfleet.cli.registry import open_registry
from nasfleet.cli.service import celery_settings, service_options
from nasfleet.protocol.messages import MAX_SKETCH_VALUES

if TYPE_CHECKING:
    from nasfleet.server.registry import Registry

tenants_app = typer.Typer(help="Tenants of the HTTP API and their API keys.", no_args_is_help=True)

KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="Write the key to this new file (mode 0600), not stdout; an existing file is never overwritten.",
    ),
]


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    broker: BrokerOption = DEFAULT_BROKER_URL,
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    queue: QueueOption = DEFAULT_QUEUE,
    local_workers: LocalWorkersOption = 1,
    concurrency: ConcurrencyOption = 1,
    orchestrate: Annotated[
        bool, typer.Option("--orchestrate/--no-orchestrate", help="Run the submitted jobs in this server.")
    ] = True,
    max_jobs_per_tenant: MaxJobsPerTenantOption = 4,
    max_in_flight: MaxInFlightOption = 8,
    max_active_jobs: Annotated[
        int,
        typer.Option(
            "--max-active-jobs", min=1, max=100_000, help="Unfinished jobs per tenant; one more is a 429."
        ),
    ] = 8,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1024, max=2**30, help="Larger bodies: 413.")
    ] = 8 * 2**20,
    max_budget: Annotated[
        int, typer.Option("--max-budget", min=1, max=MAX_BUDGET, help="Largest budget of a job.")
    ] = 10_000,
    max_sketch_values: Annotated[
        int,
        typer.Option(
            "--max-sketch-values",
            min=1,
            max=MAX_SKETCH_VALUES,
            help="Values in a request's sketch arrays, at most.",
        ),
    ] = 1_000_000,
    threads: Annotated[
        int, typer.Option("--threads", min=1, max=1000, help="Threads serving requests.")
    ] = 40,
    state_dir: StateDirOption = Path(".nasfleet"),
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "warning",
) -> None:
    """Serve the tenant HTTP API (OpenAPI at /openapi.json, docs at /docs) and run the submitted jobs.

    Without --broker, the broker is a lasting SQLite file in the current directory (see --broker).
    """
    listening = _bind(host, port)  # before anything starts: a taken port is an error at once
    import uvicorn

    from nasfleet.server.api.app import ApiSettings, create_app
    from nasfleet.server.api.runner import ServiceProblems, running_service
    from nasfleet.server.api.validation import Limits
    from nasfleet.server.registry import Registry, RegistryError

    settings = celery_settings(broker, registry, queue)
    options = service_options(local_workers, concurrency, max_jobs_per_tenant, max_in_flight)
    api = ApiSettings(max_body_bytes, max_active_jobs, Limits(max_budget, max_sketch_values), threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with (
            listening,
            running_service(settings, state_dir, options, orchestrate=orchestrate) as (service, loop),
            Registry(settings.registry) as store,  # the API's own connections: load never starves the loop
        ):
            state = (lambda: loop.state) if loop is not None else None
            app = create_app(store, api, state, ServiceProblems(service))
            mode = "embedded" if settings.embedded else "distributed"
            typer.echo(f"nasfleet serve: http://{host}:{port} ({mode} mode, orchestrator "
                       f"{'on' if loop else 'off'})", err=True)  # fmt: skip
            access = log_level in ("info", "debug", "trace")
            config = uvicorn.Config(app, log_level=log_level, access_log=access)
            with _signals_kept():
                uvicorn.Server(config).run(sockets=[listening])
    except RegistryError as error:
        raise typer.BadParameter(str(error), param_hint="--registry") from None


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to *host*:*port*, so that ``serve`` announces its URL only once it holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise typer.BadParameter(
            f"must be free to listen on, but {host}:{port} gave: {error.strerror or error}",
            param_hint="--host/--port",
        ) from None
    return listening


@contextmanager
def _signals_kept() -> Iterator[list[int]]:
    """SIGINT and SIGTERM recorded, not acted on, around uvicorn.

    uvicorn stops on either, then raises it again in the handler it found; by default that would end
    the process before the service stops its local workers. The recorded signals are returned.
    """
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="Tenant name: 1-64 characters of [A-Za-z0-9_.-].")],
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", help="Add a key if the tenant exists.")] = False,
    key_file: KeyFileOption = None,
) -> None:
    """Create a tenant and an API key for it: handed out once (stdout, or --key-file), stored hashed."""
    from nasfleet.server.registry import Registry

    def create(store: Registry) -> str:
        store.create_tenant(name, exist_ok=exist_ok)
        return store.create_api_key(name)

    _issue_key(name, lambda: Registry(registry), create, key_file)


def _issue_key(
    name: str, opened: Callable[[], Registry], create: Callable[[Registry], str], key_file: Path | None
) -> None:
    """Create a key with *create* and hand it out once: into a new *key_file* (made first), else stdout."""
    from nasfleet.server.registry import RegistryError

    target = ExclusiveFile(key_file, "--key-file") if key_file is not None else None
    try:
        with opened() as store:
            key = create(store)
    except BaseException as error:
        if target is not None:
            target.discard()
        if isinstance(error, RegistryError):
            raise typer.BadParameter(str(error)) from None
        raise
    if target is None:
        typer.echo(f"tenant {name!r}: API key shown once below; only its hash is stored", err=True)
        typer.echo(key)
        return
    target.write(key + "\n")
    typer.echo(
        f"tenant {name!r}: API key written to {key_file} (mode 0600); only its hash is stored", err=True
    )


@tenants_app.command("add-key")
def tenants_add_key(
    name: Annotated[str, typer.Argument(help="An existing tenant.")],
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    key_file: KeyFileOption = None,
) -> None:
    """One more API key for an existing tenant (e.g. to rotate keys): once, on stdout or in --key-file."""
    from nasfleet.server.registry import RegistryError

    def create(store: Registry) -> str:
        if store.get_tenant(name) is None:
            raise RegistryError(f"tenant must be a registered tenant name, but got {name!r}")
        return store.create_api_key(name)

    _issue_key(name, lambda: open_registry(registry), create, key_file)


@tenants_app.command("list")
def tenants_list(
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    output_format: FormatOption = "table",
) -> None:
    """Every tenant with its API keys' ids (the secret parts are never stored) and whether revoked."""
    with open_registry(registry) as store:
        tenants = store.list_tenants()
        keys = store.list_api_keys()
    listed: list[dict[str, Any]] = []
    for tenant in tenants:
        own = [key for key in keys if key.tenant == tenant.name]
        listed.append({"tenant": tenant.name, "created_at": tenant.created_at,
                       "active_keys": [key.key_id for key in own if not key.revoked],
                       "revoked_keys": [key.key_id for key in own if key.revoked]})  # fmt: skip
    if output_format == "json":
        typer.echo(
            json.dumps([{**row, "created_at": row["created_at"].isoformat()} for row in listed], indent=2)
        )
        return
    for row in listed:
        active, revoked = ",".join(row["active_keys"]) or "-", len(row["revoked_keys"])
        created = f"{row['created_at']:%Y-%m-%d %H:%M:%S}"
        typer.echo(f"{row['tenant']}\tcreated {created}\tkeys {active}\trevoked {revoked}")


@tenants_app.command("revoke-key")
def tenants_revoke_key(
    key: Annotated[str, typer.Argument(help="The API key, or its id (the part after 'nfk_').")],
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
) -> None:
    """Revoke an API key at once: every later request with it is a 401."""
    with open_registry(registry) as store:
        revoked = store.revoke_api_key(key)
    if not revoked:
        typer.echo("no such active API key", err=True)
        raise typer.Exit(1)
    typer.echo("revoked", err=True)
