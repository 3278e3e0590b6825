"""``nasfleet score`` and ``nasfleet bench``: proxy values of given architectures, and their benchmark.

Both score in this process (``--processes`` of them, no Celery) on the seeded probe batch of ``--data``;
a proxy that fails leaves nothing written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import click
import typer

from nasfleet.bounds import DEFAULT_AGGREGATE, MAX_REPEATS, MIN_SAMPLE
from nasfleet.cli.inputs import checked_device, expand_proxies, probe_batch, read_archs, space_named
from nasfleet.cli.options import (
    MAX_ARCHS,
    ArchsOption,
    BatchSizeOption,
    DataOption,
    DeviceOption,
    ProcessesOption,
    ProxiesOption,
    SeedOption,
    SpaceOption,
    UnlabeledOption,
    command_line,
)  # fmt: skip
from nasfleet.cli.outputs import check_output, check_output_directory, write_csv

bench_app = typer.Typer(
    help="Benchmark proxies against ground truth: rank correlation and cost.", no_args_is_help=True
)


@contextmanager
def _scoring() -> Iterator[None]:
    """A proxy's failure as the command's error: nothing is written."""
    from nasfleet.proxies.base import ProxyError

    try:
        yield
    except ProxyError as error:
        raise click.ClickException(f"scoring failed, nothing written: {error}") from None


def score(
    archs: ArchsOption,
    out: Annotated[
        Path, typer.Option("--out", help="CSV (- for stdout): arch, raw proxy values, aggregates, seconds.")
    ],
    space: SpaceOption = "nb201",
    data: DataOption = "synthetic",
    batch_size: BatchSizeOption = 64,
    proxies: ProxiesOption = DEFAULT_AGGREGATE,
    seed: SeedOption = 0,
    unlabeled: UnlabeledOption = False,
    device: DeviceOption = "cpu",
    processes: ProcessesOption = 1,
) -> None:
    """Proxy values of each arch of a file: one CSV row per arch, in canonical form.

    Columns: arch, one per raw proxy, one per requested aggregate (ranked over the whole file, higher is
    better), and seconds (building, probing and every proxy for that arch).
    """
    from nasfleet.proxies.engine import add_aggregates, score_archs

    search_space, labeled = space_named(space), not unlabeled
    proxy_names, aggregate_names = expand_proxies(proxies, labeled)
    check_output(out)
    genomes = [genome for _, genome in read_archs(search_space, archs)]
    if not genomes:
        raise typer.BadParameter(f"must hold at least one arch, but {archs} holds none", param_hint="--archs")
    batch = probe_batch(data, batch_size, seed, labeled)
    with _scoring():
        table = score_archs(
            search_space, genomes, batch, proxy_names, seed=seed, device=checked_device(device),
            workers=processes,
        )  # fmt: skip
        aggregates = add_aggregates(table, aggregate_names, labeled)
    header, rows = table.rows(aggregates)
    where = write_csv(out, header, rows)
    typer.echo(f"wrote {len(rows)} rows to {where}", err=True)


BenchDataOption = Annotated[
    str,
    typer.Option(
        "--data",
        help="Probe data: cifar10[:DIR] | digits | synthetic[:N] (train split), or noise[:SPEC]: N(0,1) "
        "inputs shaped like SPEC's images (default cifar10), labels in SPEC's class proportions.",
    ),
]
SampleOption = Annotated[
    str,
    typer.Option(
        "--sample",
        help="Architectures to draw (seeded), or 'all' for every arch of the ground truth.",
    ),
]


def _sample_size(text: str) -> int | None:
    """``--sample``: None for ``all``, else an integer in [`MIN_SAMPLE`, `MAX_ARCHS`]."""
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not MIN_SAMPLE <= value <= MAX_ARCHS:
        raise typer.BadParameter(
            f"must be 'all' or an integer in [{MIN_SAMPLE}, {MAX_ARCHS}], but got {text!r}",
            param_hint="--sample",
        )
    return value


@bench_app.command("correlation")
def bench_correlation(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Directory for scores.csv, report.json/.md and PNGs, and the checkpoint "
            "(scores.partial.csv, run.json, timing.json): the same command resumes where it stopped.",
        ),
    ],
    ground_truth: Annotated[
        Path | None,
        typer.Option(
            "--ground-truth",
            help="CSV with an arch_str column and accuracy columns.",
            show_default="nas-bench-201/nb201-accuracy-200ep.csv in $NASFLEET_DATA or ../shared/data",
        ),
    ] = None,
    column: Annotated[
        str, typer.Option("--column", help="Primary accuracy column (ranking, plots); all are measured.")
    ] = "cifar10_test",
    sample: SampleOption = "200",
    repeats: Annotated[
        int,
        typer.Option(
            "--repeats",
            min=1,
            max=MAX_REPEATS,
            help="Samples drawn with seeds seed..seed+R-1 (archs they share are scored once); "
            "the report gives mean ± std over them.",
        ),
    ] = 1,
    space: SpaceOption = "nb201",
    data: BenchDataOption = "cifar10",
    batch_size: BatchSizeOption = 64,
    proxies: ProxiesOption = "all",
    seed: SeedOption = 0,
    unlabeled: UnlabeledOption = False,
    device: DeviceOption = "cpu",
    processes: ProcessesOption = 1,
    timing_sample: Annotated[
        int, typer.Option("--timing-sample", min=1, max=1000, help="Archs each proxy is timed alone on.")
    ] = 5,
) -> None:
    """Spearman, Kendall, precision in the top 5% and nDCG of proxies against ground-truth accuracy, cost
    per arch, plots; resumable.

    Accuracies are read only after scoring, to measure; they never reach a proxy or an aggregate.
    """
    from nasfleet.bench import CorrelationRun, run_correlation
    from nasfleet.bench_store import PARTIAL
    from nasfleet.cli.inputs import noise_source
    from nasfleet.data.datasets import default_data_dir
    from nasfleet.proxies.base import ProxyError

    truth = ground_truth or default_data_dir() / "nas-bench-201" / "nb201-accuracy-200ep.csv"
    if not truth.is_file():
        raise typer.BadParameter(f"no such file: {truth}", param_hint="--ground-truth")
    labeled, size = not unlabeled, _sample_size(sample)
    expand_proxies(proxies, labeled)
    check_output_directory(out)
    source = noise_source(data)
    run = CorrelationRun(
        space_named(space), truth, column, size, seed, data, probe_batch(data, batch_size, seed, labeled),
        proxies, labeled, checked_device(device), processes, timing_sample,
        command_line(ctx, ground_truth=truth), repeats=repeats,
        probe_inputs="images" if source is None else "noise", probe_source=source or data,
    )  # fmt: skip
    try:
        report = run_correlation(run, out)
    except ProxyError as error:
        raise click.ClickException(
            f"scoring failed, no report written (archs scored so far are kept in {out / PARTIAL}): {error}"
        ) from None
    except ValueError as error:  # not a proxy's failure: a bad column, sample or resume
        raise typer.BadParameter(str(error)) from None
    best = report["results"][0]
    typer.echo(f"wrote {out}; best {column} Spearman: {best['name']} {best['spearman']}", err=True)
