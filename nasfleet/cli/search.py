"""``nasfleet search``: one personalized search, run as a job of the service, written as JSON.

Everything a user can get wrong (strategy and its options, constraints, tenant, service URLs, data) is
checked before the service starts; the search itself runs in `search_through_service`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from nasfleet.bounds import DEFAULT_AGGREGATE, DEFAULT_REGISTRY_URL
from nasfleet.cli.inputs import probe_batch, space_named, train_split
from nasfleet.cli.options import (
    MAX_COUNT,
    BatchSizeOption,
    BrokerOption,
    BudgetOption,
    DataOption,
    LocalWorkersOption,
    RegistryOption,
    SeedOption,
    SpaceOption,
    StrategyOption,
    UnlabeledOption,
    command_line,
)  # fmt: skip
from nasfleet.cli.outputs import check_output, write_output
from nasfleet.cli.service import check_service_options
from nasfleet.cli.strategies import check_strategy_name

if TYPE_CHECKING:
    from nasfleet.search import SearchConfig, SearchResult
    from nasfleet.server.registry import JobRecord

CONSTRAINT_HINT = "--max-params / --max-flops"


def _strategy_options(text: str) -> dict[str, object]:
    """The ``--strategy-config`` JSON object (the strategy itself checks its keys and values)."""
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(
            f"must be a JSON object, but {error} in {text!r}", param_hint="--strategy-config"
        ) from None
    if not isinstance(options, dict):
        raise typer.BadParameter(f"must be a JSON object, but got {text!r}", param_hint="--strategy-config")
    return options


def _search_config(**fields: Any) -> SearchConfig:
    from nasfleet.search import SearchConfig, SearchError
    from nasfleet.strategies import SearchLimits, StrategyError

    try:
        constraints = SearchLimits(max_params=fields.pop("max_params"), max_flops=fields.pop("max_flops"))
        return SearchConfig(**fields, constraints=constraints)
    except (SearchError, StrategyError) as error:
        raise typer.BadParameter(str(error)) from None


def _check_tenant(tenant: str) -> None:
    from nasfleet.server.registry import RegistryError
    from nasfleet.server.registry.checks import check_name

    try:
        check_name("tenant", tenant)
    except RegistryError as error:
        raise typer.BadParameter(str(error), param_hint="--tenant") from None


def _job_name(name: str | None) -> str:
    """The job's name: *name* checked, or a fresh ``search-<hex>`` one."""
    import uuid

    from nasfleet.server.registry import RegistryError
    from nasfleet.server.registry.checks import check_name

    if name is None:
        return f"search-{uuid.uuid4().hex[:12]}"
    try:
        return check_name("name", name)
    except RegistryError as error:
        raise typer.BadParameter(str(error), param_hint="--name") from None


def _interrupted(job: JobRecord, kept: int) -> str:
    """The one line Ctrl-C prints: what became of the job, and how to resume it."""
    if job.status != "cancelled":
        return f"interrupted: job {job.id} ({job.name}) had {job.status} already"
    return (
        f"interrupted: job {job.id} ({job.name}) cancelled with {kept} of {job.budget} evaluations "
        f"scored; they are kept; rerun with --name {job.name} to resume"
    )


def _summary(result: SearchResult) -> str:
    return (
        f"best {result.best_arch} (score {result.best_score:.4g}, {result.best_params:,} params, "
        f"{result.best_flops / 1e6:.2f} MFLOPs); {result.evaluations} evaluations "
        f"({result.unique_evaluations} unique) in {result.wall_seconds:.1f} s, "
        f"strategy overhead {result.overhead_fraction:.1%}"
    )


def _redacted(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url)) if url else url


