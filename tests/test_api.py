"""The tenant HTTP API end to end, over real HTTP, against ``nasfleet serve`` running as its own process.

One server for the module (embedded mode: its own SQLite broker and registry, one local worker), on a
free 127.0.0.1 port, with small limits so that every refusal path is cheap to reach: 64 KiB bodies,
5,000 sketch values, 2 unfinished jobs per tenant. Tenants and keys come from ``nasfleet tenants``.
Jobs are tiny (3x8x8 inputs, a small NB201, budgets of 8) and finish in seconds. The last test stops
the server with SIGTERM and checks it stopped its workers too.
"""

from __future__ import annotations

import base64
import copy
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import typer
from service_support import (
    MISSING_JOB,
    alive,
    api_client,
    child_process,
    children,
    free_port,
    job_routes,
    python,
    stop_server,
)
from typer.testing import CliRunner

from nasfleet.bounds import DEFAULT_AGGREGATE
from nasfleet.cli.serve import tenants_app
from nasfleet.proxies import get_aggregate
from nasfleet.server.api.runner import OrchestratorLoop
from nasfleet.spaces import get_space

MAX_BODY = 65_536
MAX_SKETCH_VALUES = 5_000
MAX_ACTIVE = 2
TENANTS = ("acme", "globex", "initech")
SERVE = python("import typer", "from nasfleet.cli.serve import serve", "typer.run(serve)")


@dataclass
class Server:
    url: str
    registry: str
    keys: dict[str, str]
    proc: subprocess.Popen[bytes]

    def client(self, tenant: str | None = None, **headers: str) -> httpx.Client:
        return api_client(self.url, self.keys[tenant] if tenant else None, **headers)


def tenants(*args: str) -> str:
    """``nasfleet tenants ARGS``, run in process; its standard output."""
    cli = typer.Typer()
    cli.add_typer(tenants_app, name="tenants")
    result = CliRunner().invoke(cli, ["tenants", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("api")
    registry = f"sqlite:///{directory / 'registry.sqlite'}"
    keys = {tenant: tenants("create", tenant, "--registry", registry) for tenant in TENANTS}
    port = free_port()
    broker = f"sqlite:///{directory / 'broker.sqlite'}"
    options = ["--port", str(port), "--registry", registry, "--broker", broker, "--state-dir",
               str(directory / "state"), "--max-body-bytes", str(MAX_BODY), "--max-sketch-values",
               str(MAX_SKETCH_VALUES), "--max-active-jobs", str(MAX_ACTIVE), "--max-budget",
               "5000"]  # fmt: skip
    with child_process([*SERVE, *options], directory / "serve.log") as proc:  # SIGKILLed if still there
        wait_healthy(f"http://127.0.0.1:{port}", proc, directory / "serve.log")
        workers = children(proc.pid)  # the server's local worker processes
        try:
            yield Server(f"http://127.0.0.1:{port}", registry, keys, proc)
        finally:
            stop_server(proc, workers)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``nasfleet serve`` at *url* says its orchestrator runs; fail with its log if it exits."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"nasfleet serve exited with {proc.returncode}: {log.read_text()[-2000:]}"
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).json()["orchestrator"] == "running":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"nasfleet serve not healthy after 120 s: {log.read_text()[-2000:]}")


