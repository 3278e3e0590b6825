"""The HTTP API's request and response bodies: strict Pydantic models, published in the OpenAPI schema.

Every request model is strict (no coercion: ``"3"`` is no integer, ``true`` no number), forbids unknown
fields and rejects non-finite numbers (Python's JSON parser accepts ``NaN`` and ``Infinity``). The bounds
here are the ones a JSON schema can state, the same finite ranges the wire messages check (docs/api.md,
"Ranges"); the rules across fields (a histogram that sums to the sample
count, sketch shapes that match the input shape, constraints the space can meet) are checked in
`nasfleet.server.api.validation`, which names the field the same way.

Characteristics travel in the wire form of `nasfleet.protocol.messages.DataCharacteristics`: its scalars,
plus the optional sketch arrays ``class_means`` (G, D) and ``class_bases`` (G, r, D), each either nested
lists of numbers or ``{"shape": [...], "float32": "<base64 of little-endian float32 bytes>"}`` (the form
the registry stores).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, JsonValue, Tag

from nasfleet.bounds import MAX_BUDGET, MAX_COUNT, MAX_EPOCHS, MAX_SEED
from nasfleet.protocol.messages import (
    EPSILON,
    FLOPS_PER_MS,
    LATENCY_MS,
    MAX_CLASSES,
    MAX_INPUT_DIM,
    MAX_SAMPLES,
    MAX_SKETCH_RANK,
    MEMORY_MB,
    OVERHEAD_MS,
)

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
MAX_BASE64_CHARS = 64 * 2**20
ARRAY_TAGS = ("nested", "base64")
"""Union member tags that validation errors leave out of a field's name."""

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
DeviceName = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]
Memory = Annotated[float, Field(ge=MEMORY_MB[0], le=MEMORY_MB[1], description="MB, in [1e-3, 1e7]")]
Latency = Annotated[float, Field(ge=LATENCY_MS[0], le=LATENCY_MS[1], description="ms, in [1e-3, 1e7]")]


class StrictModel(BaseModel):
    """A request body: strict types, no unknown fields, finite numbers only."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class Base64Array(StrictModel):
    """A float32 array as its shape and the base64 text of its little-endian bytes."""

    shape: list[Annotated[int, Field(ge=1, le=MAX_INPUT_DIM)]] = Field(min_length=1, max_length=3)
    float32: str = Field(max_length=MAX_BASE64_CHARS, description="base64 of little-endian float32 bytes")


def _array_kind(value: Any) -> str:
    return "base64" if isinstance(value, dict | Base64Array) else "nested"


Row = Annotated[list[float], Field(max_length=MAX_INPUT_DIM)]
Means = Annotated[
    Annotated[list[Row], Field(max_length=MAX_CLASSES), Tag("nested")]
    | Annotated[Base64Array, Tag("base64")],
    Discriminator(_array_kind),
]
Bases = Annotated[
    Annotated[
        list[Annotated[list[Row], Field(max_length=MAX_SKETCH_RANK)]],
        Field(max_length=MAX_CLASSES),
        Tag("nested"),
    ]
    | Annotated[Base64Array, Tag("base64")],
    Discriminator(_array_kind),
]


class CharacteristicsIn(StrictModel):
    """A device's data characteristics in wire form; never a raw sample."""

    kind: Literal["characteristics"] = "characteristics"
    version: Literal[1] = 1
    input_shape: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        min_length=3, max_length=3, description="(C, H, W) of one input, at most 12288 values"
    )
    num_classes: int = Field(ge=2, le=MAX_CLASSES)
    num_samples: int = Field(ge=1, le=MAX_SAMPLES)
    label_histogram: list[Annotated[int, Field(ge=0, le=MAX_SAMPLES)]] = Field(
        default_factory=list, max_length=MAX_CLASSES, description="count per class; empty when unlabeled"
    )
    labeled: bool
    sketch_rank: int | None = Field(
        default=None, ge=0, le=MAX_SKETCH_RANK, description="r; inferred from class_bases when omitted"
    )
    epsilon: Annotated[float, Field(ge=EPSILON[0], le=EPSILON[1])] | None = None
    delta: float | None = Field(default=None, gt=0, le=0.1)
    class_means: Means | None = Field(default=None, description="(G, D) with D = C*H*W")
    class_bases: Bases | None = Field(default=None, description="(G, r, D)")


