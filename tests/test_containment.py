"""Containment: a poison job or a poison device fails alone, with its reason; every honest one finishes.

Each orchestrator test puts one poison job (one class of failure each) beside an honest job of another
tenant, runs them in process (`LocalDispatcher`, no broker) and checks that the honest one is done and the
poison one failed with an error naming what is wrong. The Flower tests feed `parse_query_reply` and
`_attach_report` each malformed reply beside a good one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from service_support import OPTIONS, characteristics, sqlite_url
from sqlalchemy.exc import IntegrityError, OperationalError
from test_federation import DEVICE_NODE_ID, instruction, query_reply_content, reply_to_query

from nasfleet.protocol.messages import MessageError, ResourceConstraints, TrainingReport
from nasfleet.protocol.wire import TRAIN, unpack
from nasfleet.server.federation.app import _attach_report, parse_query_reply
from nasfleet.server.federation.round import DeviceOutcome
from nasfleet.server.registry import JobRecord, Registry, RegistryError
from nasfleet.server.service.containment import describe, registry_unreachable
from nasfleet.server.service.dispatch import LocalDispatcher
from nasfleet.server.service.jobs import JobRun, submit_job
from nasfleet.server.service.orchestrator import Orchestrator
from nasfleet.strategies.base import StrategyError

BUDGET = 8


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(sqlite_url(tmp_path)) as opened:
        yield opened


def _submit(registry: Registry, tenant: str, **changes: Any) -> JobRecord:
    return submit_job(registry, tenant, characteristics(1), budget=BUDGET, options=OPTIONS, **changes)


def _raise_for(poison: JobRecord, method: str, error: Exception) -> Callable[..., Any]:
    """*method* of `JobRun` that raises *error* for the poison job and works for every other one."""
    original = getattr(JobRun, method)

    def patched(self: JobRun, *args: Any, **kwargs: Any) -> Any:
        if self.id == poison.id:
            raise error
        return original(self, *args, **kwargs)

    return patched


def _run_beside_honest(registry: Registry, poison: JobRecord) -> tuple[JobRecord, JobRecord]:
    """Run the poison job and an honest job of another tenant; both records afterwards."""
    honest = _submit(registry, "honest")
    Orchestrator(registry, LocalDispatcher(registry)).run(timeout_s=300)
    poisoned, done = registry.get_job(poison.id), registry.get_job(honest.id)
    assert poisoned is not None and done is not None
    assert done.status == "done" and done.evaluations_done == BUDGET, (done.status, done.error)
    assert registry.get_result(honest.id) is not None
    return poisoned, done


def test_constraints_that_would_overflow_fail_their_job_naming_the_field(registry: Registry) -> None:
    # Stored as an old server would have stored it: the dataclass itself does not check its range.
    poison = _submit(registry, "hostile", constraints=ResourceConstraints(max_memory_mb=1e308))
    poisoned, _ = _run_beside_honest(registry, poison)
    assert poisoned.status == "failed"
    assert (
        poisoned.error
        == "cannot start: max_memory_mb must be null or a number in [0.001, 1e+07], but got 1e+308"
    )


def test_options_that_cannot_be_loaded_fail_their_job_naming_the_field(registry: Registry) -> None:
    chars = characteristics(1)
    stored = _submit(registry, "template")
    options = {**stored.options, "ask_size": True}
    registry.create_tenant("hostile")
    poison = registry.create_job("hostile", space="nb201", strategy="evolution", budget=BUDGET,
                                 characteristics_hash=chars.digest(), options=options)  # fmt: skip
    poisoned, _ = _run_beside_honest(registry, poison)
    assert poisoned.error == "cannot start: ask_size must be an integer in [1, 1024], but got True"
    assert registry.get_job(stored.id).status == "done"  # type: ignore[union-attr]


def test_a_strategy_state_that_cannot_be_loaded_fails_its_job(registry: Registry) -> None:
    poison = _submit(registry, "hostile")
    state = {
        "version": 1,
        "strategy": {"population": "not a list"},
        "archive": [],
        "steps": [],
        "history": [],
    }
    registry.claim_job(poison.id)
    registry.update_job(poison.id, state=state)
    poisoned, _ = _run_beside_honest(registry, poison)
    assert poisoned.status == "failed" and poisoned.error is not None
    assert poisoned.error.startswith("cannot start: "), poisoned.error


@pytest.mark.parametrize(
    ("method", "error", "reason"),
    [
        ("begin_step", RuntimeError("boom"), "step failed: RuntimeError: boom"),
        ("finish_step", OverflowError("cannot convert float infinity to integer"),
         "step failed: OverflowError: cannot convert float infinity to integer"),
        ("finish_step", StrategyError("population_size must be >= 2, but got 1"),
         "step failed: population_size must be >= 2, but got 1"),
        ("finish_step", RecursionError("maximum recursion depth exceeded"),
         "step failed: RecursionError: maximum recursion depth exceeded"),
        ("finish", ZeroDivisionError("division by zero"),
         "cannot store the result: ZeroDivisionError: division by zero"),
        ("finish", RegistryError("result arch must be at most 2000 characters, but got 'x'"),
         "cannot store the result: result arch must be at most 2000 characters, but got 'x'"),
    ],
    ids=["begin-runtime", "finish-step-overflow", "finish-step-strategy", "finish-step-recursion",
         "finish-zero-division", "finish-registry-refuses"],
)  # fmt: skip
def test_a_job_whose_step_raises_fails_alone(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, method: str, error: Exception, reason: str
) -> None:
    poison = _submit(registry, "hostile")
    monkeypatch.setattr(JobRun, method, _raise_for(poison, method, error))
    poisoned, _ = _run_beside_honest(registry, poison)
    assert (poisoned.status, poisoned.error) == ("failed", reason)


def test_a_checkpoint_the_registry_refuses_fails_only_that_job(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison = _submit(registry, "hostile")
    original = Registry.checkpoint

    def refuse(self: Registry, job_id: str, *args: Any, **kwargs: Any) -> int:
        if job_id == poison.id:
            cause = IntegrityError("INSERT ...", {}, Exception("CHECK constraint failed"))
            raise RegistryError("could not write to the registry: CHECK constraint failed") from cause
        return original(self, job_id, *args, **kwargs)

    monkeypatch.setattr(Registry, "checkpoint", refuse)
    poisoned, _ = _run_beside_honest(registry, poison)
    assert poisoned.status == "failed"
    assert poisoned.error == "step failed: could not write to the registry: CHECK constraint failed"


def test_an_unreachable_registry_stops_the_loop_and_fails_no_job(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [_submit(registry, "a"), _submit(registry, "b")]

    def down(self: Registry, *args: Any, **kwargs: Any) -> int:
        cause = OperationalError("UPDATE jobs ...", {}, sqlite3.OperationalError("database is locked"))
        raise RegistryError("could not write to the registry: database is locked") from cause

    monkeypatch.setattr(Registry, "checkpoint", down)
    with pytest.raises(RegistryError, match="database is locked"):
        Orchestrator(registry, LocalDispatcher(registry)).run(timeout_s=300)
    monkeypatch.undo()
    for job in jobs:  # still running: a restarted orchestrator resumes them
        record = registry.get_job(job.id)
        assert record is not None and (record.status, record.error) == ("running", None)
    Orchestrator(registry, LocalDispatcher(registry)).run(timeout_s=300)
    assert [registry.get_job(job.id).status for job in jobs] == ["done", "done"]  # type: ignore[union-attr]


def test_registry_unreachable_tells_a_dead_connection_from_a_refused_row() -> None:
    def wrapped(cause: BaseException) -> RegistryError:
        try:
            raise RegistryError("could not write") from cause
        except RegistryError as error:
            return error

    assert registry_unreachable(wrapped(OperationalError("SELECT 1", {}, Exception("connection refused"))))
    assert registry_unreachable(wrapped(ConnectionResetError("reset by peer")))
    assert not registry_unreachable(wrapped(IntegrityError("INSERT", {}, Exception("UNIQUE failed"))))
    assert not registry_unreachable(RegistryError("state must be JSON data, but got nan"))


def test_describe_keeps_explained_errors_plain_and_names_other_types() -> None:
    assert describe(MessageError("epsilon must be a number in [0.001, 1000], but got 0")) == (
        "epsilon must be a number in [0.001, 1000], but got 0"
    )
    assert describe(KeyError("strategy")) == "KeyError: 'strategy'"
    assert describe(ValueError("nul \x00 " + "x" * 5000)).startswith("ValueError: nul \\x00 x")
    assert len(describe(ValueError("x" * 5000))) == 2000


# -- Flower: one malformed device reply never aborts the round ---------------------------------------------
def _nested_json(content: RecordDict) -> RecordDict:
    content["identity"] = ConfigRecord({"json": "[" * 100_000 + "]" * 100_000})
    return content


def _huge_integer(content: RecordDict) -> RecordDict:
    text = str(content["characteristics"]["json"])  # type: ignore[index]
    content["characteristics"] = ConfigRecord(
        {"json": text.replace('"num_samples": 100', '"num_samples": ' + "9" * 5000)}
    )
    return content


def _string_array(content: RecordDict) -> RecordDict:
    arrays = content["characteristics.arrays"]
    assert isinstance(arrays, ArrayRecord)
    arrays["class_means"] = Array(np.array([["a"] * 64] * 10))
    return content


def _complex_array(content: RecordDict) -> RecordDict:
    arrays = content["characteristics.arrays"]
    assert isinstance(arrays, ArrayRecord)
    arrays["class_means"] = Array(np.ones((10, 64), dtype=np.complex64))
    return content


POISON_REPLIES = [
    pytest.param(_nested_json, "identity.json must be valid JSON", id="nested-json"),
    pytest.param(_huge_integer, "characteristics.json must be valid JSON", id="5000-digit-int"),
    pytest.param(_string_array, "of real numbers", id="string-array"),
    pytest.param(_complex_array, "of real numbers", id="complex-array"),
]


@pytest.mark.parametrize(("corrupt", "reason"), POISON_REPLIES)
def test_a_poison_query_reply_is_an_error_outcome_and_a_good_one_beside_it_parses(
    corrupt: Callable[[RecordDict], RecordDict], reason: str
) -> None:
    replies = {1: reply_to_query(corrupt(query_reply_content())), 2: reply_to_query(query_reply_content())}
    bad, good = (parse_query_reply(node, reply) for node, reply in replies.items())
    assert bad.status == "error" and reason in bad.error, bad.error
    assert bad.error.startswith("malformed query reply: ")
    assert (good.status, good.error) == ("ok", "") and good.characteristics is not None


def test_a_reader_that_crashes_on_a_reply_fails_only_that_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import nasfleet.server.federation.app as server_app

    def crash(content: RecordDict, name: str, kind: Any) -> Any:
        if len(content) == 1:  # the poison reply carries one record only
            raise RuntimeError("decoder bug")
        return unpack(content, name, kind)

    monkeypatch.setattr(server_app, "unpack", crash)
    poison = RecordDict()
    poison["identity"] = ConfigRecord({"json": "{}"})
    bad = parse_query_reply(1, reply_to_query(poison))
    good = parse_query_reply(2, reply_to_query(query_reply_content()))
    assert (bad.status, bad.error) == ("error", "unreadable query reply: RuntimeError: decoder bug")
    assert good.ok


def _report_reply(scalars: dict[str, Any] | None = None, json_text: str | None = None) -> Message:
    content = RecordDict()
    if json_text is not None:
        content["report"] = ConfigRecord({"json": json_text})
    else:
        report = TrainingReport("job-1", "arch", 0.5, 1.0, 2.0, 3.0, 10, 5, 1)
        wire = {**report.to_wire()[0], **(scalars or {})}
        content["report"] = ConfigRecord({"json": json.dumps(wire)})
    return Message(content, reply_to=instruction(RecordDict(), TRAIN, DEVICE_NODE_ID))


HUGE_INT = '{"num_train": ' + "7" * 5000 + "}"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        pytest.param(_report_reply(json_text="{" * 50_000), "report.json must be valid JSON", id="nested"),
        pytest.param(_report_reply(json_text=HUGE_INT), "report.json must be valid JSON", id="5000-digits"),
        pytest.param(_report_reply({"train_seconds": 1e308}), "train_seconds must be a", id="1e308"),
        pytest.param(_report_reply({"version": True}), "version must be 1 (an integer)", id="bool-version"),
        pytest.param(_report_reply({"version": 1.0}), "version must be 1 (an integer)", id="float-version"),
        pytest.param(_report_reply({"extra": 1}), "unknown keys ['extra']", id="unknown-key"),
    ],
)  # fmt: skip
def test_a_poison_training_report_fails_its_device_and_a_good_one_is_attached(
    reply: Message, reason: str
) -> None:
    bad, good = DeviceOutcome(1), DeviceOutcome(2)
    _attach_report(bad, reply, shared=False)
    _attach_report(good, _report_reply(), shared=False)
    assert bad.status == "error" and reason in bad.error, bad.error
    assert bad.report is None
    assert good.ok and good.report is not None and good.report.accuracy == 0.5
