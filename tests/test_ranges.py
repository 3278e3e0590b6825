"""Finite ranges at every boundary: wire messages, job options, strategy options and the HTTP API.

Every numeric field has a documented closed range (docs/api.md, "Ranges"); a value outside it, a value of
the wrong JSON type or an unknown key is refused with a `MessageError` (or a 422 over HTTP) that names the
field, the rule and the value, and anything accepted can be used without overflow.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from service_support import characteristics, sqlite_url

from nasfleet.protocol import messages
from nasfleet.protocol.messages import MessageError
from nasfleet.server.api.app import create_app
from nasfleet.server.registry import Registry
from nasfleet.server.service.jobs import JobOptions
from nasfleet.strategies.base import SearchLimits, StrategyError
from nasfleet.strategies.evolution import EvolutionOptions
from nasfleet.strategies.options import parse_options

ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
MESSAGES: dict[str, Any] = {
    "constraints": messages.ResourceConstraints(200_000, 1_000_000, 50.0, 1.0),
    "profile": messages.DeviceProfile("micro", 1e5, 0.5, 1.0),
    "subnet": messages.SubNetAssignment("job-1", "nb201", ARCH, 4, (3, 8, 8), messages.TrainConfig()),
    "report": messages.TrainingReport("job-1", ARCH, 0.5, 1.0, 2.0, 3.0, 10, 5, 1),
    "identity": messages.DeviceIdentity("acme", "device-0"),
    "characteristics": characteristics(0),
}
#: (message, field, (low, high)) of every numeric range a test checks at both ends.
RANGES = [
    ("constraints", "max_params", (1, 10**15)),
    ("constraints", "max_flops", (1, 10**15)),
    ("constraints", "max_latency_ms", (1e-3, 1e7)),
    ("constraints", "max_memory_mb", (1e-3, 1e7)),
    ("profile", "flops_per_ms", (1e-3, 1e12)),
    ("profile", "overhead_ms", (0.0, 1e6)),
    ("profile", "memory_mb", (1e-3, 1e7)),
    ("subnet", "train_epochs", (1, 1000)),
    ("subnet", "train_batch_size", (1, 4096)),
    ("subnet", "train_learning_rate", (1e-8, 10.0)),
    ("subnet", "train_max_seconds", (1e-3, 1e6)),
    ("subnet", "train_test_fraction", (0.01, 0.9)),
    ("subnet", "train_seed", (0, 2**32 - 1)),
    ("subnet", "train_patience", (0, 1000)),
    ("report", "accuracy", (0.0, 1.0)),
    ("report", "loss", (0.0, 1e9)),
    ("report", "train_seconds", (0.0, 1e7)),
    ("report", "latency_ms", (0.0, 1e7)),
    ("report", "num_train", (1, 10**9)),
    ("report", "epochs_done", (0, 1000)),
    ("characteristics", "epsilon", (1e-3, 1e3)),
]


def decode(kind: str, **changes: Any) -> Any:
    message = MESSAGES[kind]
    scalars, arrays = message.to_wire()
    return type(message).from_wire({**scalars, **changes}, arrays)


def refused(kind: str, field: str, **changes: Any) -> str:
    with pytest.raises(MessageError) as caught:
        decode(kind, **changes)
    text = str(caught.value)
    assert text.startswith(f"{field} must be "), text
    assert ", but got " in text, text
    return text


# -- wire messages -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "field", "bounds"), RANGES, ids=[f"{k}.{f}" for k, f, _ in RANGES])
def test_each_range_accepts_its_ends_and_refuses_just_beyond(
    kind: str, field: str, bounds: tuple[Any, Any]
) -> None:
    low, high = bounds
    for inside in (low, high):
        assert getattr(decode(kind, **{field: inside}), field, None) in (inside, None) or kind == "subnet"
    outside_low = low - 1 if isinstance(low, int) else (low / 2 if low > 0 else -1e-9)
    outside_high = high + 1 if isinstance(high, int) else high * 2
    for outside in (outside_low, outside_high, math.nan, math.inf, -math.inf, 10**400, True, "1"):
        text = refused(kind, field, **{field: outside})
        assert "[" in text or "(" in text  # the rule states the range


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("constraints", "max_memory_mb", 1e308),
        ("constraints", "max_memory_mb", 1e14),
        ("profile", "flops_per_ms", 5e-324),
        ("subnet", "train_max_seconds", 1e308),
        ("subnet", "space", "../evil"),
        ("subnet", "space", ".."),
        ("constraints", "version", True),
        ("constraints", "version", 1.0),
        ("characteristics", "version", True),
        ("identity", "tenant", "../etc"),
    ],
)
def test_the_values_of_the_issue_are_refused_naming_field_rule_and_value(
    kind: str, field: str, value: Any
) -> None:
    text = refused(kind, field, **{field: value})
    assert repr(value) in text


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_unknown_keys_are_refused(kind: str) -> None:
    text = refused(kind, "message", padding=1)
    assert "unknown keys ['padding']" in text


def test_complex_or_out_of_range_sketches_are_refused_never_cast() -> None:
    chars = characteristics(0)
    scalars, arrays = chars.to_wire()
    for bad, rule in [
        (arrays["class_means"].astype(np.complex64) + 1j, "of real numbers"),
        (arrays["class_means"].astype(str), "of real numbers"),
        (np.full(arrays["class_means"].shape, 1e7, dtype=np.float32), "within"),
    ]:
        with pytest.raises(MessageError, match=rf"class_means must be .*{rule}"):
            messages.DataCharacteristics.from_wire(scalars, {**arrays, "class_means": bad})
    with pytest.raises(MessageError, match=r"arrays must be keys among"):
        messages.DataCharacteristics.from_wire(scalars, {**arrays, "extra": arrays["class_means"]})


def test_epsilon_without_sketches_is_refused() -> None:
    scalars, _ = characteristics(0, sketches=False).to_wire()
    with pytest.raises(MessageError, match=r"epsilon must be null when no sketches are sent, but got 4\.0"):
        messages.DataCharacteristics.from_wire({**scalars, "epsilon": 4.0})


@settings(max_examples=200, deadline=None)
@given(
    memory=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**30), 10**30)),
    params=st.one_of(st.none(), st.integers(-(10**20), 10**20)),
)
def test_any_accepted_constraints_give_a_finite_parameter_bound(memory: float, params: int | None) -> None:
    wire = {"kind": "constraints", "version": 1, "max_memory_mb": memory, "max_params": params}
    try:
        limits = messages.ResourceConstraints.from_wire(wire)
    except MessageError as error:
        assert str(error).split(" ")[0] in ("max_memory_mb", "max_params")
        return
    assert 1e-3 <= memory <= 1e7 and (params is None or 1 <= params <= 10**15)
    bound = limits.effective_max_params()
    assert bound is not None and 0 <= bound <= 3 * 10**15
    SearchLimits(max_params=bound or None)  # what the strategy side builds from it


@settings(max_examples=200, deadline=None)
@given(value=st.one_of(st.floats(), st.integers(-(10**30), 10**30), st.booleans(), st.text(max_size=3)))
def test_a_profile_throughput_is_accepted_exactly_in_its_range(value: Any) -> None:
    wire = {"kind": "profile", "version": 1, "tier": "micro", "flops_per_ms": value, "overhead_ms": 0.0,
            "memory_mb": 1.0}  # fmt: skip
    inside = not isinstance(value, bool | str) and 1e-3 <= value <= 1e12
    try:
        profile = messages.DeviceProfile.from_wire(wire)
    except MessageError as error:
        assert not inside and str(error).startswith("flops_per_ms must be a number in [0.001, 1e+12]")
        return
    assert inside and math.isfinite(profile.predict_latency_ms(10**15))


def test_constraints_with_an_integer_beyond_64_bits_are_refused_not_crashed() -> None:
    with pytest.raises(StrategyError, match="max_params must be a positive finite number"):
        SearchLimits(max_params=-(2**70))
    assert SearchLimits(max_params=2**70).max_params == 2**70


# -- job options and strategy options ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ask_size": 0}, "ask_size must be an integer in [1, 1024], but got 0"),
        ({"ask_size": True}, "ask_size must be an integer in [1, 1024], but got True"),
        ({"batch_size": 10**9}, "batch_size must be an integer in [2, 4096], but got 1000000000"),
        ({"scoring_seed": -1}, "scoring_seed must be an integer in [0, 4294967295], but got -1"),
        ({"aggregate": "../x"}, "aggregate must be 1-64 characters of [A-Za-z0-9_.-], but got '../x'"),
        ({"space_options": {"channels": 10**6}}, "space_options.channels must be an integer in [1, 1024]"),
        ({"space_options": {"depth": 3}}, "space_options must be keys among"),
    ],
)
def test_job_options_are_checked_once_on_construction(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(MessageError, match=message.replace("[", r"\[").replace("(", r"\(")):
        JobOptions(**changes)


def test_stored_job_options_refuse_unknown_keys_and_coercion() -> None:
    with pytest.raises(MessageError, match=r"options must be keys among .*unknown keys \['shell'\]"):
        JobOptions.from_options({"shell": "rm"})
    with pytest.raises(MessageError, match="batch_size must be an integer in"):
        JobOptions.from_options({"batch_size": "16"})
    # The early name of batch_size is refused here; schema version 3 renames it in stored jobs.
    with pytest.raises(MessageError, match=r"unknown keys \['probe_batch'\]"):
        JobOptions.from_options({"probe_batch": 8})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"population_size": 10**100}, "'population_size' must be an integer in [-1000000, 1000000]"),
        ({"population_size": 2.0}, "'population_size' must be an integer, but got 2.0"),
    ],
)
def test_strategy_options_have_a_finite_range(config: dict[str, Any], message: str) -> None:
    with pytest.raises(StrategyError) as caught:
        parse_options("evolution", EvolutionOptions, config)
    assert message in str(caught.value)


def test_float_strategy_options_refuse_denormals_and_huge_values() -> None:
    from nasfleet.strategies.annealing import AnnealingOptions

    for value in (5e-324, 1e308, 10**400):
        with pytest.raises(StrategyError, match="initial_temperature' must be 0 or a number of magnitude"):
            parse_options("annealing", AnnealingOptions, {"initial_temperature": value})
    with pytest.raises(StrategyError, match="initial_temperature' must be a finite number, but got inf"):
        parse_options("annealing", AnnealingOptions, {"initial_temperature": math.inf})
    tiny = parse_options("annealing", AnnealingOptions, {"initial_temperature": 1e-12})
    assert tiny.initial_temperature == 1e-12


# -- HTTP ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with Registry(sqlite_url(tmp_path_factory.mktemp("ranges"))) as registry:
        registry.create_tenant("acme")
        key = registry.create_api_key("acme")
        with TestClient(create_app(registry), headers={"Authorization": f"Bearer {key}"}) as client:
            yield client


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "space_options": {"channels": 8, "cells_per_stage": 1},
        "characteristics": {"input_shape": [3, 8, 8], "num_classes": 4, "num_samples": 40,
                            "label_histogram": [10, 10, 10, 10], "labeled": True},
        "budget": 8, "ask_size": 4, "probe_batch_size": 8,
    }  # fmt: skip
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = body
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    return body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("constraints__max_memory_mb", 1e14),
        ("constraints__max_memory_mb", 1e308),
        ("constraints__max_memory_mb", 10**20),
        ("constraints__max_memory_mb", 5e-324),
        ("constraints__max_latency_ms", 1e308),
        ("profile__flops_per_ms", 5e-324),
        ("characteristics__epsilon", 1e308),
        ("characteristics__label_histogram", [10**12, 10, 10, 10]),
        ("strategy_config", {"population_size": 10**100}),
    ],
)
def test_out_of_range_requests_get_422_naming_the_field_never_500(
    api: TestClient, field: str, value: Any
) -> None:
    before = api.get("/v1/jobs").json()["total"]
    body = _body(**{field: value})
    if field.startswith("profile"):
        body["profile"] = {"tier": "micro", "flops_per_ms": value, "overhead_ms": 0.5, "memory_mb": 1.0}
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    named = [problem["field"] for problem in response.json()["fields"]]
    assert any(name.startswith(field.replace("__", ".")) for name in named), response.json()
    assert api.get("/v1/jobs").json()["total"] == before  # nothing reached the registry


def test_a_request_at_the_top_of_the_ranges_is_accepted(api: TestClient) -> None:
    body = _body(constraints__max_memory_mb=1e7, constraints__max_params=10**15)
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    assert api.post(f"/v1/jobs/{response.json()['id']}/cancel").status_code in (200, 202)
