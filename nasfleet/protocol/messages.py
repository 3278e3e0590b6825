"""The versioned, validated messages that cross the wire between device and server.

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

from nasfleet.bounds import MAX_COUNT, MAX_EPOCHS
from nasfleet.protocol.checks import MessageError as MessageError  # re-exported: the boundary's error
from nasfleet.protocol.checks import (
    flag,
    integer,
    known_keys,
    number,
    optional_number,
    real_array,
    safe_name,
    space_name,
    text,
)
from nasfleet.protocol.checks import require as require  # re-exported
from nasfleet.protocol.layers import LayerTable

SCHEMA_VERSION = 1
MAX_CLASSES = 1000
MAX_INPUT_DIM = 3 * 64 * 64
MAX_SKETCH_RANK = 32
MAX_SAMPLES = 10**9
MAX_SKETCH_VALUES = 4_000_000
#: Finite ranges of the numeric fields (closed intervals; see docs/api.md, "Ranges"). Generous for real
#: hardware, small enough that no arithmetic on them overflows.

MEMORY_MB = (1e-3, 1e7)  # max_memory_mb, memory_mb: 1 KB .. 10 TB of weights
LATENCY_MS = (1e-3, 1e7)  # max_latency_ms: 1 µs .. 2.8 hours
FLOPS_PER_MS = (1e-3, 1e12)  # flops_per_ms: 1 FLOP/s .. 1 PFLOP/s
OVERHEAD_MS = (0.0, 1e6)
EPSILON = (1e-3, 1e3)
DELTA = (0.0, 0.1)  # open at 0
LEARNING_RATE = (1e-8, 10.0)
TRAIN_SECONDS = (1e-3, 1e6)
MAX_SEED = 2**32 - 1

Scalars = dict[str, Any]
Arrays = dict[str, npt.NDArray[np.float32]]
Wire = Mapping[str, Any]


def _check_version(scalars: Mapping[str, Any], kind: str, allowed: tuple[str, ...]) -> None:
    """The message's kind and version, and no keys but ``kind``, ``version`` and *allowed*."""
    known_keys(scalars, ("kind", "version", *allowed), "message")
    require(scalars.get("kind") == kind, "kind", f"{kind!r}", scalars.get("kind"))
    version = scalars.get("version")
    ok = isinstance(version, int) and not isinstance(version, bool) and version == SCHEMA_VERSION
    require(ok, "version", f"{SCHEMA_VERSION} (an integer)", version)


def _input_shape(value: object) -> tuple[int, int, int]:
    ok = (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in value)
    )
    require(ok, "input_shape", "three integers (C, H, W) in [1, 4096]", value)
    shape = (int(value[0]), int(value[1]), int(value[2]))  # type: ignore[index]
    require(math.prod(shape) <= MAX_INPUT_DIM, "input_shape", f"at most {MAX_INPUT_DIM} values", value)
    return shape


