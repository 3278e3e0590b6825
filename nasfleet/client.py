"""A small typed client of the tenant HTTP API (`nasfleet serve`, docs/api.md).

It uses only the standard library (``urllib.request`` and ``json``), so ``import nasfleet.client`` loads
neither Celery, SQLAlchemy, FastAPI nor torch. Answers become frozen dataclasses (`Job`, `Result`,
`Report`, `Health`) with the fields the API returns.

Errors:

- `ApiError`: the server answered with an error status; its message holds the status and the server's
  detail, which names the fields at fault (``HTTP 422 invalid_request: budget: ...``);
- `ConnectionError`: the server could not be reached; the message names the URL;
- `JobError`: `TenantClient.wait` saw the job fail or be cancelled; the message holds the server's reason;
- `TimeoutError`: a request, or `TenantClient.wait`, ran out of time.
"""

from __future__ import annotations

import base64
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode, urlsplit

FINISHED = ("done", "failed", "cancelled")
PAGE = 500  # the most jobs GET /v1/jobs answers at once


class ApiError(Exception):
    """The API answered ``status`` (4xx or 5xx). ``detail`` is the server's message; ``code`` its stable
    error code (``invalid_request``, ``unauthorized`` ...) and ``fields`` the problems naming each field."""

    def __init__(
        self, status: int, detail: str, code: str = "", fields: tuple[Mapping[str, Any], ...] = ()
    ) -> None:
        shown = f"{code}: {detail}" if code else detail
        super().__init__(f"HTTP {status} {shown}")
        self.status, self.detail, self.code, self.fields = status, detail, code, fields


class JobError(RuntimeError):
    """A job `TenantClient.wait` waited for ended ``failed`` or ``cancelled``; ``job`` is its last state."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} {job.status}: {job.error or 'no reason given'}")
        self.job = job


# -- answers -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Health:
    status: str
    orchestrator: str
    problems: tuple[str, ...]


@dataclass(frozen=True)
class Job:
    """A job's state: evaluations done of the budget, the best so far, why it fails or does not advance."""

    id: str
    status: str
    space: str
    strategy: str
    device: str | None
    budget: int
    evaluations_done: int
    progress: float
    best_arch: str | None
    best_score: float | None
    error: str | None
    note: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class Result:
    """The delivered SubNet: arch, aggregate score, exact costs, raw proxies, history, ``subnet`` (how to
    build it: ``space``, ``space_options``, ``genome``, ``num_classes``, ``input_shape`` ...)."""

    job_id: str
    arch: str
    score: float
    params: int
    flops: int
    latency_ms_predicted: float | None
    proxy_values: dict[str, float]
    history: list[dict[str, Any]]
    subnet: dict[str, Any]


@dataclass(frozen=True)
class Report:
    """A device's training report on a job's SubNet, as stored; the fields with a default are absent from
    an older server's answers (it did not store them)."""

    id: str
    job_id: str
    arch: str
    device: str | None
    accuracy: float
    loss: float
    train_seconds: float
    num_train: int
    num_test: int
    latency_ms_predicted: float | None
    latency_ms_measured: float | None
    created_at: datetime
    epochs_done: int | None = None
    run: str | None = None
    round: int | None = None


Answer = TypeVar("Answer", Health, Job, Result, Report)
CONVERSIONS: dict[str, Callable[[Any], Any]] = {"datetime": datetime.fromisoformat, "tuple[str, ...]": tuple}
"""JSON values to the annotated type of a field (``from __future__`` annotations are strings)."""


def _answer(kind: type[Answer], data: Any) -> Answer:
    """*kind* from a JSON object; unknown fields (a newer server's) are left out, and a field with a default
    may be missing (an older server's)."""
    values = {}
    for field in fields(kind):
        if isinstance(data, dict) and field.name not in data and field.default is not MISSING:
            continue
        if not isinstance(data, dict) or field.name not in data:
            raise ValueError(
                f"the API's answer must be a {kind.__name__} with {field.name!r}, but got {data!r:.200}"
            )
        convert = CONVERSIONS.get(str(field.type))
        values[field.name] = convert(data[field.name]) if convert else data[field.name]
    return kind(**values)


# -- request bodies ------------------------------------------------------------------------------------------
class WireMessage(Protocol):
    """A message of `nasfleet.protocol.messages` (characteristics, constraints, profile)."""

    def to_wire(self) -> tuple[dict[str, Any], dict[str, Any]]: ...


