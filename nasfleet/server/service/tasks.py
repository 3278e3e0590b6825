"""The scoring task: raw proxy values of a batch of candidates, stored in the registry.

``score_batch(payload, archs)`` is small on the wire: *payload* names the job, its characteristics hash
and the scoring configuration (`ScoringSpec`), *archs* are canonical arch strings. The characteristics
themselves (sketches are arrays) travel once, in the job's ``options`` (`encode_characteristics`); a worker
loads them from the registry by job id, checks them against the hash, and keeps them per process.

For each arch not yet in the evaluation cache, the task builds the network, runs one probe on the
job's probe batch (the device's synthetic batch rebuilt from its characteristics, or, for a job that
names probe data, a seeded mini-batch of that dataset's train split: ``nasfleet search --data``), and
stores the evaluation of the job and then the cache entry, each write idempotent; the orchestrator
reads the cache entry, so an arch is complete once its entry exists. A redelivered task (a worker died,
at-least-once delivery) finds the arch cached and skips it: the registry ends with exactly one
evaluation per (job, arch).

Failures: a malformed payload is a `PayloadError`, never retried; a proxy that cannot score an arch
(`ProxyError`) is final too, and marks the job failed with the reason; anything else (the registry or the
broker briefly away) is retried a bounded number of times with backoff.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from celery import Task, shared_task

from nasfleet import checks
from nasfleet.bounds import MAX_BATCH_SIZE
from nasfleet.data.datasets import load_dataset
from nasfleet.protocol.codecs import decode_characteristics
from nasfleet.protocol.messages import DataCharacteristics, MessageError
from nasfleet.proxies.base import ProxyError, revised
from nasfleet.proxies.engine import expand_names, score_archs
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.search.probe import MIN_BATCH_SIZE, synthetic_probe_batch
from nasfleet.server.registry import CacheEntry, CacheKey, EvaluationRecord, Registry, RegistryError
from nasfleet.spaces import ArchitectureError, Genome, SearchSpace, get_space, space_names

TASK_NAME = "nasfleet.score_batch"
PAYLOAD_VERSION = 2  # 2: the registry's deployment id travels in the task
MAX_ARCHS_PER_TASK = 256
MAX_RETRIES = 3
MAX_DATA_SPEC = 1000
_ID_CHARS = frozenset("0123456789abcdef")
_CACHED_ITEMS = 16
log = logging.getLogger(__name__)


class PayloadError(ValueError):
    """A task payload that breaks its schema: rejected at once, never retried."""


def _require(ok: bool, field: str, rule: str, value: object) -> None:
    checks.require(ok, field, rule, value, PayloadError)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _hex(field: str, value: object, length: int) -> str:
    ok = isinstance(value, str) and len(value) == length and set(value) <= _ID_CHARS
    _require(ok, field, f"{length} lowercase hex digits", value)
    return str(value)


# -- what decides raw values ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoringSpec:
    """Everything beside arch and characteristics that raw proxy values depend on.

    Its `digest` is the cache key's proxy-configuration hash: two jobs whose specs are equal (and whose
    characteristics are equal) share evaluations, whatever their strategies and seeds. ``data`` is the
    probe data: "" for the synthetic batch rebuilt from the characteristics, else a dataset spec
    (`nasfleet.data.datasets.load_dataset`) whose train split gives the probe batch; it is part of the digest
    only when set, so the digests of synthetic-probe jobs are those of earlier versions.
    """

    space: str
    proxies: tuple[str, ...]
    batch_size: int
    seed: int
    space_options: Mapping[str, Any] = field(default_factory=dict)
    data: str = ""

    def to_wire(self) -> dict[str, Any]:
        wire = {"space": self.space, "proxies": list(self.proxies), "batch_size": self.batch_size,
                "seed": self.seed, "space_options": dict(self.space_options)}  # fmt: skip
        return {**wire, "data": self.data} if self.data else wire

    @classmethod
    def from_wire(cls, data: object) -> ScoringSpec:
        _require(isinstance(data, Mapping), "scoring", "a mapping", data)
        assert isinstance(data, Mapping)
        space, proxies = data.get("space"), data.get("proxies")
        batch_size, seed = data.get("batch_size"), data.get("seed")
        _require(space in (names := space_names()), "scoring.space", f"one of {names}", space)
        ok = isinstance(proxies, list) and bool(proxies) and all(isinstance(p, str) for p in proxies)
        _require(ok, "scoring.proxies", "a non-empty list of proxy names", proxies)
        assert isinstance(proxies, list)
        try:
            expand_names(",".join(proxies), True)
        except ProxyError as error:
            raise PayloadError(f"scoring.proxies: {error}") from None
        ok = _is_int(batch_size) and MIN_BATCH_SIZE <= batch_size <= MAX_BATCH_SIZE  # type: ignore[operator]
        _require(ok, "scoring.batch_size", f"an integer in [{MIN_BATCH_SIZE}, {MAX_BATCH_SIZE}]", batch_size)
        _require(_is_int(seed) and 0 <= seed < 2**63, "scoring.seed", "an integer in [0, 2**63)", seed)  # type: ignore[operator]
        options = data.get("space_options", {})
        _require(isinstance(options, Mapping), "scoring.space_options", "a mapping", options)
        assert isinstance(options, Mapping)
        try:
            get_space(str(space), options)
        except (TypeError, ValueError) as error:
            raise PayloadError(f"scoring.space_options: {error}") from None
        data = data.get("data", "")
        ok = isinstance(data, str) and len(data) <= MAX_DATA_SPEC and data.isprintable()
        _require(ok, "scoring.data", f"a dataset spec of at most {MAX_DATA_SPEC} printable characters", data)
        return cls(str(space), tuple(proxies), int(batch_size), int(seed), dict(options), str(data))  # type: ignore[arg-type]

    def digest(self) -> str:
        """The hash of the wire form and of the revisions of revised proxies (`revised`) and space."""
        key = {"version": PAYLOAD_VERSION, **self.to_wire()}
        if revisions := revised(expand_names(",".join(self.proxies), True)[0]):
            key["revisions"] = revisions
        if (space_revision := get_space(self.space, self.space_options).revision) != 1:
            key["space_revision"] = space_revision
        canonical = json.dumps(key, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class BatchRequest:
    """A validated task: which job, whose characteristics, how to score, and the canonical archs."""

    job_id: str
    characteristics_hash: str
    scoring: ScoringSpec
    archs: tuple[str, ...]
    deployment: str = ""

    def key(self, arch: str) -> CacheKey:
        return CacheKey(arch, self.characteristics_hash, self.scoring.digest())


def make_payload(
    job_id: str, characteristics_hash: str, scoring: ScoringSpec, deployment: str
) -> dict[str, Any]:
    """The task's first argument, as the orchestrator of the registry with id *deployment* sends it."""
    return {
        "version": PAYLOAD_VERSION,
        "deployment": deployment,
        "job_id": job_id,
        "characteristics_hash": characteristics_hash,
        "scoring": scoring.to_wire(),
        "proxy_config_hash": scoring.digest(),
    }


