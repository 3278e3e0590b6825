"""A delivered SubNet as a model file: what ``GET /v1/jobs/{id}/export`` and ``nasfleet export --job`` send.

The SubNet is described as ``GET /v1/jobs/{id}/result`` describes it (`nasfleet.server.api.views.subnet`:
space, space options, arch, classes, input shape) and written by `nasfleet.export`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Response

from nasfleet.export import SUFFIXES, ExportDependencyError, export_bytes
from nasfleet.server.api.errors import ApiError
from nasfleet.server.api.schemas import ErrorBody
from nasfleet.server.api.views import subnet
from nasfleet.server.registry import JobRecord

MEDIA_TYPE = "application/octet-stream"  # neither ONNX nor TorchScript has a registered media type
EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The model file (ONNX or TorchScript), as an attachment",
        "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    },
    501: {"model": ErrorBody, "description": "The server lacks the packages the export needs"},
}


def job_subnet_file(job: JobRecord, arch: str, file_format: str) -> bytes:
    """The model file of *arch*, delivered by *job*, in *file_format* (``onnx`` or ``torchscript``)."""
    described = subnet(job, arch)
    shape = tuple(described.input_shape)
    return export_bytes(
        described.space, described.arch, format=file_format, num_classes=described.num_classes,
        input_shape=shape, space_options=described.space_options,
    )  # fmt: skip


def export_response(job: JobRecord, arch: str, file_format: str) -> Response:
    """The file as an attachment named ``nasfleet-<job id>.onnx`` (``.pt``); 501 without the packages."""
    try:
        data = job_subnet_file(job, arch, file_format)
    except ExportDependencyError as error:
        raise ApiError(501, "export_unavailable", f"this server cannot export: {error}") from None
    name = f"nasfleet-{job.id}{SUFFIXES[file_format]}"
    return Response(
        data, media_type=MEDIA_TYPE, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
