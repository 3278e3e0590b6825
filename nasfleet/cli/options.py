"""The option types the ``nasfleet`` commands share: each option is defined here once, with one meaning.

- Numbers are bounded as the HTTP API bounds the same fields (``nasfleet.server.api.schemas``); out of
  range is a usage error naming the option, the range and the value.
- Two kinds of processes, two flags: ``--processes`` score inside this command (``score``, ``bench``),
  ``--local-workers`` are the Celery workers this command starts on this machine.
- ``--registry`` and ``--broker`` fall back to ``NASFLEET_REGISTRY`` and ``NASFLEET_BROKER``, which the
  Celery workers read too.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Annotated

import click
import typer

from nasfleet.bounds import DEFAULT_BROKER_URL, DEVICES, MAX_BATCH_SIZE, MAX_BUDGET, MAX_COUNT, MAX_SEED
from nasfleet.protocol.messages import MAX_CLASSES, MAX_SKETCH_RANK

__all__ = ["MAX_BATCH_SIZE", "MAX_BUDGET", "MAX_CLASSES", "MAX_COUNT", "MAX_SEED", "MAX_SKETCH_RANK"]

MAX_ARCHS = 1_000_000  # architectures one command samples or reads
MAX_PROCESSES = 256

# -- what to score, and how ------------------------------------------------------------------------------
SPACE_HELP = "Search space: a registered name (`nasfleet spaces list`), e.g. nb201."
SpaceOption = Annotated[str, typer.Option("--space", help=SPACE_HELP)]
ArchsOption = Annotated[
    Path, typer.Option("--archs", help="File of arch strings, one a line ('-' for stdin).")
]
SeedOption = Annotated[
    int, typer.Option("--seed", min=0, max=MAX_SEED, help="Random seed; equal seeds give equal results.")
]
DataOption = Annotated[
    str, typer.Option("--data", help="Probe data: synthetic[:N] | digits | cifar10[:DIR] (train split).")
]
BatchSizeOption = Annotated[
    int, typer.Option("--batch-size", min=2, max=MAX_BATCH_SIZE, help="Probe mini-batch size.")
]
ProxiesOption = Annotated[
    str,
    typer.Option(
        "--proxies",
        help="Comma-separated proxies and aggregates (an aggregate brings its input proxies), or 'all'.",
    ),
]
UnlabeledOption = Annotated[
    bool, typer.Option("--unlabeled", help="Probe without labels (alpha = 0): label-free proxies only.")
]
DeviceOption = Annotated[str, typer.Option("--device", help=f"Where to run: {' | '.join(DEVICES)}.")]
ProcessesOption = Annotated[
    int,
    typer.Option(
        "--processes",
        min=1,
        max=MAX_PROCESSES,
        help="Scoring processes inside this command (one thread each; no Celery). Results do not change.",
    ),
]
StrategyOption = Annotated[
    str,
    typer.Option("--strategy", help="Search strategy: a built-in or a plug-in (`nasfleet strategies list`)."),
]
BudgetOption = Annotated[
    int, typer.Option("--budget", min=1, max=MAX_BUDGET, help="Architectures each search evaluates.")
]

# -- the service: registry, broker, workers --------------------------------------------------------------
RegistryOption = Annotated[
    str,
    typer.Option(
        "--registry",
        envvar="NASFLEET_REGISTRY",
        help="Registry URL: sqlite:///FILE or postgresql+psycopg://USER@HOST:PORT/DATABASE.",
    ),
]
BrokerOption = Annotated[
    str,
    typer.Option(
        "--broker",
        envvar="NASFLEET_BROKER",
        help="Celery broker URL: redis://HOST:PORT/DB | amqp://... (a server), or sqlite:///FILE (the "
        "embedded mode: a file, no server, workers on this machine only). Without it, `search` and "
        "`simulate` use a temporary SQLite file, removed when they end; `serve`, `orchestrate` and "
        f"`worker` use {DEFAULT_BROKER_URL}, a file in the current directory that stays.",
    ),
]
FormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        click_type=click.Choice(["table", "json"]),
        help="table (for reading) or json (every field, full arch strings, for programs).",
    ),
]
LocalWorkersOption = Annotated[
    int,
    typer.Option(
        "--local-workers",
        min=0,
        max=MAX_PROCESSES,
        help="Celery worker processes this command starts on this machine. 0 leaves the scoring to "
        "`nasfleet worker`s on the same broker (for `search` and `simulate`: only with --broker). "
        "Results do not change.",
    ),
]
ConcurrencyOption = Annotated[
    int,
    typer.Option(
        "--concurrency", min=1, max=MAX_PROCESSES, help="Pool processes per worker (one torch thread each)."
    ),
]
QueueOption = Annotated[
    str,
    typer.Option("--queue", help="Celery queue the workers consume (default: the registry's deployment's)."),
]
StateDirOption = Annotated[Path, typer.Option("--state-dir", help="Directory for the local workers' logs.")]
MaxJobsPerTenantOption = Annotated[
    int,
    typer.Option("--max-jobs-per-tenant", min=1, max=10_000, help="Jobs of one tenant searched at once."),
]
MaxInFlightOption = Annotated[
    int, typer.Option("--max-in-flight", min=1, max=100_000, help="Archs sent, unanswered.")
]
WaitOption = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        max=86_400,
        help="Seconds to keep retrying an unreachable registry (`worker`: or broker); then exit 1.",
    ),
]


def finite(value: float | None) -> float | None:
    """A float option's value, if finite (click's ranges let nan through)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, but got {value!r}")
    return value


def command_line(ctx: typer.Context, **resolved: object) -> str:
    """The invoked command with every option spelled out (defaults and ``resolved`` values included)."""
    words = ["nasfleet", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        value = resolved.get(param.name or "", ctx.params.get(param.name or ""))
        if not isinstance(param, click.Option) or value is None or value is False:
            continue
        words.extend([param.opts[0]] if value is True else [param.opts[0], str(value)])
    return shlex.join(words)
