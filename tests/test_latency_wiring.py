"""The per-layer latency table, wired in: devices send it, and every server-side prediction reads it.

`nasfleet.search.limits.latency_model` is the one predictor: a profile's table for a space it was measured
for (same name and `space_fingerprint`) gives ``scale * (call_ms * container calls + the table's times of
the layer calls)``; anything else gives the FLOPs model. The tables here hold a known time for every layer
of the archs they are built for, and a 5 ms fallback for any other, so a prediction equals the sum exactly
or is visibly off. The round (`DeviceOutcome`), the API (request check, result) and the Flower ClientApp
are exercised through their real code.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from flwr.app import Context, Message, RecordDict
from flwr.app.metadata import Metadata
from plugin_support import forget, install

from nasfleet.clients.app import make_client_app, measured_profile
from nasfleet.protocol.layers import LayerTable
from nasfleet.protocol.messages import (
    DataCharacteristics,
    DeviceProfile,
    MessageError,
    SubNetAssignment,
    TrainConfig,
)
from nasfleet.protocol.wire import QUERY, unpack
from nasfleet.search import latency
from nasfleet.search.latency import space_fingerprint, table_model, trace_calls
from nasfleet.search.limits import latency_model, predicted_latency_ms, uses_table
from nasfleet.server.api import ApiSettings, create_app
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.round import DeviceOutcome, RoundRecorder
from nasfleet.server.registry import Registry, ResultRecord
from nasfleet.spaces import SPACES, Genome, InputShape, NB201Space, SearchSpace, get_space

SHAPE: InputShape = (3, 32, 32)
CLASSES = 10
MISS_MS = 5.0  # the fallback of a layer the table lacks: a miss shows as +5 ms
FLOPS = DeviceProfile("mobile", flops_per_ms=1e5, overhead_ms=0.5, memory_mb=2.0)


def table_for(space: SearchSpace, archs: Sequence[Genome], classes: int, shape: InputShape) -> LayerTable:
    """A table named for *space* at this data shape, with a distinct time for each layer of *archs*."""
    keys = sorted({c.key for a in archs for c in trace_calls(space.build(a, classes, shape), shape).calls})
    times = tuple((key, round(0.01 * (index + 1), 4)) for index, key in enumerate(keys))
    named = ((space.name, space_fingerprint(space, classes, shape)),)
    return LayerTable(times, (("*", MISS_MS, 0.0),), call_ms=0.002, scale=1.25, spaces=named)


def table_sum(table: LayerTable, space: SearchSpace, arch: Genome, classes: int, shape: InputShape) -> float:
    """The model's definition, written out: scale * (call_ms * container calls + sum of layer times)."""
    trace = trace_calls(space.build(arch, classes, shape), shape)
    times = dict(table.times)
    return table.scale * (table.call_ms * trace.container_calls + sum(times[c.key] for c in trace.calls))


def flops_ms(space: SearchSpace, arch: Genome, classes: int, shape: InputShape) -> float:
    return 0.5 + space.cost(arch, classes, shape).flops / 1e5


def with_table(table: LayerTable) -> DeviceProfile:
    return DeviceProfile("mobile", 1e5, 0.5, 2.0, table)


def sample(space: SearchSpace, seed: int) -> Genome:
    return space.sample(np.random.default_rng(seed))


# -- the one predictor ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SPACES))
def test_a_table_for_the_space_predicts_its_sum_for_a_built_arch(name: str) -> None:
    # Prepare: a table holding every layer of a random arch of the space
    space = get_space(name)
    arch = sample(space, 1)
    table = table_for(space, [arch], CLASSES, SHAPE)

    # Execute
    predicted = latency_model(with_table(table), space, CLASSES, SHAPE)(arch)

    # Assert: the table's sum (no fallback used), not the FLOPs model
    assert predicted == pytest.approx(table_sum(table, space, arch, CLASSES, SHAPE), rel=1e-9)
    assert predicted != pytest.approx(flops_ms(space, arch, CLASSES, SHAPE))


NB201 = NB201Space(channels=8, cells_per_stage=1)
SMALL: InputShape = (3, 8, 8)


def _nb201_table(classes: int = CLASSES, shape: InputShape = SMALL, space: SearchSpace = NB201) -> LayerTable:
    return table_for(space, [sample(space, 3)], classes, shape)