def _body(value: Mapping[str, Any] | WireMessage) -> dict[str, Any]:
    """The JSON of a request field: a mapping as it is, a wire message as its scalars (less ``kind`` and
    ``version``) with its arrays as ``{"shape", "float32"}`` base64 (the compact form the API takes)."""
    if isinstance(value, Mapping):
        return dict(value)
    scalars, arrays = value.to_wire()
    body = {key: item for key, item in scalars.items() if key not in ("kind", "version")}
    for name, array in arrays.items():
        raw = array.astype("<f4").tobytes()
        body[name] = {"shape": list(array.shape), "float32": base64.b64encode(raw).decode()}
    return body


# -- the client ----------------------------------------------------------------------------------------------
class TenantClient:
    """One tenant's client of the API at ``base_url`` (``http://127.0.0.1:8000``), with its API key.

    ``timeout`` is the seconds one request may take. Every method sends one request (`jobs` and `wait`
    several) and raises `ApiError`, `ConnectionError` or `TimeoutError` as the module says.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an http:// or https:// URL, but got {base_url!r}")
        if not isinstance(timeout, int | float) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, but got {timeout!r}")
        self.base_url, self.api_key, self.timeout = base_url.rstrip("/"), api_key, float(timeout)

    def __repr__(self) -> str:
        return f"TenantClient({self.base_url!r})"  # never the key

    # -- routes ----------------------------------------------------------------------------------------------
    def health(self) -> Health:
        """Liveness (no key needed): ``ok``, or ``degraded`` with the problems; the orchestrator state."""
        return _answer(Health, self._request("GET", "/v1/health"))

    def submit(
        self,
        characteristics: Mapping[str, Any] | WireMessage,
        *,
        space: str = "nb201",
        space_options: Mapping[str, int] | None = None,
        constraints: Mapping[str, Any] | WireMessage | None = None,
        profile: Mapping[str, Any] | WireMessage | None = None,
        device: str | None = None,
        strategy: str = "evolution",
        strategy_config: Mapping[str, bool | int | float] | None = None,
        budget: int = 24,
        seed: int = 0,
        ask_size: int = 8,
        probe_batch_size: int = 16,
        scoring_seed: int = 0,
    ) -> Job:
        """Submit a SubNet request (``POST /v1/jobs``); the arguments are the body's fields, with its
        defaults. ``characteristics``, ``constraints`` and ``profile`` are JSON mappings in wire form, or
        `DataCharacteristics`, `ResourceConstraints` and `DeviceProfile` messages."""
        body: dict[str, Any] = {
            "space": space, "space_options": dict(space_options or {}),
            "characteristics": _body(characteristics), "strategy": strategy,
            "strategy_config": dict(strategy_config or {}), "budget": budget, "seed": seed,
            "ask_size": ask_size, "probe_batch_size": probe_batch_size, "scoring_seed": scoring_seed,
        }  # fmt: skip
        optional = {"constraints": constraints, "profile": profile}
        body.update({name: _body(value) for name, value in optional.items() if value is not None})
        if device is not None:
            body["device"] = device
        return _answer(Job, self._request("POST", "/v1/jobs", body))

    def status(self, job_id: str) -> Job:
        """The job's state and progress."""
        return _answer(Job, self._request("GET", _job(job_id)))

    def jobs(self, *, status: str | None = None) -> list[Job]:
        """All of the tenant's jobs, oldest first; only those of ``status`` when given."""
        found: list[Job] = []
        while True:
            query = {"offset": len(found), "limit": PAGE, **({"status": status} if status else {})}
            page = self._request("GET", f"/v1/jobs?{urlencode(query)}")
            found.extend(_answer(Job, item) for item in page["jobs"])
            if not page["jobs"] or len(found) >= page["total"]:
                return found

    def result(self, job_id: str) -> Result:
        """The delivered SubNet; `ApiError` 409 until the job is done."""
        return _answer(Result, self._request("GET", f"{_job(job_id)}/result"))

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (again is no error); `ApiError` 409 once it is done or failed."""
        return _answer(Job, self._request("POST", f"{_job(job_id)}/cancel"))

    def report(
        self,
        job_id: str,
        *,
        arch: str,
        accuracy: float,
        loss: float,
        train_seconds: float,
        num_train: int,
        num_test: int,
        latency_ms_predicted: float | None = None,
        latency_ms_measured: float | None = None,
        device: str | None = None,
        epochs_done: int | None = None,
    ) -> Report:
        """Record a device's training report on the job's SubNet (``arch`` must be the one delivered)."""
        body = {
            "arch": arch, "accuracy": accuracy, "loss": loss, "train_seconds": train_seconds,
            "num_train": num_train, "num_test": num_test, "latency_ms_predicted": latency_ms_predicted,
            "latency_ms_measured": latency_ms_measured, "device": device, "epochs_done": epochs_done,
        }  # fmt: skip
        return _answer(Report, self._request("POST", f"{_job(job_id)}/reports", body))

    def reports(self, job_id: str) -> list[Report]:
        """The reports recorded on the job, oldest first."""
        answer = self._request("GET", f"{_job(job_id)}/reports")
        return [_answer(Report, item) for item in answer["reports"]]

    # -- beyond one request ----------------------------------------------------------------------------------
    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        progress: Callable[[Job], None] | bool = True,
    ) -> Job:
        """Poll the job every ``poll`` seconds until it is done; the done `Job`.

        ``progress=True`` shows evaluations done of the budget on stderr, as the command line does (a bar
        on a terminal, else a line every 5%); a callable is called with the `Job` after each poll.
        Raises `JobError` (with the server's reason) when the job fails or is cancelled, and
        `TimeoutError` when it is not finished after ``timeout`` seconds.
        """
        if not poll > 0:
            raise ValueError(f"poll must be a number of seconds > 0, but got {poll!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.status(job_id)
        with _shown(progress, job) as show:
            while True:
                show(job)
                if job.status == "done":
                    return job
                if job.finished:
                    raise JobError(job)
                left = math.inf if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"job {job.id} is still {job.status} after {timeout} s "
                        f"({job.evaluations_done}/{job.budget} evaluations)"
                    )
                time.sleep(min(poll, left))
                job = self.status(job_id)

    def export(self, job_id: str, path: str | Path, format: str = "onnx") -> Path:
        """Write the job's delivered SubNet to ``path`` as a deployable model file (``onnx`` or
        ``torchscript``), with its input shape and class count, through `nasfleet.export.export_subnet`
        (which loads torch)."""
        from nasfleet.export import export_subnet

        subnet = self.result(job_id).subnet
        return export_subnet(
            subnet["space"], subnet["arch"], path, format=format, num_classes=subnet["num_classes"],
            input_shape=tuple(subnet["input_shape"]), space_options=subnet["space_options"],
        )  # fmt: skip

    # -- transport -------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """The JSON answer of one request; `ApiError` for an error status."""
        url = f"{self.base_url}{path}"
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        data = None
        if body is not None:
            try:
                data = json.dumps(body, allow_nan=False).encode()
            except ValueError as error:  # NaN or Infinity, which JSON lacks
                raise ValueError(f"the request to {path} must hold finite numbers only: {error}") from None
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            raise _api_error(error) from None
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise TimeoutError(f"{method} {url}: no answer within {self.timeout} s") from None
            where = f"{self.base_url} ({method} {path})"
            raise ConnectionError(f"cannot reach the nasfleet API at {where}: {error.reason}") from None
        except TimeoutError:
            raise TimeoutError(f"{method} {url}: no answer within {self.timeout} s") from None


@contextmanager
def _shown(progress: Callable[[Job], None] | bool, job: Job) -> Iterator[Callable[[Job], None]]:
    """What `TenantClient.wait` calls after each poll: *progress* itself, or the command line's display."""
    if callable(progress):
        yield progress
        return
    from nasfleet.progress import progress as display  # loads rich: only when progress is shown

    with display(f"job {job.id[:8]}", job.budget, progress) as update:
        yield lambda seen: update(seen.evaluations_done, seen.note or seen.status)


def _job(job_id: str) -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}"


def _api_error(error: urllib.error.HTTPError) -> ApiError:
    """The server's structured error (docs/api.md, "Errors"), or the raw text of any other answer."""
    text = error.read().decode(errors="replace")
    try:
        body = json.loads(text)
        return ApiError(error.code, str(body["message"]), str(body["error"]), tuple(body.get("fields", ())))
    except (ValueError, TypeError, KeyError):
        return ApiError(error.code, text.strip()[:500] or str(error.reason))
