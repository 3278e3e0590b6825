"""The versioned, validated messages that cross the wire between device and server (DESIGN steps 1, 6, 7).

Each message is a frozen dataclass with ``to_wire() -> (scalars, arrays)`` and
``from_wire(scalars, arrays)``. *scalars* is a flat mapping of JSON-able values (Flower ``ConfigRecord``,
Celery JSON, registry JSON columns); *arrays* maps names to float32 numpy arrays (Flower ``ArrayRecord``)
and is empty for every message but the characteristics. ``from_wire`` is the boundary: it checks every
field and raises `MessageError` naming the field, the rule and the value, so nothing malformed goes
further. A message never contains a raw sample.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

SCHEMA_VERSION = 1
MAX_CLASSES = 1000
MAX_INPUT_DIM = 3 * 64 * 64
MAX_SKETCH_RANK = 32
MAX_SAMPLES = 10**9
MAX_SKETCH_VALUES = 4_000_000

Scalars = dict[str, Any]
Arrays = dict[str, npt.NDArray[np.float32]]
Wire = Mapping[str, Any]


class MessageError(ValueError):
    """A message that breaks its schema; the text names the field, the rule and the value."""


def require(ok: bool, field: str, rule: str, value: object) -> None:
    """Raise `MessageError` unless *ok*: ``"<field> must be <rule>, but got <value>"``."""
    if not ok:
        shown = repr(value)
        raise MessageError(f"{field} must be {rule}, but got {shown[:200]}")


def _int(scalars: Mapping[str, Any], field: str, low: int, high: int) -> int:
    value = scalars.get(field)
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    require(ok, field, f"an integer in [{low}, {high}]", value)
    return int(value)  # type: ignore[arg-type]


def _positive(scalars: Mapping[str, Any], field: str, optional: bool = False) -> float | None:
    value = scalars.get(field)
    if optional and value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    require(ok, field, "a positive finite number" + (" or null" if optional else ""), value)
    return float(value)  # type: ignore[arg-type]


def _fraction(scalars: Mapping[str, Any], field: str, low: float = 0.0, high: float = 1.0) -> float:
    value = scalars.get(field)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
    require(ok, field, f"a finite number in [{low}, {high}]", value)
    return float(value)  # type: ignore[arg-type]


def _text(scalars: Mapping[str, Any], field: str, max_len: int = 200) -> str:
    value = scalars.get(field)
    ok = isinstance(value, str) and 0 < len(value) <= max_len and value.isprintable()
    require(ok, field, f"a printable string of 1..{max_len} characters", value)
    return str(value)


def _check_version(scalars: Mapping[str, Any], kind: str) -> None:
    require(isinstance(scalars, Mapping), "message", "a mapping", type(scalars).__name__)
    require(scalars.get("kind") == kind, "kind", f"{kind!r}", scalars.get("kind"))
    require(scalars.get("version") == SCHEMA_VERSION, "version", f"{SCHEMA_VERSION}", scalars.get("version"))


def _input_shape(value: object) -> tuple[int, int, int]:
    ok = (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in value)
    )
    require(ok, "input_shape", "three positive integers (C, H, W)", value)
    shape = (int(value[0]), int(value[1]), int(value[2]))  # type: ignore[index]
    require(math.prod(shape) <= MAX_INPUT_DIM, "input_shape", f"at most {MAX_INPUT_DIM} values", value)
    return shape


def _finite_array(arrays: Mapping[str, Any], field: str, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    value = arrays.get(field)
    require(isinstance(value, np.ndarray), field, "an array", type(value).__name__)
    assert isinstance(value, np.ndarray)
    require(value.shape == shape, field, f"of shape {shape}", value.shape)
    array = value.astype(np.float32, copy=False)
    require(bool(np.isfinite(array).all()), field, "all finite", "non-finite values")
    return array


@dataclass(frozen=True, eq=False)
class DataCharacteristics:
    """What a device tells the server about its local data (DESIGN step 1), never a raw sample.

    Attributes
    ----------
    input_shape, num_classes, num_samples
        Shape (C, H, W) of one input, classes of the task, local training samples.
    label_histogram
        Count per class (length ``num_classes``, summing to ``num_samples``); empty when unlabeled.
    labeled
        Label availability alpha: True when the device has labels.
    class_means, class_bases
        DP-released sketches, or None when the device opted out. ``class_means`` is (G, D) and
        ``class_bases`` is (G, r, D) with D = C*H*W: group g's covariance is approximated by
        ``class_bases[g].T @ class_bases[g]``. G is ``num_classes`` when labeled, else 1 (pooled).
    epsilon, delta
        The (epsilon, delta) spent releasing the sketches; None when there are none.
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    num_samples: int
    label_histogram: tuple[int, ...]
    labeled: bool
    class_means: npt.NDArray[np.float32] | None = None
    class_bases: npt.NDArray[np.float32] | None = None
    epsilon: float | None = None
    delta: float | None = None

    @property
    def has_sketches(self) -> bool:
        return self.class_means is not None

    def to_wire(self) -> tuple[Scalars, Arrays]:
        scalars: Scalars = {
            "kind": "characteristics",
            "version": SCHEMA_VERSION,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "num_samples": self.num_samples,
            "label_histogram": list(self.label_histogram),
            "labeled": self.labeled,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "sketch_rank": 0 if self.class_bases is None else int(self.class_bases.shape[1]),
        }
        arrays: Arrays = {}
        if self.class_means is not None and self.class_bases is not None:
            arrays = {"class_means": self.class_means, "class_bases": self.class_bases}
        return scalars, arrays

    @classmethod
    def from_wire(cls, scalars: Wire, arrays: Wire | None = None) -> DataCharacteristics:
        _check_version(scalars, "characteristics")
        shape = _input_shape(scalars.get("input_shape"))
        num_classes = _int(scalars, "num_classes", 2, MAX_CLASSES)
        num_samples = _int(scalars, "num_samples", 1, MAX_SAMPLES)
        labeled = scalars.get("labeled")
        require(isinstance(labeled, bool), "labeled", "true or false", labeled)
        histogram = _histogram(scalars.get("label_histogram"), num_classes, num_samples, bool(labeled))
        rank = _int(scalars, "sketch_rank", 0, MAX_SKETCH_RANK)
        arrays = arrays or {}
        if not arrays:
            require(rank == 0, "sketch_rank", "0 when no sketches are sent", rank)
            return cls(shape, num_classes, num_samples, histogram, bool(labeled))
        groups, dim = (num_classes if labeled else 1), math.prod(shape)
        require(groups * (rank + 1) * dim <= MAX_SKETCH_VALUES, "class_bases", "at most 4M values", rank)
        means = _finite_array(arrays, "class_means", (groups, dim))
        bases = _finite_array(arrays, "class_bases", (groups, rank, dim))
        epsilon = _positive(scalars, "epsilon")
        delta = _fraction(scalars, "delta", 0.0, 0.1)
        require(delta > 0, "delta", "in (0, 0.1]", delta)
        return cls(shape, num_classes, num_samples, histogram, bool(labeled), means, bases, epsilon, delta)

    def digest(self) -> str:
        """The characteristics hash: SHA-256 of the canonical wire form (scalars and array bytes)."""
        scalars, arrays = self.to_wire()
        hasher = hashlib.sha256(json.dumps(scalars, sort_keys=True).encode())
        for name in sorted(arrays):
            hasher.update(name.encode())
            hasher.update(np.ascontiguousarray(arrays[name], dtype=np.float32).tobytes())
        return hasher.hexdigest()