def parse_request(payload: object, archs: object) -> BatchRequest:
    """The boundary of the task: a `BatchRequest`, or a `PayloadError` naming the field, rule and value."""
    _require(isinstance(payload, Mapping), "payload", "a mapping", type(payload).__name__)
    assert isinstance(payload, Mapping)
    _require(payload.get("version") == PAYLOAD_VERSION, "payload.version", str(PAYLOAD_VERSION),
             payload.get("version"))  # fmt: skip
    job_id = _hex("payload.job_id", payload.get("job_id"), 32)
    deployment = _hex("payload.deployment", payload.get("deployment"), 32)
    characteristics_hash = _hex("payload.characteristics_hash", payload.get("characteristics_hash"), 64)
    scoring = ScoringSpec.from_wire(payload.get("scoring"))
    claimed = payload.get("proxy_config_hash")
    _require(claimed == scoring.digest(), "payload.proxy_config_hash", f"{scoring.digest()} (the hash of "
             "payload.scoring)", claimed)  # fmt: skip
    ok = isinstance(archs, list | tuple) and 0 < len(archs) <= MAX_ARCHS_PER_TASK
    _require(ok, "archs", f"a list of 1 to {MAX_ARCHS_PER_TASK} arch strings", archs)
    assert isinstance(archs, list | tuple)
    space = get_space(scoring.space, scoring.space_options)
    canonical = tuple(_canonical(space, index, arch) for index, arch in enumerate(archs))
    _require(len(set(canonical)) == len(canonical), "archs", "distinct architectures", list(archs))
    return BatchRequest(job_id, characteristics_hash, scoring, canonical, deployment)