# -- requests ------------------------------------------------------------------------------------------------
def request_body(seed: int = 0, sketches: str | None = "nested", **overrides: Any) -> dict[str, Any]:
    """A tiny SubNet request: 3x8x8 inputs, 4 classes, a small NB201, budget 8; rank-2 sketches."""
    rng = np.random.default_rng(seed)
    histogram = [int(v) for v in rng.integers(5, 20, 4)]
    characteristics: dict[str, Any] = {"input_shape": [3, 8, 8], "num_classes": 4,
                                       "num_samples": sum(histogram), "label_histogram": histogram,
                                       "labeled": True}  # fmt: skip
    means = (rng.standard_normal((4, 192)) * 0.5).astype(np.float32)
    bases = (rng.standard_normal((4, 2, 192)) * 0.3).astype(np.float32)
    if sketches == "nested":
        characteristics.update(
            class_means=means.tolist(), class_bases=bases.tolist(), epsilon=4.0, delta=1e-5
        )
    elif sketches == "base64":
        characteristics.update(class_means=_b64(means), class_bases=_b64(bases), epsilon=4.0, delta=1e-5)
    body = {"space": "nb201", "space_options": {"channels": 8, "cells_per_stage": 1},
            "characteristics": characteristics, "strategy": "evolution", "budget": 8, "seed": seed,
            "ask_size": 4, "probe_batch_size": 8}  # fmt: skip
    return {**body, **overrides}


def _b64(array: np.ndarray) -> dict[str, Any]:
    return {"shape": list(array.shape), "float32": base64.b64encode(array.astype("<f4").tobytes()).decode()}


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    return dict(response.json())


