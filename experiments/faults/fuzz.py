"""Schemathesis against a real ``nasfleet serve`` (issue 12, "Numbers"): answers counted by status code.

For each registry (``sqlite``: an SQLite file; ``postgres``: a private PostgreSQL on loopback, see
``support.py``) a fresh registry gets a tenant from ``nasfleet tenants create`` (the real key, printed
once), then ``nasfleet serve`` runs on a free loopback port with the embedded broker and, by default, its
orchestrator on and no local worker (submitted jobs are admitted and their tasks queued; nothing
scores). For ``--duration`` seconds, every operation of the server's own OpenAPI schema gets
schema-valid and schema-breaking requests (rounds of ``--examples`` cases per operation and generation
mode, a new seed each round), and, each round, the stateful workflow that follows the schema's links
(submit -> get, result, cancel, reports). Before that, the hand-written requests of the issue's findings
(``KNOWN_CASES``: huge ``max_memory_mb``, NUL and odd job ids, deep nesting, invalid UTF-8, a wrong
Content-Type, unauthenticated bodies just under and just over the 8 MiB limit, a request on the same
keep-alive connection after each).

Every answer is counted by status code; a 5xx or a failed connection is kept as a sample (curl command,
start of the body). The schema checks of tests/test_api_fuzz.py are run too and their failures counted
by check (informative: the goal is 0 answers of 5xx). Writes ``fuzz-<registry>.json`` in ``--out``.

    python experiments/faults/fuzz.py                               # 10 min per registry
    python experiments/faults/fuzz.py --registries sqlite --duration 30 --out /tmp/fuzz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from support import PostgresServer, Tracker, install_cleanup, log, nasfleet_command, pick_port, wait_until

HERE = Path(__file__).resolve().parent
TESTS = HERE.parents[1] / "tests"
SAMPLES = 20


class Tally:
    """Answers by status code, check failures by check, and samples of 5xx answers and failed calls."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.checks: Counter[str] = Counter()
        self.by_operation: dict[str, Counter[str]] = {}
        self.server_errors: list[dict[str, Any]] = []
        self.call_errors: list[dict[str, Any]] = []
        self.check_samples: dict[str, str] = {}
        self.problems: Counter[str] = Counter()  # of the generator or state machine, not of the server

    def answer(self, where: str, status: int, request: str, body: str) -> None:
        self.statuses[str(status)] += 1
        self.by_operation.setdefault(where, Counter())[str(status)] += 1
        if status >= 500 and len(self.server_errors) < SAMPLES:
            self.server_errors.append({"operation": where, "status": status, "request": request[:1500],
                                       "body": body[:500]})  # fmt: skip

    def failed_call(self, where: str, error: BaseException, request: str) -> None:
        self.statuses[f"no answer: {type(error).__name__}"] += 1
        if len(self.call_errors) < SAMPLES:
            self.call_errors.append({"operation": where, "error": f"{type(error).__name__}: {error}"[:500],
                                     "request": request[:1500]})  # fmt: skip

    def check_failed(self, error: BaseException) -> None:
        failures = getattr(error, "exceptions", None) or [error]
        for failure in failures:
            name = type(failure).__name__
            self.checks[name] += 1
            self.check_samples.setdefault(name, str(failure)[:600])

    @property
    def total(self) -> int:
        """Requests sent: answered, or not (a reset connection, a timeout)."""
        return sum(self.statuses.values())

    @property
    def server_error_count(self) -> int:
        return sum(n for code, n in self.statuses.items() if code.isdigit() and int(code) >= 500)


# -- the issue's own cases -------------------------------------------------------------------------------
def submit_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "space": "nb201", "space_options": {"channels": 8, "cells_per_stage": 1},
        "characteristics": {"input_shape": [3, 8, 8], "num_classes": 4, "num_samples": 40,
                            "label_histogram": [10, 10, 10, 10], "labeled": True},
        "constraints": {"max_params": 200000},
        "strategy": "evolution", "budget": 8, "ask_size": 4, "probe_batch_size": 8,
    }  # fmt: skip
    for key, value in changes.items():
        if key.startswith("constraints."):
            body["constraints"][key.split(".", 1)[1]] = value
        else:
            body[key] = value
    return body