class ConstraintsIn(StrictModel):
    """Resource limits; null (or absent) means unconstrained. Latency needs a device profile."""

    max_params: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    max_flops: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    max_latency_ms: Latency | None = None
    max_memory_mb: Memory | None = None


class ProfileIn(StrictModel):
    """The device's speed: the FLOPs model ``overhead_ms + flops / flops_per_ms`` and, optionally, its
    per-layer latency table (`nasfleet.protocol.layers.LayerTable`'s JSON form, as a nasfleet device
    measures it), which predicts latency instead for a space the table was measured for."""

    tier: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    flops_per_ms: float = Field(ge=FLOPS_PER_MS[0], le=FLOPS_PER_MS[1])
    overhead_ms: float = Field(ge=OVERHEAD_MS[0], le=OVERHEAD_MS[1])
    memory_mb: Memory
    layers: dict[str, JsonValue] | None = Field(
        default=None, description="times, kinds, call_ms, scale, spaces: docs/api.md, 'Latency predictions'"
    )


class SpaceOptions(StrictModel):
    """Options of the ``nb201`` space (a smaller network scores faster); the other spaces take none."""

    channels: int | None = Field(default=None, ge=2, le=64)
    cells_per_stage: int | None = Field(default=None, ge=1, le=5)


StrategyValue = bool | int | float
SUBMIT_EXAMPLE: dict[str, JsonValue] = {
    "space": "nb201",
    "space_options": {"channels": 8, "cells_per_stage": 1},
    "characteristics": {"input_shape": [3, 8, 8], "num_classes": 4, "num_samples": 40,
                        "label_histogram": [10, 10, 10, 10], "labeled": True},
    "constraints": {"max_params": 200000},
    "strategy": "evolution",
    "budget": 8,
    "ask_size": 4,
    "probe_batch_size": 8,
}  # fmt: skip
REPORT_EXAMPLE: dict[str, JsonValue] = {
    "arch": "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|",
    "accuracy": 0.71, "loss": 0.83, "train_seconds": 12.5, "num_train": 32, "num_test": 8,
    "latency_ms_measured": 3.2, "epochs_done": 14,
}  # fmt: skip


class SubmitRequest(StrictModel):
    """One personalized SubNet request: where to search, for which data and limits, how and how long."""

    model_config = ConfigDict(json_schema_extra={"examples": [SUBMIT_EXAMPLE]})

    space: str = Field(
        default="nb201", min_length=1, max_length=64, pattern=NAME_PATTERN,
        description="a registered search space: nb201, mbv2, coer, autoformer, autoformer-edge or an "
        "installed plug-in's (`nasfleet spaces list`)",
    )  # fmt: skip
    space_options: SpaceOptions = Field(default_factory=SpaceOptions)
    characteristics: CharacteristicsIn
    constraints: ConstraintsIn = Field(default_factory=ConstraintsIn)
    profile: ProfileIn | None = None
    device: DeviceName | None = Field(
        default=None, description="one of this tenant's devices (created if new)"
    )
    strategy: str = Field(default="evolution", min_length=1, max_length=64, pattern=NAME_PATTERN)
    strategy_config: dict[Annotated[str, Field(max_length=64)], StrategyValue] = Field(
        default_factory=dict, max_length=32
    )
    budget: int = Field(default=24, ge=1, le=MAX_BUDGET, description="architectures to evaluate")
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    ask_size: int = Field(default=8, ge=1, le=256, description="architectures asked per step")
    probe_batch_size: int = Field(default=16, ge=2, le=256)
    scoring_seed: int = Field(default=0, ge=0, le=MAX_SEED)


