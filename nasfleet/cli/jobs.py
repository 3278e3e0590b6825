"""``nasfleet jobs``: list, show, cancel and delete search jobs, named by id, unique id prefix or name.

A job is named by its full id, by a unique prefix of it (`nasfleet.cli.registry.resolve_job_id`), or by
its name (``nasfleet search --name``; names are unique per tenant, ``--tenant`` picks among tenants).
``cancel`` is the HTTP API's cancel (`Registry.cancel_job`): a queued or running job becomes cancelled
(its evaluations stay; ``nasfleet search --name`` resumes it), a cancelled one stays so, a done or
failed one is refused. ``delete`` removes finished jobs with their evaluations, result and reports,
each in one transaction; a queued or running job is refused (cancel it first), and nothing is deleted
unless every job named can be. Entries of the shared evaluation cache stay: other jobs use them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from nasfleet.bounds import DEFAULT_REGISTRY_URL
from nasfleet.cli.options import FormatOption, RegistryOption
from nasfleet.cli.registry import as_json, open_registry, plain, print_table, resolve_job_id
from nasfleet.display import short_arch, short_id

if TYPE_CHECKING:
    from nasfleet.server.registry import JobRecord, Registry

jobs_app = typer.Typer(help="List, show, cancel and delete search jobs.", no_args_is_help=True)

CANCELLED_BY_CLI = "cancelled with `nasfleet jobs cancel`"
TenantOption = Annotated[str | None, typer.Option("--tenant", help="Only this tenant's jobs.")]
JobsArgument = Annotated[list[str], typer.Argument(help="Job ids, unique id prefixes or job names.")]


def find_job(registry: Registry, text: str, tenant: str | None = None) -> JobRecord:
    """The job *text* names: its name (of *tenant*, if given), else its id or a unique id prefix."""
    named = [job for job in registry.list_jobs(tenant=tenant) if job.name == text]
    if len(named) > 1:
        tenants = ", ".join(sorted(job.tenant for job in named))
        raise click.ClickException(
            f"JOB must name one job, but {text!r} is the name of jobs of tenants {tenants}: give --tenant"
        )
    if named:
        return named[0]
    try:
        job_id = resolve_job_id(registry, text)
    except click.ClickException as error:
        raise click.ClickException(f"{error.message} (nor is it a job's name)") from None
    job = registry.get_job(job_id)
    if job is None or tenant not in (None, job.tenant):
        raise click.ClickException(f"JOB must be a job of tenant {tenant!r}, but {text!r} is not")
    return job


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


@jobs_app.command("list")
def list_command(
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    tenant: TenantOption = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", click_type=click.Choice(["queued", "running", "done", "failed", "cancelled"]),
            help="Only jobs of this status.",
        ),
    ] = None,
    output_format: FormatOption = "table",
) -> None:  # fmt: skip
    """Print the jobs, oldest first: id (its first 8 digits, a prefix every command accepts), name,
    tenant, status, progress, best."""
    with open_registry(registry) as opened:
        jobs = opened.list_jobs(tenant=tenant, status=status)
    if output_format == "json":
        typer.echo(as_json(jobs))
        return
    header = ["job", "name", "tenant", "status", "told", "best arch", "best score", "updated (UTC)"]
    rows = [
        [short_id(j.id), j.name or "", j.tenant, j.status, f"{j.evaluations_done}/{j.budget}",
         short_arch(j.best_arch), "" if j.best_score is None else f"{j.best_score:.4g}", _when(j.updated_at)]
        for j in jobs
    ]  # fmt: skip
    print_table(f"jobs ({len(rows)})", header, rows)


@jobs_app.command("show")
def show_command(
    job: Annotated[str, typer.Argument(help="A job id, unique id prefix or job name.")],
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    tenant: TenantOption = None,
    output_format: FormatOption = "table",
) -> None:
    """Print one job: its settings, progress, note or error, and its result."""
    with open_registry(registry) as opened:
        record = find_job(opened, job, tenant)
        result, stored = opened.get_result(record.id), len(opened.evaluations(record.id))
    if output_format == "json":
        document = {"job": plain(record), "evaluations_stored": stored,
                    "result": None if result is None else plain(result)}  # fmt: skip
        typer.echo(json.dumps(document, indent=2))
        return
    fields: dict[str, Any] = {
        "job": record.id, "name": record.name, "tenant": record.tenant, "device": record.device,
        "status": record.status, "space": record.space, "strategy": record.strategy,
        "strategy config": json.dumps(record.strategy_config), "constraints": json.dumps(record.constraints),
        "budget": record.budget, "seed": record.seed, "told": record.evaluations_done,
        "evaluations stored": stored, "best arch": record.best_arch, "best score": record.best_score,
        "note": record.note, "error": record.error,
        "created (UTC)": _when(record.created_at), "updated (UTC)": _when(record.updated_at),
    }  # fmt: skip
    if result is not None:
        fields.update({"result arch": result.arch, "result score": f"{result.score:.6g}"})
        fields.update({"result params": f"{result.params:,}", "result flops": f"{result.flops:,}"})
    rows = [[key, "" if value is None else str(value)] for key, value in fields.items()]
    print_table(f"job {record.id}", ["field", "value"], rows)


def _label(job: JobRecord) -> str:
    return f"job {job.id}" + (f" ({job.name})" if job.name else "")


@jobs_app.command("cancel")
def cancel_command(
    jobs: JobsArgument, registry: RegistryOption = DEFAULT_REGISTRY_URL, tenant: TenantOption = None
) -> None:
    """Cancel queued or running jobs, as the HTTP API does; what they scored stays (resume by --name).

    A cancelled job stays cancelled; a done or failed one is refused (exit 1, the others are cancelled).
    """
    from nasfleet.server.registry import JobFinishedError

    refused = []
    with open_registry(registry) as opened:
        for job in [find_job(opened, text, tenant) for text in jobs]:
            try:
                was, now = job.status, opened.cancel_job(job.id, CANCELLED_BY_CLI)
            except JobFinishedError as error:
                refused.append(str(error))
                continue
            done = f"{now.evaluations_done} of {now.budget} evaluations told"
            typer.echo(f"{_label(now)}: {'was cancelled already' if was == 'cancelled' else 'cancelled'}"
                       f" ({done})")  # fmt: skip
    if refused:
        raise click.ClickException("; ".join(refused))


@jobs_app.command("delete")
def delete_command(
    jobs: JobsArgument,
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    tenant: TenantOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete finished jobs with their evaluations, result and reports (each job in one transaction).

    A queued or running job is refused: cancel it first (`nasfleet jobs cancel`); then nothing is deleted.
    """
    with open_registry(registry) as opened:
        found = list({job.id: job for job in (find_job(opened, text, tenant) for text in jobs)}.values())
        active = [f"{_label(job)} is {job.status}" for job in found if not job.finished]
        if active:
            raise click.ClickException(
                f"JOB must be done, failed or cancelled to be deleted, but {'; '.join(active)}: cancel it "
                "first (`nasfleet jobs cancel`); nothing deleted"
            )
        if not yes:
            typer.confirm(f"delete {', '.join(_label(job) for job in found)}?", abort=True)
        for job in found:
            counts = opened.delete_job(job.id)
            typer.echo(f"deleted {_label(job)}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