def wait_finished(client: httpx.Client, job_id: str, timeout_s: float = 180) -> list[dict[str, Any]]:
    """Poll a job until it ends; every status seen."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        seen.append(response.json())
        if seen[-1]["status"] in ("done", "failed", "cancelled"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {seen[-1]['status']} after {timeout_s} s")


def check_result(result: dict[str, Any], body: dict[str, Any]) -> None:
    """The result's costs are exact and its description builds the SubNet for the device's inputs."""
    subnet = result["subnet"]
    space = get_space(subnet["space"], subnet["space_options"])
    genome = space.decode(result["arch"])
    assert subnet["genome"] == list(genome) and subnet["arch"] == result["arch"]
    shape, classes = tuple(body["characteristics"]["input_shape"]), body["characteristics"]["num_classes"]
    assert (subnet["input_shape"], subnet["num_classes"]) == (list(shape), classes)
    cost = space.cost(genome, classes, shape)
    assert (result["params"], result["flops"]) == (cost.params, cost.flops)
    nodes = ["|" + "|".join(f"{e['op']}~{e['source']}" for e in subnet["cell"] if e["target"] == node) + "|"
             for node in (1, 2, 3)]  # fmt: skip
    assert "+".join(nodes) == result["arch"] and len(subnet["cell"]) == 6
    network = space.build(tuple(subnet["genome"]), subnet["num_classes"], tuple(subnet["input_shape"]))
    assert network(torch.zeros(2, *shape)).shape == (2, classes)
    assert set(result["proxy_values"]) == set(get_aggregate(DEFAULT_AGGREGATE).inputs(labeled=True))
    assert all(np.isfinite(list(result["proxy_values"].values())))
    assert result["history"][-1]["evaluations"] == body["budget"]


# -- the tests -----------------------------------------------------------------------------------------------
def test_two_tenants_submit_poll_and_fetch_their_subnets(server: Server) -> None:
    # Prepare: acme sends nested-list sketches, globex base64 sketches, a device, a profile and a latency cap
    profile = {"tier": "mid", "flops_per_ms": 5e5, "overhead_ms": 0.5, "memory_mb": 64.0}
    bodies = {
        "acme": request_body(1, "nested"),
        "globex": request_body(2, "base64", device="phone-1", profile=profile,
                               constraints={"max_latency_ms": 50.0, "max_params": 400_000}),
    }  # fmt: skip
    with server.client("acme") as acme, server.client("globex") as globex:
        clients = {"acme": acme, "globex": globex}
        # Execute
        jobs = {tenant: submit(clients[tenant], body) for tenant, body in bodies.items()}
        seen = {tenant: wait_finished(clients[tenant], jobs[tenant]["id"]) for tenant in clients}
        results = {tenant: clients[tenant].get(f"/v1/jobs/{jobs[tenant]['id']}/result") for tenant in clients}
        # Assert: progress rose to the budget, the results are exact and buildable
        for tenant, statuses in seen.items():
            assert statuses[-1]["status"] == "done", statuses[-1]
            done = [s["evaluations_done"] for s in statuses]
            assert done == sorted(done) and done[-1] == 8 and statuses[-1]["progress"] == 1.0
            assert statuses[-1]["best_arch"] and statuses[-1]["best_score"] is not None
            assert results[tenant].status_code == 200, results[tenant].text
            check_result(results[tenant].json(), bodies[tenant])
        assert results["globex"].json()["latency_ms_predicted"] <= 50.0
        assert results["globex"].json()["params"] <= 400_000
        # Each lists its own jobs and devices only
        for tenant, client in clients.items():
            listed = client.get("/v1/jobs").json()
            assert [job["id"] for job in listed["jobs"]] == [jobs[tenant]["id"]] and listed["total"] == 1
        assert [d["name"] for d in globex.get("/v1/devices").json()["devices"]] == ["phone-1"]
        assert acme.get("/v1/devices").json()["devices"] == []
        # A report on the delivered SubNet is recorded; on another arch it is refused
        arch = results["acme"].json()["arch"]
        report = {"arch": arch, "accuracy": 0.62, "loss": 1.1, "train_seconds": 3.5, "num_train": 40,
                  "num_test": 10, "latency_ms_measured": 2.5}  # fmt: skip
        stored = acme.post(f"/v1/jobs/{jobs['acme']['id']}/reports", json=report)
        assert stored.status_code == 201, stored.text
        assert stored.json()["accuracy"] == 0.62 and stored.json()["arch"] == arch
        listed_reports = acme.get(f"/v1/jobs/{jobs['acme']['id']}/reports").json()["reports"]
        assert [r["id"] for r in listed_reports] == [stored.json()["id"]]
        wrong = acme.post(f"/v1/jobs/{jobs['acme']['id']}/reports", json={**report, "arch": "x"})
        assert wrong.status_code == 422 and wrong.json()["fields"][0]["field"] == "arch"
        # A finished job cannot be cancelled
        finished = acme.post(f"/v1/jobs/{jobs['acme']['id']}/cancel")
        assert finished.status_code == 409 and finished.json()["error"] == "finished"


#: The smallest valid training report; its ``arch`` must be the job's SubNet to be recorded.
REPORT = {"arch": "a", "accuracy": 0.5, "loss": 1.0, "train_seconds": 1.0, "num_train": 1, "num_test": 1}


def _answer(response: httpx.Response) -> tuple[int, bytes, str]:
    return response.status_code, response.content, response.headers["content-type"]


def test_another_tenants_jobs_and_devices_answer_as_missing_ones(server: Server) -> None:
    # Prepare: an acme job (finished) and an acme device
    with server.client("acme") as acme, server.client("globex") as globex:
        job = submit(acme, request_body(3, None, device="acme-cam"))
        wait_finished(acme, job["id"])
        own = submit(globex, request_body(4, None))
        wait_finished(globex, own["id"])
        # Execute and Assert: every job route answers byte for byte as for an id nobody has
        for (method, path, body), (_, missing, _) in zip(
            job_routes(job["id"], REPORT), job_routes(MISSING_JOB, REPORT), strict=True
        ):
            theirs = globex.request(method, path, json=body)
            assert theirs.status_code == 404, (path, theirs.text)
            assert _answer(theirs) == _answer(globex.request(method, missing, json=body)), path
        assert acme.get(f"/v1/jobs/{job['id']}").json()["status"] == "done"  # the attempts changed nothing
        assert job["id"] not in {j["id"] for j in globex.get("/v1/jobs").json()["jobs"]}
        assert "acme-cam" not in {d["name"] for d in globex.get("/v1/devices").json()["devices"]}
        # A device name resolves among the caller's devices only: acme's answers as a made-up one
        arch = globex.get(f"/v1/jobs/{own['id']}/result").json()["arch"]
        report = {**REPORT, "arch": arch}
        answers = [globex.post(f"/v1/jobs/{own['id']}/reports", json={**report, "device": name})
                   for name in ("acme-cam", "ghost-cam")]  # fmt: skip
        assert [a.status_code for a in answers] == [422, 422]
        assert answers[0].text.replace("acme-cam", "?") == answers[1].text.replace("ghost-cam", "?")
        # The same device name is a different device per tenant
        again = submit(globex, request_body(5, None, device="acme-cam"))
        assert again["device"] == "acme-cam"
        wait_finished(globex, again["id"])


def _copy_at(body: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A deep copy of *body*, the mapping in it that holds the dotted *path*'s last key, and that key."""
    changed = copy.deepcopy(body)
    *parents, last = path.split(".")
    target = changed
    for key in parents:
        target = target[key]
    return changed, target, last


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed, parent, key = _copy_at(body, path)
    parent[key] = value
    return changed


