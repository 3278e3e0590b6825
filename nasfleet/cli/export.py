"""``nasfleet export``: a SubNet as a runnable ONNX or TorchScript file (`nasfleet.export`).

The SubNet is named either by ``--space`` and ``--arch`` (with ``--num-classes`` and ``--input-shape``),
or by ``--job``: a finished job of the registry, whose result and stored characteristics give all four
(and the space's options). The two ways do not mix. The file goes through `nasfleet.cli.outputs`, like
every output: a regular file is replaced atomically; ``--out -`` writes the binary file to standard
output, which must not be a terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from nasfleet.bounds import DEFAULT_REGISTRY_URL
from nasfleet.cli.inputs import parse_input_shape, space_named
from nasfleet.cli.options import MAX_CLASSES, SPACE_HELP, RegistryOption
from nasfleet.cli.outputs import OutputError, check_output, write_output
from nasfleet.export import FORMATS, ExportDependencyError, export_bytes

if TYPE_CHECKING:
    from nasfleet.spaces import InputShape

DEFAULT_CLASSES, DEFAULT_SHAPE = 10, "3,32,32"


def export(
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="The model file to write ('-': standard output, if it is not a terminal)."
        ),
    ],
    space: Annotated[str | None, typer.Option("--space", help=SPACE_HELP)] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="The arch's canonical string.")] = None,
    job: Annotated[
        str | None,
        typer.Option("--job", help="Instead of --space/--arch: a finished job's id or a unique prefix."),
    ] = None,
    registry: RegistryOption = DEFAULT_REGISTRY_URL,
    file_format: Annotated[
        str, typer.Option("--format", click_type=click.Choice(FORMATS), help="File format.")
    ] = "onnx",
    num_classes: Annotated[
        int | None,
        typer.Option(
            "--num-classes", min=2, max=MAX_CLASSES,
            help=f"Classifier outputs (default {DEFAULT_CLASSES}; with --job: the job's).",
        ),
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option("--input-shape", help=f"Input C,H,W (default {DEFAULT_SHAPE}; with --job: the job's)."),
    ] = None,
) -> None:  # fmt: skip
    """Write a SubNet as a runnable ONNX or TorchScript file: a freshly initialised network (weights from a
    fixed seed) with a dynamic batch dimension, its space, arch, class count and input shape recorded in
    the file (ONNX metadata_props, or the TorchScript extra file nasfleet.json)."""
    check_output(out)
    if str(out) == "-" and sys.stdout.isatty():
        raise OutputError("--out: a model file is binary: name a file, or redirect standard output")
    try:
        if job is None:
            data = _arch_file(space, arch, file_format, num_classes or DEFAULT_CLASSES,
                              parse_input_shape(input_shape or DEFAULT_SHAPE))  # fmt: skip
        else:
            _check_job_alone(space=space, arch=arch, num_classes=num_classes, input_shape=input_shape)
            data = _job_file(registry, job, file_format)
    except ExportDependencyError as error:
        raise click.ClickException(str(error)) from None
    where = write_output(out, data)
    if where != "stdout":
        typer.echo(f"wrote {where}: {file_format}, {len(data):,} bytes", err=True)


def _check_job_alone(**given: object) -> None:
    """--job names the SubNet whole: the options that would name it another way must be absent."""
    for name, value in given.items():
        if value is not None:
            option = "--" + name.replace("_", "-")
            raise click.UsageError(f"{option} cannot be combined with --job: the job's result gives it")


def _arch_file(
    space: str | None, arch: str | None, file_format: str, num_classes: int, shape: InputShape
) -> bytes:
    from nasfleet.spaces import ArchitectureError

    if space is None or arch is None:
        missing = "--space" if space is None else "--arch"
        raise click.UsageError(
            f"Missing option '{missing}': name a SubNet by --space and --arch, or by --job"
        )
    search_space = space_named(space)
    try:
        genome = search_space.decode(arch)
    except ArchitectureError as error:
        raise typer.BadParameter(str(error), param_hint="--arch") from None
    try:  # a space may refuse a shape its network cannot take; the cost says so without building it
        search_space.cost(genome, num_classes, shape)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--input-shape") from None
    return export_bytes(space, arch, format=file_format, num_classes=num_classes, input_shape=shape)


def _job_file(registry: str, text: str, file_format: str) -> bytes:
    """The file of the SubNet a finished job delivered; its description as the HTTP API gives it."""
    from nasfleet.cli.registry import open_registry, resolve_job_id
    from nasfleet.server.api.exports import job_subnet_file

    with open_registry(registry) as opened:
        try:
            job_id = resolve_job_id(opened, text)
        except click.ClickException as error:  # its message names JOB_ID, the argument of `registry show`
            raise typer.BadParameter(error.message.removeprefix("JOB_ID "), param_hint="--job") from None
        record = opened.get_job(job_id)
        assert record is not None
        result = opened.get_result(job_id) if record.status == "done" else None
    if result is None:
        detail = f": {record.error}" if record.error else ""
        raise click.ClickException(f"--job: job {job_id} has no result yet: it is {record.status}{detail}")
    return job_subnet_file(record, result.arch, file_format)