def _histogram(value: object, num_classes: int, num_samples: int, labeled: bool) -> tuple[int, ...]:
    if not labeled:
        require(value in ([], ()), "label_histogram", "empty when labeled is false", value)
        return ()
    counts = list(value) if isinstance(value, list | tuple) else []
    ok = len(counts) == num_classes and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts
    )
    require(ok, "label_histogram", f"{num_classes} non-negative integers", value)
    require(sum(counts) == num_samples, "label_histogram", f"summing to num_samples={num_samples}", value)
    return tuple(int(v) for v in counts)


@dataclass(frozen=True)
class DeviceProfile:
    """How fast a device is, for the latency model ``latency_ms = overhead_ms + flops / flops_per_ms``.

    ``tier`` names the hardware class; ``flops_per_ms`` and ``overhead_ms`` are fitted on the device by
    timing reference networks; ``memory_mb`` is the memory available for the model's weights.
    """

    tier: str
    flops_per_ms: float
    overhead_ms: float
    memory_mb: float

    def predict_latency_ms(self, flops: int) -> float:
        return self.overhead_ms + flops / self.flops_per_ms

    def to_wire(self) -> tuple[Scalars, Arrays]:
        return {"kind": "profile", "version": SCHEMA_VERSION, **_plain(self)}, {}

    @classmethod
    def from_wire(cls, scalars: Wire, arrays: Wire | None = None) -> DeviceProfile:
        _check_version(scalars, "profile")
        overhead = _fraction(scalars, "overhead_ms", 0.0, 1e6)
        return cls(
            _text(scalars, "tier", 64), _positive(scalars, "flops_per_ms") or 0.0, overhead,
            _positive(scalars, "memory_mb") or 0.0,
        )  # fmt: skip


