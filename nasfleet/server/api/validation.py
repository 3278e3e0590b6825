"""The rules across fields of a SubNet request, checked before anything reaches the registry.

`job_spec` turns a schema-valid `SubmitRequest` into a `JobSpec` or raises a 422 `ApiError` naming the
field, the rule and the value: the characteristics through `DataCharacteristics.from_wire` (the same
boundary the Flower messages cross), sketch arrays decoded and size-checked before they are built, a
registered space (built-in or plug-in) and its own rules on the input shape, constraints the space can
meet at all (its smallest architecture, the one with every gene 0, must fit; its latency as the device's
`latency_model` predicts it), the strategy's name and config (the strategy is built once, so a config it
would refuse at the job's start is refused here), and the API's own budget limit.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from nasfleet.protocol.messages import (
    SCHEMA_VERSION,
    DataCharacteristics,
    DeviceProfile,
    MessageError,
    ResourceConstraints,
)
from nasfleet.search.limits import device_feasibility
from nasfleet.server.api.errors import ApiError, invalid
from nasfleet.server.api.schemas import Base64Array, CharacteristicsIn, SubmitRequest
from nasfleet.server.service.jobs import JobOptions
from nasfleet.spaces import SearchSpace, discover_spaces, get_space
from nasfleet.strategies.base import Feasibility, StrategyError
from nasfleet.strategies.discovery import discover_strategies, get_strategy

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Limits:
    """What the API accepts beyond the schema: budget and sketch size (values in both arrays)."""

    max_budget: int = 10_000
    max_sketch_values: int = 1_000_000


@dataclass(frozen=True)
class JobSpec:
    """A checked request, ready for `nasfleet.server.service.jobs.submit_job`."""

    space: str
    strategy: str
    strategy_config: dict[str, Any]
    budget: int
    seed: int
    characteristics: DataCharacteristics
    constraints: ResourceConstraints
    profile: DeviceProfile | None
    options: JobOptions
    device: str | None


def _message_field(prefix: str, error: MessageError) -> ApiError:
    """A 422 from a `MessageError`, whose text starts with the field it names."""
    field, _, rule = str(error).partition(" ")
    return invalid(f"{prefix}.{field}", rule or str(error))


def _nested(field: str, value: list[Any], max_values: int) -> Array:
    count = _count(value)
    if count > max_values:
        raise invalid(field, f"must hold at most {max_values} values, but got {count}")
    try:
        return np.array(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise invalid(field, "must be a rectangular array of numbers, but got ragged lists") from None


def _count(value: Any) -> int:
    return sum(_count(item) for item in value) if isinstance(value, list) else 1


def _decoded(field: str, value: Base64Array, max_values: int) -> Array:
    count = math.prod(value.shape)
    if count > max_values:
        raise invalid(f"{field}.shape", f"must hold at most {max_values} values, but got {value.shape}")
    try:
        raw = base64.b64decode(value.float32, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{field}.float32", "must be base64 text, but got other characters") from None
    if len(raw) != 4 * count:
        rule = f"must decode to {4 * count} bytes (float32 of shape {value.shape}), but got {len(raw)}"
        raise invalid(f"{field}.float32", rule)
    return np.frombuffer(raw, dtype="<f4").reshape(value.shape).astype(np.float32)


def _array(field: str, value: list[Any] | Base64Array, max_values: int) -> Array:
    if isinstance(value, Base64Array):
        return _decoded(field, value, max_values)
    return _nested(field, value, max_values)


def characteristics(body: CharacteristicsIn, max_values: int) -> DataCharacteristics:
    """The request's characteristics through the wire boundary; sketches at most *max_values* values."""
    prefix = "characteristics"
    if (body.class_means is None) != (body.class_bases is None):
        missing = "class_bases" if body.class_bases is None else "class_means"
        raise invalid(f"{prefix}.{missing}", "must be sent together with the other sketch array")
    arrays: dict[str, Array] = {}
    if body.class_means is not None and body.class_bases is not None:
        arrays["class_means"] = _array(f"{prefix}.class_means", body.class_means, max_values)
        budget = max_values - arrays["class_means"].size
        arrays["class_bases"] = _array(f"{prefix}.class_bases", body.class_bases, budget)
    rank = body.sketch_rank
    if rank is None:
        bases = arrays.get("class_bases")
        rank = int(bases.shape[1]) if bases is not None and bases.ndim == 3 else 0
    scalars = {
        **body.model_dump(exclude={"class_means", "class_bases", "sketch_rank"}),
        "sketch_rank": rank,
    }
    try:
        return DataCharacteristics.from_wire(scalars, arrays)
    except MessageError as error:
        raise _message_field(prefix, error) from None


