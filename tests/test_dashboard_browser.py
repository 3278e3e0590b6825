"""The dashboard and the API docs in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``), against a real ``nasfleet serve`` on 127.0.0.1 with its own local Celery worker.

One server for the module; two tenants. The browser logs in through the form (a wrong key first), watches
a real job that acme submits through the API advance on its page without reloading, finds globex's job
neither listed nor reachable, reads the fleet page and the job page, and opens ``/docs`` with every host
but 127.0.0.1 unresolvable. Screenshots go to ``$NASFLEET_ARTIFACTS`` (default ``artifacts/screenshots``
under the repository). Without Chromium or its driver the tests skip, except under ``CI=true``, where
they fail. Selenium is pointed at the system's binaries, so Selenium Manager never downloads one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import api_client, child_process, children, free_port, stop_server, wait_for

from nasfleet.server.registry import Registry

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("NASFLEET_ARTIFACTS", REPO / "artifacts" / "screenshots"))
BROWSER_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)  # nothing but loopback; fmt: skip
PROFILE = {"tier": "mobile", "flops_per_ms": 5e5, "overhead_ms": 0.5, "memory_mb": 64.0}
WATCHED_BUDGET = 96  # 24 steps of 4: long enough to be seen advancing, a few seconds per step here


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _require_browser() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        message = f"{', '.join(missing)} missing: install Debian's chromium and chromium-driver"
        if _in_ci():
            pytest.fail(f"CI is set, so the browser tests must run; {message}", pytrace=False)
        pytest.skip(message)


@dataclass
class Server:
    url: str
    keys: dict[str, str]
    registry: str

    def api(self, tenant: str) -> httpx.Client:
        return api_client(self.url, self.keys[tenant])


def _tenant_key(registry: str, tenant: str) -> str:
    done = subprocess.run([sys.executable, "-m", "nasfleet.cli", "tenants", "create", tenant, "--registry",
                           registry], capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    return done.stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``nasfleet serve`` with one local worker; stopped (SIGTERM, then SIGKILL) also when a test fails."""
    _require_browser()
    directory = tmp_path_factory.mktemp("dashboard-browser")
    registry = f"sqlite:///{directory / 'registry.sqlite'}"
    keys = {tenant: _tenant_key(registry, tenant) for tenant in ("acme", "globex")}
    port, log = free_port(), directory / "serve.log"
    command = [sys.executable, "-m", "nasfleet.cli", "serve", "--port", str(port), "--registry", registry,
               "--broker", f"sqlite:///{directory / 'broker.sqlite'}",
               "--state-dir", str(directory / "state")]  # fmt: skip
    with child_process(command, log) as proc:
        url = f"http://127.0.0.1:{port}"
        workers: list[int] = []
        try:
            wait_for(lambda: _healthy(url, proc, log), 120, "nasfleet serve to run its orchestrator")
            workers = children(proc.pid)
            yield Server(url, keys, registry)
        finally:
            stop_server(proc, workers)


def _healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    assert proc.poll() is None, f"nasfleet serve exited with {proc.returncode}: {log.read_text()[-2000:]}"
    try:
        return bool(httpx.get(f"{url}/v1/health", timeout=2).json()["orchestrator"] == "running")
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    """Headless Chromium driven by chromedriver, with a fresh profile; quit also when a test fails."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="nasfleet-chromium-")
    for flag in (*BROWSER_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shoot(driver: Any, name: str) -> Path:
    """A screenshot of the whole page (the window grown to its height, at most 4000 px) as NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, min(max(height, 900), 4000))
    path = ARTIFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    driver.set_window_size(1280, 900)
    return path


def request_body(seed: int, budget: int, **extra: Any) -> dict[str, Any]:
    """A tiny nb201 SubNet request (3x8x8 inputs, 4 classes, no sketches)."""
    histogram = [10 + seed, 12, 9, 14]
    data = {"input_shape": [3, 8, 8], "num_classes": 4, "num_samples": sum(histogram),
            "label_histogram": histogram, "labeled": True}  # fmt: skip
    return {"space": "nb201", "space_options": {"channels": 8, "cells_per_stage": 1}, "characteristics": data,
            "strategy": "evolution", "budget": budget, "seed": seed, "ask_size": 4, "probe_batch_size": 8,
            **extra}  # fmt: skip


