"""The tenant HTTP API (``nasfleet serve``): a FastAPI app over the registry, published as OpenAPI 3.1.

A tenant submits a personalized SubNet request (a queued search job), follows its progress, fetches the
delivered SubNet, lists and cancels its jobs and records training reports. The app only reads and writes
the registry; the orchestrator (`nasfleet.server.api.runner`) runs the queued jobs, in this process or
elsewhere. The same app serves the web dashboard at ``/dashboard`` (`nasfleet.dashboard`, on the same
keys) and the API's docs at ``/docs`` and ``/redoc`` with no internet connection.

Isolation: every job route looks the job up *within the caller's tenant*; another tenant's job answers
exactly as a missing one (the same 404 body), and a device name resolves only among the caller's devices.
Quota: at most ``max_active_jobs`` unfinished (queued or running) jobs per tenant; one more is a 429.
The count and the insert happen under one lock, so concurrent submissions to one server cannot overshoot
(several API servers on one registry can, by at most one job each).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi_offline import FastAPIOffline

from nasfleet.server.api.auth import Tenant, registry_of
from nasfleet.server.api.errors import ApiError, install_handlers, invalid, responses
from nasfleet.server.api.exports import EXPORT_RESPONSES, export_response
from nasfleet.server.api.gate import GatedRoute
from nasfleet.server.api.limits import BodySizeLimit
from nasfleet.server.api.schemas import (
    DeviceList,
    Health,
    JobList,
    JobResult,
    JobStatus,
    ReportIn,
    ReportList,
    ReportOut,
    SubmitRequest,
    TenantOut,
)
from nasfleet.server.api.validation import JobSpec, Limits, job_spec, registered_profile
from nasfleet.server.api.views import device_out, job_result, job_status, report_out
from nasfleet.server.registry import JobFinishedError, JobRecord, Registry, ReportRecord
from nasfleet.server.service.jobs import submit_job
from nasfleet.strategies.discovery import discover_strategies

API_VERSION = "1.0.0"
RETRY_AFTER_S = 5
JOB_LINKS = {
    name: {"operationId": name, "parameters": {"job_id": "$response.body#/id"}}
    for name in ("get_job", "get_result", "cancel_job", "add_report", "list_reports")
}
CANCELLED_BY_TENANT = "cancelled by the tenant"
JobId = Annotated[str, Path(description="A job id from POST /v1/jobs")]


@dataclass(frozen=True)
class ApiSettings:
    """Limits of one API server; see `nasfleet.server.api.validation.Limits` for the request limits."""

    max_body_bytes: int = 8 * 2**20
    max_active_jobs: int = 8
    limits: Limits = field(default_factory=Limits)
    threads: int = 40

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_active_jobs", "threads"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be an integer >= 1, but got {getattr(self, name)!r}")


OrchestratorState = Callable[[], Literal["running", "restarting", "off"]]


def create_app(
    registry: Registry,
    settings: ApiSettings | None = None,
    orchestrator: OrchestratorState | None = None,
    problems: Callable[[], list[str]] | None = None,
) -> FastAPI:
    """The API over *registry*; *orchestrator* tells the health check whether jobs are being run, and
    *problems* what keeps them from advancing (an unreachable broker, no live worker), one line each."""
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Routes touch the registry, so they run in threads; fewer threads contend less for the GIL
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        yield

    # /docs and /redoc load Swagger UI and ReDoc from fastapi-offline's copies, served by this app: they
    # work offline (FastAPI's own pages load them from a CDN); no validator is asked about the schema
    app = FastAPIOffline(
        lifespan=lifespan, title="nasfleet tenant API", version=API_VERSION,
        description="Personalized, training-free NAS: submit a device's data characteristics and "
        "constraints, receive the best SubNet. Authenticate with `Authorization: Bearer <key>` or "
        "`X-API-Key: <key>`.", swagger_ui_parameters={"validatorUrl": None},
    )  # fmt: skip
    app.state.registry, app.state.settings = registry, settings
    app.state.submit_lock = threading.Lock()
    app.state.orchestrator = orchestrator or (lambda: "off")
    app.state.problems = problems or list
    install_handlers(app)
    app.include_router(router)
    from nasfleet.dashboard import MOUNT, create_dashboard  # here: the dashboard imports this package

    app.mount(MOUNT, create_dashboard(registry))  # the web dashboard, on the same keys
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    _publish_strategy_names(app)
    return app


def _publish_strategy_names(app: FastAPI) -> None:
    """Put the installed strategies' names into the schema's ``strategy`` enum (plug-ins included)."""
    generate = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = generate()
            request = schema["components"]["schemas"]["SubmitRequest"]
            request["properties"]["strategy"]["enum"] = sorted(discover_strategies()[0])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


router = APIRouter(prefix="/v1", route_class=GatedRoute)  # key, media type and JSON before the body


def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def _own_job(registry: Registry, tenant: str, job_id: str) -> JobRecord:
    """The caller's job; any other id (missing, malformed, another tenant's) gets byte-identical 404s."""
    job = registry.get_job(job_id)
    if job is None or job.tenant != tenant:
        raise ApiError(404, "not_found", "job not found")
    return job


@router.get("/health", tags=["service"], operation_id="health")
def health(request: Request) -> Health:
    """Liveness, without authentication: whether this server runs an orchestrator, and "degraded" with the
    reasons when jobs cannot advance (the orchestrator restarting, the broker unreachable, no live worker)."""
    state = request.app.state.orchestrator()
    problems = list(request.app.state.problems())
    if state == "restarting":
        problems.insert(0, "the orchestrator failed and is restarting (see the server's log)")
    return Health(status="degraded" if problems else "ok", orchestrator=state, problems=problems)


@router.get("/tenant", tags=["service"], operation_id="get_tenant", responses=responses())
def tenant_info(request: Request, tenant: Tenant) -> TenantOut:
    """The caller's tenant and its quota use."""
    active = len(registry_of(request).unfinished_jobs(tenant=tenant))
    return TenantOut(name=tenant, active_jobs=active, max_active_jobs=_settings(request).max_active_jobs)


