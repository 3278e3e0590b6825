"""``nasfleet registry``: list, show and export what a registry holds; `open_registry` for every command
that only reads one.

These commands never create a registry: a SQLite file that does not exist is a ``--registry`` error.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.table import Table

from nasfleet.bounds import DEFAULT_REGISTRY_URL
from nasfleet.cli.options import FormatOption, RegistryOption
from nasfleet.cli.outputs import check_output, write_output

if TYPE_CHECKING:
    from nasfleet.server.registry import JobRecord, Registry, ReportRecord

registry_app = typer.Typer(
    help="List, show and export the registry's tenants, devices, jobs, results and reports.",
    no_args_is_help=True,
)

TenantOption = Annotated[str | None, typer.Option("--tenant", help="Only this tenant's rows.")]
Rows = tuple[list[str], list[list[str]]]


def open_registry(url: str) -> Registry:
    """The registry at *url*, which must exist already; a bad URL is a ``--registry`` usage error."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from nasfleet.server.registry import Registry, RegistryError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise typer.BadParameter(
            f"must be an SQLAlchemy URL, but got {url!r}", param_hint="--registry"
        ) from None
    database = parsed.database or ""
    file_backed = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if file_backed and not Path(database).is_file():
        raise typer.BadParameter(
            f"must name an existing registry, but {database!r} does not exist", param_hint="--registry"
        )
    try:
        return Registry(url)
    except RegistryError as error:
        raise typer.BadParameter(str(error), param_hint="--registry") from None


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _tenants(records: list[Any]) -> Rows:
    return ["tenant", "id", "created (UTC)"], [[t.name, str(t.id), _when(t.created_at)] for t in records]


def _devices(records: list[Any]) -> Rows:
    header = ["tenant", "device", "tier", "status", "characteristics", "updated (UTC)"]
    return header, [
        [d.tenant, d.name, d.tier, d.status, (d.characteristics_hash or "")[:12], _when(d.updated_at)]
        for d in records
    ]


def _jobs(records: list[Any]) -> Rows:
    header = ["job", "tenant", "device", "space", "strategy", "status", "told", "best score", "updated (UTC)"]
    return header, [_job_cells(job) for job in records]


def _job_cells(j: JobRecord) -> list[str]:
    told, best, updated = f"{j.evaluations_done}/{j.budget}", _number(j.best_score), _when(j.updated_at)
    return [j.id, j.tenant, j.device or "", j.space, j.strategy, j.status, told, best, updated]


def _results(records: list[Any]) -> Rows:
    return ["job", "arch", "score", "params", "flops"], [
        [r.job_id, r.arch, _number(r.score), str(r.params), str(r.flops)] for r in records
    ]


def _report_rows(reports: list[ReportRecord]) -> Rows:
    header = ["id", "job", "device", "arch", "accuracy", "loss", "latency ms (predicted)", "latency ms"]
    return header, [_report_cells(report) for report in reports]


def _report_cells(r: ReportRecord) -> list[str]:
    numbers = [
        _number(value) for value in (r.accuracy, r.loss, r.latency_ms_predicted, r.latency_ms_measured)
    ]
    return [str(r.id), r.job_id, r.device or "", r.arch, *numbers]


def _records(registry: Registry, what: str, tenant: str | None) -> list[Any]:
    """The registry's records of one kind, of one tenant or of all."""
    if what == "tenants":
        return [t for t in registry.list_tenants() if tenant in (None, t.name)]
    if what == "devices":
        return list(registry.list_devices(tenant))
    if what == "jobs":
        return list(registry.list_jobs(tenant=tenant))
    if what == "results":
        return list(registry.list_results(tenant=tenant))
    return list(registry.list_reports(tenant=tenant))