def known_cases() -> list[tuple[str, str, str, dict[str, str], bytes | str | None, bool]]:
    """(name, method, path, headers, body, authenticated) of the requests behind the issue's findings."""
    json_type = {"Content-Type": "application/json"}
    deep = "[" * 100_000 + "]" * 100_000
    cases: list[tuple[str, str, str, dict[str, str], bytes | str | None, bool]] = []
    for value in ("1e308", "1e14", "1e999", "-1e308"):
        text = json.dumps(submit_body()).replace('"max_params": 200000', f'"max_memory_mb": {value}')
        cases.append((f"max_memory_mb={value}", "POST", "/v1/jobs", json_type, text, True))
    digits = json.dumps(submit_body()).replace('"budget": 8', '"budget": ' + "9" * 5000)
    cases.append(("budget of 5000 digits", "POST", "/v1/jobs", json_type, digits, True))
    for name, change in (("version true", {"version": True}), ("space ../evil", {"space": "../evil"}),
                         ("unknown key", {"surprise": 1}),
                         ("flops_per_ms 5e-324", {"constraints.flops_per_ms": 5e-324})):  # fmt: skip
        cases.append((name, "POST", "/v1/jobs", json_type, json.dumps(submit_body(**change)), True))
    cases += [
        ("deep nesting", "POST", "/v1/jobs", json_type, deep, True),
        ("invalid UTF-8", "POST", "/v1/jobs", json_type, b'{"space": "\xff\xfe"}', True),
        ("NaN", "POST", "/v1/jobs", json_type, '{"budget": NaN}', True),
        ("empty body", "POST", "/v1/jobs", json_type, b"", True),
        ("wrong Content-Type", "POST", "/v1/jobs", {"Content-Type": "text/plain"}, json.dumps(submit_body()),
         True),
        # Just under the 8 MiB body limit (8,388,607 bytes of valid JSON): authentication comes first, 401.
        ("8 MB unauthenticated", "POST", "/v1/jobs", json_type, b"[" + b"0," * (4 * 2**20 - 2) + b"0]",
         False),
        # Just over it (8,388,611 bytes): 413, whoever sends it.
        ("over 8 MiB unauthenticated", "POST", "/v1/jobs", json_type, b"[" + b"0," * (4 * 2**20) + b"0]",
         False),
        ("NUL job id", "GET", "/v1/jobs/%00", {}, None, True),
        ("NUL job id, cancel", "POST", "/v1/jobs/%00/cancel", {}, None, True),
        ("NUL job id, reports", "GET", "/v1/jobs/%00/reports", {}, None, True),
        ("dot-dot job id", "GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", {}, None, True),
        ("long job id", "GET", "/v1/jobs/" + "a" * 10_000, {}, None, True),
        ("unicode job id", "GET", "/v1/jobs/%F0%9F%92%A5", {}, None, True),
        ("limit huge", "GET", "/v1/jobs?limit=99999999999999999999", {}, None, True),
        ("status odd", "GET", "/v1/jobs?status=%00", {}, None, True),
        ("health", "GET", "/v1/health", {}, None, False),
    ]  # fmt: skip
    return cases


# The documented answer of the known cases where docs/api.md names one (the others are only counted).
EXPECTED = {
    "8 MB unauthenticated": 401, "over 8 MiB unauthenticated": 413,
    "NUL job id": 404, "NUL job id, cancel": 404, "NUL job id, reports": 404, "dot-dot job id": 404,
    "long job id": 404, "unicode job id": 404,
    "deep nesting": 400, "invalid UTF-8": 400, "NaN": 400, "empty body": 400, "wrong Content-Type": 415,
    "health": 200,
}  # fmt: skip


def run_known_cases(base: str, key: str, tally: Tally) -> list[dict[str, Any]]:
    """Each case on one keep-alive session, each followed by a plain GET on the same session (the issue
    saw the connection reset after a 500). Returns each case's answer, beside the documented one."""
    session = requests.Session()
    answers: list[dict[str, Any]] = []
    for name, method, path, headers, body, authenticated in known_cases():
        auth = {"Authorization": f"Bearer {key}"} if authenticated else {}
        request = f"{method} {path} {headers} body[:200]={str(body)[:200]!r}"
        record: dict[str, Any] = {"case": name, "body_bytes": len(body) if body is not None else 0,
                                  "expected": EXPECTED.get(name)}  # fmt: skip
        began = time.time()
        try:
            answer = session.request(method, base + path, headers={**headers, **auth}, data=body, timeout=30)
            tally.answer(f"known: {name}", answer.status_code, request, answer.text)
            record["status"] = answer.status_code
        except requests.RequestException as error:
            tally.failed_call(f"known: {name}", error, request)
            record["status"] = f"no answer: {type(error).__name__}"
        record["seconds"] = round(time.time() - began, 3)
        answers.append(record)
        try:
            after = session.get(
                base + "/v1/jobs?limit=1", headers={"Authorization": f"Bearer {key}"}, timeout=30
            )
            tally.answer(f"known: after {name}", after.status_code, "GET /v1/jobs?limit=1", after.text)
        except requests.RequestException as error:
            tally.failed_call(f"known: after {name}", error, "GET /v1/jobs?limit=1 (same connection)")
            session = requests.Session()
    return answers


