"""The tenant API's hygiene, on both registries: odd ids, authentication before the body, media types,
malformed bodies, report ids and job notes.

The app runs under a real uvicorn server in a thread of the test process (so that ``caplog`` sees its
logs and a spy can count what it parses), on a fresh SQLite file or a fresh PostgreSQL database (the
``postgres_url`` fixture), with no orchestrator: submitted jobs stay queued. Where a test must see what
the app does with the ASGI channel itself (was the body received?), it calls the app directly.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_support import MISSING_JOB, api_client, free_port, job_routes

from nasfleet.server.api import ApiSettings, create_app
from nasfleet.server.api import gate as gate_module
from nasfleet.server.registry import Registry, RegistryError, ResultRecord

HEX32 = re.compile(r"[0-9a-f]{32}")
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
BODY: dict[str, Any] = {
    "space": "nb201", "space_options": {"channels": 8, "cells_per_stage": 1},
    "characteristics": {"input_shape": [3, 8, 8], "num_classes": 4, "num_samples": 40,
                        "label_histogram": [10, 10, 10, 10], "labeled": True},
    "strategy": "random", "budget": 8, "ask_size": 4, "probe_batch_size": 8,
}  # fmt: skip
REPORT = {"arch": ARCH, "accuracy": 0.5, "loss": 1.0, "train_seconds": 1.0, "num_train": 4, "num_test": 2}
ODD_IDS = ["%00", "abc%00def", MISSING_JOB.upper(), MISSING_JOB[:-1], MISSING_JOB + "0", "g" * 32,
           "%C3%A9" * 16, "x" * 5000, "1%20OR%201=1", "%FF%FE", "%2E%2E"]  # fmt: skip


@dataclass
class Api:
    url: str
    registry: Registry
    keys: dict[str, str]
    app: Any

    def client(self, tenant: str | None = "acme", **headers: str) -> httpx.Client:
        return api_client(self.url, self.keys[tenant] if tenant else None, **headers)


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    registry = Registry(url)
    keys = {}
    for tenant in ("acme", "globex"):
        registry.create_tenant(tenant)
        keys[tenant] = registry.create_api_key(tenant)
    app = create_app(registry, ApiSettings(max_active_jobs=1000))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Api(f"http://127.0.0.1:{port}", registry, keys, app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        registry.close()


def _submit(client: httpx.Client) -> str:
    response = client.post("/v1/jobs", json=BODY)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _done_job(api: Api, tenant: str) -> str:
    """A job of *tenant* marked done with a result, so that reports may be recorded on it."""
    with api.client(tenant) as client:
        job_id = _submit(client)
    api.registry.set_result(ResultRecord(job_id, ARCH, 1.0, {"fg_fi": 1.0}, 10, 20))
    return job_id


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


# -- odd ids -------------------------------------------------------------------------------------------------
def test_odd_job_ids_answer_404_without_an_error_log(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: a real job, which every route must still find (the registry works)
    caplog.set_level(logging.INFO)
    with api.client() as client:
        own = _done_job(api, "acme")
        # Execute and Assert: every job route answers an odd id exactly as a well-formed missing one
        for odd in ODD_IDS:
            for (method, path, body), (_, missing, _) in zip(
                job_routes(odd, REPORT), job_routes(MISSING_JOB, REPORT), strict=True
            ):
                answer = client.request(method, path, json=body)
                assert answer.status_code == 404, (path, answer.status_code, answer.text)
                assert answer.json()["error"] == "not_found", (path, answer.text)
                expected = client.request(method, missing, json=body)
                assert answer.content == expected.content, path
        assert client.get(f"/v1/jobs/{own}").json()["status"] == "done"
        assert client.post(f"/v1/jobs/{own}/reports", json=REPORT).status_code == 201
    assert _errors(caplog) == []


def test_the_registry_answers_odd_ids_as_missing_without_a_query(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _done_job(api, "acme")
    odd = ["\x00", f"{job[:16]}\x00{job[17:]}", job.upper(), job + "\x00", "", 7]

    def no_query(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an odd id reached the database")

    with monkeypatch.context() as patched:
        patched.setattr(api.registry, "_session", no_query)
        for value in odd:
            assert api.registry.get_job(value) is None  # type: ignore[arg-type]
            assert api.registry.get_result(value) is None  # type: ignore[arg-type]
            assert api.registry.list_reports(job_id=value) == []  # type: ignore[arg-type]
    for value in odd:  # the writes refuse them as unknown jobs, never as a database error
        with pytest.raises(RegistryError, match=r"job_id must be the id of a registered job, but got"):
            api.registry.update_job(value, status="cancelled")  # type: ignore[arg-type]
        with pytest.raises(RegistryError, match=r"job_id must be the id of a registered job, but got"):
            api.registry.claim_job(value)  # type: ignore[arg-type]
    assert api.registry.get_job(job) is not None and api.registry.get_result(job) is not None


# -- authentication before the body --------------------------------------------------------------------------
async def _asgi(app: Any, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, int]:
    """Call the app over ASGI; (status, how often it called ``receive``)."""
    received = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [*raw, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start"), received


@pytest.mark.parametrize("path", ["/v1/jobs", f"/v1/jobs/{MISSING_JOB}/reports"])
def test_an_unauthenticated_body_is_refused_before_it_is_received(api: Api, path: str) -> None:
    body = b'{"padding": "' + b"x" * (8_000_000 - 16) + b'"}'
    json_type = {"content-type": "application/json"}
    unknown = {"authorization": "Bearer nfk_0123456789abcdef_wrong"}
    for credentials in ({}, unknown, {"x-api-key": "nfk_\x00_x"}, {"x-api-key": f"{api.keys['acme']}\x00"}):
        status, received = anyio.run(_asgi, api.app, "POST", path, {**json_type, **credentials}, body)
        assert (status, received) == (401, 0), credentials
    # The check can fail: with a valid key the same request is received (and answered as its content says)
    valid = {**json_type, "authorization": f"Bearer {api.keys['acme']}"}
    status, received = anyio.run(_asgi, api.app, "POST", path, valid, body)
    assert received >= 1 and status in (404, 422), status


def test_an_unauthenticated_8_mb_body_gets_401_quickly_over_http(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    parsed: list[int] = []
    parse = gate_module.parse_json
    monkeypatch.setattr(gate_module, "parse_json", lambda raw: parsed.append(len(raw)) or parse(raw))
    body = b'{"padding": "' + b"x" * (8_000_000 - 16) + b'"}'
    with api.client(None, **{"Content-Type": "application/json"}) as client:
        began = time.monotonic()
        refused = client.post("/v1/jobs", content=body)
        elapsed = time.monotonic() - began
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized", refused.text
        assert elapsed < 5.0, f"the 401 took {elapsed:.1f} s"
        assert parsed == []  # nothing was parsed
        assert client.get("/v1/health").status_code == 200  # the connection is still usable
    with api.client("acme", **{"Content-Type": "application/json"}) as client:  # the spy sees parsing
        assert client.post("/v1/jobs", content=body).status_code == 422
        assert parsed == [len(body)]
    assert _errors(caplog) == []


# -- media types and malformed bodies ------------------------------------------------------------------------
WRONG_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
               "application/xml", "application/jsonx", "application/json; charset=latin-1",
               "json"]  # fmt: skip


@pytest.mark.parametrize("content_type", WRONG_TYPES)
def test_a_body_of_another_media_type_gets_415(api: Api, content_type: str) -> None:
    job = _done_job(api, "acme")
    with api.client() as client:
        for path, body in (("/v1/jobs", BODY), (f"/v1/jobs/{job}/reports", REPORT)):
            answer = client.post(path, content=json.dumps(body), headers={"Content-Type": content_type})
            assert answer.status_code == 415, (path, answer.text)
            assert answer.json()["error"] == "unsupported_media_type"
            problem = answer.json()["fields"][0]
            assert (problem["field"], problem["location"]) == ("content-type", "header")
            assert content_type in problem["message"]
        assert client.get("/v1/jobs").json()["total"] == 1  # nothing was stored
        assert client.get(f"/v1/jobs/{job}/reports").json()["reports"] == []
    headers = {"x-api-key": api.keys["acme"], "content-type": content_type}
    assert anyio.run(_asgi, api.app, "POST", "/v1/jobs", headers, json.dumps(BODY).encode()) == (415, 0)


def test_json_media_types_are_accepted_and_none_is_refused(api: Api) -> None:
    with api.client() as client:
        for content_type in ("application/json", "Application/JSON; charset=UTF-8", "application/vnd.x+json"):
            answer = client.post("/v1/jobs", content=json.dumps(BODY), headers={"Content-Type": content_type})
            assert answer.status_code == 202, (content_type, answer.text)
        request = client.build_request("POST", "/v1/jobs", content=json.dumps(BODY))
        assert "content-type" not in request.headers
        untyped = client.send(request)
        assert untyped.status_code == 415 and "but got none" in untyped.json()["message"], untyped.text
        assert client.get("/v1/jobs").json()["total"] == 3


MALFORMED = {
    "empty": (b"", "it is empty"),
    "syntax": (b'{"space": "nb201", ', "it breaks JSON syntax at character 19"),
    "trailing": (b"{} {}", "it breaks JSON syntax at character 3: Extra data"),
    "not utf-8": (b'{"space": "\xff"}', "byte 11 is not UTF-8"),
    "utf-16": (json.dumps(BODY).encode("utf-16"), "byte 0 is not UTF-8"),
    "bom": (b"\xef\xbb\xbf" + json.dumps(BODY).encode(), "Unexpected UTF-8 BOM"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, "it nests deeper than the parser allows"),
    "deep object": (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "it nests deeper than the parser allows"),
    "5000 digits": (b'{"budget": ' + b"9" * 5000 + b"}", "it holds a number the parser refuses"),
    "nan": (json.dumps({**BODY, "budget": float("nan")}).encode(), "it holds NaN, which is no JSON number"),
    "infinity": (b'{"budget": -Infinity}', "it holds -Infinity, which is no JSON number"),
    "nul": (b"\x00", "it breaks JSON syntax at character 0"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_every_malformed_body_gets_400_malformed_json(
    api: Api, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    body, reason = MALFORMED[name]
    job = _done_job(api, "acme")
    with api.client(**{"Content-Type": "application/json"}) as client:
        for path in ("/v1/jobs", f"/v1/jobs/{job}/reports"):
            answer = client.post(path, content=body)
            assert answer.status_code == 400, (path, answer.text)
            error = answer.json()
            assert error["error"] == "malformed_json" and reason in error["message"], error
            assert error["fields"] == [{"field": "body", "location": "body", "message": error["message"][9:]}]
        assert client.get("/v1/jobs").json()["total"] == 1
    assert _errors(caplog) == []


def test_valid_json_that_breaks_the_schema_is_still_422(api: Api) -> None:
    with api.client() as client:
        too_big = client.post("/v1/jobs", content=json.dumps(BODY).replace('"budget": 8', '"budget": 1e999'),
                              headers={"Content-Type": "application/json"})  # fmt: skip
        assert too_big.status_code == 422 and too_big.json()["fields"][0]["field"] == "budget"
        array = client.post("/v1/jobs", json=[1, 2])
        assert array.status_code == 422 and array.json()["fields"][0]["field"] == "body"


# -- anything else: no 5xx ----------------------------------------------------------------------------------
ROUTES = ["GET /v1/jobs/{}", "GET /v1/jobs/{}/result", "POST /v1/jobs/{}/cancel", "POST /v1/jobs/{}/reports",
          "GET /v1/jobs/{}/reports", "POST /v1/jobs", "GET /v1/tenant", "GET /v1/devices"]  # fmt: skip
CONTENT_TYPES = [None, "application/json", "text/plain", "application/json; charset=latin-1", ";", "\x00"]


def test_raw_bytes_ids_media_types_and_keys_never_get_a_5xx(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    job = _done_job(api, "acme")
    key = api.keys["acme"]
    names = st.text(max_size=40).filter(lambda t: t and "/" not in t)
    bodies = st.one_of(
        st.binary(max_size=200),
        st.sampled_from([b for b, _ in MALFORMED.values()]),
        st.dictionaries(
            st.sampled_from([*REPORT, *BODY]), st.none() | st.integers() | st.floats() | st.text(max_size=8)
        ).map(lambda d: json.dumps({**REPORT, **d}).encode()),
    )
    keys = st.sampled_from([key, "", "nfk_\x00_x", f"{key}\x00", "nfk__", f"nfk_{'0' * 16}_", "nfk_\u00e9_x"])
    answers: list[tuple[str, int]] = []

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(ROUTES), st.just(job) | names, bodies, st.sampled_from(CONTENT_TYPES), keys)
    def one(route: str, job_id: str, body: bytes, content_type: str | None, key: str) -> None:
        method, path = route.split(" ")
        headers = {"x-api-key": key, **({} if content_type is None else {"content-type": content_type})}
        status, _ = anyio.run(_asgi, api.app, method, path.format(job_id), headers, body)
        answers.append((route, status))
        assert status < 500, (route, job_id, body[:100], content_type, key)

    with caplog.at_level(logging.INFO):
        one()
    assert {status for _, status in answers} >= {200, 401, 404, 415}  # the cases reached the routes
    assert _errors(caplog) == []


# -- report ids and notes ------------------------------------------------------------------------------------
def test_report_ids_are_random_hex_and_reveal_no_counts(api: Api) -> None:
    jobs = [(tenant, _done_job(api, tenant)) for tenant in ("acme", "globex", "acme")]
    ids: dict[str, list[str]] = {job: [] for _, job in jobs}
    for round_ in range(3):  # the tenants' reports interleave
        for tenant, job in jobs:
            with api.client(tenant) as client:
                stored = client.post(f"/v1/jobs/{job}/reports", json={**REPORT, "num_test": round_ + 1})
                assert stored.status_code == 201, stored.text
                ids[job].append(stored.json()["id"])
    every = [report_id for job_ids in ids.values() for report_id in job_ids]
    assert all(isinstance(i, str) and HEX32.fullmatch(i) for i in every), every
    assert len(set(every)) == len(every)
    numbers = sorted(int(i, 16) for i in every)
    assert max(b - a for a, b in itertools.pairwise(numbers)) > 2**64  # no counter
    for tenant, job in jobs:
        with api.client(tenant) as client:
            listed = client.get(f"/v1/jobs/{job}/reports").json()["reports"]
        assert [r["id"] for r in listed] == ids[job]
    schema = httpx.get(f"{api.url}/openapi.json").json()["components"]["schemas"]
    assert schema["ReportOut"]["properties"]["id"]["type"] == "string"


def test_a_jobs_note_is_shown(api: Api) -> None:
    with api.client() as client:
        job = _submit(client)
        assert client.get(f"/v1/jobs/{job}").json()["note"] is None
        api.registry.update_job(job, note="waiting for workers: none has beaten for 30 s")
        shown = client.get(f"/v1/jobs/{job}").json()
        assert shown["note"] == "waiting for workers: none has beaten for 30 s"
        assert client.get("/v1/jobs").json()["jobs"][0]["note"] == shown["note"]
        api.registry.update_job(job, note="")
        assert client.get(f"/v1/jobs/{job}").json()["note"] is None