def submit(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_done(client: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    def done() -> bool:
        return client.get(f"/v1/jobs/{job_id}").json()["status"] in ("done", "failed", "cancelled")

    wait_for(done, timeout_s, f"job {job_id} to finish")
    job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "done", job
    return job


def log_in(driver: Any, server: Server, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{server.url}/dashboard/login")
    driver.delete_all_cookies()  # a fresh log-in (the form redirects a logged-in browser to its jobs)
    driver.get(f"{server.url}/dashboard/login")
    field = driver.find_element(By.ID, "api_key")
    field.clear()
    field.send_keys(key)
    click_and_load(driver, driver.find_element(By.ID, "login"))


def click_and_load(driver: Any, element: Any) -> None:
    """Click *element* and wait until the page it leads to has loaded (a click does not wait)."""
    from selenium.webdriver.support.wait import WebDriverWait

    driver.execute_script("window.nasfleetOldPage = true")  # a new document gets a new window object
    element.click()
    WebDriverWait(driver, 30).until(lambda d: _new_page_loaded(d))


def _new_page_loaded(driver: Any) -> bool:
    """Whether the document the click led to has replaced the old one and finished loading. While the
    browser navigates, a WebDriver call can fail in several ways (a stale element, a node that "does not
    belong to the document", an unloaded document); each only means "not yet"."""
    from selenium.common.exceptions import WebDriverException

    try:
        script = "return [window.nasfleetOldPage === undefined, document.readyState]"
        replaced, state = driver.execute_script(script)
    except WebDriverException:
        return False
    return bool(replaced) and state == "complete"


def progress(driver: Any) -> tuple[int, int, str]:
    """(done, budget, status) as the job page shows them now, read in one script: the page's script may
    replace its <main> between two WebDriver calls."""
    done, budget, status = driver.execute_script(
        "const cell = document.querySelector('#summary .progress');"
        "return [cell.dataset.done, cell.dataset.budget, document.getElementById('job-status').textContent];"
    )
    return int(done), int(budget), str(status)


def text_of(driver: Any, selector: str) -> str:
    """The text of the first element matching *selector*, read in one script (see `progress`)."""
    return str(driver.execute_script("return document.querySelector(arguments[0]).textContent", selector))


def only_local_resources(driver: Any, server: Server) -> list[str]:
    """Every resource the page loaded; the test asserts they all came from *server*."""
    loaded: list[str] = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    return [name for name in loaded if not name.startswith(server.url)]


@pytest.fixture(scope="module")
def watched(server: Server) -> str:
    """A real job of acme's, for its device cam-1, submitted through the API: its id (it may still run)."""
    with server.api("acme") as client:
        return submit(client, request_body(1, WATCHED_BUDGET, device="cam-1", profile=PROFILE))


# -- the tests -----------------------------------------------------------------------------------------------
def test_a_wrong_key_is_refused_with_a_message_and_a_right_one_logs_in(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    log_in(browser, server, "nfk_0123_not-the-key")
    error = browser.find_element(By.ID, "login-error").text
    assert "not valid" in error
    assert browser.current_url == f"{server.url}/dashboard/login"
    shoot(browser, "login-refused")
    log_in(browser, server, server.keys["acme"])
    assert browser.current_url == f"{server.url}/dashboard/jobs"
    assert browser.find_element(By.ID, "tenant").text == "acme"
    cookie = browser.get_cookie("nasfleet_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard/"
    assert browser.execute_script("return document.cookie") == ""  # no script can read the session


def test_a_running_job_advances_on_its_page_without_reloading(
    browser: Any, server: Server, watched: str
) -> None:

    log_in(browser, server, server.keys["acme"])
    browser.get(f"{server.url}/dashboard/jobs/{watched}")
    browser.execute_script("window.nasfleetNotReloaded = true")  # gone if the page were loaded again
    first = progress(browser)
    assert first[2] in ("queued", "running") and first[0] < WATCHED_BUDGET, first
    seen = [first[0]]
    deadline = time.monotonic() + 60
    while len(set(seen)) < 3 and time.monotonic() < deadline:  # the job advancing twice, on screen
        time.sleep(0.2)
        seen.append(progress(browser)[0])
    assert len(set(seen)) >= 3, f"the page showed only {sorted(set(seen))} evaluations in 60 s"
    assert seen == sorted(seen) and browser.execute_script("return window.nasfleetNotReloaded") is True
    shoot(browser, "job-running")
    browser.get(f"{server.url}/dashboard/jobs")
    row = text_of(browser, f'tr[data-job="{watched}"] .progress .count')
    assert row.endswith(f"/{WATCHED_BUDGET}")
    shoot(browser, "jobs")


def test_another_tenants_job_is_invisible(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    with server.api("globex") as client:
        secret = submit(client, request_body(2, 8))
        wait_done(client, secret)
    log_in(browser, server, server.keys["acme"])
    listed = set(
        browser.execute_script(
            "return [...document.querySelectorAll('#jobs tr[data-job]')].map(r => r.dataset.job)"
        )
    )
    assert listed and secret not in listed and secret not in browser.page_source
    browser.get(f"{server.url}/dashboard/jobs/{secret}")
    assert "not one of your jobs" in browser.find_element(By.ID, "not-found").text
    shoot(browser, "other-tenant-404")
    statuses = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(arguments[0].map(u => fetch(u).then(r => r.status))).then(done);",
        [f"/dashboard/jobs/{secret}", "/dashboard/jobs/0123456789abcdef0123456789abcdef"],
    )
    assert statuses == [404, 404]


def test_the_job_page_and_the_fleet_page_show_the_finished_job(
    browser: Any, server: Server, watched: str
) -> None:
    from selenium.webdriver.common.by import By

    with server.api("acme") as client:
        wait_done(client, watched)
        result = client.get(f"/v1/jobs/{watched}/result").json()
        report = {"arch": result["arch"], "accuracy": 0.8125, "loss": 0.5, "train_seconds": 1.5,
                  "num_train": 64,
                  "num_test": 16, "latency_ms_measured": 3.25, "device": "cam-1"}  # fmt: skip
        assert client.post(f"/v1/jobs/{watched}/reports", json=report).status_code == 201
    log_in(browser, server, server.keys["acme"])
    browser.get(f"{server.url}/dashboard/jobs/{watched}")
    assert progress(browser) == (WATCHED_BUDGET, WATCHED_BUDGET, "done")
    assert browser.find_element(By.CSS_SELECTOR, "#curve svg").is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "#archive svg").is_displayed()
    with Registry(server.registry) as registry:  # the archive: one row per arch scored
        archive = [evaluation.arch for evaluation in registry.evaluations(watched)]
    rows = browser.find_elements(By.CSS_SELECTOR, "#evaluations tbody tr td:nth-child(2)")
    assert [row.get_attribute("title") for row in rows] == archive
    assert result["arch"] in browser.find_element(By.CSS_SELECTOR, "#subnet .arch").text
    assert only_local_resources(browser, server) == []
    shoot(browser, "job-done")
    click_and_load(browser, browser.find_element(By.LINK_TEXT, "Fleet"))
    device = browser.find_element(By.CSS_SELECTOR, 'section[data-device="cam-1"]')
    assert "mobile" in device.text and watched[:8] in device.text
    assert "0.8125" in device.find_element(By.CSS_SELECTOR, "table.reports").text
    assert "3.25" in device.find_element(By.CSS_SELECTOR, "table.reports").text
    shoot(browser, "fleet")
    click_and_load(browser, browser.find_element(By.ID, "logout"))
    assert browser.current_url == f"{server.url}/dashboard/login"
    browser.get(f"{server.url}/dashboard/fleet")
    assert browser.current_url == f"{server.url}/dashboard/login"  # the session ended


def test_the_api_docs_render_offline(browser: Any, server: Server) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/docs")
    operations: list[Any] = []

    def rendered() -> bool:
        operations[:] = browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        return len(operations) >= 5

    wait_for(rendered, 90, "Swagger UI to render the API's operations")
    paths = {element.text.replace("\u200b", "") for element in operations}
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/health"} <= paths, paths
    assert only_local_resources(browser, server) == []
    shoot(browser, "api-docs")