def _drop(body: dict[str, Any], path: str) -> dict[str, Any]:
    changed, parent, key = _copy_at(body, path)
    del parent[key]
    return changed


BASE = request_body(7, "nested")
PLAIN = request_body(7, None)
C = "characteristics."
PROFILE = {"tier": "x", "flops_per_ms": -1.0, "overhead_ms": 0.0, "memory_mb": 1.0}
INVALID: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    ("short input shape", lambda: _set(BASE, C + "input_shape", [3, 8]), C + "input_shape"),
    ("string in a shape", lambda: _set(BASE, C + "input_shape", [3, "8", 8]), C + "input_shape[1]"),
    ("one class", lambda: _set(BASE, C + "num_classes", 1), C + "num_classes"),
    ("histogram sum", lambda: _set(BASE, C + "label_histogram", [1, 1, 1, 1]), C + "label_histogram"),
    ("means shape", lambda: _set(BASE, C + "class_means", [[0.0] * 192] * 3), C + "class_means"),
    ("ragged means", lambda: _set(BASE, C + "class_means", [[0.0] * 192] * 3 + [[0.0]]), C + "class_means"),
    ("base64 text", lambda: _set(BASE, C + "class_bases", {"shape": [4, 2, 192], "float32": "%%"}),
     C + "class_bases.float32"),
    ("base64 length", lambda: _set(BASE, C + "class_bases", {"shape": [4, 2, 192], "float32": "AAAA"}),
     C + "class_bases.float32"),
    ("sketch too big", lambda: _set(BASE, C + "class_bases", _b64(np.zeros((4, 8, 192), np.float32))),
     C + "class_bases.shape"),
    ("one sketch only", lambda: _drop(BASE, C + "class_bases"), C + "class_bases"),
    ("no epsilon", lambda: _drop(BASE, C + "epsilon"), C + "epsilon"),
    ("delta range", lambda: _set(BASE, C + "delta", 0.5), C + "delta"),
    ("boolean number", lambda: _set(BASE, "budget", True), "budget"),
    ("budget zero", lambda: _set(BASE, "budget", 0), "budget"),
    ("budget over the server's", lambda: _set(BASE, "budget", 5001), "budget"),
    ("unknown space", lambda: _set(BASE, "space", "resnet"), "space"),
    ("unknown strategy", lambda: _set(BASE, "strategy", "hillclimb"), "strategy"),
    ("bad strategy option", lambda: _set(BASE, "strategy_config", {"population_size": -3}),
     "strategy_config"),
    ("unknown field", lambda: _set(BASE, "colour", "blue"), "colour"),
    ("space options of mbv2", lambda: _set(BASE, "space", "mbv2"), "space_options"),
    ("shape the space rejects", lambda: _set(PLAIN, C + "input_shape", [3, 6, 6]), C + "input_shape"),
    ("impossible max_params", lambda: _set(BASE, "constraints", {"max_params": 100}),
     "constraints.max_params"),
    ("impossible memory", lambda: _set(BASE, "constraints", {"max_memory_mb": 1e-9}),
     "constraints.max_memory_mb"),
    ("latency without a profile", lambda: _set(BASE, "constraints", {"max_latency_ms": 5.0}),
     "constraints.max_latency_ms"),
    ("negative flops/ms", lambda: _set(BASE, "profile", PROFILE), "profile.flops_per_ms"),
    ("device name", lambda: _set(BASE, "device", "a b"), "device"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "make", "field"), INVALID, ids=[case[0] for case in INVALID])
