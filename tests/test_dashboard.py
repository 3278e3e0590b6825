"""The dashboard without a browser: log-in and its errors, the session cookie, tenant isolation, the pages'
content, the mount beside the API, the API's offline docs and the ``nasfleet dashboard`` command.

A real registry (SQLite in a temporary directory) holds a real finished job: scored in process by the
orchestrator with the local dispatcher, with a device and a training report. Requests go through
FastAPI's TestClient to the app ``nasfleet serve`` builds (`create_app`). The browser tests are in
``test_dashboard_browser.py``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import OPTIONS, characteristics, sqlite_url
from typer.testing import CliRunner

from nasfleet.cli import app as cli
from nasfleet.dashboard import SessionStore, create_dashboard
from nasfleet.server.api.app import create_app
from nasfleet.server.registry import JobRecord, Registry, ReportRecord
from nasfleet.server.service.dispatch import LocalDispatcher
from nasfleet.server.service.jobs import submit_job
from nasfleet.server.service.orchestrator import Orchestrator

MISSING = "0123456789abcdef0123456789abcdef"
PROFILE = {"kind": "profile", "version": 1, "tier": "mobile", "flops_per_ms": 5e5, "overhead_ms": 0.5,
           "memory_mb": 64.0}  # fmt: skip
CONSTRAINTS = {"kind": "constraints", "version": 1, "max_params": 400_000}


@dataclass
class Fleet:
    registry: Registry
    keys: dict[str, str]
    jobs: dict[str, JobRecord]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """acme (a device cam-1, a finished job for it with a report) and globex (a finished job)."""
    directory = tmp_path_factory.mktemp("dashboard")
    with Registry(sqlite_url(directory)) as registry:
        keys = {}
        for tenant in ("acme", "globex"):
            registry.create_tenant(tenant)
            keys[tenant] = registry.create_api_key(tenant)
        registry.upsert_device("acme", "cam-1", tier="mobile", constraints=CONSTRAINTS, profile=PROFILE)
        jobs = {
            "acme": submit_job(registry, "acme", characteristics(0), strategy="evolution", budget=8, seed=1,
                               options=OPTIONS, device="cam-1", name="acme-first"),
            "globex": submit_job(registry, "globex", characteristics(1), strategy="evolution", budget=8,
                                 seed=2, options=OPTIONS, name="globex-secret"),
        }  # fmt: skip
        Orchestrator(registry, LocalDispatcher(registry)).run()
        result = registry.get_result(jobs["acme"].id)
        assert result is not None
        report = ReportRecord(
            jobs["acme"].id, result.arch, 0.8125, 0.5, 1.5, 64, 16, 2.0, 2.75, epochs_done=17
        )
        registry.add_report(report)
        yield Fleet(registry, keys, {tenant: registry.get_job(job.id) for tenant, job in jobs.items()})  # type: ignore[misc]


@pytest.fixture
def client(fleet: Fleet) -> Iterator[TestClient]:
    with TestClient(create_app(fleet.registry), base_url="http://127.0.0.1") as client:
        yield client


def login(client: TestClient, key: str) -> None:
    response = client.post("/dashboard/login", data={"api_key": key}, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard/jobs"


def without_stamp(html: str) -> str:
    return re.sub(r'<p class="stamp".*?</p>', "", html, flags=re.S)


# -- logging in ----------------------------------------------------------------------------------------------
def test_a_valid_key_opens_a_session_in_a_strict_http_only_cookie(client: TestClient, fleet: Fleet) -> None:
    response = client.post("/dashboard/login", data={"api_key": fleet.keys["acme"]}, follow_redirects=False)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("nasfleet_session=")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/dashboard/"} <= attributes
    assert fleet.keys["acme"] not in cookie  # the key stays on the server
    page = client.get("/dashboard/jobs")
    assert page.status_code == 200 and 'id="tenant">acme<' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [("", 400, "Enter an API key."), ("nfk_0_0", 401, "That API key is not valid"),
     ("not a key at all", 401, "That API key is not valid"), ("x" * 300, 401, "That API key is not valid")],
)  # fmt: skip
def test_a_bad_key_is_refused_with_a_clear_message(
    client: TestClient, key: str, status: int, message: str
) -> None:
    response = client.post("/dashboard/login", data={"api_key": key}, follow_redirects=False)
    assert response.status_code == status
    assert message in response.text and 'role="alert"' in response.text
    assert "set-cookie" not in response.headers
    assert client.get("/dashboard/jobs", follow_redirects=False).headers["location"] == "/dashboard/login"


def test_a_login_form_sent_from_another_site_is_refused(client: TestClient, fleet: Fleet) -> None:
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}):
        response = client.post("/dashboard/login", data={"api_key": fleet.keys["acme"]}, headers=headers,
                               follow_redirects=False)  # fmt: skip
        assert response.status_code == 403 and "another site" in response.text
        assert "set-cookie" not in response.headers


def test_every_page_needs_a_session(client: TestClient, fleet: Fleet) -> None:
    for path in (
        "/dashboard/",
        "/dashboard/jobs",
        "/dashboard/fleet",
        f"/dashboard/jobs/{fleet.jobs['acme'].id}",
    ):
        response = client.get(path, follow_redirects=True)
        assert response.url.path == "/dashboard/login" and "Log in" in response.text
        assert "acme-first" not in response.text


def test_logout_and_a_revoked_key_end_the_session(client: TestClient, fleet: Fleet) -> None:
    login(client, fleet.keys["acme"])
    token = client.cookies["nasfleet_session"]
    response = client.post("/dashboard/logout", follow_redirects=False)
    assert response.status_code == 303 and 'nasfleet_session=""' in response.headers["set-cookie"]
    client.cookies.set("nasfleet_session", token, path="/dashboard/")  # the old token is dead on the server
    assert client.get("/dashboard/jobs", follow_redirects=False).status_code == 303
    extra = fleet.registry.create_api_key("acme")
    login(client, extra)
    assert client.get("/dashboard/jobs").status_code == 200
    assert fleet.registry.revoke_api_key(extra)
    assert client.get("/dashboard/jobs", follow_redirects=False).headers["location"] == "/dashboard/login"


def test_sessions_expire_and_are_bounded() -> None:
    store = SessionStore(lifetime_s=0.05, max_sessions=2)
    first, second = store.open("k1"), store.open("k2")
    assert (store.key_of(first), store.key_of(second)) == ("k1", "k2")
    store.open("k3")
    assert store.key_of(first) is None  # the oldest went
    time.sleep(0.06)
    assert store.key_of(second) is None
    with pytest.raises(ValueError, match="max_sessions must be an integer >= 1, but got 0"):
        SessionStore(max_sessions=0)


# -- isolation -----------------------------------------------------------------------------------------------
def test_another_tenants_job_is_not_listed_and_answers_as_a_missing_one(
    client: TestClient, fleet: Fleet
) -> None:
    login(client, fleet.keys["acme"])
    listed = client.get("/dashboard/jobs").text
    assert fleet.jobs["acme"].id in listed
    assert fleet.jobs["globex"].id not in listed and "globex-secret" not in listed
    other = client.get(f"/dashboard/jobs/{fleet.jobs['globex'].id}")
    missing = client.get(f"/dashboard/jobs/{MISSING}")
    malformed = client.get("/dashboard/jobs/not-an-id")
    assert other.status_code == missing.status_code == malformed.status_code == 404
    assert without_stamp(other.text) == without_stamp(missing.text) == without_stamp(malformed.text)
    fleet_page = client.get("/dashboard/fleet").text
    assert "cam-1" in fleet_page and fleet.jobs["globex"].id not in fleet_page


# -- the pages -----------------------------------------------------------------------------------------------
def test_the_jobs_page_shows_status_progress_and_best_score(client: TestClient, fleet: Fleet) -> None:
    login(client, fleet.keys["acme"])
    html = client.get("/dashboard/jobs").text
    job = fleet.jobs["acme"]
    assert f'data-done="{job.evaluations_done}" data-budget="{job.budget}"' in html
    assert f"{job.best_score:.4g}" in html and "acme-first" in html and ">done<" in html
    assert 'data-live="0"' in html  # nothing runs: no refreshing


def test_the_job_page_shows_the_curve_subnet_and_archive(client: TestClient, fleet: Fleet) -> None:
    login(client, fleet.keys["acme"])
    job = fleet.jobs["acme"]
    html = client.get(f"/dashboard/jobs/{job.id}").text
    result = fleet.registry.get_result(job.id)
    assert result is not None
    assert html.count("<svg") == 2  # the best-so-far curve and the proxy values
    assert "best score (aggregate)" in html and "evaluations" in html
    assert result.arch in html  # the delivered SubNet, whole
    evaluations = fleet.registry.evaluations(job.id)
    rows = re.findall(r"<tr(?: class=\"delivered\")?><td>\d+</td>", html)
    assert len(rows) == len(evaluations) == job.budget
    assert html.count('class="delivered"') == 1
    for name in result.values:
        assert f"<th>{name}</th>" in html
    assert "0.8125" in html and '<td class="num">17</td>' in html  # the training report, its epochs
    links = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
    assert links and all(link.startswith(("/dashboard/", "#")) for link in links), links  # all local


def test_the_fleet_page_shows_devices_subnets_latency_and_reports(client: TestClient, fleet: Fleet) -> None:
    login(client, fleet.keys["acme"])
    html = client.get("/dashboard/fleet").text
    result = fleet.registry.get_result(fleet.jobs["acme"].id)
    assert result is not None
    predicted = PROFILE["overhead_ms"] + result.flops / PROFILE["flops_per_ms"]  # type: ignore[operator]
    assert 'data-device="cam-1"' in html and ">mobile<" in html and "400k" in html
    assert f"{predicted:.4g}" in html and "2.75" in html and "0.8125" in html
    assert "<th>Epochs</th>" in html and '<td class="num">17</td>' in html


# -- the mount, the docs and the command ---------------------------------------------------------------------
def test_the_api_docs_load_nothing_from_elsewhere(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        sources = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
        assert sources and all(source.startswith("/") for source in sources), sources
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html
        for source in sources:
            assert client.get(source).status_code == 200, source
    assert '"validatorUrl": null' in client.get("/docs").text


def test_the_standalone_dashboard_and_the_mounted_one_are_the_same(fleet: Fleet) -> None:
    with TestClient(
        create_dashboard(fleet.registry), base_url="http://127.0.0.1", root_path="/dashboard"
    ) as alone:
        alone.post("/login", data={"api_key": fleet.keys["globex"]}, follow_redirects=False)
        assert "globex-secret" in alone.get("/jobs").text


def test_the_dashboard_command_refuses_a_missing_registry(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    result = CliRunner().invoke(cli, ["dashboard", "--registry", f"sqlite:///{missing}", "--port", "1"])
    assert result.exit_code != 0
