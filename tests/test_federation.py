"""The federation on Flower's real machinery: simulated rounds, the ClientApp's error replies, and the
server's checks of what devices send back. Nothing of Flower is mocked.

* Two real simulation rounds (Ray-backed ``run_simulation``), each run once per module and shared by
  several tests, their searches run as jobs through the orchestrator and real Celery worker processes
  (the embedded mode): a healthy round of three devices, and a round of five in which one device never
  answers in time, one answers with an ``Error``, one sends characteristics holding a NaN and two are
  healthy. The
  faults are injected by a Flower *mod* wrapped around the real `make_client_app` handlers.
* The ClientApp object called directly, with messages and a context built as the SuperNode builds them,
  on malformed ``train``/``query`` messages and device setups: it must answer with an error reply that
  names the bad field, never raise.
* The server's `parse_query_reply` and `unpack` on malformed reply content: each is a `MessageError`
  (or an ``error`` outcome) naming the field.

Flower's state goes to a temporary ``FLWR_HOME``, with telemetry and update checks off.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.app.metadata import Metadata
from flwr.clientapp import ClientApp
from rich.console import Console

from nasfleet.bounds import DEFAULT_AGGREGATE
from nasfleet.clients.app import ERROR_BAD_MESSAGE, make_client_app
from nasfleet.clients.device import assign_tiers
from nasfleet.protocol import messages
from nasfleet.protocol.wire import MAX_JSON_CHARS, QUERY, TRAIN, pack, unpack
from nasfleet.search.limits import latency_model, uses_table
from nasfleet.search.loop import archive_fitness
from nasfleet.server.federation.app import parse_query_reply
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.round import DeviceOutcome, RoundRecorder
from nasfleet.server.federation.simulation import simulate, simulate_in_process
from nasfleet.server.registry import Registry
from nasfleet.server.service.jobs import JobRun
from nasfleet.spaces import get_space

SUPERLINK_NODE_ID = 1  # the sender of every instruction message (flwr.common.constant.SUPERLINK_NODE_ID)
DEVICE_NODE_ID = 4242
DIGITS_SHAPE = (1, 8, 8)
DIGITS_CLASSES = 10
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
DEVICES: dict[str, bool | float | int | str] = {"dataset": "digits", "partition": "dirichlet:0.5", "seed": 0}
#: A tiny round: few evaluations, a small probe batch, one local epoch.
TINY = {
    "budget": 8,
    "ask_size": 8,
    "probe_batch": 16,
    "train_epochs": 1,
    "train_max_seconds": 30.0,
    "seed": 0,
    "shared_baseline": False,
    "rounds": 2,
}


@pytest.fixture(scope="module", autouse=True)
def flower_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A throw-away ``FLWR_HOME`` for the whole module, with telemetry and update checks off."""
    home = tmp_path_factory.mktemp("flwr-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLWR_HOME", str(home))
        patch.setenv("FLWR_TELEMETRY_ENABLED", "0")
        patch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
        yield home


@dataclass(frozen=True)
class Round:
    """One simulated round: its config, the outcomes the server returned, and the registry afterwards."""

    config: RoundConfig
    outcomes: list[DeviceOutcome]
    export: dict[str, Any]
    seconds: float

    def rows(self, table: str, **match: Any) -> list[dict[str, Any]]:
        return [row for row in self.export[table] if all(row[k] == v for k, v in match.items())]


def _simulate(config: RoundConfig, client_app: ClientApp | None = None) -> Round:
    """Run one round on Flower's simulation engine and read the registry afterwards.

    Without ``client_app`` this is nasfleet's own `simulate` (``flwr run`` on a SuperLink of its own); with
    one, Flower's in-process ``run_simulation`` (two Ray CPUs, one per virtual device at a time) with that
    ClientApp instead.
    """
    start = time.monotonic()
    if client_app is None:
        outcomes = simulate(config, DEVICES, cpus=2)
    else:
        outcomes = simulate_in_process(config, client_app, RoundRecorder(config.registry), cpus=2)
    seconds = time.monotonic() - start
    with Registry(config.registry) as registry:
        export = registry.export()
    return Round(config, outcomes, export, seconds)