# -- schemathesis ----------------------------------------------------------------------------------------
def fuzz(base: str, key: str, tally: Tally, deadline: float, examples: int) -> dict[str, int]:
    import schemathesis
    from hypothesis.errors import HypothesisException
    from schemathesis import GenerationMode

    sys.path.append(str(TESTS))  # the schema checks of tests/test_api_fuzz.py, from the tests' helpers
    from service_support import accept_413_as_rejection, schema_checks

    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    accept_413_as_rejection(schema)
    all_checks = schema_checks()
    operations = [result.ok() for result in schema.get_all_operations()]
    rounds = {"rounds": 0, "stateful_runs": 0, "stateful_errors": 0}

    def call(case: Any, where: str) -> Any:
        request = case.as_curl_command(headers=headers)
        try:
            response = case.call(headers=headers, timeout=30)
        except Exception as error:
            tally.failed_call(where, error, request)
            return None
        tally.answer(where, response.status_code, request, response.text)
        try:
            case.validate_response(response, checks=all_checks, headers=headers)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # schemathesis raises a FailureGroup (a BaseExceptionGroup)
            tally.check_failed(error)
        return response

    while time.time() < deadline:
        rounds["rounds"] += 1
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if time.time() >= deadline:
                    break
                where = f"{operation.method.upper()} {operation.path} ({mode.value})"

                try:
                    _examples(operation.as_strategy(generation_mode=mode), where,
                              rounds["rounds"] * 7919 + zlib.crc32(where.encode()) % 1000, examples, deadline,
                              call)  # fmt: skip
                except HypothesisException as error:  # e.g. no examples can be generated
                    tally.problems[f"hypothesis: {type(error).__name__}"] += 1
                except Exception as error:  # anything else of the generator: counted, the run goes on
                    tally.problems[f"generator: {type(error).__name__}"] += 1
        if time.time() < deadline:
            stateful(schema, tally, call, deadline, examples, rounds)
    return rounds


def _examples(strategy: Any, where: str, seed_value: int, examples: int, deadline: float, call: Any) -> None:
    """*examples* cases drawn from *strategy* (no shrinking, no example database), each called."""
    from hypothesis import HealthCheck, Phase, given, seed, settings

    @seed(seed_value)
    @given(strategy)
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate], database=None)  # fmt: skip
    def one(case: Any) -> None:
        if time.time() < deadline:
            call(case, where)

    one()


