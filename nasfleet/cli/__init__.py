"""The ``nasfleet`` command line. Names become classes only here, at the edge."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import numpy as np
import typer

import nasfleet.proxies  # noqa: F401 - importing the package fills the proxy and aggregate registries
from nasfleet.cli.options import (
    DEFAULT_REGISTRY,
    MAX_ARCHS,
    MAX_BATCH_SIZE,
    MAX_BUDGET,
    MAX_CLASSES,
    MAX_COUNT,
    MAX_SKETCH_RANK,
    BatchSizeOption,
    DataOption,
    DeviceOption,
    ProxiesOption,
    RegistryOption,
    SeedOption,
    ServiceBrokerOption,
    ServiceWorkersOption,
    SpaceOption,
    UnlabeledOption,
    WorkersOption,
    finite,
)  # fmt: skip
from nasfleet.cli.outputs import check_output, check_output_directory, write_csv, write_output
from nasfleet.cli.registry import registry_app
from nasfleet.cli.serve import serve, tenants_app
from nasfleet.cli.service import orchestrate, worker
from nasfleet.proxies.base import ProxyError
from nasfleet.proxies.engine import add_aggregates, check_device, expand_names, score_archs
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.spaces import ArchitectureError, Genome, InputShape, SearchSpace, get_space
from nasfleet.spaces.base import check_input_shape

if TYPE_CHECKING:
    from nasfleet.data.datasets import Dataset
    from nasfleet.search import SearchConfig, SearchResult

app = typer.Typer(
    help="Federated, multi-tenant, training-free neural architecture search.", no_args_is_help=True
)
space_app = typer.Typer(
    help="Inspect search spaces: sample, enumerate and cost architectures.", no_args_is_help=True
)
app.add_typer(space_app, name="space")
bench_app = typer.Typer(
    help="Benchmark proxies against ground truth: rank correlation and cost.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


def _space(name: str) -> SearchSpace:
    try:
        return get_space(name)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--space") from None


def parse_input_shape(text: str) -> InputShape:
    """Parse ``C,H,W`` into a validated input shape."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"must be three integers C,H,W, but got {text!r}", param_hint="--input-shape"
        ) from None
    try:
        return check_input_shape(values, num_classes=2)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--input-shape") from None


def read_archs(space: SearchSpace, path: Path) -> Iterator[tuple[str, Genome]]:
    """Arch strings of a file (one a line; blank lines and ``#`` comments skipped), validated."""
    lines = sys.stdin.read().splitlines() if str(path) == "-" else path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            yield text, space.decode(text)
        except ArchitectureError as error:
            raise typer.BadParameter(f"line {number}: {error}", param_hint="--archs") from None


@space_app.command("sample")
def space_sample(
    space: SpaceOption = "nb201",
    n: Annotated[int, typer.Option("--n", min=1, max=MAX_ARCHS, help="How many architectures.")] = 10,
    seed: SeedOption = 0,
) -> None:
    """Print N random architectures as canonical strings, one a line."""
    search_space, rng = _space(space), np.random.default_rng(seed)
    for _ in range(n):
        typer.echo(search_space.encode(search_space.sample(rng)))


@space_app.command("enumerate")
def space_enumerate(space: SpaceOption = "nb201") -> None:
    """Print every architecture of a finite space (nb201: all 15,625), one a line."""
    search_space = _space(space)
    all_archs = getattr(search_space, "all_archs", None)
    if all_archs is None:
        raise typer.BadParameter(f"space {space!r} is too large to enumerate", param_hint="--space")
    for arch in all_archs():
        typer.echo(search_space.encode(arch))


