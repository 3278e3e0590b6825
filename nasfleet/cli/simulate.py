"""``nasfleet simulate``: one personalized federated round of N devices on Flower's simulation engine."""

from __future__ import annotations

from typing import Annotated

import click
import typer

from nasfleet.bounds import DEFAULT_REGISTRY_URL
from nasfleet.cli.inputs import space_named
from nasfleet.cli.options import (
    MAX_BATCH_SIZE,
    MAX_SKETCH_RANK,
    BrokerOption,
    BudgetOption,
    LocalWorkersOption,
    RegistryOption,
    SeedOption,
    SpaceOption,
    StrategyOption,
    UnlabeledOption,
    finite,
)  # fmt: skip
from nasfleet.cli.service import check_service_options
from nasfleet.cli.strategies import check_strategy_name


def simulate(
    clients: Annotated[
        int,
        typer.Option(
            "--clients",
            "--num-supernodes",
            min=1,
            max=1000,
            help="Number of simulated edge devices (Flower's num-supernodes).",
        ),
    ] = 4,
    dataset: Annotated[
        str, typer.Option("--dataset", help="digits | synthetic[:N] | cifar10[:DIR]")
    ] = "digits",
    partition_spec: Annotated[
        str, typer.Option("--partition", help="iid | dirichlet:ALPHA | shards:K")
    ] = "dirichlet:0.5",
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds",
            min=1,
            max=100,
            help="Rounds: round 1 trains the searched SubNet; each later round one more, chosen "
            "by the device's model of the fleet's reports.",
        ),
    ] = 2,
    space: SpaceOption = "nb201",
    strategy: StrategyOption = "evolution",
    budget: BudgetOption = 24,
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
        int, typer.Option("--train-epochs", min=1, max=1000, help="Local training epochs (the most).")
    ] = 20,
    train_patience: Annotated[
        int,
        typer.Option(
            "--train-patience",
            min=0,
            max=1000,
            help="Stop after this many epochs without a better validation accuracy (0: never).",
        ),
    ] = 0,
    train_max_seconds: Annotated[
        float,
        typer.Option(
            "--train-max-seconds",
            min=1e-3,
            max=1e6,
            callback=finite,
            help="Cap on one local training's wall time, in seconds: no batch starts after it (the first "
            "always trains); reports give the epochs done.",
        ),
    ] = 60.0,
    augment: Annotated[
        bool, typer.Option("--augment/--no-augment", help="Random shifts (and flips of RGB) in training.")
    ] = False,
    shared_baseline: Annotated[
        bool,
        typer.Option(
            "--shared-baseline/--no-shared-baseline",
            help="Also train, on every device, its tier's shared arch: one data-agnostic search per tier "
            "(the tier's tightest limits), what personalization is measured against.",
        ),
    ] = True,
    tier_limits: Annotated[
        list[str] | None,
        typer.Option(
            "--tier-limits",
            metavar="TIER:LIMITS",
            help="Replace a device tier's limits (tiers: micro, mobile, edge-gpu); repeat for more tiers. "
            "Keys: params and flops (whole numbers, suffix k/M/G; FLOPs at 3x32x32, scaled to the data "
            "as the tiers' own), latency (ms), memory (MiB of weights, which caps params too). "
            "E.g. --tier-limits micro:params=150k,flops=20M.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="The run's name (1-48 characters of [A-Za-z0-9_.-]; default: sim-<random hex>): its "
            "jobs are NAME.<device> and NAME.shared-<tier>, its reports carry it. Rerun with the same "
            "--name to resume: finished searches are reused, not scored again, unfinished or cancelled "
            "ones go on from their checkpoints; local training, later rounds and reports run again. A "
            "device whose job was stored with other settings is refused, naming them.",
        ),
    ] = None,
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    seed: SeedOption = 0,
    broker: BrokerOption = "",
    local_workers: LocalWorkersOption = 2,
) -> None:
    """A federation of N devices on Flower's simulation engine: one personalized round, end to end.

    Every device sends its DP-released data characteristics, constraints and calibrated profile; the
    server submits one search job per device and runs them all at once through the orchestrator and
    Celery workers: without --broker, --local-workers workers started here on a temporary SQLite broker
    file, removed when the command ends; with --broker, also any `nasfleet worker`s on that broker. Each
    scores with the default scorer (aznas_meco_fi) on a synthetic batch rebuilt from the device's
    characteristics; each device trains
    its SubNet locally and reports back, and everything is stored in --registry. Devices are dealt to
    hardware tiers (micro, mobile, edge-gpu), each with its limits (params, FLOPs, latency, weight
    memory); --tier-limits replaces them, and reaches every device as the run config key tier-limits.
    Every run has a name (--name), printed last: the same command with it resumes the run.
    """
    from nasfleet.data.datasets import load_dataset
    from nasfleet.data.partition import device_partition
    from nasfleet.server.federation.config import RoundConfig
    from nasfleet.server.federation.local_run import FlowerRunError
    from nasfleet.server.federation.simulation import simulate as run_federation

    check_strategy_name(strategy)
    space_named(space)
    limits = _tier_limits(tier_limits or [])
    name = _run_name(name)
    check_service_options(broker, registry, local_workers)
    try:  # the devices would each fail on a bad spec; say it once, before starting Flower
        device_partition(load_dataset(dataset).labels, partition_spec, clients, seed)
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from None
    devices: dict[str, bool | float | int | str] = {
        "dataset": dataset,
        "partition": partition_spec,
        "seed": seed,
        "sketches": not no_sketches,
        "labeled": not unlabeled,
    }
    optional = (("epsilon", epsilon), ("sketch-rank", sketch_rank), ("tier-limits", limits or None))
    devices.update({k: v for k, v in optional if v is not None})
    config = RoundConfig(
        num_clients=clients, rounds=rounds, space=space, strategy=strategy, budget=budget,
        probe_batch=probe_batch,
        seed=seed, registry=registry, train_epochs=train_epochs, train_patience=train_patience,
        train_max_seconds=train_max_seconds, train_augment=augment, shared_baseline=shared_baseline,
        broker=broker, workers=local_workers, name=name,
    )  # fmt: skip
    try:
        outcomes = run_federation(config, devices)
    except FlowerRunError as error:
        raise click.ClickException(str(error)) from None
    shown = _shown(registry)
    typer.echo(f"run {name}: rerun with --name {name} to resume; its jobs: nasfleet jobs list --registry "
               f"{shown}", err=True)  # fmt: skip
    dashboard = f"nasfleet dashboard --registry {shown}, open http://127.0.0.1:8080/dashboard/"
    typer.echo(f"registry: {shown}. Dashboard: nasfleet tenants add-key default --registry {shown} "
               f"(prints a key), {dashboard}", err=True)  # fmt: skip
    failed = [o for o in outcomes if not o.ok]
    if len(outcomes) < clients or failed:
        raise click.ClickException(
            f"{len(failed)} device(s) failed, {clients - len(outcomes)} did not connect"
        )


def _run_name(name: str | None) -> str:
    """The run's name: *name* checked, or a fresh ``sim-<hex>`` one."""
    import uuid

    from nasfleet.server.federation.names import check_run_name
    from nasfleet.server.registry import RegistryError

    if name is None:
        return f"sim-{uuid.uuid4().hex[:12]}"
    try:
        return check_run_name(name)
    except RegistryError as error:
        raise typer.BadParameter(str(error), param_hint="--name") from None


def _shown(url: str) -> str:
    """*url* with its password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _tier_limits(given: list[str]) -> str:
    """The ``--tier-limits`` values as one run-config string (``;`` between tiers), once checked."""
    from nasfleet.clients.device import DEVICE_TIERS
    from nasfleet.clients.tiers import parse_tier_limits

    text = ";".join(given)
    try:
        parse_tier_limits(text, [tier.name for tier in DEVICE_TIERS])
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--tier-limits") from None
    return text