# -- a healthy round -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Round:
    """Three devices (one of each tier) on ``digits``, all expected to finish."""
    directory = tmp_path_factory.mktemp("healthy")
    config = RoundConfig(num_clients=3, registry=f"sqlite:///{directory / 'registry.db'}", **TINY)  # type: ignore[arg-type]
    return _simulate(config)


def test_every_device_of_a_healthy_round_finishes(healthy: Round) -> None:
    assert len(healthy.outcomes) == 3
    assert [(o.status, o.error) for o in healthy.outcomes] == [("ok", "")] * 3
    assert sorted(o.name for o in healthy.outcomes) == ["device-0", "device-1", "device-2"]
    tiers = assign_tiers(3, 0)
    for outcome in healthy.outcomes:
        assert outcome.identity == messages.DeviceIdentity("default", outcome.name)
        partition = int(outcome.name.removeprefix("device-"))
        assert outcome.profile is not None and outcome.profile.tier == tiers[partition].name
        assert outcome.constraints == tiers[partition].constraints_for(DIGITS_SHAPE)
        assert outcome.report is not None and outcome.report.job_id == outcome.job_id
        assert 0.0 <= outcome.report.accuracy <= 1.0


def test_the_registry_holds_tenant_devices_jobs_evaluations_results_and_reports(healthy: Round) -> None:
    export = healthy.export
    assert [t["name"] for t in export["tenants"]] == ["default"]
    devices = {d["name"]: d for d in export["devices"]}
    assert sorted(devices) == ["device-0", "device-1", "device-2"]
    assert all(
        d["tenant"] == "default" and d["status"] == "ok" and d["error"] is None for d in devices.values()
    )
    jobs = export["jobs"]
    assert sorted(job["device"] for job in jobs) == sorted(devices), "one job per device"
    outcomes = {o.name: o for o in healthy.outcomes}
    for job in jobs:
        device = devices[job["device"]]
        assert job["status"] == "done" and job["error"] is None
        assert (job["space"], job["strategy"], job["budget"]) == ("nb201", "evolution", 8)
        assert job["characteristics_hash"] == device["characteristics_hash"]
        assert job["id"] == outcomes[job["device"]].job_id
        evaluations = healthy.rows("evaluations", job_id=job["id"])
        archs = [e["arch"] for e in evaluations]
        assert 1 <= len(archs) <= job["budget"]
        assert len(set(archs)) == len(archs), "exactly one evaluation per (job, arch)"
        assert all(e["values"] and all(math.isfinite(v) for v in e["values"].values()) for e in evaluations)
        [result] = healthy.rows("results", job_id=job["id"])
        assert result["arch"] == job["best_arch"] and result["arch"] in archs
        report, later = healthy.rows("reports", job_id=job["id"])  # round 1, then round 2
        assert report["device"] == job["device"] and report["arch"] == result["arch"]
        assert later["device"] == job["device"] and later["arch"] in archs and later["arch"] != result["arch"]
        assert 0.0 <= report["accuracy"] <= 1.0 and math.isfinite(report["loss"])
        assert report["num_train"] > 0 and report["num_test"] > 0 and report["train_seconds"] > 0
        assert report["latency_ms_measured"] > 0
        outcome = outcomes[job["device"]]
        assert outcome.report is not None and report["accuracy"] == pytest.approx(outcome.report.accuracy)
    assert len(export["reports"]) == 6 and len(export["results"]) == 3


def test_round_two_trains_the_archive_member_the_model_chooses_and_the_best_report_wins(
    healthy: Round,
) -> None:
    """One report per device in round 1 says nothing relative, so round 2's model is the zero-cost prior:
    each device trains the second best of its own archive by the job's aggregate."""
    space = get_space("nb201")
    for outcome in healthy.outcomes:
        assert outcome.report is not None and len(outcome.refinements) == 1
        evaluations = healthy.rows("evaluations", job_id=outcome.job_id)
        archs = [e["arch"] for e in evaluations]
        values = {name: [e["values"][name] for e in evaluations] for name in evaluations[0]["values"]}
        fitness = archive_fitness(archs, values, DEFAULT_AGGREGATE, True)
        ranked = [archs[i] for i in np.argsort(-fitness, kind="stable")]
        assert outcome.report.arch == ranked[0] and outcome.refinements[0].arch == ranked[1]
        best = max(outcome.trained, key=lambda r: r.accuracy)
        assert outcome.best == best
        cost = space.cost(space.decode(best.arch), DIGITS_CLASSES, DIGITS_SHAPE)
        assert outcome.cost == (cost.params, cost.flops)


