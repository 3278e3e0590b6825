"""The per-layer latency model: a table timed from real modules, its predictions, its wire form (with the
spaces it was measured for), and the FLOPs model kept for profiles without a table.

`tests/test_latency_wiring.py` checks who uses it: devices, the round, the API."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from flwr.app import RecordDict

from nasfleet.clients.device import calibrate_profile, get_tier, measure_latency_ms
from nasfleet.protocol.layers import LayerTable
from nasfleet.protocol.messages import DeviceProfile, MessageError
from nasfleet.protocol.wire import pack, unpack
from nasfleet.search.latency import (
    LayerCall,
    Trace,
    calibrate_table,
    fit_kinds,
    predict_ms,
    space_fingerprint,
    table_model,
    trace_calls,
)
from nasfleet.search.limits import latency_model
from nasfleet.spaces import NB201Space

SHAPE = (3, 16, 16)
SPACE = NB201Space(channels=8, cells_per_stage=2)


@pytest.fixture(scope="module")
def table() -> LayerTable:
    return calibrate_table([SPACE], SHAPE, 10, 2.0, seed=0, max_archs=12)


def test_trace_finds_leaf_modules_and_container_functions() -> None:
    # Prepare: a cell with a conv, a skip and a pooling edge (its node sums them with torch.stack + sum)
    arch = SPACE.decode("|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|")

    # Execute
    trace = trace_calls(SPACE.build(arch, 10, SHAPE), SHAPE, timed=True)

    # Assert
    kinds = {call.kind for call in trace.calls}
    assert {"Conv2d", "BatchNorm2d", "ReLU", "Identity", "AvgPool2d", "Linear"} <= kinds
    assert any(kind.startswith("torch.") for kind in kinds), kinds  # the cells' stack/sum, the mean
    assert trace.container_calls > 0 and len(trace.elapsed_ms) == len(trace.calls)
    assert all(ms > 0 for ms in trace.elapsed_ms)


def test_table_is_timed_from_real_modules(table: LayerTable) -> None:
    times = dict(table.times)
    assert len(times) > 20 and all(ms > 0 for ms in times.values())
    assert {kind for kind, _, _ in table.kinds} >= {"*", "Conv2d", "BatchNorm2d"}
    assert table.call_ms > 0 and 0.2 < table.scale < 5, table.scale
    # the tier's slowdown (2.0) multiplies every time: a conv of this size takes well over 1 us here
    assert max(times.values()) > 2e-3


def test_prediction_of_built_archs_is_close_to_measurement(table: LayerTable) -> None:
    # Prepare
    rng = np.random.default_rng(7)
    archs = [SPACE.sample(rng) for _ in range(6)]
    predict = table_model(table, SPACE, 10, SHAPE)

    # Execute: the fastest of 3 min-of-7 measurements, against noise on a shared machine
    measured = [
        min(measure_latency_ms(SPACE.build(a, 10, SHAPE), SHAPE, 2.0) for _ in range(3)) for a in archs
    ]
    predicted = [predict(a) for a in archs]

    # Assert: loose (the benchmark in experiments/latency holds the real numbers)
    ratios = np.array(predicted) / np.array(measured)
    assert np.all((ratios > 0.5) & (ratios < 2.0)), ratios
    assert predict(archs[0]) == predicted[0]  # cached and deterministic


def test_missing_layers_fall_back_to_the_kind_fit() -> None:
    # Prepare
    calls = [LayerCall("a" * 12, "Conv2d", 100.0), LayerCall("b" * 12, "Conv2d", 300.0)]
    kinds = fit_kinds(calls, {"a" * 12: 1.0, "b" * 12: 3.0})
    table = LayerTable((("a" * 12, 1.0),), kinds, call_ms=0.5, scale=2.0)
    trace = Trace([LayerCall("a" * 12, "Conv2d", 100.0), LayerCall("c" * 12, "Conv2d", 200.0),
                   LayerCall("d" * 12, "Unknown", 1.0)], container_calls=2)  # fmt: skip

    # Execute
    predicted = predict_ms(table, trace)

    # Assert: 2 * (2 * 0.5 + 1.0 + 2.0 [Conv2d fit at 200] + the '*' fit at work 1)
    star = dict((k, (a, b)) for k, a, b in kinds)["*"]
    assert predicted == pytest.approx(2 * (1.0 + 1.0 + 2.0 + star[0] + star[1]))


def test_profile_with_table_crosses_the_wire_and_drives_the_search(table: LayerTable) -> None:
    # Prepare
    profile = DeviceProfile("mobile", 1e5, 0.5, 2.0, table)

    # Execute
    scalars, arrays = profile.to_wire()
    through_json = DeviceProfile.from_wire(json.loads(json.dumps(scalars)), arrays)
    through_flower = unpack(pack(RecordDict(), "profile", profile), "profile", DeviceProfile)

    # Assert
    assert through_json == profile and through_flower == profile
    arch = SPACE.sample(np.random.default_rng(0))
    model = latency_model(profile, SPACE, 10, SHAPE)
    assert model(arch) == pytest.approx(table_model(table, SPACE, 10, SHAPE)(arch))
    assert model(arch) != pytest.approx(profile.predict_latency_ms(SPACE.cost(arch, 10, SHAPE).flops))


def test_profile_without_table_keeps_its_old_wire_form_and_flops_model() -> None:
    # Prepare
    old = {"kind": "profile", "version": 1, "tier": "micro", "flops_per_ms": 1e5, "overhead_ms": 0.5,
           "memory_mb": 1.0}  # fmt: skip

    # Execute
    profile = DeviceProfile.from_wire(old)

    # Assert
    assert profile.layers is None and profile.to_wire() == (old, {})
    arch = SPACE.sample(np.random.default_rng(1))
    expected = 0.5 + SPACE.cost(arch, 10, SHAPE).flops / 1e5
    assert latency_model(profile, SPACE, 10, SHAPE)(arch) == pytest.approx(expected)


def test_calibrate_profile_attaches_a_table_only_when_asked() -> None:
    tier = get_tier("micro")
    assert calibrate_profile(tier, SHAPE, 10, repeats=2).layers is None
    layers = calibrate_profile(tier, SHAPE, 10, repeats=2, spaces=[SPACE]).layers
    assert layers is not None and len(layers.times) > 0


GOOD = {"times": {"0123456789ab": 0.01}, "kinds": {"*": [0.001, 1e-6]}, "call_ms": 0.001, "scale": 1.1,
        "spaces": {"nb201": "0123456789ab"}}  # fmt: skip


def test_a_good_table_is_read_with_its_spaces() -> None:
    wire = {"kind": "profile", "version": 1, "tier": "micro", "flops_per_ms": 1e5, "overhead_ms": 0.5,
            "memory_mb": 1.0, "layers": GOOD}  # fmt: skip
    layers = DeviceProfile.from_wire(wire).layers
    assert layers is not None and layers.fingerprint("nb201") == "0123456789ab"
    assert layers.fingerprint("mbv2") is None and layers.to_json() == GOOD


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"times": {"XYZ": 0.01}}, "layers.times must be keyed by 12 lower-case hex digits, but got 'XYZ'"),
        ({"times": {"0123456789ab": -1.0}}, "layers.times[0123456789ab] must be a number in [0, 1e+06]"),
        ({"times": {"0123456789ab": math.inf}}, "layers.times[0123456789ab] must be a number in [0, 1e+06]"),
        ({"times": [1, 2]}, "layers.times must be a mapping of at most 8192 entries"),
        ({"times": {f"{i:012x}": 1.0 for i in range(8193)}}, "but got '8193 entries'"),
        ({"kinds": {"Conv2d": [0.0, 0.0]}}, "layers.kinds must be a mapping with '*' among its keys"),
        ({"kinds": {"*": [0.0]}}, "layers.kinds['*'] must be two numbers [intercept_ms, ms_per_work]"),
        ({"kinds": {"*": [0.0, "x"]}}, "layers.kinds['*'] must be a number in [0, 1e+06], but got 'x'"),
        ({"scale": 0.0}, "layers.scale must be a number in [0.001, 1000], but got 0.0"),
        ({"call_ms": None}, "layers.call_ms must be a number in [0, 1000], but got None"),
        ({"extra": 1}, "layers must be keys among"),
        ({"spaces": None}, "layers.spaces must be a mapping of at most 64 entries, but got None"),
        ({"spaces": {"a b": "0123456789ab"}}, "layers.spaces must be keyed by space names matching"),
        (
            {"spaces": {"nb201": "XYZ"}},
            "layers.spaces[nb201] must be 12 lower-case hex digits, but got 'XYZ'",
        ),
    ],
)
def test_bad_tables_are_refused_naming_the_field(change: dict[str, object], message: str) -> None:
    wire = {"kind": "profile", "version": 1, "tier": "micro", "flops_per_ms": 1e5, "overhead_ms": 0.5,
            "memory_mb": 1.0, "layers": {**GOOD, **change}}  # fmt: skip
    with pytest.raises(MessageError) as error:
        DeviceProfile.from_wire(wire)
    assert message in str(error.value)


def test_calibration_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="calibration needs >= 1 space"):
        calibrate_table([], SHAPE, 10)
    with pytest.raises(ValueError, match="slowdown must be a positive finite number, but got nan"):
        calibrate_table([SPACE], SHAPE, 10, math.nan)
    with pytest.raises(ValueError, match="max_archs=0"):
        calibrate_table([SPACE], SHAPE, 10, max_archs=0)
    with pytest.raises(ValueError, match="max_seconds=0"):
        calibrate_table([SPACE], SHAPE, 10, max_seconds=0)


def test_calibration_stops_at_its_time_bound_and_names_its_space() -> None:
    # Execute: a bound every arch overruns, so one arch runs
    record: list[tuple[str, tuple[int, ...]]] = []
    table = calibrate_table([SPACE], SHAPE, 10, max_seconds=1e-9, record=record)

    # Assert
    assert len(record) == 1 and len(table.times) > 0
    assert dict(table.spaces) == {"nb201": space_fingerprint(SPACE, 10, SHAPE)}
    assert space_fingerprint(SPACE, 10, SHAPE) != space_fingerprint(NB201Space(4, 2), 10, SHAPE)
