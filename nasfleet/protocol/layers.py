"""`LayerTable`: a device's per-layer latency table as it crosses the wire (inside `DeviceProfile`).

`nasfleet.search.latency` measures a table on the device and predicts a network's latency from it; this
module only holds the data and checks it at the boundary. The table travels as a JSON object in the
profile's scalars (not as arrays) so that the registry, which stores a profile's scalars, keeps it whole.
Size: about 25 characters per layer in the profile's JSON; with a table for one space at 3×32×32 a
profile takes 2.2 kB (NAS-Bench-201, 50 layers), 3.5 kB (AutoFormer, about 90), 9.9 kB (COER, 380) and
13 kB (the MobileNetV2-style space, 521), and `MAX_LAYER_TIMES` caps a table at about 220 kB.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nasfleet.protocol.checks import SPACE_NAME, check_number, known_keys, require

MAX_LAYER_TIMES = 8192
MAX_LAYER_KINDS = 256
MAX_KIND_CHARS = 100
MAX_SPACES = 64
#: Range of a layer's time and of a kind's intercept and slope (ms, ms per unit of work).
LAYER_MS = (0.0, 1e6)
CALL_MS = (0.0, 1e3)
SCALE = (1e-3, 1e3)
#: The kind whose fallback serves a layer of a kind the table does not name.
ANY_KIND = "*"
_LAYER_ID = re.compile(r"[0-9a-f]{12}")


@dataclass(frozen=True)
class LayerTable:
    """A device's measured per-layer latency table.

    ``times`` maps a layer's id (the first 12 hex digits of the SHA-256 of its signature: module type and
    settings, parameter and input shapes; see `nasfleet.search.latency`) to its measured emulated ms per
    call. ``kinds`` maps a layer kind (``Conv2d/grouped``, ``torch.Tensor.add``) to ``(intercept_ms,
    ms_per_work)``, the fallback for a layer the table lacks, with `ANY_KIND` for a kind it does not
    name. ``call_ms`` is the cost of one call of a container module and ``scale`` the factor from summed
    layer times to a whole network's time, both measured on the device. ``spaces`` maps each space the
    table was measured for to its fingerprint (`nasfleet.search.latency.space_fingerprint`: the space's
    layers for the device's class count and input shape): a search predicts from the table only for a
    space it names with the same fingerprint, and from the FLOPs model otherwise
    (`nasfleet.search.limits.latency_model`).

    Ranges checked by `from_json`: at most 8,192 ``times`` keyed by 12 lower-case hex digits, each in
    [0, 1e6]; at most 256 ``kinds`` keyed by 1-100 printable characters, ``*`` among them, each two
    numbers in [0, 1e6]; ``call_ms`` in [0, 1e3]; ``scale`` in [1e-3, 1e3]; ``spaces`` (required, may be
    empty) at most 64 space names ([A-Za-z][A-Za-z0-9_.-]{0,63}), each with 12 lower-case hex digits.
    """

    times: tuple[tuple[str, float], ...]
    kinds: tuple[tuple[str, float, float], ...]
    call_ms: float
    scale: float
    spaces: tuple[tuple[str, str], ...] = ()

    def fingerprint(self, space: str) -> str | None:
        """The fingerprint the table was measured under for the space called *space*; None if none."""
        return dict(self.spaces).get(space)

    def to_json(self) -> dict[str, Any]:
        return {"times": dict(self.times), "kinds": {k: [a, b] for k, a, b in self.kinds},
                "call_ms": self.call_ms, "scale": self.scale, "spaces": dict(self.spaces)}  # fmt: skip

    @classmethod
    def from_json(cls, value: object) -> LayerTable:
        """The checked table of a profile's ``layers`` object; `MessageError` naming what is wrong."""
        known_keys(value, ("times", "kinds", "call_ms", "scale", "spaces"), "layers")
        assert isinstance(value, Mapping)
        times = _mapping(value.get("times"), "layers.times", MAX_LAYER_TIMES, "")
        kinds = _mapping(
            value.get("kinds"), "layers.kinds", MAX_LAYER_KINDS, f" with {ANY_KIND!r} among them"
        )
        require(
            ANY_KIND in kinds, "layers.kinds", f"a mapping with {ANY_KIND!r} among its keys", sorted(kinds)
        )
        checked_times = []
        for key, ms in sorted(times.items()):
            ok = isinstance(key, str) and _LAYER_ID.fullmatch(key) is not None
            require(ok, "layers.times", "keyed by 12 lower-case hex digits", key)
            checked_times.append((key, check_number(f"layers.times[{key}]", ms, *LAYER_MS)))
        checked_kinds = []
        for kind, pair in sorted(kinds.items()):
            ok = isinstance(kind, str) and 0 < len(kind) <= MAX_KIND_CHARS and kind.isprintable()
            require(ok, "layers.kinds", f"keyed by 1-{MAX_KIND_CHARS} printable characters", kind)
            field = f"layers.kinds[{kind!r}]"
            require(isinstance(pair, list | tuple) and len(pair) == 2, field,
                    "two numbers [intercept_ms, ms_per_work]", pair)  # fmt: skip
            intercept, slope = (check_number(field, v, *LAYER_MS) for v in pair)
            checked_kinds.append((kind, intercept, slope))
        call_ms = check_number("layers.call_ms", value.get("call_ms"), *CALL_MS)
        scale = check_number("layers.scale", value.get("scale"), *SCALE)
        return cls(tuple(checked_times), tuple(checked_kinds), call_ms, scale, _spaces(value.get("spaces")))


def _spaces(value: object) -> tuple[tuple[str, str], ...]:
    spaces = _mapping(value, "layers.spaces", MAX_SPACES, "")
    for name, fingerprint in spaces.items():
        ok = isinstance(name, str) and SPACE_NAME.fullmatch(name) is not None
        require(ok, "layers.spaces", f"keyed by space names matching {SPACE_NAME.pattern}", name)
        ok = isinstance(fingerprint, str) and _LAYER_ID.fullmatch(fingerprint) is not None
        require(ok, f"layers.spaces[{name}]", "12 lower-case hex digits", fingerprint)
    return tuple(sorted(spaces.items()))


def _mapping(value: object, field: str, limit: int, extra: str) -> Mapping[Any, Any]:
    ok = isinstance(value, Mapping) and len(value) <= limit
    shown = f"{len(value)} entries" if isinstance(value, Mapping) else value
    require(ok, field, f"a mapping of at most {limit} entries{extra}", shown)
    assert isinstance(value, Mapping)
    return value