def test_every_subnet_meets_its_devices_constraints(healthy: Round) -> None:
    """Exact params/FLOPs from the space, weight memory and predicted latency (the device's layer table),
    for every scored arch."""
    space = get_space("nb201")
    devices = {d["name"]: d for d in healthy.export["devices"]}
    for job in healthy.export["jobs"]:
        device = devices[job["device"]]
        limits = messages.ResourceConstraints.from_wire(device["constraints"])
        profile = messages.DeviceProfile.from_wire(device["profile"])
        assert uses_table(profile, space, DIGITS_CLASSES, DIGITS_SHAPE), "the device's table predicts"
        predict = latency_model(profile, space, DIGITS_CLASSES, DIGITS_SHAPE)
        assert limits.max_params and limits.max_flops and limits.max_latency_ms and limits.max_memory_mb
        [result] = healthy.rows("results", job_id=job["id"])
        for scored in [result, *healthy.rows("evaluations", job_id=job["id"])]:
            cost = space.cost(space.decode(scored["arch"]), DIGITS_CLASSES, DIGITS_SHAPE)
            assert (scored["params"], scored["flops"]) == (cost.params, cost.flops), scored["arch"]
            assert cost.params <= limits.max_params
            assert cost.params * 4 <= limits.max_memory_mb * 2**20, "float32 weights fit the memory"
            assert cost.flops <= limits.max_flops
            assert predict(space.decode(scored["arch"])) <= limits.max_latency_ms
        for report in healthy.rows("reports", job_id=job["id"]):
            assert report["latency_ms_predicted"] == pytest.approx(predict(space.decode(report["arch"])))


def test_the_searches_ran_as_jobs_scored_by_celery_workers(healthy: Round) -> None:
    """Each device's job holds what a worker needs (characteristics, profile), and its evaluations name
    the Celery pool process that scored them (``host:pid``) and sit in the shared evaluation cache."""
    devices = {d["name"]: d for d in healthy.export["devices"]}
    scorers: set[str] = set()
    with Registry(healthy.config.registry) as registry:
        for job in healthy.export["jobs"]:
            assert job["options"]["profile"] == devices[job["device"]]["profile"], "the latency model travels"
            assert job["options"]["characteristics"]["scalars"]["num_classes"] == DIGITS_CLASSES
            assert (job["options"]["batch_size"], job["options"]["ask_size"]) == (TINY["probe_batch"], 8)
            record = registry.get_job(job["id"])
            assert record is not None and record.strategy_state is not None, (
                "checkpointed by the orchestrator"
            )
            run = JobRun(record, registry)  # rebuilt from its stored state, as a resuming orchestrator does
            evaluations = healthy.rows("evaluations", job_id=job["id"])
            assert sorted(run.loop.archive.archs) == sorted(e["arch"] for e in evaluations)
            keys = [run.key(e["arch"]) for e in evaluations]
            assert set(registry.cache_get(keys)) == set(keys)
            for evaluation in evaluations:
                if not evaluation["cached"]:
                    host, pid = evaluation["worker"].rsplit(":", 1)
                    assert host and pid.isdigit(), evaluation["worker"]
                    scorers.add(evaluation["worker"])
    assert scorers, "scored by worker processes, not in process"