def _canonical(space: SearchSpace, index: int, arch: object) -> str:
    _require(isinstance(arch, str), f"archs[{index}]", "an arch string", arch)
    try:
        canonical = space.encode(space.decode(str(arch)))
    except ArchitectureError as error:
        raise PayloadError(f"archs[{index}] must be an architecture of {space.name}: {error}") from None
    _require(canonical == arch, f"archs[{index}]", f"in canonical form ({canonical})", arch)
    return canonical


# -- per-process state: the registry, characteristics and probe batches, reused across tasks ---------------
class _Lru(OrderedDict[Any, Any]):
    def remember(self, key: Any, value: Any) -> Any:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _CACHED_ITEMS:
            self.popitem(last=False)
        return value


_REGISTRIES: dict[str, Registry] = {}
_CHARACTERISTICS = _Lru()
_BATCHES = _Lru()


def worker_registry(url: str) -> Registry:
    """This process's registry for *url*, opened once (a forked worker child opens its own)."""
    key = f"{os.getpid()}:{url}"
    if key not in _REGISTRIES:
        _REGISTRIES[key] = Registry(url)
    return _REGISTRIES[key]


def load_characteristics(registry: Registry, request: BatchRequest) -> DataCharacteristics:
    """The job's characteristics, checked against the payload's hash (content-addressed, so cached)."""
    if request.characteristics_hash in _CHARACTERISTICS:
        return _CHARACTERISTICS[request.characteristics_hash]  # type: ignore[no-any-return]
    job = registry.get_job(request.job_id)
    _require(job is not None, "payload.job_id", "the id of a registered job", request.job_id)
    assert job is not None
    _require(job.characteristics_hash == request.characteristics_hash, "payload.characteristics_hash",
             f"the job's ({job.characteristics_hash})", request.characteristics_hash)  # fmt: skip
    try:
        characteristics = decode_characteristics(job.options.get("characteristics"))
    except MessageError as error:
        raise PayloadError(f"job {job.id} holds no usable characteristics: {error}") from None
    digest = characteristics.digest()
    _require(digest == request.characteristics_hash, "the job's stored characteristics",
             f"those of hash {request.characteristics_hash}", digest)  # fmt: skip
    return _CHARACTERISTICS.remember(digest, characteristics)  # type: ignore[no-any-return]


def probe_batch(characteristics: DataCharacteristics, scoring: ScoringSpec) -> ProbeBatch:
    """The job's probe batch (see `ScoringSpec`), built once per process."""
    key = (characteristics.digest(), scoring.batch_size, scoring.seed, scoring.data)
    if key not in _BATCHES:
        _BATCHES.remember(key, _build_probe_batch(characteristics, scoring))
    return _BATCHES[key]  # type: ignore[no-any-return]


def _build_probe_batch(characteristics: DataCharacteristics, scoring: ScoringSpec) -> ProbeBatch:
    """The synthetic batch, or the seeded mini-batch of the named dataset's train split; a dataset this
    worker cannot read, or one that does not match the characteristics, is a `ProxyError` (final)."""
    if not scoring.data:
        return synthetic_probe_batch(characteristics, scoring.batch_size, scoring.seed)
    try:
        dataset = load_dataset(scoring.data, "train")
        batch = ProbeBatch.from_dataset(dataset, scoring.batch_size, scoring.seed, characteristics.labeled)
    except (OSError, ValueError) as error:
        raise ProxyError(f"probe data {scoring.data!r} cannot be read on {worker_name()}: {error}") from None
    found = (batch.input_shape, batch.num_classes)
    if found != (characteristics.input_shape, characteristics.num_classes):
        raise ProxyError(
            f"probe data {scoring.data!r} must have the job's input shape and classes "
            f"{(characteristics.input_shape, characteristics.num_classes)}, but has {found}"
        )
    return batch


# -- the work ------------------------------------------------------------------------------------------------
def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _score_arch(
    space: SearchSpace, genome: Genome, batch: ProbeBatch, scoring: ScoringSpec
) -> tuple[dict[str, float], float]:
    """Raw values of one arch on one fresh probe, and the seconds it took (the seam fault tests wrap)."""
    table = score_archs(space, [genome], batch, scoring.proxies, seed=scoring.seed, progress=False)
    return {name: float(table.values[name][0]) for name in scoring.proxies}, float(table.seconds[0])


