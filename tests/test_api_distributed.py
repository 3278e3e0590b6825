"""``nasfleet serve`` in distributed mode: Redis broker, PostgreSQL registry, a separate ``nasfleet worker``.

The server starts no worker of its own (``--local-workers 0``); the job submitted over HTTP can only
finish if the remote worker scores it through Redis and writes to PostgreSQL.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from service_support import api_client, child_process, free_port, worker_command
from test_api import SERVE, request_body, tenants, wait_healthy

from nasfleet.server.registry import Registry

REDIS_DB = 13


@pytest.mark.timeout(240)
def test_serve_runs_a_job_on_a_remote_worker_through_redis_and_postgresql(
    tmp_path: Path, redis_broker: str, postgres_url: str
) -> None:
    # Prepare: a tenant in PostgreSQL, a worker started apart (as on another machine), the server
    key = tenants("create", "acme", "--registry", postgres_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [*SERVE, "--port", str(port), "--broker", redis_broker, "--registry", postgres_url,
             "--local-workers", "0", "--state-dir", str(tmp_path / "state")]  # fmt: skip
    with (
        child_process(worker_command(redis_broker, postgres_url), tmp_path / "worker.log") as worker_proc,
        child_process(serve, tmp_path / "serve.log") as serve_proc,
    ):
        wait_healthy(url, serve_proc, tmp_path / "serve.log")
        with api_client(url, key) as client:
            # Execute: submit over HTTP and poll until the remote worker has done the job
            submitted = client.post("/v1/jobs", json=request_body(seed=3))
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["id"]
            deadline = time.monotonic() + 180
            while (status := client.get(f"/v1/jobs/{job_id}").json())["status"] != "done":
                assert status["status"] in ("queued", "running"), status
                assert time.monotonic() < deadline, f"job not done in 180 s: {status}"
                time.sleep(0.5)
            result = client.get(f"/v1/jobs/{job_id}/result")
        for proc in (serve_proc, worker_proc):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
    # Assert: the result came from evaluations the remote worker stored in PostgreSQL
    assert result.status_code == 200, result.text
    body = result.json()
    registry = Registry(postgres_url)
    evaluations = registry.evaluations(job_id)
    registry.close()
    assert evaluations and len({e.arch for e in evaluations}) == len(evaluations)
    assert all(e.worker for e in evaluations)
    assert body["arch"] in {e.arch for e in evaluations}
    assert status["evaluations_done"] == status["budget"]