def test_a_device_whose_limits_admit_nothing_fails_alone_and_the_shared_job_fits_the_rest(
    tmp_path: Path,
) -> None:
    """The round's search step without Flower: two devices' jobs and the shared baseline, through one
    embedded worker. The impossible device fails with the reason; the other gets a SubNet within its
    latency limit (its profile's model); the shared job fits the devices whose search succeeded."""
    # Prepare
    config = RoundConfig(
        registry=f"sqlite:///{tmp_path / 'registry.db'}", budget=4, ask_size=4, probe_batch=8,
        workers=1, shared_baseline=True,
    )  # fmt: skip
    profile = messages.DeviceProfile("micro", 1e5, 0.5, 1.0)
    fits = messages.ResourceConstraints(max_params=300_000, max_latency_ms=20.0)
    tiny = messages.ResourceConstraints(max_params=10)
    outcomes = [
        DeviceOutcome(node, identity=messages.DeviceIdentity("acme", name),
                      characteristics=characteristics(), constraints=limits, profile=profile)
        for node, name, limits in ((1, "fits", fits), (2, "tiny", tiny))
    ]  # fmt: skip
    recorder = RoundRecorder(config.registry, console=Console(file=io.StringIO()))
    for outcome in outcomes:
        recorder.register(outcome, config)
    # Execute
    results, shared = recorder.search(outcomes, config)
    # Assert
    ok, failed = outcomes
    assert (failed.status, failed.job_id not in results) == ("error", True)
    assert failed.error.startswith("search failed: ") and "no architecture of nb201 meeting" in failed.error
    assert list(shared) == ["micro"], "one shared baseline per tier of the devices whose search succeeded"
    shared_job = shared["micro"]
    assert ok.ok and ok.job_id in results and shared_job in results
    space = get_space("nb201")
    with Registry(config.registry) as registry:
        for evaluation in registry.evaluations(ok.job_id):
            cost = space.cost(space.decode(evaluation.arch), DIGITS_CLASSES, DIGITS_SHAPE)
            assert cost.params <= 300_000 and profile.predict_latency_ms(cost.flops) <= 20.0
        assert ok.predicted_latency_ms == pytest.approx(profile.predict_latency_ms(results[ok.job_id].flops))
        job = registry.get_job(shared_job)
        assert job is not None and job.device is None and "profile" not in job.options
        assert messages.ResourceConstraints.from_wire(job.constraints) == messages.ResourceConstraints(
            max_params=300_000, max_latency_ms=20.0
        )
        shared_arch = space.decode(results[shared_job].arch)
        assert space.cost(shared_arch, DIGITS_CLASSES, DIGITS_SHAPE).params <= 300_000


# -- a round with failing devices ----------------------------------------------------------------------------
#: The faulty round's query timeout: it must cover the cold start of Flower's Ray actors (which import
#: torch and nasfleet before their first reply, several seconds on a busy 2-core machine) and the timing
#: of the device's latency table (up to `TABLE_SECONDS`). It is a silence timeout, counted again from each
#: reply, so the silent device sleeps SILENT_EXTRA_S beyond it: longer than the other four devices take
#: to answer on the other actor after the cold start.
QUERY_TIMEOUT_S = 40.0
SILENT_EXTRA_S = 30.0
SILENT, FAILING, MALFORMED = 1, 2, 3
INJECTED_REASON = "injected failure: sensor offline"