@space_app.command("cost")
def space_cost(
    archs: Annotated[Path, typer.Option("--archs", help="File of arch strings, one a line ('-' for stdin).")],
    out: Annotated[Path, typer.Option("--out", help="CSV to write (- for stdout): arch,params,flops.")],
    space: SpaceOption = "nb201",
    num_classes: Annotated[
        int, typer.Option("--num-classes", min=2, max=MAX_CLASSES, help="Classifier outputs.")
    ] = 10,
    input_shape: Annotated[str, typer.Option("--input-shape", help="Input C,H,W.")] = "3,32,32",
) -> None:
    """Exact parameters and FLOPs (multiply-accumulates, NAS-Bench-201 API convention) of each arch."""
    search_space, shape = _space(space), parse_input_shape(input_shape)
    check_output(out)
    if str(archs) != "-" and not archs.is_file():
        raise typer.BadParameter(f"no such file: {archs}", param_hint="--archs")
    rows: list[list[object]] = []
    for text, genome in read_archs(search_space, archs):
        try:
            cost = search_space.cost(genome, num_classes, shape)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--input-shape") from None
        rows.append([text, cost.params, cost.flops])
    where = write_csv(out, ["arch", "params", "flops"], rows)
    typer.echo(f"wrote {len(rows)} rows to {where}", err=True)


def _expand(proxies: str, labeled: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        return expand_names(proxies, labeled)
    except ProxyError as error:
        raise typer.BadParameter(str(error), param_hint="--proxies") from None


def _train_split(data: str) -> Dataset:
    """The train split of ``data``."""
    from nasfleet.data.datasets import load_dataset

    try:
        return load_dataset(data, "train")
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error), param_hint="--data") from None


def _probe_batch(
    data: str, batch_size: int, seed: int, labeled: bool, dataset: Dataset | None = None
) -> ProbeBatch:
    """The seeded probe mini-batch of the train split of ``data`` (``dataset``, if already loaded)."""
    dataset = _train_split(data) if dataset is None else dataset
    try:
        return ProbeBatch.from_dataset(dataset, batch_size, seed, labeled)
    except ValueError as error:
        raise typer.BadParameter(f"{error} (samples in {data!r})", param_hint="--batch-size") from None


def _device(device: str) -> str:
    try:
        check_device(device)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--device") from None
    return device