LISTINGS: dict[str, Callable[[list[Any]], Rows]] = {
    "tenants": _tenants, "devices": _devices, "jobs": _jobs, "results": _results, "reports": _report_rows,
}  # fmt: skip
HIDDEN_FIELDS = {"strategy_state"}  # large; `nasfleet registry export` has it


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _as_json(records: list[Any]) -> str:
    """Every field of each record (full arch strings, unrounded numbers), as one JSON array."""
    plain = [{k: v for k, v in dataclasses.asdict(r).items() if k not in HIDDEN_FIELDS} for r in records]
    return json.dumps(plain, default=_json_value, allow_nan=False, indent=2)


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for name in header:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@registry_app.command("list")
def list_command(
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    what: Annotated[
        str, typer.Option("--what", click_type=click.Choice(list(LISTINGS)), help="What to list.")
    ] = "jobs",
    tenant: TenantOption = None,
    output_format: FormatOption = "table",
) -> None:
    """Print the registry's tenants, devices, jobs, results or reports as a table, or as JSON."""
    with open_registry(registry) as opened:
        records = _records(opened, what, tenant)
    if output_format == "json":
        typer.echo(_as_json(records))
        return
    header, rows = LISTINGS[what](records)
    _print_table(f"{what} ({len(rows)})", header, rows)


def resolve_job_id(registry: Registry, text: str) -> str:
    """The id of the one job whose id starts with *text* (a full id or a unique prefix)."""
    prefix = text.strip().lower()
    found = [job.id for job in registry.list_jobs() if prefix and job.id.startswith(prefix)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise click.ClickException(
            f"JOB_ID must be the id of a registered job or its prefix, but got {text!r}"
        )
    shown = ", ".join(job_id[:12] for job_id in found[:5]) + (", ..." if len(found) > 5 else "")
    raise click.ClickException(
        f"JOB_ID must be a unique prefix, but {text!r} starts {len(found)} job ids ({shown}): type more of it"
    )


@registry_app.command("show")
def show_command(
    job_id: Annotated[
        str, typer.Argument(help="The job's id, as `nasfleet registry list` prints it, or a unique prefix.")
    ],
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    output_format: FormatOption = "table",
) -> None:
    """Print one job: its configuration and progress, its result and its devices' training reports."""
    with open_registry(registry) as opened:
        job_id = resolve_job_id(opened, job_id)
        job = opened.get_job(job_id)
        assert job is not None
        result, reports = opened.get_result(job_id), opened.list_reports(job_id=job_id)
        evaluations = len(opened.evaluations(job_id))
    if output_format == "json":
        document = {
            "job": json.loads(_as_json([job]))[0], "evaluations_stored": evaluations,
            "result": json.loads(_as_json([result]))[0] if result is not None else None,
            "reports": json.loads(_as_json(reports)),
        }  # fmt: skip
        typer.echo(json.dumps(document, indent=2, allow_nan=False))
        return
    fields: dict[str, Any] = {
        "job": job.id, "tenant": job.tenant, "device": job.device, "status": job.status,
        "space": job.space, "strategy": job.strategy, "strategy config": json.dumps(job.strategy_config),
        "options": json.dumps(job.options), "constraints": json.dumps(job.constraints),
        "characteristics": job.characteristics_hash, "budget": job.budget, "seed": job.seed,
        "told": job.evaluations_done, "evaluations stored": evaluations, "best arch": job.best_arch,
        "best score": _number(job.best_score), "error": job.error,
        "created (UTC)": _when(job.created_at), "updated (UTC)": _when(job.updated_at),
    }  # fmt: skip
    if result is not None:
        fields.update({"result arch": result.arch, "result score": _number(result.score)})
        fields.update({"result params": result.params, "result flops": result.flops})
    rows = [[name, "" if value is None else str(value)] for name, value in fields.items()]
    _print_table(f"job {job.id}", ["field", "value"], rows)
    if reports:
        _print_table(f"reports ({len(reports)})", *_report_rows(reports))


@registry_app.command("export")
def export_command(
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    export_format: Annotated[
        str, typer.Option("--format", click_type=click.Choice(["json"]), help="Output format.")
    ] = "json",
    out: Annotated[
        Path, typer.Option("--out", help="Write here ('-': stdout); a regular file is replaced atomically.")
    ] = Path("-"),
) -> None:
    """Export everything but the evaluation cache and API key secrets, as one JSON document."""
    check_output(out)
    with open_registry(registry) as opened:
        data = opened.export()
    where = write_output(out, json.dumps(data, indent=2, sort_keys=True) + "\n")
    if where != "stdout":
        counts = ", ".join(f"{len(data[n])} {n}" for n in ("tenants", "jobs", "evaluations", "reports"))
        typer.echo(f"wrote {where}: {counts}", err=True)