def inject_faults(
    message: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """A Flower mod: on the query, partition 1 stays silent past the timeout, 2 answers with an Error,
    3 answers with characteristics whose ``num_samples`` is NaN; partitions 0 and 4 are left alone."""
    partition = context.node_config.get("partition-id")
    if message.metadata.message_type == QUERY:
        if partition == SILENT:
            time.sleep(QUERY_TIMEOUT_S + SILENT_EXTRA_S)
        elif partition == FAILING:
            return Message(Error(ERROR_BAD_MESSAGE, INJECTED_REASON), reply_to=message)
        elif partition == MALFORMED:
            reply = call_next(message, context)
            edit_json(reply.content, "characteristics", num_samples=math.nan)
            return reply
    return call_next(message, context)


def faulty_client_app(defaults: dict[str, bool | float | int | str]) -> ClientApp:
    """nasfleet's real ClientApp, wrapped by a ClientApp whose only addition is the `inject_faults` mod."""
    inner = make_client_app(defaults)
    outer = ClientApp(mods=[inject_faults])

    @outer.query("characteristics")
    def query(message: Message, context: Context) -> Message:
        return inner(message, context)

    @outer.train("subnet")
    def train(message: Message, context: Context) -> Message:
        return inner(message, context)

    return outer


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Round:
    directory = tmp_path_factory.mktemp("faulty")
    config = RoundConfig(
        num_clients=5,
        registry=f"sqlite:///{directory / 'registry.db'}",
        query_timeout=QUERY_TIMEOUT_S,
        train_timeout=120.0,
        **TINY,  # type: ignore[arg-type]
    )
    return _simulate(config, faulty_client_app(DEVICES))


def test_silent_and_failing_devices_are_recorded_while_the_others_finish(faulty: Round) -> None:
    by_status: dict[str, list[DeviceOutcome]] = {}
    for outcome in faulty.outcomes:
        by_status.setdefault(outcome.status, []).append(outcome)
    assert sorted(by_status) == ["error", "ok", "timeout"], [(o.status, o.error) for o in faulty.outcomes]
    assert len(by_status["ok"]) == 2 and len(by_status["timeout"]) == 1 and len(by_status["error"]) == 2
    assert by_status["timeout"][0].error == "no reply to the query in time"
    errors = sorted(o.error for o in by_status["error"])
    assert any(e == f"device error: {INJECTED_REASON}" for e in errors), errors
    assert any(e.startswith("malformed query reply: num_samples must be") and "nan" in e for e in errors), (
        errors
    )
    assert sorted(o.name for o in by_status["ok"]) == ["device-0", "device-4"]
    for outcome in by_status["ok"]:
        assert outcome.report is not None and 0.0 <= outcome.report.accuracy <= 1.0
    # Nothing hung: Ray's start, the query timeout, two searches and two trainings (Flower's simulation
    # also lets the silent device's call return before it shuts down).
    assert faulty.seconds < 150, faulty.seconds


def test_the_registry_records_each_failed_device_with_its_status_and_reason(faulty: Round) -> None:
    devices = {(d["tenant"], d["name"]): d for d in faulty.export["devices"]}
    for outcome in faulty.outcomes:
        tenant = outcome.identity.tenant if outcome.identity else "unknown"
        device = devices[(tenant, outcome.name)]
        assert device["status"] == outcome.status
        assert (device["error"] or "") == outcome.error
    failed = [o for o in faulty.outcomes if not o.ok]
    assert len(failed) == 3 and all(o.job_id == "" for o in failed), "no search job for a failed device"
    for outcome in failed:  # nothing of theirs was accepted: no identity, so a placeholder tenant and tier
        device = devices[("unknown", f"node-{outcome.node}")]
        assert device["tier"] == "unknown" and device["characteristics_hash"] is None
    ok_jobs = {o.job_id for o in faulty.outcomes if o.ok}
    assert {job["id"] for job in faulty.export["jobs"]} == ok_jobs
    assert {report["job_id"] for report in faulty.export["reports"]} == ok_jobs


# -- the ClientApp, called directly on malformed input -------------------------------------------------------
def instruction(content: RecordDict, message_type: str, node_id: int = DEVICE_NODE_ID) -> Message:
    """An instruction message as a SuperNode hands it to its ClientApp: full metadata, id = object id."""
    metadata = Metadata(
        run_id=77,
        message_id="",
        src_node_id=SUPERLINK_NODE_ID,
        dst_node_id=node_id,
        reply_to_message_id="",
        group_id="round-1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    message: Message = Message(content=content, metadata=metadata)  # type: ignore[call-overload]
    message.metadata.__dict__["_message_id"] = message.object_id  # what the SuperNode does on receipt
    return message


def device_context(**node_config: bool | float | int | str) -> Context:
    config: dict[str, bool | float | int | str] = {"partition-id": 0, "num-partitions": 2, **node_config}
    return Context(run_id=77, node_id=DEVICE_NODE_ID, node_config=config, state=RecordDict(), run_config={})


def subnet_scalars(**changes: Any) -> dict[str, Any]:
    train = messages.TrainConfig(epochs=1)
    assignment = messages.SubNetAssignment("job-1", "nb201", ARCH, DIGITS_CLASSES, DIGITS_SHAPE, train)
    scalars, _ = assignment.to_wire()
    scalars.update(changes)
    return scalars


def train_content(scalars: dict[str, Any] | None = None, record: Any = None) -> RecordDict:
    content = RecordDict()
    if record is not None:
        content["subnet"] = record
    elif scalars is not None:
        content["subnet"] = ConfigRecord({"json": json.dumps(scalars)})  # NaN is written as a bare NaN
    return content


@pytest.fixture(scope="module")
def client_app() -> ClientApp:
    return make_client_app(DEVICES)


def assert_error_reply(reply: Message, request: Message, *fields: str) -> str:
    assert reply.has_error() and not reply.has_content()
    assert reply.error.code == ERROR_BAD_MESSAGE
    assert reply.metadata.reply_to_message_id == request.metadata.message_id
    assert reply.metadata.dst_node_id == SUPERLINK_NODE_ID
    assert reply.metadata.src_node_id == DEVICE_NODE_ID
    assert reply.metadata.message_type == request.metadata.message_type
    reason = str(reply.error.reason)
    for field in fields:
        assert field in reason, reason
    return reason


@pytest.mark.parametrize(
    ("content", "field"),
    [
        pytest.param(RecordDict(), "subnet must be a ConfigRecord", id="missing-subnet-record"),
        pytest.param(
            train_content(record=ArrayRecord()), "subnet must be a ConfigRecord", id="subnet-of-wrong-type"
        ),
        pytest.param(train_content(record=ConfigRecord({"json": "{"})), "subnet.json", id="bad-json"),
        pytest.param(train_content(record=ConfigRecord({"text": "{}"})), "subnet.json", id="no-json-entry"),
        pytest.param(train_content(subnet_scalars(arch="|bogus~0|+|x|")), "arch", id="bad-arch"),
        pytest.param(train_content(subnet_scalars(arch="")), "arch", id="empty-arch"),
        pytest.param(train_content(subnet_scalars(space="nb999")), "space", id="unknown-space"),
        pytest.param(
            train_content(subnet_scalars(train_learning_rate=math.nan)), "train_learning_rate", id="nan-lr"
        ),
        pytest.param(
            train_content(subnet_scalars(train_max_seconds=math.inf)), "train_max_seconds", id="inf-seconds"
        ),
        pytest.param(train_content(subnet_scalars(num_classes=math.nan)), "num_classes", id="nan-classes"),
        pytest.param(train_content(subnet_scalars(train_epochs=1.5)), "train_epochs", id="float-epochs"),
        pytest.param(train_content(subnet_scalars(version=2)), "version must be 1", id="schema-version"),
        pytest.param(train_content(subnet_scalars(version=None)), "version must be 1", id="no-version"),
        pytest.param(train_content(subnet_scalars(kind="report")), "kind", id="wrong-kind"),
        pytest.param(train_content(subnet_scalars(num_classes=3)), "num_classes", id="classes-mismatch"),
        pytest.param(
            train_content(subnet_scalars(input_shape=[3, 32, 32])), "input_shape", id="shape-mismatch"
        ),
    ],
)
def test_a_malformed_train_message_gets_an_error_reply_naming_the_field(
    client_app: ClientApp, content: RecordDict, field: str
) -> None:
    message = instruction(content, TRAIN)
    assert_error_reply(client_app(message, device_context()), message, field)


@pytest.mark.parametrize(
    ("node_config", "field"),
    [
        pytest.param({"tier": "quantum"}, "tier", id="unknown-tier"),
        pytest.param({"partition-id": 5}, "partition-id", id="partition-out-of-range"),
        pytest.param({"partition-id": "zero"}, "partition-id", id="partition-not-an-int"),
        pytest.param({"epsilon": math.nan}, "epsilon", id="nan-epsilon"),
        pytest.param({"epsilon": -1.0}, "epsilon", id="negative-epsilon"),
    ],
)
@pytest.mark.parametrize("message_type", [QUERY, TRAIN])
def test_a_bad_device_setup_gets_an_error_reply_naming_the_key(
    client_app: ClientApp, node_config: dict[str, Any], field: str, message_type: str
) -> None:
    content = train_content(subnet_scalars()) if message_type == TRAIN else RecordDict()
    message = instruction(content, message_type)
    assert_error_reply(client_app(message, device_context(**node_config)), message, field)


def test_a_well_formed_query_is_answered_and_the_server_accepts_the_reply(client_app: ClientApp) -> None:
    """The positive control of the direct calls: same harness, valid input, a reply the server takes."""
    message = instruction(RecordDict(), QUERY)
    reply = client_app(message, device_context(tier="micro", **{"sketch-rank": 2}))
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    assert reply.metadata.reply_to_message_id == message.metadata.message_id
    outcome = parse_query_reply(DEVICE_NODE_ID, reply)
    assert (outcome.status, outcome.error) == ("ok", "")
    assert outcome.identity == messages.DeviceIdentity("default", "device-0")
    assert outcome.profile is not None and outcome.profile.tier == "micro"
    chars = outcome.characteristics
    assert chars is not None and chars.input_shape == DIGITS_SHAPE and chars.num_classes == DIGITS_CLASSES
    assert chars.class_bases is not None and chars.class_bases.shape[1] == 2


# -- the server's checks of reply content --------------------------------------------------------------------
def characteristics(rank: int = 2) -> messages.DataCharacteristics:
    histogram = (10,) * DIGITS_CLASSES
    dim = math.prod(DIGITS_SHAPE)
    rng = np.random.default_rng(0)
    means = rng.normal(size=(DIGITS_CLASSES, dim)).astype(np.float32)
    bases = rng.normal(size=(DIGITS_CLASSES, rank, dim)).astype(np.float32)
    return messages.DataCharacteristics(
        DIGITS_SHAPE, DIGITS_CLASSES, 100, histogram, True, means, bases, 1.0, 1e-5
    )


def query_reply_content() -> RecordDict:
    """A well-formed query reply: identity, characteristics with sketches, constraints and profile."""
    content = pack(RecordDict(), "identity", messages.DeviceIdentity("tenant-a", "device-0"))
    pack(content, "characteristics", characteristics())
    pack(content, "constraints", messages.ResourceConstraints(200_000, 1_000_000, 50.0, 1.0))
    return pack(content, "profile", messages.DeviceProfile("micro", 1e5, 0.5, 1.0))


def edit_json(content: RecordDict, name: str, **changes: Any) -> RecordDict:
    """Change the JSON scalars of ``content[name]``; ``json.dumps`` writes NaN and infinities bare."""
    record = content[name]
    assert isinstance(record, ConfigRecord)
    scalars = json.loads(str(record["json"]))
    scalars.update(changes)
    content[name] = ConfigRecord({"json": json.dumps(scalars)})
    return content


def reply_to_query(content: RecordDict) -> Message:
    return Message(content, reply_to=instruction(RecordDict(), QUERY))


def _without(name: str) -> Callable[[RecordDict], RecordDict]:
    def remove(content: RecordDict) -> RecordDict:
        del content[name]
        return content

    return remove


def _replace(name: str, record: Any) -> Callable[[RecordDict], RecordDict]:
    def put(content: RecordDict) -> RecordDict:
        content[name] = record
        return content

    return put


def _edit(name: str, **changes: Any) -> Callable[[RecordDict], RecordDict]:
    return lambda content: edit_json(content, name, **changes)


def _corrupt_array(content: RecordDict) -> RecordDict:
    arrays = content["characteristics.arrays"]
    assert isinstance(arrays, ArrayRecord)
    arrays["class_means"] = Array(dtype="float32", shape=(10, 64), stype="numpy.ndarray", data=b"\x00" * 7)
    return content


def _nan_array(content: RecordDict) -> RecordDict:
    arrays = content["characteristics.arrays"]
    assert isinstance(arrays, ArrayRecord)
    means = np.zeros((DIGITS_CLASSES, 64), np.float32)
    means[3, 5] = np.nan
    arrays["class_means"] = Array(means)
    return content


def _oversized_sketches(content: RecordDict) -> RecordDict:
    """A sketch rank and input that would take well over 4M values (the arrays themselves stay tiny)."""
    hist = [1] * 1000
    return edit_json(
        content, "characteristics", input_shape=[3, 64, 64], num_classes=1000, num_samples=1000,
        label_histogram=hist, sketch_rank=32,
    )  # fmt: skip


MALFORMED_REPLIES = [
    pytest.param(_without("identity"), "identity must be a ConfigRecord", id="missing-identity"),
    pytest.param(_without("characteristics"), "characteristics must be a ConfigRecord", id="missing-chars"),
    pytest.param(_without("constraints"), "constraints must be a ConfigRecord", id="missing-constraints"),
    pytest.param(_without("profile"), "profile must be a ConfigRecord", id="missing-profile"),
    pytest.param(_without("characteristics.arrays"), "sketch_rank", id="missing-sketch-arrays"),
    pytest.param(_replace("profile", ArrayRecord()), "profile must be a ConfigRecord", id="record-type"),
    pytest.param(_replace("identity", ConfigRecord({"json": 3})), "identity.json", id="json-not-a-string"),
    pytest.param(_replace("identity", ConfigRecord({"json": "{'a': 1"})), "identity.json", id="bad-json"),
    pytest.param(_replace("identity", ConfigRecord({"json": "[1, 2]"})), "identity.json", id="json-array"),
    pytest.param(
        _replace("identity", ConfigRecord({"json": " " * (MAX_JSON_CHARS + 1)})),
        "identity.json must be at most",
        id="huge-json",
    ),
    pytest.param(
        _replace("characteristics.arrays", ConfigRecord({"x": 1})), "characteristics.arrays", id="arrays-type"
    ),
    pytest.param(_edit("characteristics", num_samples=math.nan), "num_samples", id="nan-samples"),
    pytest.param(_edit("characteristics", epsilon=math.nan), "epsilon", id="nan-epsilon"),
    pytest.param(_edit("characteristics", num_classes="10"), "num_classes", id="string-classes"),
    pytest.param(_edit("characteristics", labeled=1), "labeled", id="int-labeled"),
    pytest.param(_edit("characteristics", label_histogram=[10] * 9), "label_histogram", id="short-histogram"),
    pytest.param(_edit("characteristics", input_shape=[1, 8]), "input_shape", id="2d-shape"),
    pytest.param(_edit("characteristics", version=99), "version must be 1", id="chars-version"),
    pytest.param(_edit("constraints", max_flops=math.nan), "max_flops", id="nan-max-flops"),
    pytest.param(_edit("constraints", max_latency_ms=-math.inf), "max_latency_ms", id="neg-inf-latency"),
    pytest.param(_edit("constraints", max_params=True), "max_params", id="bool-params"),
    pytest.param(_edit("profile", flops_per_ms=math.nan), "flops_per_ms", id="nan-throughput"),
    pytest.param(_edit("profile", tier="x" * 65), "tier", id="long-tier"),
    pytest.param(_edit("identity", tenant="../etc"), "tenant", id="bad-tenant"),
    pytest.param(_edit("identity", device=""), "device", id="empty-device"),
    pytest.param(_edit("identity", kind="profile"), "kind", id="wrong-kind"),
    pytest.param(_oversized_sketches, "class_bases must be at most 4M values", id="oversized-sketches"),
    pytest.param(_nan_array, "class_means must be all finite", id="nan-in-sketch"),
    pytest.param(_corrupt_array, "characteristics.arrays.class_means", id="corrupt-array-buffer"),
    pytest.param(
        _replace("characteristics.arrays", ArrayRecord({"class_means": Array(np.zeros((2, 2), np.float32))})),
        "class_means must be of shape",
        id="sketch-shape",
    ),
]


def test_a_well_formed_query_reply_parses() -> None:
    outcome = parse_query_reply(DEVICE_NODE_ID, reply_to_query(query_reply_content()))
    assert (outcome.status, outcome.error) == ("ok", "")
    assert (
        outcome.characteristics is not None and outcome.characteristics.digest() == characteristics().digest()
    )


@pytest.mark.parametrize(("corrupt", "field"), MALFORMED_REPLIES)
def test_a_malformed_query_reply_is_an_error_outcome_naming_the_field(
    corrupt: Callable[[RecordDict], RecordDict], field: str
) -> None:
    outcome = parse_query_reply(DEVICE_NODE_ID, reply_to_query(corrupt(query_reply_content())))
    assert outcome.status == "error" and outcome.node == DEVICE_NODE_ID
    assert outcome.error.startswith("malformed query reply: ") and field in outcome.error, outcome.error
    assert outcome.identity is None and outcome.characteristics is None


@pytest.mark.parametrize(("corrupt", "field"), MALFORMED_REPLIES)
def test_unpack_raises_a_message_error_naming_the_field(
    corrupt: Callable[[RecordDict], RecordDict], field: str
) -> None:
    content = corrupt(query_reply_content())
    kinds = [
        ("identity", messages.DeviceIdentity),
        ("characteristics", messages.DataCharacteristics),
        ("constraints", messages.ResourceConstraints),
        ("profile", messages.DeviceProfile),
    ]
    errors = []
    for name, kind in kinds:
        try:
            unpack(content, name, kind)
        except messages.MessageError as error:
            errors.append(str(error))
    assert len(errors) == 1 and field in errors[0], errors


def test_no_reply_is_a_timeout_and_an_error_reply_is_an_error() -> None:
    assert parse_query_reply(5, None) == DeviceOutcome(
        5, status="timeout", error="no reply to the query in time"
    )
    reply = Message(Error(500, "disk full"), reply_to=instruction(RecordDict(), QUERY))
    outcome = parse_query_reply(5, reply)
    assert (outcome.status, outcome.error) == ("error", "device error: disk full")
