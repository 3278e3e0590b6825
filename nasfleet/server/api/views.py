"""Registry records as API responses, and the ready-to-build description of a delivered SubNet."""

from __future__ import annotations

from typing import Any

from nasfleet.protocol.codecs import decode_characteristics
from nasfleet.protocol.messages import DeviceProfile, MessageError
from nasfleet.search.limits import predicted_latency_ms
from nasfleet.server.api.schemas import (
    CellEdge,
    DeviceOut,
    JobResult,
    JobStatus,
    MBV2Stage,
    ReportOut,
    SubNetDescription,
)
from nasfleet.server.registry import DeviceRecord, JobRecord, ReportRecord, ResultRecord
from nasfleet.server.service.jobs import JobOptions
from nasfleet.spaces import MBV2Space, NB201Space, get_space
from nasfleet.spaces.nb201 import EDGES, OPS


def job_status(job: JobRecord) -> JobStatus:
    return JobStatus(
        id=job.id, status=job.status, space=job.space, strategy=job.strategy, device=job.device,  # type: ignore[arg-type]
        budget=job.budget, evaluations_done=job.evaluations_done,
        progress=min(1.0, job.evaluations_done / job.budget), best_arch=job.best_arch,
        best_score=job.best_score, error=job.error, note=job.note, created_at=job.created_at,
        updated_at=job.updated_at,
    )  # fmt: skip


def subnet(job: JobRecord, arch: str) -> SubNetDescription:
    """Space, options, arch, genome, classes and input shape; the nb201 cell or the mbv2 stages."""
    options = JobOptions.from_options(job.options)
    space_options = {key: int(value) for key, value in options.space_options.items()}
    space = get_space(job.space, space_options)
    genome = space.decode(arch)
    data = decode_characteristics(job.options.get("characteristics"))
    description = SubNetDescription(
        space=job.space, space_options=space_options, arch=arch, genome=list(genome),
        num_classes=data.num_classes, input_shape=list(data.input_shape),
    )  # fmt: skip
    if isinstance(space, NB201Space):
        cell = [CellEdge(source=source, target=target, op=OPS[gene])
                for (target, source), gene in zip(EDGES, genome, strict=True)]  # fmt: skip
        return description.model_copy(
            update={"cell": cell, "channels": space.channels, "cells_per_stage": space.cells_per_stage}
        )
    if isinstance(space, MBV2Space):
        return description.model_copy(update={"width": space.widths[genome[0]], "stages": _stages(arch)})
    return description


def _stages(arch: str) -> list[MBV2Stage]:
    """The stages of a canonical mbv2 string ``w…-d…-e…-k…`` (stages split by ``,``, blocks by ``.``)."""
    _, depths, expansions, kernels = arch.split("-")
    return [
        MBV2Stage(
            depth=int(depth),
            expansions=[int(v) for v in exp.split(".")],
            kernels=[int(v) for v in kern.split(".")],
        )
        for depth, exp, kern in zip(
            depths[1:].split(","), expansions[1:].split(","), kernels[1:].split(","), strict=True
        )
    ]


def _predicted_latency(job: JobRecord, arch: str, devices: list[DeviceRecord]) -> float | None:
    """*arch*'s latency under the job's profile (else its device's registered one), as `latency_model`
    predicts it (the profile's layer table for this space and data, else its FLOPs model); cached per
    profile, space and arch, so polling a result builds and traces its SubNet once."""
    wire = job.options.get("profile")
    if wire is None and job.device is not None:
        wire = next((d.profile for d in devices if d.name == job.device and d.profile), None)
    try:
        profile = DeviceProfile.from_wire(wire) if wire else None
    except MessageError:
        return None
    if profile is None:
        return None
    data = decode_characteristics(job.options.get("characteristics"))
    options = JobOptions.from_options(job.options).space_options
    return predicted_latency_ms(profile, job.space, arch, data.num_classes, data.input_shape, options)


def job_result(job: JobRecord, result: ResultRecord, devices: list[DeviceRecord]) -> JobResult:
    return JobResult(
        job_id=job.id, arch=result.arch, score=result.score, params=result.params, flops=result.flops,
        latency_ms_predicted=_predicted_latency(job, result.arch, devices),
        proxy_values=dict(result.values), history=[dict(entry) for entry in result.history],
        subnet=subnet(job, result.arch),
    )  # fmt: skip


def report_out(report: ReportRecord) -> ReportOut:
    assert report.id is not None and report.created_at is not None, "a stored report has an id and a time"
    fields: dict[str, Any] = {
        name: getattr(report, name)
        for name in ("job_id", "arch", "device", "accuracy", "loss", "train_seconds", "num_train",
                     "num_test", "latency_ms_predicted", "latency_ms_measured", "epochs_done", "run", "round")
    }  # fmt: skip
    return ReportOut(id=report.id, created_at=report.created_at, **fields)


def device_out(device: DeviceRecord) -> DeviceOut:
    return DeviceOut(
        name=device.name, tier=device.tier, status=device.status, constraints=device.constraints,
        profile=device.profile, characteristics_hash=device.characteristics_hash,
        updated_at=device.updated_at,
    )  # fmt: skip