@dataclass(frozen=True)
class ResourceConstraints:
    """A device's limits (DESIGN step 1); None means unconstrained. Memory bounds the float32 weights."""

    max_params: int | None = None
    max_flops: int | None = None
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None

    def to_wire(self) -> tuple[Scalars, Arrays]:
        return {"kind": "constraints", "version": SCHEMA_VERSION, **_plain(self)}, {}

    @classmethod
    def from_wire(cls, scalars: Wire, arrays: Wire | None = None) -> ResourceConstraints:
        _check_version(scalars, "constraints")
        counts = {}
        for field in ("max_params", "max_flops"):
            value = scalars.get(field)
            counts[field] = None if value is None else _int(scalars, field, 1, 10**15)
        return cls(
            counts["max_params"], counts["max_flops"],
            _positive(scalars, "max_latency_ms", optional=True),
            _positive(scalars, "max_memory_mb", optional=True),
        )  # fmt: skip

    def effective_max_params(self) -> int | None:
        """The tighter of max_params and the weight memory (4 bytes per float32 parameter)."""
        limits = [self.max_params] if self.max_params is not None else []
        if self.max_memory_mb is not None:
            limits.append(int(self.max_memory_mb * 2**20 / 4))
        return min(limits) if limits else None


@dataclass(frozen=True)
class TrainConfig:
    """The device's short local-training budget for a delivered SubNet."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    max_seconds: float = 60.0
    test_fraction: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class SubNetAssignment:
    """The server's ``train`` message: which SubNet to build and how to train it (DESIGN step 6)."""

    job_id: str
    space: str
    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    train: TrainConfig

    def to_wire(self) -> tuple[Scalars, Arrays]:
        scalars = {"kind": "subnet", "version": SCHEMA_VERSION, **_plain(self)}
        scalars.update({f"train_{k}": v for k, v in _plain(scalars.pop("train")).items()})
        scalars["input_shape"] = list(self.input_shape)
        return scalars, {}

    @classmethod
    def from_wire(cls, scalars: Wire, arrays: Wire | None = None) -> SubNetAssignment:
        _check_version(scalars, "subnet")
        train = TrainConfig(
            _int(scalars, "train_epochs", 1, 1000), _int(scalars, "train_batch_size", 1, 4096),
            _positive(scalars, "train_learning_rate") or 0.0, _positive(scalars, "train_max_seconds") or 0.0,
            _fraction(scalars, "train_test_fraction", 0.01, 0.9), _int(scalars, "train_seed", 0, 2**32 - 1),
        )  # fmt: skip
        return cls(
            _text(scalars, "job_id"), _text(scalars, "space", 32), _text(scalars, "arch", 2000),
            _int(scalars, "num_classes", 2, MAX_CLASSES), _input_shape(scalars.get("input_shape")), train,
        )  # fmt: skip


@dataclass(frozen=True)
class TrainingReport:
    """The device's reply after local training (DESIGN step 7)."""

    job_id: str
    arch: str
    accuracy: float
    loss: float
    train_seconds: float
    latency_ms: float
    num_train: int
    num_test: int
    epochs_done: int

    def to_wire(self) -> tuple[Scalars, Arrays]:
        return {"kind": "report", "version": SCHEMA_VERSION, **_plain(self)}, {}

    @classmethod
    def from_wire(cls, scalars: Wire, arrays: Wire | None = None) -> TrainingReport:
        _check_version(scalars, "report")
        loss = _fraction(scalars, "loss", 0.0, 1e9)
        return cls(
            _text(scalars, "job_id"), _text(scalars, "arch", 2000), _fraction(scalars, "accuracy"),
            loss,
            _fraction(scalars, "train_seconds", 0.0, 1e7), _fraction(scalars, "latency_ms", 0.0, 1e7),
            _int(scalars, "num_train", 1, MAX_SAMPLES), _int(scalars, "num_test", 1, MAX_SAMPLES),
            _int(scalars, "epochs_done", 0, 1000),
        )  # fmt: skip


def _plain(message: object) -> Scalars:
    return {f.name: getattr(message, f.name) for f in fields(message)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class DeviceIdentity:
    """Who a device is: its tenant and its device name, unique within the tenant."""

    tenant: str
    device: str

    def to_wire(self) -> tuple[Scalars, Arrays]:
        return {"kind": "identity", "version": SCHEMA_VERSION, **_plain(self)}, {}

    @classmethod
    def from_wire(cls, scalars: Wire, arrays: Wire | None = None) -> DeviceIdentity:
        _check_version(scalars, "identity")
        return cls(_name(scalars, "tenant"), _name(scalars, "device"))


def _name(scalars: Wire, field: str) -> str:
    value = _text(scalars, field, 64)
    ok = all(ch.isalnum() or ch in "_.-" for ch in value) and value.isascii()
    require(ok, field, "1-64 characters of [A-Za-z0-9_.-]", value)
    return value