def constraints(body: SubmitRequest) -> tuple[ResourceConstraints, DeviceProfile | None]:
    wire = {"kind": "constraints", "version": SCHEMA_VERSION, **body.constraints.model_dump()}
    try:
        limits = ResourceConstraints.from_wire(wire)
    except MessageError as error:
        raise _message_field("constraints", error) from None
    profile = None
    if body.profile is not None:
        try:
            profile = DeviceProfile.from_wire({"kind": "profile", "version": SCHEMA_VERSION,
                                               **body.profile.model_dump()})  # fmt: skip
        except MessageError as error:
            raise _message_field("profile", error) from None
    return limits, profile


def _space(body: SubmitRequest) -> SearchSpace:
    """The request's space: any registered one (built-in or plug-in, as `get_space` resolves them)."""
    entries, problems = discover_spaces()
    if body.space not in entries:
        rule = f"must be a registered space, one of {sorted(entries)}"
        broken = next((problem.reason for problem in problems if problem.name == body.space), None)
        if broken is not None:
            raise invalid("space", f"{rule}, but plug-in space {body.space!r} cannot be used: {broken}")
        raise invalid("space", f"{rule}, but got {body.space!r}")
    options = body.space_options.model_dump(exclude_none=True)
    if options and body.space != "nb201":
        raise invalid("space_options", f"must be empty for space {body.space!r}, but got {options}")
    return get_space(body.space, options)


def _feasibility(space: SearchSpace, spec: JobSpec, device_profile: DeviceProfile | None) -> Feasibility:
    """The job's feasibility check; 422 if even the smallest architecture breaks the constraints."""
    data, limits = spec.characteristics, spec.constraints
    shape, classes = data.input_shape, data.num_classes
    smallest = tuple(0 for _ in space.choices)
    try:
        cost = space.cost(smallest, classes, shape)
    except ValueError as error:
        raise invalid("characteristics.input_shape", f"must suit space {space.name!r}: {error}") from None
    profile = spec.profile or device_profile
    if limits.max_latency_ms is not None and profile is None:
        raise invalid("constraints.max_latency_ms", "needs a device profile (profile, or a registered "
                      "device's) to predict latency, but none was given")  # fmt: skip
    if limits.max_memory_mb is not None and limits.effective_max_params() == 0:
        raise invalid("constraints.max_memory_mb", f"must hold one float32 parameter (4 bytes), but got "
                      f"{limits.max_memory_mb!r} MB")  # fmt: skip
    try:
        feasible = device_feasibility(space, limits, profile, classes, shape)
    except StrategyError as error:
        raise invalid("constraints", str(error)) from None
    bounds = feasible.constraints
    checks: list[tuple[str, float | None, float, str]] = [
        ("max_params", bounds.max_params, cost.params, "params"),
        ("max_flops", bounds.max_flops, cost.flops, "FLOPs"),
    ]
    if feasible.latency_model is not None and bounds.max_latency_ms is not None:  # the device's own model
        checks.append(("max_latency_ms", bounds.max_latency_ms, feasible.latency_model(smallest), "ms"))
    for name, bound, smallest_cost, unit in checks:
        if bound is not None and smallest_cost > bound:
            field = "max_memory_mb" if name == "max_params" and bound != limits.max_params else name
            raise invalid(f"constraints.{field}", f"must admit the smallest architecture of {space.name} "
                          f"({smallest_cost:g} {unit}), but allows {bound:g}")  # fmt: skip
    return feasible


def _strategy(spec: JobSpec, space: SearchSpace, feasible: Feasibility) -> None:
    entries, _problems = discover_strategies()
    if spec.strategy not in entries:
        raise invalid("strategy", f"must be one of {sorted(entries)}, but got {spec.strategy!r}")
    try:
        get_strategy(spec.strategy, space, spec.seed, spec.budget, spec.strategy_config, feasible)
    except (StrategyError, ValueError, TypeError, ArithmeticError) as error:
        raise invalid("strategy_config", str(error)) from None


def job_spec(body: SubmitRequest, limits: Limits, device_profile: DeviceProfile | None = None) -> JobSpec:
    """The checked job of *body*; *device_profile* is the named device's registered profile, if any."""
    if body.budget > limits.max_budget:
        raise invalid("budget", f"must be at most {limits.max_budget} on this server, but got {body.budget}")
    data = characteristics(body.characteristics, limits.max_sketch_values)
    bounds, profile = constraints(body)
    space = _space(body)
    space_options = body.space_options.model_dump(exclude_none=True)
    options = JobOptions(ask_size=body.ask_size, batch_size=body.probe_batch_size,
                         scoring_seed=body.scoring_seed, space_options=space_options)  # fmt: skip
    spec = JobSpec(body.space, body.strategy, dict(body.strategy_config), body.budget, body.seed, data,
                   bounds, profile, options, body.device)  # fmt: skip
    feasible = _feasibility(space, spec, device_profile)
    _strategy(spec, space, feasible)
    return spec


def registered_profile(profile: Mapping[str, Any] | None) -> DeviceProfile | None:
    """A registered device's stored profile, or None when it has none (or an unusable one)."""
    if not profile:
        return None
    try:
        return DeviceProfile.from_wire(profile)
    except MessageError:
        return None