@router.post(
    "/jobs", status_code=202, tags=["jobs"], operation_id="submit_job",
    responses={**responses(400, 413, 415, 429), 202: {"description": "Queued", "links": JOB_LINKS}},
)  # fmt: skip
def submit(request: Request, response: Response, body: SubmitRequest, tenant: Tenant) -> JobStatus:
    """Submit a personalized SubNet request; the search runs in the background (poll the job)."""
    registry, settings = registry_of(request), _settings(request)
    device = None
    if body.device is not None:
        device = next((d for d in registry.list_devices(tenant) if d.name == body.device), None)
    spec = job_spec(body, settings.limits, registered_profile(device.profile if device else None))
    with request.app.state.submit_lock:
        active = len(registry.unfinished_jobs(tenant=tenant))
        if active >= settings.max_active_jobs:
            message = f"at most {settings.max_active_jobs} unfinished jobs per tenant, and {active} are"
            raise ApiError(429, "quota_exceeded", message, headers={"Retry-After": str(RETRY_AFTER_S)})
        if spec.device is not None and device is None:
            _register_device(registry, tenant, spec)
        job = submit_job(
            registry, tenant, spec.characteristics, space=spec.space, strategy=spec.strategy,
            budget=spec.budget, seed=spec.seed, strategy_config=spec.strategy_config,
            constraints=spec.constraints, profile=spec.profile, options=spec.options, device=spec.device,
        )  # fmt: skip
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_status(job)


def _register_device(registry: Registry, tenant: str, spec: JobSpec) -> None:
    tier = spec.profile.tier if spec.profile is not None else "unknown"
    profile = spec.profile.to_wire()[0] if spec.profile is not None else None
    registry.upsert_device(tenant, str(spec.device), tier=tier, constraints=spec.constraints.to_wire()[0],
                           profile=profile, characteristics_hash=spec.characteristics.digest())  # fmt: skip


