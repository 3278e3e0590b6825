"""JSON codecs for what is stored as JSON: a device's characteristics in a job's options.

Wire scalars stay JSON; arrays (the sketches) become base64 little-endian float32 bytes with their shape,
so a job's characteristics round-trip exactly and every worker rebuilds the same probe batch.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from nasfleet.protocol.messages import DataCharacteristics, MessageError


def encode_characteristics(characteristics: DataCharacteristics) -> dict[str, Any]:
    """JSON data for a job's ``options["characteristics"]``: wire scalars, arrays as base64 float32 bytes."""
    scalars, arrays = characteristics.to_wire()
    encoded = {
        name: {"shape": list(array.shape),
               "float32": base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode()}
        for name, array in arrays.items()
    }  # fmt: skip
    return {"scalars": scalars, "arrays": encoded}


def decode_characteristics(data: object) -> DataCharacteristics:
    """The characteristics `encode_characteristics` stored; a `MessageError` if they break the schema."""
    if not isinstance(data, Mapping) or not isinstance(data.get("scalars"), Mapping):
        raise MessageError(f"characteristics must be a mapping with 'scalars', but got {repr(data)[:200]}")
    arrays: dict[str, np.ndarray] = {}
    for name, item in dict(data.get("arrays") or {}).items():
        try:
            raw = base64.b64decode(item["float32"], validate=True)
            arrays[name] = np.frombuffer(raw, dtype="<f4").reshape(item["shape"]).astype(np.float32)
        except (KeyError, TypeError, ValueError) as error:
            raise MessageError(
                f"characteristics array {name!r} must be base64 float32 data: {error}"
            ) from None
    return DataCharacteristics.from_wire(data["scalars"], arrays)