class ReportIn(StrictModel):
    """A device's training report on the SubNet it was delivered."""

    model_config = ConfigDict(json_schema_extra={"examples": [REPORT_EXAMPLE]})

    arch: str = Field(min_length=1, max_length=2000)
    accuracy: float = Field(ge=0, le=1)
    loss: float = Field(ge=0, le=1e9)
    train_seconds: float = Field(ge=0, le=1e7)
    num_train: int = Field(ge=1, le=MAX_SAMPLES)
    num_test: int = Field(ge=1, le=MAX_SAMPLES)
    latency_ms_predicted: float | None = Field(default=None, ge=0, le=1e7)
    latency_ms_measured: float | None = Field(default=None, ge=0, le=1e7)
    device: DeviceName | None = Field(default=None, description="one of this tenant's devices")
    epochs_done: int | None = Field(
        default=None,
        ge=0,
        le=MAX_EPOCHS,
        description="epochs trained: fewer than asked where training stopped early",
    )


# -- responses -----------------------------------------------------------------------------------------------
class FieldProblem(BaseModel):
    """One rejected field: where it is (``characteristics.input_shape[1]``) and what rule it broke."""

    field: str
    location: Literal["body", "query", "path", "header"]
    message: str


class ErrorBody(BaseModel):
    """Every 4xx answer: a stable code, a message, and for validation errors the fields."""

    error: str
    message: str
    fields: list[FieldProblem] = Field(default_factory=list)


class JobStatus(BaseModel):
    """A job's state and progress: evaluations done out of the budget, and the best so far."""

    id: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    space: str
    strategy: str
    device: str | None
    budget: int
    evaluations_done: int
    progress: float = Field(ge=0, le=1, description="evaluations_done / budget")
    best_arch: str | None
    best_score: float | None
    error: str | None
    note: str | None = Field(
        description="why a running job does not advance, e.g. 'waiting for workers: ...' or "
        "'broker unreachable: ...'; null while it advances",
    )
    created_at: datetime
    updated_at: datetime


class JobList(BaseModel):
    jobs: list[JobStatus]
    total: int
    offset: int
    limit: int


class CellEdge(BaseModel):
    """One NB201 cell edge: node ``source`` feeds node ``target`` through ``op``."""

    source: int
    target: int
    op: str


class MBV2Stage(BaseModel):
    depth: int
    expansions: list[int]
    kernels: list[int]


class SubNetDescription(BaseModel):
    """All a device needs to build the SubNet.

    ``get_space(space, space_options).build(genome, num_classes, input_shape)`` builds it.
    """

    space: str
    space_options: dict[str, int]
    arch: str
    genome: list[int]
    num_classes: int
    input_shape: list[int]
    cell: list[CellEdge] | None = Field(default=None, description="nb201: the cell's edges")
    channels: int | None = Field(default=None, description="nb201: channels of the first stage")
    cells_per_stage: int | None = None
    width: float | None = Field(default=None, description="mbv2: width multiplier")
    stages: list[MBV2Stage] | None = Field(default=None, description="mbv2: searchable stages")


class JobResult(BaseModel):
    """The delivered SubNet: arch, exact costs, raw proxy values, aggregate score, and how to build it."""

    job_id: str
    arch: str
    score: float
    params: int
    flops: int
    latency_ms_predicted: float | None
    proxy_values: dict[str, float]
    history: list[dict[str, Any]]
    subnet: SubNetDescription


class ReportOut(BaseModel):
    id: str = Field(description="32 hex digits, random: it tells nothing about other reports")
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
    epochs_done: int | None
    run: str | None = Field(description="the named federation run that trained it, if any")
    round: int | None = Field(description="its federation round (1, 2, ...), if any")
    created_at: datetime


class ReportList(BaseModel):
    reports: list[ReportOut]


class DeviceOut(BaseModel):
    name: str
    tier: str
    status: str
    constraints: dict[str, Any]
    profile: dict[str, Any]
    characteristics_hash: str | None
    updated_at: datetime


class DeviceList(BaseModel):
    devices: list[DeviceOut]


class TenantOut(BaseModel):
    name: str
    active_jobs: int
    max_active_jobs: int


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    orchestrator: Literal["running", "restarting", "off"]
    problems: list[str] = Field(default_factory=list, description="Why jobs cannot advance, one line each")
