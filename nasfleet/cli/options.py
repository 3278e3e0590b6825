"""The options several ``nasfleet`` commands share, each with its finite range.

Numeric options are bounded as the HTTP API bounds the same fields (``nasfleet.server.api.schemas``):
seeds in [0, 2**31 - 1], budgets up to 1,000,000, parameter and FLOP limits up to 10**15; batch sizes
as the synthetic probe batch (2..4096), processes up to 256. Out of range is a usage error naming the
option, the range and the value.
"""

from __future__ import annotations

import math
from typing import Annotated

import typer

from nasfleet.protocol.messages import MAX_CLASSES, MAX_SKETCH_RANK
from nasfleet.proxies.engine import DEVICES
from nasfleet.search.probe import MAX_BATCH_SIZE
from nasfleet.server.api.schemas import MAX_BUDGET, MAX_COUNT, MAX_SEED
from nasfleet.spaces import SPACES

__all__ = ["MAX_BATCH_SIZE", "MAX_BUDGET", "MAX_CLASSES", "MAX_COUNT", "MAX_SEED", "MAX_SKETCH_RANK"]

MAX_ARCHS = 1_000_000  # architectures one command samples or reads
MAX_PROCESSES = 256
SpaceOption = Annotated[str, typer.Option("--space", help=f"Search space: {', '.join(sorted(SPACES))}.")]
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
WorkersOption = Annotated[
    int, typer.Option("--workers", min=1, max=MAX_PROCESSES, help="Scoring processes (one thread each).")
]


def finite(value: float | None) -> float | None:
    """A float option's value, if finite (click's ranges let nan through)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, but got {value!r}")
    return value


DEFAULT_REGISTRY = "sqlite:///nasfleet-registry.db"
RegistryOption = Annotated[
    str,
    typer.Option(
        "--registry",
        envvar="NASFLEET_REGISTRY",
        help="Registry URL: sqlite:///FILE or postgresql+psycopg://...",
    ),
]
ServiceBrokerOption = Annotated[
    str,
    typer.Option(
        "--broker",
        envvar="NASFLEET_BROKER",
        help="Celery broker: none for the embedded mode (SQLite, no server) | redis://HOST:PORT/DB | amqp://...",
    ),
]
ServiceWorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        min=0,
        max=MAX_PROCESSES,
        help="Local Celery worker processes (one torch thread each): at least 1 embedded; with --broker, "
        "0 leaves the scoring to `nasfleet worker`s started elsewhere. Results do not change.",
    ),
]