def stateful(schema: Any, tally: Tally, call: Any, deadline: float, examples: int, rounds: dict[str, int]
             ) -> None:  # fmt: skip
    """One run of the link-following state machine, every call counted like the others."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    base_machine = schema.as_state_machine()

    class Machine(base_machine):  # type: ignore[misc,valid-type]
        def call(self, case: Any, **kwargs: Any) -> Any:
            if time.time() >= deadline:
                raise _OutOfTimeError
            response = call(case, f"stateful: {case.operation.method.upper()} {case.operation.path}")
            if response is None:
                raise _OutOfTimeError  # a failed connection: end this run, it was counted
            return response

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            return None  # checked in call

    rounds["stateful_runs"] += 1
    try:
        run_state_machine_as_test(Machine, settings=settings(
            max_examples=max(2, examples // 2), stateful_step_count=6, deadline=None,
            suppress_health_check=list(HealthCheck), database=None))  # fmt: skip
    except _OutOfTimeError:
        pass
    except Exception as error:
        rounds["stateful_errors"] += 1
        tally.problems[f"stateful: {type(error).__name__}"] += 1


class _OutOfTimeError(Exception):
    pass


# -- a server ----------------------------------------------------------------------------------------------
def serve_and_fuzz(registry_kind: str, args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    tracker = Tracker()
    root = Path(tempfile.mkdtemp(prefix=f"nasfleet-fuzz-{registry_kind}-"))
    root.chmod(0o755)
    result: dict[str, Any] = {"registry": registry_kind, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    server: PostgresServer | None = None
    try:
        if registry_kind == "postgres":
            server = PostgresServer(tracker, root / "postgres", args.postgres_port)
            server.start()
            registry = server.create_database(f"fuzz_{uuid.uuid4().hex[:8]}")
        else:
            registry = f"sqlite:///{root / 'registry.sqlite'}"
        nasfleet = nasfleet_command()
        key_log = root / "tenants.log"
        tracker.run([*nasfleet, "tenants", "create", "fuzz", "--registry", registry], key_log)
        key = _key_from(key_log)
        port = pick_port(args.port)
        base = f"http://127.0.0.1:{port}"
        command = [*nasfleet, "serve", "--host", "127.0.0.1", "--port", str(port), "--registry", registry,
                   "--broker", f"sqlite:///{root / 'broker.sqlite'}", "--local-workers", str(args.workers),
                   "--state-dir", str(root / "state"),
                   "--orchestrate" if args.orchestrate else "--no-orchestrate"]  # fmt: skip
        serve = tracker.spawn(command, root / "serve.log")

        def up() -> bool:
            if serve.poll() is not None:
                raise RuntimeError(f"nasfleet serve exited with {serve.returncode}: "
                                   f"{(root / 'serve.log').read_text(errors='replace')[-1500:]}")  # fmt: skip
            try:
                return requests.get(f"{base}/openapi.json", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, 90, "nasfleet serve", step_s=0.5)
        log(f"{registry_kind}: nasfleet serve at {base}; {args.duration:.0f} s of fuzzing")
        tally = Tally()
        started = time.time()
        known = run_known_cases(base, key, tally)
        unexpected = [k for k in known if k["expected"] is not None and k["status"] != k["expected"]]
        log(f"{registry_kind}: {tally.total} answers to the known cases, {tally.server_error_count} of 5xx, "
            f"{len(unexpected)} not the documented status: {unexpected}")  # fmt: skip
        rounds = fuzz(base, key, tally, started + args.duration, args.examples)
        result.update(
            known_cases=known, known_unexpected=unexpected,
            seconds=round(time.time() - started, 1), answers=tally.total,
            server_errors=tally.server_error_count,
            statuses=dict(sorted(tally.statuses.items())), check_failures=dict(tally.checks),
            no_answer=sum(n for code, n in tally.statuses.items() if not code.isdigit()),
            generation_problems=dict(tally.problems),
            check_samples=tally.check_samples, server_error_samples=tally.server_errors,
            call_error_samples=tally.call_errors,
            by_operation={k: dict(v) for k, v in sorted(tally.by_operation.items())}, **rounds,
            serve_alive_at_end=serve.poll() is None,
            serve_log_errors=_log_errors(root / "serve.log"),
        )  # fmt: skip
        log(f"{registry_kind}: {tally.total} answers, {tally.server_error_count} of 5xx, statuses "
            f"{dict(sorted(tally.statuses.items()))}")  # fmt: skip
    except Exception as error:
        result.update(status="error", reason=f"{type(error).__name__}: {error}"[:2000])
        log(f"{registry_kind}: error: {result['reason']}")
    finally:
        if server is not None:
            server.stop()
        tracker.kill_all()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return result


def _key_from(path: Path) -> str:
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    candidates = [line for line in lines if " " not in line and not line.startswith("===")]
    if not candidates:
        raise RuntimeError(f"no API key in the output of nasfleet tenants create: {lines}")
    return candidates[-1]


def _log_errors(path: Path) -> dict[str, Any]:
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]
    return {"count": len(lines), "first": lines[:10]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registries", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of fuzzing per registry")
    parser.add_argument("--examples", type=int, default=25, help="cases per operation, mode and round")
    parser.add_argument("--workers", type=int, default=0, help="local workers of serve (0: nothing scores)")
    parser.add_argument("--orchestrate", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--postgres-port", type=int, default=5439)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    install_cleanup()
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in [r.strip() for r in args.registries.split(",") if r.strip()]:
        if kind not in ("sqlite", "postgres"):
            parser.error(f"unknown registry {kind!r}")
        result = serve_and_fuzz(kind, args)
        result["settings"] = {k: str(v) for k, v in vars(args).items()}
        path = args.out / f"fuzz-{kind}.json"
        path.write_text(json.dumps(result, indent=1, default=str) + "\n")
        log(f"wrote {path}")


if __name__ == "__main__":
    main()