def _command_line(ctx: typer.Context, **resolved: object) -> str:
    """The invoked command with every option spelled out (defaults and ``resolved`` values included)."""
    words = ["nasfleet", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        value = resolved.get(param.name or "", ctx.params.get(param.name or ""))
        if not isinstance(param, click.Option) or value is None or value is False:
            continue
        words.extend([param.opts[0]] if value is True else [param.opts[0], str(value)])
    return shlex.join(words)


@app.command()
def score(
    archs: Annotated[Path, typer.Option("--archs", help="File of arch strings, one a line ('-' for stdin).")],
    out: Annotated[
        Path, typer.Option("--out", help="CSV (- for stdout): arch, raw proxy values, aggregates, seconds.")
    ],
    space: SpaceOption = "nb201",
    data: DataOption = "synthetic",
    batch_size: BatchSizeOption = 64,
    proxies: ProxiesOption = "fgnas",
    seed: SeedOption = 0,
    unlabeled: UnlabeledOption = False,
    device: DeviceOption = "cpu",
    workers: WorkersOption = 1,
) -> None:
    """Proxy values of each arch of a file: one CSV row per arch, in canonical form.

    Columns: arch, one per raw proxy, one per requested aggregate (ranked over the whole file, higher is
    better), and seconds (building, probing and every proxy for that arch).
    """
    search_space, labeled = _space(space), not unlabeled
    proxy_names, aggregate_names = _expand(proxies, labeled)
    check_output(out)
    if str(archs) != "-" and not archs.is_file():
        raise typer.BadParameter(f"no such file: {archs}", param_hint="--archs")
    genomes = [genome for _, genome in read_archs(search_space, archs)]
    if not genomes:
        raise typer.BadParameter(f"must hold at least one arch, but {archs} holds none", param_hint="--archs")
    batch = _probe_batch(data, batch_size, seed, labeled)
    try:
        table = score_archs(
            search_space, genomes, batch, proxy_names, seed=seed, device=_device(device), workers=workers
        )
        aggregates = add_aggregates(table, aggregate_names, labeled)
    except ProxyError as error:
        raise click.ClickException(f"scoring failed, nothing written: {error}") from None
    header, rows = table.rows(aggregates)
    where = write_csv(out, header, rows)
    typer.echo(f"wrote {len(rows)} rows to {where}", err=True)


@bench_app.command("correlation")
def bench_correlation(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Directory for scores.csv, report.json/.md and PNGs.")],
    ground_truth: Annotated[
        Path | None,
        typer.Option(
            "--ground-truth",
            help="CSV with an arch_str column and accuracy columns.",
            show_default="nas-bench-201/nb201-accuracy-200ep.csv in $NASFLEET_DATA or ../shared/data",
        ),
    ] = None,
    column: Annotated[
        str, typer.Option("--column", help="Accuracy column to rank against.")
    ] = "cifar10_test",
    sample: Annotated[
        int, typer.Option("--sample", min=3, max=MAX_ARCHS, help="Architectures to draw (seeded).")
    ] = 200,
    space: SpaceOption = "nb201",
    data: DataOption = "cifar10",
    batch_size: BatchSizeOption = 64,
    proxies: ProxiesOption = "all",
    seed: SeedOption = 0,
    unlabeled: UnlabeledOption = False,
    device: DeviceOption = "cpu",
    workers: WorkersOption = 1,
    timing_sample: Annotated[
        int, typer.Option("--timing-sample", min=1, max=1000, help="Archs each proxy is timed alone on.")
    ] = 5,
) -> None:
    """Spearman and Kendall correlation of proxies with ground-truth accuracy, cost per arch, plots.

    Accuracies are read only after scoring, to measure; they never reach a proxy or an aggregate.
    """
    from nasfleet.bench import CorrelationRun, run_correlation
    from nasfleet.data.datasets import default_data_dir

    truth = ground_truth or default_data_dir() / "nas-bench-201" / "nb201-accuracy-200ep.csv"
    if not truth.is_file():
        raise typer.BadParameter(f"no such file: {truth}", param_hint="--ground-truth")
    labeled = not unlabeled
    _expand(proxies, labeled)
    check_output_directory(out)
    run = CorrelationRun(
        _space(space), truth, column, sample, seed, data, _probe_batch(data, batch_size, seed, labeled),
        proxies, labeled, _device(device), workers, timing_sample, _command_line(ctx, ground_truth=truth),
    )  # fmt: skip
    try:
        report = run_correlation(run, out)
    except ProxyError as error:
        raise click.ClickException(f"scoring failed, nothing written: {error}") from None
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    best = report["results"][0]
    typer.echo(f"wrote {out}; best {column} Spearman: {best['name']} {best['spearman']}", err=True)


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


def _check_strategy_name(name: str) -> None:
    """Nothing if ``name`` is an available strategy; else an error listing the known ones."""
    from nasfleet.strategies import discover_strategies

    entries, problems = discover_strategies()
    if name in entries:
        return
    for problem in problems:
        if problem.name == name:
            raise typer.BadParameter(str(problem), param_hint="--strategy")
    raise typer.BadParameter(f"must be one of {sorted(entries)}, but got {name!r}", param_hint="--strategy")


def _search_config(**fields: Any) -> SearchConfig:
    from nasfleet.search import SearchConfig, SearchError
    from nasfleet.strategies import Constraints, StrategyError

    try:
        constraints = Constraints(max_params=fields.pop("max_params"), max_flops=fields.pop("max_flops"))
        return SearchConfig(**fields, constraints=constraints)
    except (SearchError, StrategyError) as error:
        raise typer.BadParameter(str(error)) from None


def _search_summary(result: SearchResult) -> str:
    return (
        f"best {result.best_arch} (score {result.best_score:.4g}, {result.best_params:,} params, "
        f"{result.best_flops / 1e6:.2f} MFLOPs); {result.evaluations} evaluations "
        f"({result.unique_evaluations} unique) in {result.wall_seconds:.1f} s, "
        f"strategy overhead {result.overhead_fraction:.1%}"
    )


CONSTRAINT_HINT = "--max-params / --max-flops"


def _check_service(broker: str, registry: str, workers: int) -> None:
    """The service options make sense: a known broker scheme, and a local worker when embedded."""
    from nasfleet.server.service.celery_app import CelerySettings, SettingsError

    if not broker and workers < 1:
        raise typer.BadParameter(
            "must be at least 1 without --broker (embedded mode)", param_hint="--workers"
        )
    try:
        CelerySettings(broker=broker or "sqlite:///embedded.sqlite", registry=registry)
    except SettingsError as error:
        raise typer.BadParameter(str(error)) from None


def _redacted(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url)) if url else url


