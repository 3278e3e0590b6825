"""Typed strategy options: one frozen dataclass per strategy, checked in one place.

A strategy declares its options as a frozen dataclass whose fields carry defaults, types (``int``,
``float`` or ``bool``) and rules (`option`). `parse_options` turns a plain configuration mapping into
that dataclass: unknown keys, values of the wrong type and values that break a rule are rejected with
a `StrategyError` naming the strategy, the option, the rule and the value received. Cross-option rules
go in the dataclass's ``__post_init__`` and raise through `require`.

Every option has a finite range before its own rule is checked: an ``int`` option lies in
[-10**6, 10**6] (`MAX_INT_OPTION`) and a ``float`` option is 0 or has a magnitude in [1e-300, 1e6]
(`FLOAT_OPTION_MAGNITUDE`), so no strategy sizes a population by 10**100 or divides by 5e-324. A
strategy's own rule (``option(..., check=...)``) can only narrow this.

Example::

    @dataclass(frozen=True)
    class MyOptions:
        population_size: int = option(20, "an integer >= 2", lambda v: v >= 2)

    class MyStrategy(Strategy):
        options_type = MyOptions  # validated from the config, built as ``self.options``
        options: MyOptions
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from nasfleet import checks

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

OptionsT = TypeVar("OptionsT", bound="DataclassInstance")
Scalar = int | float | bool
_RULE, _CHECK = "nasfleet.rule", "nasfleet.check"
MAX_INT_OPTION = 10**6
FLOAT_OPTION_MAGNITUDE = (1e-300, 1e6)  # no subnormals (5e-324), nothing that overflows when squared
_TYPE_RULES: dict[object, str] = {
    int: "an integer",
    float: "a finite number",
    bool: "a boolean (true or false)",
}
_RANGE_RULES: dict[object, str] = {
    int: f"an integer in [{-MAX_INT_OPTION}, {MAX_INT_OPTION}]",
    float: "0 or a number of magnitude in [1e-300, 1e6]",
}


class StrategyError(ValueError):
    """A strategy that cannot be built or run: unknown name, invalid configuration or state."""


def option(default: Scalar, rule: str = "", check: Callable[[Any], bool] | None = None) -> Any:
    """A dataclass field with a ``default`` and a ``rule`` (human-readable) that ``check`` enforces."""
    return dataclasses.field(default=default, metadata={_RULE: rule, _CHECK: check})


def require(key: str, value: object, ok: bool, rule: str) -> None:
    """Raise a `StrategyError` naming ``key``, ``rule`` and ``value`` unless ``ok`` (via `checks.require`)."""
    checks.require(ok, f"config option {key!r}", rule, value, StrategyError)


def _check_type(key: str, expected: object, value: object) -> Scalar:
    """``value`` as the field's scalar type; a ``bool`` is no number, an ``int`` is a valid ``float``."""
    if expected not in _TYPE_RULES:
        raise TypeError(f"option {key!r} has unsupported type {expected!r}; use int, float or bool")
    if expected is bool or isinstance(value, bool):
        require(key, value, expected is bool and isinstance(value, bool), _TYPE_RULES[expected])
        return typing.cast(bool, value)
    if expected is int:
        require(key, value, isinstance(value, int), _TYPE_RULES[int])
        number = typing.cast(int, value)
        require(key, value, -MAX_INT_OPTION <= number <= MAX_INT_OPTION, _RANGE_RULES[int])
        return number
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    require(key, value, finite, _TYPE_RULES[float])
    low, high = FLOAT_OPTION_MAGNITUDE
    real = typing.cast(float, value)  # an int beyond float's range must fail the rule, not overflow
    require(key, value, real == 0 or low <= abs(real) <= high, _RANGE_RULES[float])
    return float(real)


def parse_options(strategy: str, options_type: type[OptionsT], config: Mapping[str, Any]) -> OptionsT:
    """``config`` checked against ``options_type`` (a frozen dataclass), with defaults filled in."""
    if not isinstance(config, Mapping):
        raise StrategyError(f"{strategy}: config must be a mapping of options, but got {config!r}")
    fields = {field.name: field for field in dataclasses.fields(options_type)}
    unknown = sorted(str(key) for key in config if key not in fields)
    if unknown:
        raise StrategyError(
            f"{strategy}: config options must be among {sorted(fields)}, but got unknown {unknown}"
        )
    hints = typing.get_type_hints(options_type)
    values: dict[str, Scalar] = {}
    try:
        for key, value in config.items():
            values[key] = _check_type(key, hints[key], value)
            check = fields[key].metadata.get(_CHECK)
            if check is not None:
                require(key, value, bool(check(values[key])), fields[key].metadata[_RULE])
        return options_type(**values)
    except StrategyError as error:
        raise StrategyError(f"{strategy}: {error}") from None


def options_dict(options: DataclassInstance) -> dict[str, Any]:
    """The plain, JSON-serialisable form of a parsed options dataclass (what ``Strategy.config`` holds)."""
    return dataclasses.asdict(options)