FALLBACKS: dict[str, Callable[[], LayerTable | None]] = {
    "no table": lambda: None,
    "a table for another space only": lambda: table_for(get_space("coer"), [], CLASSES, SMALL),
    "nb201 with other options": lambda: _nb201_table(space=NB201Space(channels=4, cells_per_stage=1)),
    "another input shape": lambda: _nb201_table(shape=(3, 16, 16)),
    "another class count": lambda: _nb201_table(classes=4),
    "a stale fingerprint": lambda: LayerTable(
        _nb201_table().times, (("*", MISS_MS, 0.0),), 0.002, 1.25, (("nb201", "0" * 12),)
    ),
}


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_without_a_table_for_this_space_and_data_the_flops_model_predicts(case: str) -> None:
    # Prepare
    table = FALLBACKS[case]()
    profile = FLOPS if table is None else with_table(table)
    arch = sample(NB201, 3)

    # Execute
    predicted = latency_model(profile, NB201, CLASSES, SMALL)(arch)

    # Assert
    assert not uses_table(profile, NB201, CLASSES, SMALL)
    assert predicted == pytest.approx(flops_ms(NB201, arch, CLASSES, SMALL))


def count_traces(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one at every call of the real tracer from now on."""
    traced: list[int] = []
    real = latency.trace_calls

    def counting(*args: Any, **kwargs: Any) -> latency.Trace:
        traced.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(latency, "trace_calls", counting)
    return traced


def test_the_servers_prediction_traces_an_arch_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: count the real tracer's calls
    arch = sample(NB201, 4)
    table = table_for(NB201, [arch], CLASSES, SMALL)
    profile = DeviceProfile("trace-once", 1e5, 0.5, 2.0, table)  # a profile no other test caches
    traced = count_traces(monkeypatch)
    options = {"channels": 8, "cells_per_stage": 1}
    text = NB201.encode(arch)

    # Execute
    first = predicted_latency_ms(profile, "nb201", text, CLASSES, SMALL, options)
    after_first = len(traced)
    again = [predicted_latency_ms(profile, "nb201", text, CLASSES, SMALL, options) for _ in range(3)]

    # Assert: the fingerprint's trace and the arch's the first time, nothing after
    assert after_first == 2 and len(traced) == 2
    assert again == [first] * 3
    assert first == pytest.approx(table_sum(table, NB201, arch, CLASSES, SMALL))


def test_a_search_rebuilt_at_every_step_keeps_its_archs_predictions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: count the real tracer's calls; a job builds its space anew at every step (`JobRun`)
    arch = sample(NB201, 6)
    table = table_for(NB201, [arch], CLASSES, SMALL)
    profile = DeviceProfile("rebuilt", 1e5, 0.5, 2.0, table)  # a profile no other test caches
    traced = count_traces(monkeypatch)

    def step() -> float:
        return latency_model(profile, NB201Space(channels=8, cells_per_stage=1), CLASSES, SMALL)(arch)

    # Execute
    predictions = [step() for _ in range(3)]

    # Assert: each step traces its space's fingerprint, the arch is traced once
    assert len(traced) == 3 + 1
    assert predictions == [pytest.approx(table_sum(table, NB201, arch, CLASSES, SMALL))] * 3


def test_a_round_predicts_its_devices_latency_from_the_table(tmp_path: Path) -> None:
    # Prepare: a device whose profile has a table for mbv2 at its data, registered in an mbv2 round
    space, shape = get_space("mbv2"), (3, 16, 16)
    arch = sample(space, 5)
    profile = with_table(table_for(space, [arch], CLASSES, shape))
    chars = DataCharacteristics(shape, CLASSES, 100, (10,) * CLASSES, True)
    config = RoundConfig(registry=f"sqlite:///{tmp_path / 'registry.db'}", space="mbv2", budget=4)
    outcome = DeviceOutcome(1, characteristics=chars, profile=profile)
    plain = DeviceOutcome(2, characteristics=chars, profile=FLOPS)
    recorder = RoundRecorder(config.registry)
    for device in (outcome, plain):
        recorder.register(device, config)

    # Execute
    cost = space.cost(arch, CLASSES, shape)
    for device in (outcome, plain):
        device.settle(space.encode(arch), cost.params, cost.flops)

    # Assert
    assert outcome.space == plain.space == "mbv2"
    table = profile.layers
    assert table is not None
    assert outcome.predicted_latency_ms == pytest.approx(table_sum(table, space, arch, CLASSES, shape))
    assert plain.predicted_latency_ms == pytest.approx(flops_ms(space, arch, CLASSES, shape))
    assert outcome.predicted == {space.encode(arch): outcome.predicted_latency_ms}


# -- the API -------------------------------------------------------------------------------------------------
@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Registry]]:
    registry = Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    registry.create_tenant("acme")
    key = registry.create_api_key("acme")
    app = create_app(registry, ApiSettings(max_active_jobs=100))
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(app, base_url="http://127.0.0.1", headers=headers) as client:
        yield client, registry
    registry.close()


def body(**changes: Any) -> dict[str, Any]:
    request = {
        "space": "nb201", "space_options": {"channels": 8, "cells_per_stage": 1},
        "characteristics": {"input_shape": list(SMALL), "num_classes": CLASSES, "num_samples": 40,
                            "label_histogram": [4] * CLASSES, "labeled": True},
        "strategy": "random", "budget": 8, "ask_size": 4, "probe_batch_size": 8,
    }  # fmt: skip
    return {**request, **changes}


def wire_profile(profile: DeviceProfile) -> dict[str, Any]:
    scalars, _ = profile.to_wire()
    return {key: value for key, value in scalars.items() if key not in ("kind", "version")}


@pytest.mark.parametrize("name", ["coer", "autoformer-edge", "mbv2"])
def test_the_api_accepts_every_registered_space(api: tuple[TestClient, Registry], name: str) -> None:
    client, registry = api
    response = client.post("/v1/jobs", json=body(space=name, space_options={}))
    assert response.status_code == 202, response.text
    assert registry.get_job(response.json()["id"]).space == name  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["nope", "NB201"])
def test_the_api_refuses_an_unknown_space_naming_the_field_rule_and_value(
    api: tuple[TestClient, Registry], name: str
) -> None:
    client, _ = api
    response = client.post("/v1/jobs", json=body(space=name, space_options={}))
    assert response.status_code == 422
    (problem,) = response.json()["fields"]
    assert problem["field"] == "space" and problem["location"] == "body"
    message = problem["message"]
    assert "must be a registered space, one of [" in message and f"but got {name!r}" in message
    assert all(builtin in message for builtin in SPACES), message


def test_the_api_predicts_a_results_latency_from_the_submitted_table(
    api: tuple[TestClient, Registry],
) -> None:
    # Prepare: two jobs, one with a profile that carries a table for its space and data, one without
    client, registry = api
    arch = sample(NB201, 6)
    table = table_for(NB201, [sample(NB201, 3), arch], CLASSES, SMALL)
    ids = {}
    for label, profile in (("table", with_table(table)), ("flops", FLOPS)):
        response = client.post("/v1/jobs", json=body(profile=wire_profile(profile)))
        assert response.status_code == 202, response.text
        ids[label] = response.json()["id"]
        cost = NB201.cost(arch, CLASSES, SMALL)
        registry.set_result(ResultRecord(ids[label], NB201.encode(arch), 1.0, {"fg_fi": 1.0}, cost.params,
                                         cost.flops))  # fmt: skip

    # Execute
    predicted = {label: client.get(f"/v1/jobs/{job}/result").json()["latency_ms_predicted"]
                 for label, job in ids.items()}  # fmt: skip

    # Assert
    assert predicted["table"] == pytest.approx(table_sum(table, NB201, arch, CLASSES, SMALL))
    assert predicted["flops"] == pytest.approx(flops_ms(NB201, arch, CLASSES, SMALL))


@pytest.fixture
def plugin_space(tmp_path: Path) -> Iterator[str]:
    """The example plug-in space (``tinyconv``), pip-installed offline on ``sys.path`` meanwhile."""
    target = install(["nasfleet-example-space"], tmp_path)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield "tinyconv"
    finally:
        sys.path.remove(str(target))
        forget("nasfleet_example_space")


def test_a_plugin_space_is_accepted_and_predicted_from_its_table(
    api: tuple[TestClient, Registry], plugin_space: str
) -> None:
    # Prepare
    client, registry = api
    space = get_space(plugin_space)
    arch = sample(space, 9)
    table = table_for(space, [arch], CLASSES, SMALL)

    # Execute
    response = client.post("/v1/jobs", json=body(space=plugin_space, space_options={},
                                                 profile=wire_profile(with_table(table))))  # fmt: skip
    assert response.status_code == 202, response.text
    job = response.json()["id"]
    cost = space.cost(arch, CLASSES, SMALL)
    registry.set_result(ResultRecord(job, space.encode(arch), 1.0, {"fg_fi": 1.0}, cost.params, cost.flops))
    predicted = client.get(f"/v1/jobs/{job}/result").json()["latency_ms_predicted"]

    # Assert
    assert registry.get_job(job).space == plugin_space  # type: ignore[union-attr]
    assert predicted == pytest.approx(table_sum(table, space, arch, CLASSES, SMALL))


def test_the_apis_latency_check_uses_the_table(api: tuple[TestClient, Registry]) -> None:
    # Prepare: a table under which the smallest arch takes far longer than the FLOPs model says
    client, _ = api
    smallest = NB201.canonical((0,) * len(NB201.choices))
    table = table_for(NB201, [smallest], CLASSES, SMALL)
    slow = LayerTable(tuple((k, 100 * ms) for k, ms in table.times), table.kinds, table.call_ms, table.scale,
                      table.spaces)  # fmt: skip
    expected = table_sum(slow, NB201, smallest, CLASSES, SMALL)
    limit = expected / 2
    assert flops_ms(NB201, smallest, CLASSES, SMALL) < limit  # the FLOPs model would admit it

    # Execute
    tight = client.post("/v1/jobs", json=body(profile=wire_profile(with_table(slow)),
                                              constraints={"max_latency_ms": limit}))  # fmt: skip
    loose = client.post("/v1/jobs", json=body(profile=wire_profile(with_table(slow)),
                                              constraints={"max_latency_ms": expected * 2}))  # fmt: skip

    # Assert
    assert tight.status_code == 422 and loose.status_code == 202, (tight.text, loose.text)
    (problem,) = tight.json()["fields"]
    assert problem["field"] == "constraints.max_latency_ms"
    assert f"({expected:g} ms), but allows {limit:g}" in problem["message"]


def test_a_bad_table_in_a_request_is_refused_naming_its_field(api: tuple[TestClient, Registry]) -> None:
    client, _ = api
    profile = wire_profile(with_table(_nb201_table()))
    profile["layers"]["spaces"] = {"nb201": "not-hex"}
    response = client.post("/v1/jobs", json=body(profile=profile))
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "profile.layers.spaces[nb201]"
    assert "must be 12 lower-case hex digits, but got 'not-hex'" in response.json()["fields"][0]["message"]


# -- the device --------------------------------------------------------------------------------------------
def query(run_config: dict[str, Any]) -> Message:
    """The real ClientApp's answer to a query, on digits (1x8x8, 10 classes), device 0 of 2, mobile tier."""
    metadata = Metadata(run_id=7, message_id="", src_node_id=1, dst_node_id=42, reply_to_message_id="",
                        group_id="r1", created_at=time.time(), ttl=3600.0, message_type=QUERY)  # fmt: skip
    message: Message = Message(content=RecordDict(), metadata=metadata)  # type: ignore[call-overload]
    message.metadata.__dict__["_message_id"] = message.object_id
    node: dict[str, bool | float | int | str] = {"partition-id": 0, "num-partitions": 2, "tier": "mobile"}
    context = Context(run_id=7, node_id=42, node_config=node, state=RecordDict(), run_config=run_config)
    return make_client_app({"dataset": "digits", "seed": 0})(message, context)


def test_a_flower_client_sends_a_table_for_the_runs_space_timed_once() -> None:
    # Execute: the run's space comes from the run config, as the server's does
    started = time.perf_counter()
    reply = query({"space": "coer"})
    first_s = time.perf_counter() - started
    hits = measured_profile.cache_info().hits
    again = query({"space": "coer"})

    # Assert: a table named for coer at the device's data, which the server's predictor then uses
    assert not reply.has_error(), reply.error
    profile = unpack(reply.content, "profile", DeviceProfile)
    chars = unpack(reply.content, "characteristics", DataCharacteristics)
    space = get_space("coer")
    assert profile.layers is not None and len(profile.layers.times) > 20
    assert dict(profile.layers.spaces) == {
        "coer": space_fingerprint(space, chars.num_classes, chars.input_shape)
    }
    assert uses_table(profile, space, chars.num_classes, chars.input_shape)
    arch = sample(space, 8)
    predicted = latency_model(profile, space, chars.num_classes, chars.input_shape)(arch)
    direct = table_model(profile.layers, space, chars.num_classes, chars.input_shape)(arch)
    assert predicted == direct != pytest.approx(flops_ms(space, arch, chars.num_classes, chars.input_shape))
    # timed once per process: the second query answers from the cache, with the same table
    assert measured_profile.cache_info().hits == hits + 1
    assert unpack(again.content, "profile", DeviceProfile) == profile
    # bounded: the sampling stops after TABLE_SECONDS; the wire form stays small
    assert first_s < 60, first_s
    text = reply.content["profile"]["json"]
    assert isinstance(text, str) and len(text) < 64_000
    assert len(json.loads(text)["layers"]["times"]) == len(profile.layers.times)


def test_a_flower_client_refuses_an_unknown_space_naming_it() -> None:
    reply = query({"space": "nope"})
    reason = str(reply.error.reason) if reply.has_error() else ""
    assert "space must be one of [" in reason and "but got 'nope'" in reason, reason


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_registered_space_name_crosses_the_wire_to_a_device(name: str) -> None:
    train = TrainConfig(1, 8, 0.1, 10.0)
    scalars, arrays = SubNetAssignment("job", name, "arch", CLASSES, SMALL, train).to_wire()
    assert SubNetAssignment.from_wire(json.loads(json.dumps(scalars)), arrays).space == name
    scalars["space"] = "../nb201"
    with pytest.raises(MessageError, match=r"space must be a space name matching .*, but got '../nb201'"):
        SubNetAssignment.from_wire(scalars, arrays)