def test_an_invalid_request_is_refused_naming_its_field(
    server: Server, rule: str, make: Callable[[], dict[str, Any]], field: str
) -> None:
    with server.client("initech") as client:
        before = client.get("/v1/jobs").json()["total"]
        response = client.post("/v1/jobs", json=make())
        assert response.status_code == 422, (rule, response.text)
        assert response.json()["error"] == "invalid_request"
        assert field in [problem["field"] for problem in response.json()["fields"]], response.json()
        assert client.get("/v1/jobs").json()["total"] == before  # nothing reached the registry


def test_non_finite_numbers_malformed_json_and_bad_queries_are_refused(server: Server) -> None:
    with server.client("initech", **{"Content-Type": "application/json"}) as client:
        text = json.dumps(BASE).replace('"delta": 1e-05', '"delta": 1e999', 1)  # JSON, but infinite
        huge = client.post("/v1/jobs", content=text)
        assert huge.status_code == 422 and huge.json()["fields"][0]["field"] == "characteristics.delta"
        nan = client.post("/v1/jobs", content=text.replace("1e999", "NaN"))  # not JSON at all
        assert nan.status_code == 400 and nan.json()["error"] == "malformed_json"
        assert "NaN, which is no JSON number" in nan.json()["message"]
        broken = client.post("/v1/jobs", content=b'{"space": "nb201", ')
        assert broken.status_code == 400 and broken.json()["error"] == "malformed_json"
        not_object = client.post("/v1/jobs", content=b"[1, 2]")
        assert not_object.status_code == 422 and not_object.json()["fields"][0]["field"] == "body"
        query = client.get("/v1/jobs", params={"limit": 0})
        assert query.status_code == 422 and query.json()["fields"][0] == {
            "field": "limit", "location": "query", "message": query.json()["fields"][0]["message"]
        }  # fmt: skip


def test_oversized_bodies_are_refused_before_parsing(server: Server) -> None:
    padding = "x" * MAX_BODY
    with server.client("initech", **{"Content-Type": "application/json"}) as client:
        declared = client.post("/v1/jobs", json={**BASE, "padding": padding})
        assert declared.status_code == 413 and declared.json()["error"] == "body_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(16):
                yield b" " * 8192

        streamed = client.post("/v1/jobs", content=chunks())
        assert streamed.status_code == 413 and streamed.json()["error"] == "body_too_large"
        report = client.post(f"/v1/jobs/{MISSING_JOB}/reports", content=padding.encode() * 2)
        assert report.status_code == 413


