"""Tier limits a run sets in place of the built-in ones (`nasfleet.clients.device.DEVICE_TIERS`).

The text is ``TIER:KEY=VALUE[,KEY=VALUE...]``, tiers separated by ``;``, for example
``micro:params=150k,flops=20M;edge-gpu:latency=10``. The keys, each replacing one limit of the tier's
`ResourceConstraints`:

- ``params``: parameters, a whole number; ``k``, ``M`` and ``G`` multiply by 10**3, 10**6, 10**9.
- ``flops``: multiply-accumulates, as ``params``. Stated at 3×32×32, as the tiers state theirs, and
  scaled to the data's input like theirs (`DeviceTier.constraints_for`).
- ``latency``: the deadline in emulated milliseconds.
- ``memory``: MiB of float32 weights. It caps the parameters too (4 bytes each: 1 MiB is 262,144), so a
  ``params`` above what the tier's memory holds also needs a larger ``memory``.

A tier or key not named keeps its built-in limit. This module imports nothing heavy: the command line
checks the text with it before starting Flower, and each device applies it to its tier.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from nasfleet.bounds import MAX_COUNT
from nasfleet.protocol.messages import LATENCY_MS, MEMORY_MB

#: key -> (the `ResourceConstraints` field it sets, whole number?, lowest, highest)
LIMIT_KEYS: dict[str, tuple[str, bool, float, float]] = {
    "params": ("max_params", True, 1, MAX_COUNT),
    "flops": ("max_flops", True, 1, MAX_COUNT),
    "latency": ("max_latency_ms", False, *LATENCY_MS),
    "memory": ("max_memory_mb", False, *MEMORY_MB),
}
SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9}
FORMAT = "TIER:KEY=VALUE[,KEY=VALUE...] (keys: params, flops, latency, memory)"
_VALUE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([kMG]?)")

TierLimits = dict[str, dict[str, int | float]]  # tier -> {ResourceConstraints field: limit}


def parse_tier_limits(text: str, tiers: Sequence[str]) -> TierLimits:
    """The limits *text* sets, by tier name; a `ValueError` naming the rule and the part it breaks."""
    limits: TierLimits = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        tier, colon, settings = part.partition(":")
        tier = tier.strip()
        if not colon or not settings.strip():
            raise ValueError(f"must be {FORMAT}, but got {part!r}")
        if tier not in tiers:
            raise ValueError(f"tier must be one of {list(tiers)}, but got {tier!r} in {part!r}")
        if tier in limits:
            raise ValueError(f"each tier must be given once, but {tier!r} is given again in {part!r}")
        limits[tier] = _settings(settings, part)
    return limits


def _settings(settings: str, part: str) -> dict[str, int | float]:
    found: dict[str, int | float] = {}
    for setting in settings.split(","):
        key, equals, value = (s.strip() for s in setting.partition("="))
        if key not in LIMIT_KEYS or not equals:
            raise ValueError(f"each setting must be KEY=VALUE with KEY one of {list(LIMIT_KEYS)}, "
                             f"but got {setting.strip()!r} in {part!r}")  # fmt: skip
        field, whole, low, high = LIMIT_KEYS[key]
        if field in found:
            raise ValueError(f"each key must be given once per tier, but {key!r} is given again in {part!r}")
        found[field] = _number(key, value, whole, low, high)
    return found


def _number(key: str, text: str, whole: bool, low: float, high: float) -> int | float:
    match = _VALUE.fullmatch(text)
    kind = "a whole number (suffix k, M or G allowed)" if whole else "a number (suffix k, M or G allowed)"
    value = float(match.group(1)) * SUFFIXES[match.group(2)] if match else math.nan
    if not (low <= value <= high) or (whole and value != int(value)):
        raise ValueError(f"{key} must be {kind} in [{low:g}, {high:g}], but got {text!r}")
    return int(value) if whole else value