def score_request(registry: Registry, request: BatchRequest, worker: str = "") -> dict[str, Any]:
    """Score the request's uncached archs, storing each (evaluation, then cache entry) as it is done.

    Returns ``{"scored": {arch: values}, "cached": [archs already cached]}``.
    """
    _require(request.deployment == registry.deployment_id, "payload.deployment",
             f"the deployment id of this worker's registry ({registry.deployment_id})",
             request.deployment)  # fmt: skip
    characteristics = load_characteristics(registry, request)
    try:
        expand_names(",".join(request.scoring.proxies), characteristics.labeled)
    except ProxyError as error:
        raise PayloadError(f"scoring.proxies: {error}") from None
    batch = probe_batch(characteristics, request.scoring)
    space = get_space(request.scoring.space, request.scoring.space_options)
    keys = [request.key(arch) for arch in request.archs]
    cached = registry.cache_get(keys)
    scored: dict[str, dict[str, float]] = {}
    for arch, key in zip(request.archs, keys, strict=True):
        if key in cached:
            continue
        genome = space.decode(arch)
        values, seconds = _score_arch(space, genome, batch, request.scoring)
        cost = space.cost(genome, characteristics.num_classes, characteristics.input_shape)
        evaluation = EvaluationRecord(arch, values, cost.params, cost.flops, seconds, worker)
        registry.add_evaluations(request.job_id, [evaluation])
        registry.cache_put([CacheEntry(key, values, cost.params, cost.flops)])
        scored[arch] = values
    return {"scored": scored, "cached": [arch for arch, key in zip(request.archs, keys, strict=True)
                                         if key in cached]}  # fmt: skip


FINAL_ERRORS = (PayloadError, ProxyError)


def record_failure(registry: Registry, payload: object, archs: object, error: BaseException) -> None:
    """A task failed for good: mark its job failed with the reason (not for a malformed payload, whose
    job id cannot be trusted)."""
    if isinstance(error, PayloadError):
        log.error("nasfleet: rejected a malformed task: %s", error)
        return
    try:
        request = parse_request(payload, archs)
        registry.update_job(request.job_id, status="failed", error=f"scoring failed: {error}")
    except (PayloadError, RegistryError) as problem:
        log.error("nasfleet: a task failed (%s) and its job could not be marked: %s", error, problem)


class ScoreTask(Task):  # type: ignore[misc]
    """Marks the job failed when scoring fails for good (retries spent, or an error that cannot pass)."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        payload, archs = [*list(args), None, None][:2]
        log.error("nasfleet: task %s failed: %s", task_id, exc)
        record_failure(worker_registry(self.app.conf.nasfleet_registry), payload, archs, exc)


@shared_task(  # type: ignore[untyped-decorator]
    bind=True,
    base=ScoreTask,
    name=TASK_NAME,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(Exception,),
    dont_autoretry_for=FINAL_ERRORS,
    max_retries=MAX_RETRIES,
    retry_backoff=1,
    retry_backoff_max=8,
    retry_jitter=False,
    ignore_result=True,
)
def score_batch(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Score the archs ``args[1]`` of the job ``args[0]`` names; see the module docstring.

    The signature takes anything, so that a message with the wrong arguments is a `PayloadError`
    (rejected at once) rather than a ``TypeError`` (which would be retried).
    """
    started = time.perf_counter()
    _require(len(args) == 2 and not kwargs, "task arguments", "(payload, archs)", (args, kwargs))
    request = parse_request(*args)
    registry = worker_registry(self.app.conf.nasfleet_registry)
    outcome = score_request(registry, request, worker_name())
    log.info("nasfleet: job %s: %d scored, %d cached in %.2f s", request.job_id, len(outcome["scored"]),
             len(outcome["cached"]), time.perf_counter() - started)  # fmt: skip
    return outcome


def score_locally(registry: Registry, payload: dict[str, Any], archs: list[str]) -> None:
    """Run one task in this process as a worker would, failures included (no retries: nothing is
    transient in process)."""
    try:
        score_request(registry, parse_request(payload, archs), worker_name())
    except (*FINAL_ERRORS, RegistryError) as error:
        record_failure(registry, payload, archs, error)
