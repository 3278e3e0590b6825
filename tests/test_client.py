"""The Python client of the tenant API (`nasfleet.client`), against ``nasfleet serve`` over real HTTP.

One server for the module (embedded mode: its own SQLite broker and registry, one local worker) on a free
127.0.0.1 port; a tenant and its key from ``nasfleet tenants create``. Jobs are tiny (3x8x8 inputs, a
small NB201, budgets of 8) and finish in seconds.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_support import characteristics, child_process, children, free_port, kill_groups

from nasfleet.bounds import DEFAULT_AGGREGATE
from nasfleet.client import ApiError, Job, JobError, Report, TenantClient, _answer
from nasfleet.protocol.messages import ResourceConstraints
from nasfleet.proxies import get_aggregate

TINY: dict[str, Any] = {"space_options": {"channels": 8, "cells_per_stage": 1}, "budget": 8, "ask_size": 4,
                        "probe_batch_size": 8}  # fmt: skip
WIRE = {"input_shape": [3, 8, 8], "num_classes": 4, "num_samples": 40, "label_histogram": [10, 10, 10, 10],
        "labeled": True}  # fmt: skip
HEAVY = ("torch", "celery", "kombu", "sqlalchemy", "sqlmodel", "fastapi", "pydantic", "numpy")


@dataclass
class Server:
    url: str
    key: str

    def client(self, key: str | None = None) -> TenantClient:
        return TenantClient(self.url, key or self.key, timeout=60)


def nasfleet(*args: str) -> str:
    """The real ``nasfleet`` command's standard output."""
    done = subprocess.run([sys.executable, "-m", "nasfleet.cli", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("client")
    registry = f"sqlite:///{directory / 'registry.sqlite'}"
    broker = f"sqlite:///{directory / 'broker.sqlite'}"
    key = nasfleet("tenants", "create", "acme", "--registry", registry)
    port = free_port()
    command = [sys.executable, "-m", "nasfleet.cli", "serve", "--port", str(port), "--registry", registry,
               "--broker", broker, "--state-dir", str(directory / "state"),
               "--max-budget", "5000"]  # fmt: skip
    with child_process(command, directory / "serve.log") as proc:  # SIGKILLed if still there
        url = f"http://127.0.0.1:{port}"
        wait_running(TenantClient(url, key), proc, directory / "serve.log")
        workers = children(proc.pid)
        try:
            yield Server(url, key)
        finally:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
    kill_groups(workers)  # only if the server failed to stop them itself


def wait_running(client: TenantClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the server's orchestrator runs; fail with its log if it exits."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"nasfleet serve exited with {proc.returncode}: {log.read_text()[-2000:]}"
        with contextlib.suppress(ConnectionError):
            if client.health().orchestrator == "running":
                return
        time.sleep(0.2)
    raise AssertionError(f"nasfleet serve not running after 120 s: {log.read_text()[-2000:]}")


# -- the tests -----------------------------------------------------------------------------------------------
def test_submit_wait_with_progress_and_fetch_the_result(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    client = server.client()
    # Execute: one job from wire JSON, one from the protocol's messages (sketches travel as base64)
    first = client.submit(WIRE, seed=1, constraints={"max_params": 400_000}, **TINY)
    second = client.submit(characteristics(3), seed=2, constraints=ResourceConstraints(max_params=400_000),
                           **TINY)  # fmt: skip
    capsys.readouterr()
    done = client.wait(first.id, poll=0.1, timeout=180)
    shown = capsys.readouterr().err
    seen: list[Job] = []
    client.wait(second.id, poll=0.1, timeout=180, progress=seen.append)
    result = client.result(first.id)
    # Assert: the progress rose to the budget, and the result is the job's best
    assert (first.status, first.budget, first.evaluations_done) == ("queued", 8, 0)
    assert done.status == "done" and done.evaluations_done == 8 and done.best_arch == result.arch
    assert f"job {first.id[:8]}: 8/8, done" in shown, shown
    counts = [job.evaluations_done for job in seen]
    assert counts == sorted(counts) and counts[-1] == 8 and seen[-1].status == "done"
    assert result.job_id == first.id and result.arch.startswith("|") and math.isfinite(result.score)
    assert result.params <= 400_000 and result.history[-1]["evaluations"] == 8
    assert set(result.proxy_values) == set(get_aggregate(DEFAULT_AGGREGATE).inputs(labeled=True))
    assert (result.subnet["num_classes"], result.subnet["input_shape"]) == (4, [3, 8, 8])
    assert client.status(second.id) == seen[-1]
    assert [job.id for job in client.jobs(status="done")][-2:] == [first.id, second.id]


def test_a_report_round_trips(server: Server) -> None:
    client = server.client()
    job = client.submit(WIRE, seed=4, **TINY)
    client.wait(job.id, poll=0.1, timeout=180, progress=False)
    arch = client.result(job.id).arch
    report = client.report(job.id, arch=arch, accuracy=0.71, loss=0.83, train_seconds=12.5, num_train=32,
                           num_test=8, latency_ms_measured=3.2, epochs_done=14)  # fmt: skip
    plain = client.report(job.id, arch=arch, accuracy=0.5, loss=1.0, train_seconds=1.0, num_train=1,
                          num_test=1)  # fmt: skip
    assert len(report.id) == 32 and (report.job_id, report.arch, report.accuracy) == (job.id, arch, 0.71)
    assert (report.latency_ms_measured, report.latency_ms_predicted, report.device) == (3.2, None, None)
    assert (report.epochs_done, plain.epochs_done, report.run, report.round) == (14, None, None, None)
    assert client.reports(job.id) == [report, plain]
    with pytest.raises(ApiError, match="HTTP 422 invalid_request: epochs_done: ") as too_many:
        client.report(job.id, arch=arch, accuracy=0.5, loss=1.0, train_seconds=1.0, num_train=1,
                      num_test=1, epochs_done=1001)  # fmt: skip
    assert too_many.value.fields[0]["field"] == "epochs_done"
    assert client.reports(job.id) == [report, plain], "a refused report stores nothing"
    with pytest.raises(ApiError, match="HTTP 422 invalid_request: arch: must be the delivered") as refused:
        client.report(job.id, arch="|none~0|", accuracy=0.5, loss=1.0, train_seconds=1.0, num_train=1,
                      num_test=1)  # fmt: skip
    assert refused.value.status == 422 and refused.value.fields[0]["field"] == "arch"


def test_an_older_servers_report_lacks_the_newer_fields_and_a_missing_required_one_is_an_error() -> None:
    # Prepare: a report as a server before registry schema version 6 answered it
    older = {"id": "a" * 32, "job_id": "b" * 32, "arch": "|x|", "device": None, "accuracy": 0.5, "loss": 1.0,
             "train_seconds": 2.0, "num_train": 8, "num_test": 2, "latency_ms_predicted": None,
             "latency_ms_measured": None, "created_at": "2026-12-05T08:00:00+00:00"}  # fmt: skip
    # Execute
    report = _answer(Report, older)
    # Assert: the fields it did not know are None; one every server sends is still required
    assert (report.epochs_done, report.run, report.round, report.num_train) == (None, None, None, 8)
    with pytest.raises(ValueError, match="must be a Report with 'num_test'"):
        _answer(Report, {k: v for k, v in older.items() if k != "num_test"})


def test_cancel_ends_the_wait_with_the_servers_reason(server: Server) -> None:
    client = server.client()
    job = client.submit(WIRE, seed=5, **{**TINY, "budget": 5000})
    with pytest.raises(TimeoutError, match=f"job {job.id} is still (queued|running) after 0.3 s"):
        client.wait(job.id, timeout=0.3, poll=0.1, progress=False)
    cancelled = client.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.error == "cancelled by the tenant"
    with pytest.raises(JobError, match=f"job {job.id} cancelled: cancelled by the tenant") as ended:
        client.wait(job.id, poll=0.1, progress=False)
    assert ended.value.job.status == "cancelled"
    with pytest.raises(ApiError, match=r"HTTP 409 not_done: .* it is cancelled") as early:
        client.result(job.id)
    assert early.value.status == 409


def test_a_bad_field_is_an_api_error_naming_it(server: Server) -> None:
    client = server.client()
    with pytest.raises(ApiError, match="HTTP 422 invalid_request: budget: Input should be greater than or"):
        client.submit(WIRE, **{**TINY, "budget": 0})
    with pytest.raises(
        ApiError, match=r"characteristics\.label_histogram: must be summing to num_samples=40"
    ):
        client.submit({**WIRE, "label_histogram": [1, 2, 3, 4]}, **TINY)
    with pytest.raises(ApiError, match="HTTP 404 not_found: job not found"):
        client.status("0123456789abcdef0123456789abcdef")


def test_a_wrong_key_is_a_401(server: Server) -> None:
    with pytest.raises(ApiError, match="HTTP 401 unauthorized") as refused:
        server.client("nfk_0123456789abcdef_wrong").jobs()
    assert refused.value.status == 401 and refused.value.code == "unauthorized"
    assert server.client("nfk_0123456789abcdef_wrong").health().status in ("ok", "degraded")  # needs no key


def test_export_writes_the_delivered_subnet(server: Server, tmp_path: Path) -> None:
    # Needs nasfleet.export (issue 18, item 5)
    onnxruntime = pytest.importorskip("onnxruntime")
    client = server.client()
    job = client.submit(WIRE, seed=6, **TINY)
    client.wait(job.id, poll=0.1, timeout=180, progress=False)
    written = client.export(job.id, tmp_path / "subnet.onnx")
    assert written == tmp_path / "subnet.onnx" and written.stat().st_size > 0
    session = onnxruntime.InferenceSession(str(written))
    shape = session.get_inputs()[0].shape
    outputs = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 8, 8), dtype=np.float32)})
    assert list(shape[1:]) == [3, 8, 8] and outputs[0].shape == (1, 4)


def test_an_unreachable_server_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    expected = re.escape(f"cannot reach the nasfleet API at {url} (GET /v1/jobs?offset=0&limit=500): ")
    with pytest.raises(ConnectionError, match=expected + ".*refused"):
        TenantClient(url, "nfk_x_y").jobs()
    with pytest.raises(
        ValueError, match=re.escape("base_url must be an http:// or https:// URL, but got 'a.b'")
    ):
        TenantClient("a.b", "nfk_x_y")
    with pytest.raises(ValueError, match=re.escape("timeout must be a number of seconds > 0, but got 0")):
        TenantClient(url, "nfk_x_y", timeout=0)


def test_the_client_imports_light_and_fast() -> None:
    probe = (
        "import sys, time, json\nstarted = time.perf_counter()\nimport nasfleet.client\n"
        "from nasfleet import TenantClient, ApiError\nseconds = time.perf_counter() - started\n"
        f"print(json.dumps([seconds, sorted(m for m in {list(HEAVY)!r} if m in sys.modules)]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    seconds, loaded = json.loads(done.stdout)
    assert loaded == [] and seconds < 1.0, (seconds, loaded)