def test_every_route_but_health_needs_a_valid_key(server: Server) -> None:
    extra = tenants("add-key", "initech", "--registry", server.registry)
    routes = [("GET", "/v1/jobs", None), ("POST", "/v1/jobs", BASE), ("GET", "/v1/tenant", None),
              ("GET", "/v1/devices", None), *job_routes(MISSING_JOB, REPORT)]  # fmt: skip
    with server.client(**{"X-API-Key": extra}) as keyed:
        assert keyed.get("/v1/tenant").json()["name"] == "initech"  # the X-API-Key header works too
    tenants("revoke-key", extra.split("_")[1], "--registry", server.registry)
    credentials = [{}, {"Authorization": "Bearer nfk_0_0"}, {"Authorization": f"Basic {server.keys['acme']}"},
                   {"X-API-Key": "x" * 1000}, {"X-API-Key": extra}]  # fmt: skip
    answers = set()
    for headers in credentials:
        with server.client(**headers) as client:
            assert client.get("/v1/health").status_code == 200
            for method, path, body in routes:
                response = client.request(method, path, json=body)
                assert response.status_code == 401, (headers, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                answers.add(response.content)
    assert len(answers) == 1  # one answer for a missing, malformed, unknown or revoked key


def test_quota_cancel_and_conflicts(server: Server) -> None:
    with server.client("initech") as client:
        # Prepare: the tenant's quota filled with long jobs
        long = [submit(client, request_body(10 + i, None, budget=4000)) for i in range(MAX_ACTIVE)]
        # Execute and Assert: one more is a 429, and nothing was stored
        refused = client.post("/v1/jobs", json=request_body(20, None))
        assert refused.status_code == 429 and refused.json()["error"] == "quota_exceeded"
        assert int(refused.headers["retry-after"]) > 0
        assert client.get("/v1/tenant").json() == {"name": "initech", "active_jobs": MAX_ACTIVE,
                                                   "max_active_jobs": MAX_ACTIVE}  # fmt: skip
        running = long[0]["id"]
        assert client.get(f"/v1/jobs/{running}/result").status_code == 409
        assert client.post(f"/v1/jobs/{running}/reports", json=REPORT).status_code == 409
        # Cancelling frees a slot; a cancelled job stops and stays cancelled
        for job in long:
            cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert client.post(f"/v1/jobs/{running}/cancel").json()["status"] == "cancelled"  # idempotent
        time.sleep(2.5)  # the orchestrator drops cancelled jobs within its 1 s status period
        frozen = client.get(f"/v1/jobs/{running}").json()
        time.sleep(2.0)
        assert client.get(f"/v1/jobs/{running}").json() == frozen and frozen["evaluations_done"] < 4000
        assert client.get(f"/v1/jobs/{running}/result").json()["error"] == "not_done"
        accepted = submit(client, request_body(21, None))
        assert wait_finished(client, accepted["id"])[-1]["status"] == "done"
        statuses = {job["id"]: job["status"] for job in client.get("/v1/jobs").json()["jobs"]}
        assert [statuses[job["id"]] for job in long] == ["cancelled", "cancelled"]
        assert client.get("/v1/jobs", params={"status": "cancelled"}).json()["total"] == MAX_ACTIVE


def test_openapi_schema_is_published(server: Server) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert set(schema["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/cancel",
            "/v1/jobs/{job_id}/reports", "/v1/devices"} <= set(schema["paths"])  # fmt: skip
    strategies = schema["components"]["schemas"]["SubmitRequest"]["properties"]["strategy"]["enum"]
    assert {"evolution", "random", "cmaes"} <= set(strategies)


def test_serve_stops_its_workers_on_sigterm(server: Server) -> None:
    workers = children(server.proc.pid)
    assert workers, "the embedded server runs a local worker"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived the server"
        time.sleep(0.1)


class _FlakyService:
    """Stands in for `Service`: its first orchestrator fails, the next ones run until stopped."""

    workers = None

    def __init__(self) -> None:
        self.built = 0

    def orchestrator(self, housekeeping: Callable[[], object], **_: object) -> _FlakyService:
        self.built += 1
        self.housekeeping = housekeeping
        return self

    def run(self) -> dict[str, object]:
        if self.built == 1:
            raise RuntimeError("the broker went away")
        while True:  # a long job: only the housekeeping hook can end it
            self.housekeeping()
            time.sleep(0.01)


def test_the_orchestrator_loop_outlives_a_failing_orchestrator_and_stops_at_once() -> None:
    service = _FlakyService()
    loop = OrchestratorLoop(service, restart_s=0.05)  # type: ignore[arg-type]
    with loop:
        deadline = time.monotonic() + 10
        while service.built < 2:
            assert time.monotonic() < deadline, "no second orchestrator after the first failed"
            time.sleep(0.01)
        assert loop.state == "running" and loop.restarts == 1
        began = time.monotonic()
    assert loop.state == "off" and time.monotonic() - began < 5
