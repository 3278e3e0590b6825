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

from nasfleet.bounds import DEFAULT_REGISTRY_URL, SHARED_BASELINE_ROLE
from nasfleet.cli.options import FormatOption, RegistryOption
from nasfleet.cli.outputs import check_output, write_output
from nasfleet.display import compact, make_table, short_arch, short_id, table_console

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


def _when(moment: datetime | None, short: bool = False) -> str:
    """A UTC time to the second, or *short*: month, day, hours and minutes (the JSON has it whole)."""
    return "" if moment is None else moment.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _short(value: float | None) -> str:
    return "" if value is None else compact(value)


def _tenants(records: list[Any]) -> Rows:
    return ["tenant", "id", "created (UTC)"], [[t.name, str(t.id), _when(t.created_at)] for t in records]


def _devices(records: list[Any]) -> Rows:
    header = ["tenant", "device", "tier", "status", "characteristics", "updated (UTC)"]
    return header, [
        [d.tenant, d.name, d.tier, d.status, short_id(d.characteristics_hash), _when(d.updated_at)]
        for d in records
    ]


def job_device(job: JobRecord) -> str:
    """The job's device, or what the job is for when it has none (the round's shared baseline)."""
    if job.device is None and job.options.get("role") == SHARED_BASELINE_ROLE:
        return "(shared baseline)"
    return job.device or ""


def _jobs(records: list[Any]) -> Rows:
    header = ["job", "name", "tenant", "device", "space", "strategy", "status", "told", "best", "updated UTC"]
    return header, [_job_cells(job) for job in records]


def _job_cells(j: JobRecord) -> list[str]:
    told, updated = f"{j.evaluations_done}/{j.budget}", _when(j.updated_at, short=True)
    head = [short_id(j.id), j.name or "", j.tenant, job_device(j), j.space, j.strategy, j.status]
    return [*head, told, _short(j.best_score), updated]


def _results(records: list[Any]) -> Rows:
    return ["job", "arch", "score", "params", "FLOPs"], [
        [short_id(r.job_id), short_arch(r.arch), _short(r.score), compact(r.params), compact(r.flops)]
        for r in records
    ]


REPORT_GAP = 1  # nine columns, run names among them: one space between them keeps a report on one line


def _report_rows(reports: list[ReportRecord]) -> Rows:
    header = ["report", "job", "run", "rd", "device", "arch", "acc.", "loss", "ms pred/meas"]
    return header, [_report_cells(report) for report in reports]


def _report_cells(r: ReportRecord) -> list[str]:
    latency = "/".join(_short(value) or "-" for value in (r.latency_ms_predicted, r.latency_ms_measured))
    run = [r.run or "", "" if r.round is None else str(r.round)]
    ids = [short_id(r.id), short_id(r.job_id)]
    return [*ids, *run, r.device or "", short_arch(r.arch), _short(r.accuracy), _short(r.loss), latency]


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
TABLE_HIDDEN_OPTIONS = {"characteristics"}  # encoded arrays; the JSON has them, the table their hash


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def as_json(records: list[Any]) -> str:
    """Every field of each record (full arch strings, unrounded numbers), as one JSON array."""
    rows = [{k: v for k, v in dataclasses.asdict(r).items() if k not in HIDDEN_FIELDS} for r in records]
    return json.dumps(rows, default=_json_value, allow_nan=False, indent=2)


def plain(record: Any) -> dict[str, Any]:
    """One record as `as_json` writes it, as JSON-ready data (to nest in a larger document)."""
    data: dict[str, Any] = json.loads(as_json([record]))[0]
    return data


def print_table(title: str, header: list[str], rows: list[list[str]], gap: int = 2) -> None:
    """A table at most 100 columns wide (`nasfleet.display`): ids and archs shortened, numbers compact."""
    table = make_table(title, header, gap)
    for row in rows:
        table.add_row(*row)
    table_console().print(table)


@registry_app.command("list")
def list_command(
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    what: Annotated[
        str, typer.Option("--what", click_type=click.Choice(list(LISTINGS)), help="What to list.")
    ] = "jobs",
    tenant: TenantOption = None,
    output_format: FormatOption = "table",
) -> None:
    """Print the registry's tenants, devices, jobs, results or reports as a table, or as JSON.

    The table fits 100 columns: job and report ids show their first 8 characters (a prefix `registry
    show` accepts), archs their head and a digest, counts as 123k / 7.89M; --format json has every field
    whole. The round's shared-baseline job shows "(shared baseline)" as its device. A report shows the
    run (`nasfleet simulate --name`) and round ("rd") that trained it, and its latency as predicted/
    measured ms.
    """
    with open_registry(registry) as opened:
        records = _records(opened, what, tenant)
    if output_format == "json":
        typer.echo(as_json(records))
        return
    header, rows = LISTINGS[what](records)
    print_table(f"{what} ({len(rows)})", header, rows, REPORT_GAP if what == "reports" else 2)


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
            "job": plain(job), "evaluations_stored": evaluations,
            "result": plain(result) if result is not None else None,
            "reports": json.loads(as_json(reports)),
        }  # fmt: skip
        typer.echo(json.dumps(document, indent=2, allow_nan=False))
        return
    fields: dict[str, Any] = {
        "job": job.id, "name": job.name, "tenant": job.tenant, "device": job_device(job),
        "status": job.status, "space": job.space, "strategy": job.strategy,
        "strategy config": json.dumps(job.strategy_config), "constraints": json.dumps(job.constraints),
        "options": json.dumps({k: v for k, v in job.options.items() if k not in TABLE_HIDDEN_OPTIONS}),
        "characteristics": job.characteristics_hash, "budget": job.budget, "seed": job.seed,
        "told": job.evaluations_done, "evaluations stored": evaluations, "best arch": job.best_arch,
        "best score": _number(job.best_score), "error": job.error,
        "created (UTC)": _when(job.created_at), "updated (UTC)": _when(job.updated_at),
    }  # fmt: skip
    if result is not None:
        fields.update({"result arch": result.arch, "result score": _number(result.score)})
        fields.update({"result params": result.params, "result flops": result.flops})
    rows = [[name, "" if value is None else str(value)] for name, value in fields.items()]
    print_table(f"job {job.id}", ["field", "value"], rows)
    if reports:
        print_table(f"reports ({len(reports)})", *_report_rows(reports), gap=REPORT_GAP)


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
