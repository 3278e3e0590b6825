"""Flower records <-> nasfleet messages: how a `messages` dataclass travels in a Flower ``RecordDict``,
and the round's message types.

A message named ``name`` travels as the ``ConfigRecord`` ``name`` holding one ``"json"`` string (its
scalars: ConfigRecord values cannot be None or nested, JSON can) and, when it has arrays, the
``ArrayRecord`` ``name + ".arrays"``. `unpack` checks the records' presence and types and then hands
the content to the message's own ``from_wire`` validation, so every failure is a `MessageError`: also
JSON nested too deep for the parser, an integer of more digits than Python converts, an array of strings
or any other payload that makes decoding itself fail (the error then names the record).
"""

from __future__ import annotations

import json
from typing import Any, Protocol, Self, TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from nasfleet.protocol.messages import Arrays, MessageError, Scalars, Wire, require

MAX_JSON_CHARS = 1_000_000
#: The Flower message types of a round: the server's query, and its SubNet to train.
QUERY = "query.characteristics"
TRAIN = "train.subnet"
#: A value of a Flower run config or node config.
ConfigValue = bool | float | int | str


class WireMessage(Protocol):
    def to_wire(self) -> tuple[Scalars, Arrays]: ...

    @classmethod
    def from_wire(cls, scalars: Wire, arrays: Wire | None = None) -> Self: ...


M = TypeVar("M", bound=WireMessage)


def pack(content: RecordDict, name: str, message: WireMessage) -> RecordDict:
    """Add ``message`` to ``content`` under ``name`` (see the module docstring); returns ``content``."""
    scalars, arrays = message.to_wire()
    content[name] = ConfigRecord({"json": json.dumps(scalars, allow_nan=False)})
    if arrays:
        content[f"{name}.arrays"] = ArrayRecord(
            {k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}
        )
    return content


def unpack(content: RecordDict, name: str, kind: type[M]) -> M:
    """The validated ``kind`` message stored under ``name``; `MessageError` if absent or malformed."""
    record = content.get(name)
    require(isinstance(record, ConfigRecord), name, "a ConfigRecord", type(record).__name__)
    text = record.get("json")  # type: ignore[union-attr]
    require(isinstance(text, str), f"{name}.json", "a JSON string", text)
    size = len(text)  # type: ignore[arg-type]
    require(size <= MAX_JSON_CHARS, f"{name}.json", f"at most {MAX_JSON_CHARS} characters", f"{size} chars")
    try:
        scalars: Any = json.loads(text)  # type: ignore[arg-type]
    except (ValueError, RecursionError) as error:  # ValueError: also an integer of more than 4300 digits
        raise MessageError(f"{name}.json must be valid JSON, but got an error: {_reason(error)}") from None
    require(isinstance(scalars, dict), f"{name}.json", "a JSON object", type(scalars).__name__)
    arrays: dict[str, np.ndarray] = {}
    array_record = content.get(f"{name}.arrays")
    if array_record is not None:
        require(isinstance(array_record, ArrayRecord), f"{name}.arrays", "an ArrayRecord", type(array_record))
        arrays = {key: _numpy(f"{name}.arrays.{key}", value) for key, value in array_record.items()}
    try:
        return kind.from_wire(scalars, arrays)
    except MessageError:
        raise
    except Exception as error:  # the validators let nothing through, but a payload never crashes the reader
        raise MessageError(
            f"{name} must be a well-formed message, but got an error: {_reason(error)}"
        ) from None


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:200]}"


def _numpy(field: str, value: object) -> np.ndarray:
    if not isinstance(value, Array):
        raise MessageError(f"{field} must be an Array, but got {type(value).__name__}")
    try:
        array = value.numpy()
    except Exception as error:  # a corrupt buffer: any decoding failure is the sender's fault
        raise MessageError(
            f"{field} must be a decodable numpy array, but got an error: {_reason(error)}"
        ) from None
    require(array.dtype.kind in "fiu", field, "an array of real numbers", f"dtype {array.dtype}")
    return array
