"""The field checks of the wire boundary: one function per kind of field, each with a finite range.

Every check takes the field's name, its rule's bounds and the value as it arrived (JSON types: ``bool`` is
no number, a ``float`` is no integer, ``"3"`` is neither) and raises `MessageError` with the text
``"<field> must be <rule>, but got <value>"``. Ranges are closed intervals; a number outside its range
(or NaN, or infinite, or an integer too big for a float) is refused before any arithmetic touches it, so
nothing downstream can overflow. `nasfleet.protocol.messages` holds the ranges of every message.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from nasfleet import checks

#: Largest magnitude of a sketch value; clipped data is within sqrt(C*H*W) <= 111 of zero.
MAX_SKETCH_MAGNITUDE = 1e6
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: A space's name as registered: a letter, then up to 63 characters of [A-Za-z0-9_.-].
SPACE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


class MessageError(ValueError):
    """A message that breaks its schema; the text names the field, the rule and the value."""


def require(ok: bool, field: str, rule: str, value: object) -> None:
    """Raise `MessageError` unless *ok*: ``"<field> must be <rule>, but got <value>"``."""
    checks.require(ok, field, rule, value, MessageError)


def is_integer(value: object) -> bool:
    """A JSON integer: ``int`` but not ``bool`` (numpy integers count, a float never does)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A JSON number: an integer or a ``float`` (numpy floats count), never a ``bool`` or complex."""
    return is_integer(value) or isinstance(value, float | np.floating)


def check_integer(field: str, value: object, low: int, high: int) -> int:
    """*value* as an ``int`` in [*low*, *high*]."""
    number = int(value) if isinstance(value, int | np.integer) and not isinstance(value, bool) else None
    require(number is not None and low <= number <= high, field, f"an integer in [{low}, {high}]", value)
    assert number is not None
    return number


def check_number(field: str, value: object, low: float, high: float, *, open_low: bool = False) -> float:
    """*value* as a finite ``float`` in [*low*, *high*] (in (*low*, *high*] when *open_low*)."""
    bracket = "(" if open_low else "["
    ok = is_number(value) and (low < value if open_low else low <= value) and value <= high  # type: ignore[operator]
    require(ok, field, f"a number in {bracket}{low:g}, {high:g}]", value)
    return float(value)  # type: ignore[arg-type]


def integer(scalars: Mapping[str, Any], field: str, low: int, high: int) -> int:
    return check_integer(field, scalars.get(field), low, high)


def flag(scalars: Mapping[str, Any], field: str) -> bool:
    value = scalars.get(field)
    require(isinstance(value, bool), field, "a boolean", value)
    return bool(value)


def number(
    scalars: Mapping[str, Any], field: str, low: float, high: float, *, open_low: bool = False
) -> float:
    return check_number(field, scalars.get(field), low, high, open_low=open_low)


def optional_number(scalars: Mapping[str, Any], field: str, low: float, high: float) -> float | None:
    """A number in [*low*, *high*], or None when the field is null or absent."""
    value = scalars.get(field)
    if value is None:
        return None
    require(
        is_number(value) and low <= value <= high, field, f"null or a number in [{low:g}, {high:g}]", value
    )
    return float(value)


def text(scalars: Mapping[str, Any], field: str, max_len: int = 200) -> str:
    value = scalars.get(field)
    ok = isinstance(value, str) and 0 < len(value) <= max_len and value.isprintable()
    require(ok, field, f"a printable string of 1..{max_len} characters", value)
    return str(value)


def safe_name(scalars: Mapping[str, Any], field: str) -> str:
    """1-64 characters of [A-Za-z0-9_.-]: a tenant, device or tier name."""
    value = scalars.get(field)
    require(isinstance(value, str) and _NAME.fullmatch(value) is not None, field,
            "1-64 characters of [A-Za-z0-9_.-]", value)  # fmt: skip
    return str(value)


def space_name(scalars: Mapping[str, Any], field: str) -> str:
    """A space's name as registered (``nb201``, ``autoformer-edge``, a plug-in's entry point name): a letter,
    then up to 63 characters of [A-Za-z0-9_.-]; never a path."""
    value = scalars.get(field)
    require(isinstance(value, str) and SPACE_NAME.fullmatch(value) is not None, field,
            f"a space name matching {SPACE_NAME.pattern}", value)  # fmt: skip
    return str(value)


def known_keys(mapping: object, allowed: Collection[str], what: str) -> None:
    """*mapping* is a mapping whose keys are all among *allowed*."""
    require(isinstance(mapping, Mapping), what, "a mapping", type(mapping).__name__)
    assert isinstance(mapping, Mapping)
    unknown = sorted(str(key) for key in mapping if key not in allowed)
    require(not unknown, what, f"keys among {sorted(allowed)}", f"unknown keys {unknown}")


def real_array(arrays: Mapping[str, Any], field: str, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """A real-valued array of *shape* with every value within ±`MAX_SKETCH_MAGNITUDE`, as float32.

    Complex, boolean, string and object arrays are refused (never silently cast: a complex value would
    lose its imaginary part).
    """
    value = arrays.get(field)
    require(isinstance(value, np.ndarray), field, "an array", type(value).__name__)
    assert isinstance(value, np.ndarray)
    require(value.dtype.kind in "fiu", field, "an array of real numbers", f"dtype {value.dtype}")
    require(value.shape == shape, field, f"of shape {shape}", value.shape)
    array = value.astype(np.float64, copy=False)
    finite = bool(np.isfinite(array).all()) and bool((np.abs(array) <= MAX_SKETCH_MAGNITUDE).all())
    require(finite, field, f"all finite and within ±{MAX_SKETCH_MAGNITUDE:g}", "values outside")
    return value.astype(np.float32)