@router.get("/jobs", tags=["jobs"], operation_id="list_jobs", responses=responses())
def list_jobs(
    request: Request, tenant: Tenant,
    status: Annotated[Literal["queued", "running", "done", "failed", "cancelled"] | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JobList:  # fmt: skip
    """The caller's jobs, oldest first, optionally of one status."""
    jobs = registry_of(request).list_jobs(tenant=tenant, status=status)
    page = [job_status(job) for job in jobs[offset : offset + limit]]
    return JobList(jobs=page, total=len(jobs), offset=offset, limit=limit)


@router.get("/jobs/{job_id}", tags=["jobs"], operation_id="get_job", responses=responses(404))
def get_job(request: Request, job_id: JobId, tenant: Tenant) -> JobStatus:
    """A job's status and progress: evaluations done of the budget, best so far."""
    return job_status(_own_job(registry_of(request), tenant, job_id))


@router.get("/jobs/{job_id}/result", tags=["jobs"], operation_id="get_result", responses=responses(404, 409))
def get_result(request: Request, job_id: JobId, tenant: Tenant) -> JobResult:
    """The delivered SubNet of a finished job, with a ready-to-build description; 409 before then."""
    registry = registry_of(request)
    job = _own_job(registry, tenant, job_id)
    result = registry.get_result(job.id) if job.status == "done" else None
    if result is None:
        detail = f": {job.error}" if job.error else ""
        raise ApiError(409, "not_done", f"job {job.id} has no result: it is {job.status}{detail}")
    return job_result(job, result, registry.list_devices(tenant) if job.device else [])


@router.get(
    "/jobs/{job_id}/export", tags=["jobs"], operation_id="export_subnet", response_class=Response,
    responses={**responses(404, 409), **EXPORT_RESPONSES},
)  # fmt: skip
def export_subnet(
    request: Request, job_id: JobId, tenant: Tenant,
    file_format: Annotated[Literal["onnx", "torchscript"], Query(alias="format")] = "onnx",
) -> Response:  # fmt: skip
    """The delivered SubNet as a runnable model file: freshly initialised (fixed seed), a dynamic batch
    dimension, its space, arch, class count and input shape in the file; 409 before the job is done."""
    registry = registry_of(request)
    job = _own_job(registry, tenant, job_id)
    result = registry.get_result(job.id) if job.status == "done" else None
    if result is None:
        raise ApiError(409, "not_done", f"job {job.id} has no SubNet to export: it is {job.status}")
    return export_response(job, result.arch, file_format)


@router.post("/jobs/{job_id}/cancel", tags=["jobs"], operation_id="cancel_job", responses=responses(404, 409))
def cancel_job(request: Request, job_id: JobId, tenant: Tenant) -> JobStatus:
    """Cancel a queued or running job (cancelling a cancelled job again is no error); 409 once it ended."""
    registry = registry_of(request)
    job = _own_job(registry, tenant, job_id)
    try:
        return job_status(registry.cancel_job(job.id, CANCELLED_BY_TENANT))
    except JobFinishedError as error:
        raise ApiError(409, "finished", str(error)) from None


@router.post(
    "/jobs/{job_id}/reports", status_code=201, tags=["reports"], operation_id="add_report",
    responses=responses(400, 404, 409, 413, 415),
)  # fmt: skip
def add_report(request: Request, job_id: JobId, body: ReportIn, tenant: Tenant) -> ReportOut:
    """Record a device's training report on the SubNet the job delivered."""
    registry = registry_of(request)
    job = _own_job(registry, tenant, job_id)
    result = registry.get_result(job.id) if job.status == "done" else None
    if result is None:
        raise ApiError(409, "not_done", f"job {job.id} delivered no SubNet to report on: it is {job.status}")
    if body.arch != result.arch:
        raise invalid(
            "arch", f"must be the delivered SubNet's arch {result.arch!r}, but got {body.arch[:200]!r}"
        )
    if body.device is not None and body.device not in {d.name for d in registry.list_devices(tenant)}:
        raise invalid("device", f"must be a registered device of this tenant, but got {body.device!r}")
    report = ReportRecord(
        job.id, body.arch, body.accuracy, body.loss, body.train_seconds, body.num_train, body.num_test,
        body.latency_ms_predicted, body.latency_ms_measured, body.device, epochs_done=body.epochs_done,
    )  # fmt: skip
    return report_out(registry.add_report(report))


@router.get("/jobs/{job_id}/reports", tags=["reports"], operation_id="list_reports", responses=responses(404))
def list_reports(request: Request, job_id: JobId, tenant: Tenant) -> ReportList:
    """The training reports recorded on a job."""
    registry = registry_of(request)
    job = _own_job(registry, tenant, job_id)
    return ReportList(reports=[report_out(r) for r in registry.list_reports(job_id=job.id)])


@router.get("/devices", tags=["devices"], operation_id="list_devices", responses=responses())
def list_devices(request: Request, tenant: Tenant) -> DeviceList:
    """The caller's registered devices."""
    return DeviceList(devices=[device_out(d) for d in registry_of(request).list_devices(tenant)])