@dataclass(frozen=True, eq=False)
class DataCharacteristics:
    """What a device tells the server about its local data, never a raw sample.

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

    Ranges checked by `from_wire`: ``input_shape`` three integers in [1, 4096] with at most 12,288 values;
    ``num_classes`` in [2, 1000]; ``num_samples`` in [1, 10**9]; ``sketch_rank`` in [0, 32]; sketch values
    real and within ±1e6; ``epsilon`` in [1e-3, 1e3]; ``delta`` in (0, 0.1].
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
        _check_version(scalars, "characteristics", _CHARACTERISTICS)
        shape = _input_shape(scalars.get("input_shape"))
        num_classes = integer(scalars, "num_classes", 2, MAX_CLASSES)
        num_samples = integer(scalars, "num_samples", 1, MAX_SAMPLES)
        labeled = scalars.get("labeled")
        require(isinstance(labeled, bool), "labeled", "true or false", labeled)
        histogram = _histogram(scalars.get("label_histogram"), num_classes, num_samples, bool(labeled))
        rank = integer(scalars, "sketch_rank", 0, MAX_SKETCH_RANK)
        arrays = arrays or {}
        known_keys(arrays, ("class_means", "class_bases"), "arrays")
        if not arrays:
            require(rank == 0, "sketch_rank", "0 when no sketches are sent", rank)
            for field in ("epsilon", "delta"):
                value = scalars.get(field)
                require(value is None, field, "null when no sketches are sent", value)
            return cls(shape, num_classes, num_samples, histogram, bool(labeled))
        groups, dim = (num_classes if labeled else 1), math.prod(shape)
        require(groups * (rank + 1) * dim <= MAX_SKETCH_VALUES, "class_bases", "at most 4M values", rank)
        means = real_array(arrays, "class_means", (groups, dim))
        bases = real_array(arrays, "class_bases", (groups, rank, dim))
        epsilon = number(scalars, "epsilon", *EPSILON)
        delta = number(scalars, "delta", *DELTA, open_low=True)
        return cls(shape, num_classes, num_samples, histogram, bool(labeled), means, bases, epsilon, delta)

    def digest(self) -> str:
        """The characteristics hash: SHA-256 of the canonical wire form (scalars and array bytes)."""
        scalars, arrays = self.to_wire()
        hasher = hashlib.sha256(json.dumps(scalars, sort_keys=True).encode())
        for name in sorted(arrays):
            hasher.update(name.encode())
            hasher.update(np.ascontiguousarray(arrays[name], dtype=np.float32).tobytes())
        return hasher.hexdigest()


_CHARACTERISTICS = ("input_shape", "num_classes", "num_samples", "label_histogram", "labeled", "epsilon",
                    "delta", "sketch_rank")  # fmt: skip


def _histogram(value: object, num_classes: int, num_samples: int, labeled: bool) -> tuple[int, ...]:
    if not labeled:
        require(value in ([], ()), "label_histogram", "empty when labeled is false", value)
        return ()
    counts = list(value) if isinstance(value, list | tuple) else []
    ok = len(counts) == num_classes and all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= num_samples for v in counts
    )
    require(ok, "label_histogram", f"{num_classes} integers in [0, {num_samples}]", value)
    require(sum(counts) == num_samples, "label_histogram", f"summing to num_samples={num_samples}", value)
    return tuple(int(v) for v in counts)


@dataclass(frozen=True)
class DeviceProfile:
    """How fast a device is, for the latency model ``latency_ms = overhead_ms + flops / flops_per_ms``.

    ``tier`` names the hardware class; ``flops_per_ms`` and ``overhead_ms`` are fitted on the device by
    timing reference networks; ``memory_mb`` is the memory available for the model's weights. ``layers``,
    when the device measured one, is its per-layer `LayerTable`: searches then predict latency from it
    (`nasfleet.search.limits.latency_model`), and from the FLOPs model otherwise. A profile without it
    has exactly the wire form it had before the table existed.

    Ranges checked by `from_wire`: ``tier`` 1-64 characters of [A-Za-z0-9_.-]; ``flops_per_ms`` in
    [1e-3, 1e12]; ``overhead_ms`` in [0, 1e6]; ``memory_mb`` in [1e-3, 1e7]; ``layers`` absent, null or
    as `LayerTable` says.
    """

    tier: str
    flops_per_ms: float
    overhead_ms: float
    memory_mb: float
    layers: LayerTable | None = None

    def predict_latency_ms(self, flops: int) -> float:
        """The FLOPs model's prediction (the layer table needs the network: see `latency_model`)."""
        return self.overhead_ms + flops / self.flops_per_ms

    def to_wire(self) -> tuple[Scalars, Arrays]:
        scalars = {"kind": "profile", "version": SCHEMA_VERSION, **_plain(self)}
        if self.layers is None:
            del scalars["layers"]
        else:
            scalars["layers"] = self.layers.to_json()
        return scalars, {}

    @classmethod
    def from_wire(cls, scalars: Wire, arrays: Wire | None = None) -> DeviceProfile:
        _check_version(scalars, "profile", ("tier", "flops_per_ms", "overhead_ms", "memory_mb", "layers"))
        layers = scalars.get("layers")
        return cls(
            safe_name(scalars, "tier"), number(scalars, "flops_per_ms", *FLOPS_PER_MS),
            number(scalars, "overhead_ms", *OVERHEAD_MS), number(scalars, "memory_mb", *MEMORY_MB),
            None if layers is None else LayerTable.from_json(layers),
        )  # fmt: skip