@app.command()
def search(
    ctx: typer.Context,
    strategy: Annotated[
        str, typer.Option("--strategy", help="Search strategy (see `nasfleet strategies list`).")
    ],
    budget: Annotated[
        int, typer.Option("--budget", min=1, max=MAX_BUDGET, help="Architectures to evaluate.")
    ],
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
    ] = "fgnas",
    tenant: Annotated[str, typer.Option("--tenant", help="Registry tenant the job belongs to.")] = "default",
    registry: RegistryOption = DEFAULT_REGISTRY,
    broker: ServiceBrokerOption = "",
    workers: ServiceWorkersOption = 1,
) -> None:
    """One personalized search, run as a job of the service: ask/tell with fitness re-ranked over the
    archive → JSON.

    The job goes to the registry (under --tenant), the orchestrator runs it through Celery workers, which
    score each arch on a seeded mini-batch of --data's train split: embedded by default (local workers,
    no server), or through --broker on `nasfleet worker`s elsewhere (with a shared --registry). An arch
    already scored with the same data, batch and seed (by any job) comes from the registry's cache.
    Every arch is feasible under the constraints (exact params/FLOPs for the data's shape) and scored at
    most once. The JSON holds the best arch with its raw proxy values and cost, the best-so-far history,
    the archive, timing (scoring against orchestration overhead), the strategy's state and the job.
    """
    from nasfleet.clients.characteristics import extract_characteristics
    from nasfleet.protocol.messages import ResourceConstraints
    from nasfleet.search import SearchError, make_strategy
    from nasfleet.server.registry import RegistryError
    from nasfleet.server.registry.models import check_name
    from nasfleet.server.service.celery_app import SettingsError
    from nasfleet.server.service.jobs import JobOptions
    from nasfleet.server.service.search_job import search_through_service
    from nasfleet.strategies import InfeasibleSearchError, StrategyError

    search_space, labeled = _space(space), not unlabeled
    options = _strategy_options(strategy_config)
    _check_strategy_name(strategy)
    check_output(out)
    config = _search_config(
        space=space, strategy=strategy, budget=budget, seed=seed, ask_size=ask, strategy_config=options,
        labeled=labeled, aggregate=aggregate, max_params=max_params, max_flops=max_flops,
    )  # fmt: skip
    try:
        check_name("tenant", tenant)
    except RegistryError as error:
        raise typer.BadParameter(str(error), param_hint="--tenant") from None
    _check_service(broker, registry, workers)
    dataset = _train_split(data)
    batch = _probe_batch(data, batch_size, seed, labeled, dataset)
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
            characteristics, tenant=tenant, space=space, strategy=strategy, budget=budget, seed=seed,
            strategy_config=options, constraints=ResourceConstraints(max_params, max_flops),
            options=job_options, registry=registry, broker=broker, workers=workers,
        )  # fmt: skip
    except (ProxyError, SearchError, StrategyError) as error:
        raise click.ClickException(f"search failed, nothing written: {error}") from None
    except (RegistryError, RuntimeError, SettingsError) as error:
        raise click.ClickException(
            f"the service could not run the search, nothing written: {error}"
        ) from None
    command = _command_line(ctx, registry=_redacted(registry), broker=_redacted(broker) or None)
    payload = {**done.result.to_dict(), "data": data, "command": command, "service": done.service}
    where = write_output(out, json.dumps(payload, indent=2) + "\n")
    typer.echo(f"wrote {where}; {_search_summary(done.result)}", err=True)


