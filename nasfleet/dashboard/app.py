"""The dashboard's routes: log in and out, a tenant's jobs, one job, and its fleet of devices.

`create_dashboard` builds an app of its own, which ``nasfleet serve`` mounts at ``/dashboard`` beside
the API and ``nasfleet dashboard`` serves alone (`standalone_app`). It only reads the registry. Pages are
rendered on the server (Jinja2 templates shipped in the package, plots as inline SVG); the one script,
served from the package, refreshes a page in place while a job on it runs. Every page but the login form
needs a session (`nasfleet.dashboard.sessions`); without one a page redirects to the login form.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from nasfleet.dashboard.pages import fleet_page, job_page, jobs_page, own_job
from nasfleet.dashboard.sessions import (
    BAD_KEY,
    COOKIE,
    SessionStore,
    check_key,
    clear_session_cookie,
    form_key,
    same_origin,
    set_session_cookie,
    tenant_of_session,
)
from nasfleet.server.registry import Registry

MOUNT = "/dashboard"
REFRESH_S = 2
NOT_FOUND = "No job with this id: it does not exist, or it is not one of your jobs."
HEADERS = {
    # Everything comes from this server; plots are inline SVG (matplotlib writes <style> inside them)
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class _Headers(BaseHTTPMiddleware):
    """The security headers on every answer; pages (not the static files) are never cached."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.update(HEADERS)
        if not request.url.path.startswith(f"{request.scope.get('root_path', '')}/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def create_dashboard(registry: Registry, sessions: SessionStore | None = None) -> FastAPI:
    """The dashboard over *registry*, to be mounted at `MOUNT` (its links are relative to the mount)."""
    app = FastAPI(title="nasfleet dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.registry, app.state.sessions = registry, sessions or SessionStore()
    environment = Environment(loader=PackageLoader("nasfleet.dashboard", "templates"),
                              autoescape=select_autoescape(["html"]))  # fmt: skip
    app.state.templates = Jinja2Templates(env=environment)
    app.mount("/static", StaticFiles(packages=[("nasfleet.dashboard", "static")]), name="static")
    app.add_middleware(_Headers)
    _routes(app)
    return app


def standalone_app(registry: Registry) -> FastAPI:
    """The dashboard alone (``nasfleet dashboard``): mounted at `MOUNT`, ``/`` redirecting to it."""
    app = FastAPI(title="nasfleet dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount(MOUNT, create_dashboard(registry))

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{MOUNT}/", status_code=307)

    return app


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    base = request.scope.get("root_path", "")
    now = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
    context = {"base": base, "refresh_s": REFRESH_S, "tenant": None, "live": False, "now": now, **context}
    return templates.TemplateResponse(request, template, context, status_code=status)


def _redirect(request: Request, path: str) -> RedirectResponse:
    return RedirectResponse(f"{request.scope.get('root_path', '')}{path}", status_code=303)


def _routes(app: FastAPI) -> None:
    registry: Registry = app.state.registry
    sessions: SessionStore = app.state.sessions

    def tenant_or_login(request: Request) -> str | Response:
        tenant = tenant_of_session(request, registry, sessions)
        return tenant if tenant is not None else _redirect(request, "/login")

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        return _redirect(request, "/jobs")

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        if tenant_of_session(request, registry, sessions) is not None:
            return _redirect(request, "/jobs")
        return _render(request, "login.html")

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if not same_origin(request):
            return _render(
                request, "login.html", 403, message="Refused: the form was sent from another site."
            )
        key = (await form_key(request)).strip()
        if not key:
            return _render(request, "login.html", 400, message="Enter an API key.")
        tenant = check_key(registry, key)
        if tenant is None:
            return _render(request, "login.html", 401, message=BAD_KEY)
        response = _redirect(request, "/jobs")
        set_session_cookie(response, request, sessions.open(key))
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        if not same_origin(request):
            return _render(
                request, "login.html", 403, message="Refused: the form was sent from another site."
            )
        sessions.close(request.cookies.get(COOKIE))
        response = _redirect(request, "/login")
        clear_session_cookie(response, request)
        return response

    @app.get("/jobs", include_in_schema=False)
    def jobs(request: Request) -> Response:
        tenant = tenant_or_login(request)
        if isinstance(tenant, Response):
            return tenant
        return _render(request, "jobs.html", tenant=tenant, page="jobs", **jobs_page(registry, tenant))

    @app.get("/jobs/{job_id}", include_in_schema=False)
    def job(request: Request, job_id: str) -> Response:
        tenant = tenant_or_login(request)
        if isinstance(tenant, Response):
            return tenant
        found = own_job(registry, tenant, job_id)
        if found is None:
            return _render(request, "not_found.html", 404, tenant=tenant, page="jobs", message=NOT_FOUND)
        return _render(request, "job.html", tenant=tenant, page="jobs", **job_page(registry, found))

    @app.get("/fleet", include_in_schema=False)
    def fleet(request: Request) -> Response:
        tenant = tenant_or_login(request)
        if isinstance(tenant, Response):
            return tenant
        return _render(request, "fleet.html", tenant=tenant, page="fleet", **fleet_page(registry, tenant))