@dataclass(frozen=True)
class ResourceConstraints:
    """A device's limits; None means unconstrained. Memory bounds the float32 weights.

    Ranges checked by `from_wire`: ``max_params`` and ``max_flops`` integers in [1, 10**15];
    ``max_latency_ms`` in [1e-3, 1e7]; ``max_memory_mb`` in [1e-3, 1e7] (at most 2.6e12 parameters).
    """

    max_params: int | None = None
    max_flops: int | None = None
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None

    def to_wire(self) -> tuple[Scalars, Arrays]:
        return {"kind": "constraints", "version": SCHEMA_VERSION, **_plain(self)}, {}

    @classmethod
    def from_wire(cls, scalars: Wire, arrays: Wire | None = None) -> ResourceConstraints:
        _check_version(scalars, "constraints", ("max_params", "max_flops", "max_latency_ms", "max_memory_mb"))
        counts = {}
        for field in ("max_params", "max_flops"):
            value = scalars.get(field)
            counts[field] = None if value is None else integer(scalars, field, 1, MAX_COUNT)
        return cls(
            counts["max_params"], counts["max_flops"],
            optional_number(scalars, "max_latency_ms", *LATENCY_MS),
            optional_number(scalars, "max_memory_mb", *MEMORY_MB),
        )  # fmt: skip

    def effective_max_params(self) -> int | None:
        """The tighter of max_params and the weight memory (4 bytes per float32 parameter)."""
        limits = [self.max_params] if self.max_params is not None else []
        if self.max_memory_mb is not None:
            limits.append(int(self.max_memory_mb * 2**20 / 4))
        return min(limits) if limits else None


@dataclass(frozen=True)
class TrainConfig:
    """The device's local-training budget for a delivered SubNet.

    ``epochs`` is the most epochs trained; with ``patience`` > 0 a stratified validation part of the
    training split stops training after that many epochs without a better validation accuracy and keeps
    the best epoch's weights. ``augment`` adds random shifts (and horizontal flips on 3-channel images).
    """

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    max_seconds: float = 60.0
    test_fraction: float = 0.2
    seed: int = 0
    patience: int = 0
    augment: bool = False


@dataclass(frozen=True)
class SubNetAssignment:
    """The server's ``train`` message: which SubNet to build and how to train it.

    Ranges checked by `from_wire`: ``space`` a space name ([A-Za-z][A-Za-z0-9_.-]{0,63}, never a path);
    ``train_epochs`` in [1, 1000]; ``train_batch_size`` in [1, 4096]; ``train_learning_rate`` in
    [1e-8, 10]; ``train_max_seconds`` in [1e-3, 1e6]; ``train_test_fraction`` in [0.01, 0.9];
    ``train_seed`` in [0, 2**32 - 1]; ``train_patience`` in [0, 1000]; ``train_augment`` a boolean;
    ``num_classes`` and ``input_shape`` as in `DataCharacteristics`.
    """

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
        _check_version(scalars, "subnet", _SUBNET)
        train = TrainConfig(
            integer(scalars, "train_epochs", 1, MAX_EPOCHS), integer(scalars, "train_batch_size", 1, 4096),
            number(scalars, "train_learning_rate", *LEARNING_RATE),
            number(scalars, "train_max_seconds", *TRAIN_SECONDS),
            number(scalars, "train_test_fraction", 0.01, 0.9), integer(scalars, "train_seed", 0, MAX_SEED),
            integer(scalars, "train_patience", 0, 1000), flag(scalars, "train_augment"),
        )  # fmt: skip
        return cls(
            text(scalars, "job_id"), space_name(scalars, "space"), text(scalars, "arch", 2000),
            integer(scalars, "num_classes", 2, MAX_CLASSES), _input_shape(scalars.get("input_shape")), train,
        )  # fmt: skip


_SUBNET = ("job_id", "space", "arch", "num_classes", "input_shape", "train_epochs", "train_batch_size",
           "train_learning_rate", "train_max_seconds", "train_test_fraction", "train_seed",
           "train_patience", "train_augment")  # fmt: skip


@dataclass(frozen=True)
class TrainingReport:
    """The device's reply after local training.

    Ranges checked by `from_wire`: ``accuracy`` in [0, 1]; ``loss`` in [0, 1e9]; ``train_seconds`` and
    ``latency_ms`` in [0, 1e7]; ``num_train`` and ``num_test`` in [1, 10**9]; ``epochs_done`` in [0, 1000].
    """

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
        _check_version(scalars, "report", tuple(f.name for f in fields(cls)))
        return cls(
            text(scalars, "job_id"), text(scalars, "arch", 2000), number(scalars, "accuracy", 0.0, 1.0),
            number(scalars, "loss", 0.0, 1e9),
            number(scalars, "train_seconds", 0.0, 1e7), number(scalars, "latency_ms", 0.0, 1e7),
            integer(scalars, "num_train", 1, MAX_SAMPLES), integer(scalars, "num_test", 1, MAX_SAMPLES),
            integer(scalars, "epochs_done", 0, MAX_EPOCHS),
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
        _check_version(scalars, "identity", ("tenant", "device"))
        return cls(safe_name(scalars, "tenant"), safe_name(scalars, "device"))