def search(
    ctx: typer.Context,
    strategy: StrategyOption,
    budget: BudgetOption,
    out: Annotated[
        Path, typer.Option("--out", help="JSON (- for stdout): best SubNet, history, timing, state.")
    ],
    space: SpaceOption = "nb201",
    seed: SeedOption = 0,
    data: DataOption = "synthetic",
    batch_size: BatchSizeOption = 64,
    ask: Annotated[int, typer.Option("--ask", min=1, max=256, help="Architectures asked per step.")] = 8,
    max_params: Annotated[
        int | None, typer.Option("--max-params", min=1, max=MAX_COUNT, help="Largest parameter count.")
    ] = None,
    max_flops: Annotated[
        int | None, typer.Option("--max-flops", min=1, max=MAX_COUNT, help="Largest FLOP (MAC) count.")
    ] = None,
    unlabeled: UnlabeledOption = False,
    strategy_config: Annotated[
        str,
        typer.Option("--strategy-config", help='Strategy options as a JSON object, e.g. {"sample_size": 3}.'),
    ] = "{}",
    aggregate: Annotated[
        str, typer.Option("--aggregate", help="Fitness: an aggregate over the archive.")
    ] = DEFAULT_AGGREGATE,
    tenant: Annotated[str, typer.Option("--tenant", help="Registry tenant the job belongs to.")] = "default",
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="The job's name (unique per tenant; default: search-<random hex>). A name the tenant used "
            "resumes that job: a done one writes its stored result, a cancelled or interrupted one goes on "
            "from its checkpoint; other settings than the stored job's are refused.",
        ),
    ] = None,
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    broker: BrokerOption = "",
    local_workers: LocalWorkersOption = 1,
    wait_for_workers: Annotated[
        float,
        typer.Option(
            "--wait-for-workers",
            min=0,
            max=86_400,
            help="With --local-workers 0: seconds to wait for a `nasfleet worker` to beat in the registry; "
            "then exit 1 saying no worker consumes the queue.",
        ),
    ] = 10.0,
) -> None:
    """One personalized search, run as a job of the service: ask/tell with fitness re-ranked over the
    archive → JSON.

    The job is stored in --registry (under --tenant) and Celery workers score each arch on a seeded
    mini-batch of --data's train split. Without --broker, this command starts --local-workers workers on a
    temporary SQLite broker file, removed when it ends (no server needed); with --broker, its local
    workers and any `nasfleet worker`s on that broker (sharing the --registry) score. An arch already
    scored with the same data, batch and seed (by any job) comes from the registry's cache. Every arch is
    feasible under the constraints (exact params/FLOPs for the data's shape) and scored at most once.
    The JSON holds the best arch with its raw proxy values and cost, the best-so-far history, the
    archive, timing (scoring against orchestration overhead), the strategy's state and the job.
    Ctrl-C cancels the job (exit 130) and keeps what it scored: rerun with its --name to resume it. An
    unreachable --broker is an error within seconds.

    Why the scores are relative (every aggregate, the default and FG-NAS alike): an arch's score combines the
    ranks of its proxy values among every arch scored so far (the archive), so the current best's score can go
    down when later archs outrank it on one proxy, though nothing got worse. The progress therefore leads with
    a monotone "best so far pNN.N": the highest percentile rank any arch had among the archive when it was
    scored (fixed once computed, so it only rises). The JSON history has both, per step: score and
    best_percentile. See docs/scoring.md.
    """
    from nasfleet.clients.characteristics import extract_characteristics
    from nasfleet.protocol.messages import ResourceConstraints
    from nasfleet.proxies.base import ProxyError
    from nasfleet.search import SearchError, make_strategy
    from nasfleet.server.registry import RegistryError
    from nasfleet.server.service.celery_app import SettingsError
    from nasfleet.server.service.jobs import JobOptions
    from nasfleet.server.service.named_jobs import JobSettingsError
    from nasfleet.server.service.search_job import SearchInterruptedError, search_through_service
    from nasfleet.strategies import InfeasibleSearchError, StrategyError

    search_space, labeled = space_named(space), not unlabeled
    options = _strategy_options(strategy_config)
    check_strategy_name(strategy)
    check_output(out)
    config = _search_config(
        space=space, strategy=strategy, budget=budget, seed=seed, ask_size=ask, strategy_config=options,
        labeled=labeled, aggregate=aggregate, max_params=max_params, max_flops=max_flops,
    )  # fmt: skip
    _check_tenant(tenant)
    name = _job_name(name)
    check_service_options(broker, registry, local_workers)
    dataset = train_split(data)
    batch = probe_batch(data, batch_size, seed, labeled, dataset)
    try:
        # Checked here, before any service starts: the strategy's options and that some arch is feasible.
        make_strategy(search_space, config, batch).feasible_sample()
    except InfeasibleSearchError as error:
        raise typer.BadParameter(f"{error}; nothing written", param_hint=CONSTRAINT_HINT) from None
    except StrategyError as error:
        raise typer.BadParameter(str(error), param_hint="--strategy-config") from None
    characteristics = extract_characteristics(dataset, labeled=labeled, seed=seed, sketches=False)
    job_options = JobOptions(ask_size=ask, aggregate=aggregate, batch_size=batch_size, scoring_seed=seed,
                             probe_data=data)  # fmt: skip
    try:
        done = search_through_service(
            characteristics, tenant=tenant, name=name, space=space, strategy=strategy, budget=budget,
            seed=seed, strategy_config=options, constraints=ResourceConstraints(max_params, max_flops),
            options=job_options, registry=registry, broker=broker, workers=local_workers,
            wait_for_workers_s=wait_for_workers,
        )  # fmt: skip
    except SearchInterruptedError as interrupted:
        typer.echo(_interrupted(interrupted.job, interrupted.kept), err=True)
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # before the job was opened or resumed
        typer.echo(f"interrupted: the service was starting; job {name} was not run", err=True)
        raise typer.Exit(130) from None
    except JobSettingsError as error:
        raise typer.BadParameter(str(error), param_hint="--name") from None
    except (ProxyError, SearchError, StrategyError) as error:
        raise click.ClickException(f"search failed, nothing written: {error}") from None
    except (RegistryError, RuntimeError, SettingsError) as error:
        raise click.ClickException(
            f"the service could not run the search, nothing written: {error}"
        ) from None
    command = command_line(ctx, registry=_redacted(registry), broker=_redacted(broker) or None)
    payload = {**done.result.to_dict(), "data": data, "command": command, "service": done.service}
    where = write_output(out, json.dumps(payload, indent=2) + "\n")
    stored = f"job {name} was done already, its stored result: " if done.service["done_before"] else ""
    typer.echo(f"wrote {where}; {stored}{_summary(done.result)}", err=True)