@app.command()
def simulate(
    clients: Annotated[
        int, typer.Option("--clients", min=1, max=1000, help="Number of simulated edge devices.")
    ] = 4,
    dataset: Annotated[
        str, typer.Option("--dataset", help="digits | synthetic[:N] | cifar10[:DIR]")
    ] = "digits",
    partition_spec: Annotated[
        str, typer.Option("--partition", help="iid | dirichlet:ALPHA | shards:K")
    ] = "dirichlet:0.5",
    space: SpaceOption = "nb201",
    strategy: Annotated[
        str, typer.Option("--strategy", help="Search strategy of every device.")
    ] = "evolution",
    budget: Annotated[
        int, typer.Option("--budget", min=1, max=MAX_BUDGET, help="Evaluations per device search.")
    ] = 24,
    epsilon: Annotated[
        float | None,
        typer.Option("--epsilon", min=1e-6, max=1e6, callback=finite, help="DP epsilon of the sketches."),
    ] = None,
    sketch_rank: Annotated[
        int | None, typer.Option("--sketch-rank", min=1, max=MAX_SKETCH_RANK, help="Covariance sketch rank.")
    ] = None,
    no_sketches: Annotated[
        bool, typer.Option("--no-sketches", help="Devices opt out of sending sketches.")
    ] = False,
    unlabeled: UnlabeledOption = False,
    probe_batch: Annotated[
        int, typer.Option("--probe-batch", min=2, max=MAX_BATCH_SIZE, help="Synthetic probe batch size.")
    ] = 32,
    train_epochs: Annotated[
        int, typer.Option("--train-epochs", min=1, max=1000, help="Local training epochs.")
    ] = 2,
    shared_baseline: Annotated[
        bool,
        typer.Option("--shared-baseline", help="Also train one shared arch (tightest limits) per device."),
    ] = False,
    registry: RegistryOption = DEFAULT_REGISTRY,
    seed: SeedOption = 0,
    broker: ServiceBrokerOption = "",
    workers: ServiceWorkersOption = 2,
) -> None:
    """A federation of N devices on Flower's simulation engine: one personalized round, end to end.

    Every device sends its DP-released data characteristics, constraints and calibrated profile; the
    server submits one search job per device and runs them all at once through the orchestrator and
    Celery workers (embedded by default; --broker for `nasfleet worker`s elsewhere), each scoring with
    FG-NAS on a synthetic batch rebuilt from the device's characteristics; each device trains its SubNet
    locally and reports back, and everything is stored in the registry.
    """
    from nasfleet.data.datasets import load_dataset
    from nasfleet.data.partition import partition
    from nasfleet.server.federation.app import RoundConfig
    from nasfleet.server.federation.simulation import simulate as run_federation

    _check_strategy_name(strategy)
    _space(space)
    _check_service(broker, registry, workers)
    try:  # the devices would each fail on a bad spec; say it once, before starting Flower
        partition(load_dataset(dataset).labels, partition_spec, clients, seed)
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from None
    devices: dict[str, bool | float | int | str] = {
        "dataset": dataset,
        "partition": partition_spec,
        "seed": seed,
        "sketches": not no_sketches,
        "labeled": not unlabeled,
    }
    devices.update({k: v for k, v in (("epsilon", epsilon), ("sketch-rank", sketch_rank)) if v is not None})
    config = RoundConfig(
        num_clients=clients,
        space=space,
        strategy=strategy,
        budget=budget,
        probe_batch=probe_batch,
        seed=seed,
        registry=registry,
        train_epochs=train_epochs,
        shared_baseline=shared_baseline,
        broker=broker,
        workers=workers,
    )
    outcomes = run_federation(config, devices)
    failed = [o for o in outcomes if not o.ok]
    if len(outcomes) < clients or failed:
        raise click.ClickException(
            f"{len(failed)} device(s) failed, {clients - len(outcomes)} did not connect"
        )


app.add_typer(registry_app, name="registry")
app.command()(worker)
app.command()(orchestrate)
app.command()(serve)
app.add_typer(tenants_app, name="tenants")

strategies_app = typer.Typer(
    help="Search strategies: the built-ins and installed plug-ins.", no_args_is_help=True
)
app.add_typer(strategies_app, name="strategies")


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


def main() -> None:
    """Entry point of the ``nasfleet`` console script."""
    app()
