"""What the registry accepts: its errors, the limits of its columns, its vocabularies and the boundary checks.

Every check raises `RegistryError` naming the field, the rule and the value (through the project's one
helper, `nasfleet.checks.require`) and returns the value as the plain Python type that is stored.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from typing import Any

from nasfleet.checks import require as require_as
from nasfleet.checks import shown

NAME_LENGTH = 64
DEVICE_NAME_LENGTH = 128
HASH_LENGTH = 128
ARCH_LENGTH = 2000
WORKER_LENGTH = 200
ERROR_LENGTH = 10_000
MAX_ROUND = 2**31 - 1  # a report's federation round: an INTEGER column
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL_JOB_STATUSES = ("done", "failed", "cancelled")
DEVICE_STATUSES = ("ok", "timeout", "error")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_JOB_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex; anything else (a NUL byte included) is no job's id


class RegistryError(Exception):
    """A registry operation that failed; nothing it would have written was kept."""


class SchemaVersionError(RegistryError):
    """The stored schema is newer than this code understands (or cannot be upgraded)."""


class JobFinishedError(RegistryError):
    """A job that is done or failed cannot be cancelled: those statuses are final."""

    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id} cannot be cancelled: it is {status}")
        self.job_id, self.status = job_id, status


def require(ok: bool, field: str, rule: str, value: object) -> None:
    """Raise `RegistryError` unless *ok*: ``"<field> must be <rule>, but got <value>"``."""
    require_as(ok, field, rule, value, RegistryError)


def is_job_id(value: object) -> bool:
    """Whether *value* can be a job id at all; lookups answer "not found" for others without a query."""
    return isinstance(value, str) and _JOB_ID.fullmatch(value) is not None


def check_name(field: str, value: object, max_length: int = NAME_LENGTH) -> str:
    ok = isinstance(value, str) and _NAME.fullmatch(value) is not None and len(value) <= max_length
    require(ok, field, f"1-{max_length} characters of [A-Za-z0-9_.-]", value)
    return str(value)


def check_optional_hash(field: str, value: object) -> str | None:
    return None if value is None else check_name(field, value, HASH_LENGTH)


def check_text(field: str, value: object, max_length: int, empty: bool = False) -> str:
    ok = (
        isinstance(value, str) and (empty or bool(value)) and len(value) <= max_length and value.isprintable()
    )
    require(ok, field, f"a printable string of {0 if empty else 1}-{max_length} characters", value)
    return str(value)


def check_error_text(error: object) -> str | None:
    """An error message, cut to `ERROR_LENGTH` characters: a long traceback is no reason to lose the write."""
    require(error is None or isinstance(error, str), "error", "a string or None", error)
    return None if error is None else str(error)[:ERROR_LENGTH]


def check_bool(field: str, value: object) -> bool:
    require(isinstance(value, bool), field, "True or False", value)
    return bool(value)


def check_choice(field: str, value: object, choices: Sequence[str]) -> str:
    require(value in choices, field, f"one of {list(choices)}", value)
    return str(value)


def check_int(field: str, value: object, low: int = 0, high: int = 2**63 - 1) -> int:
    """An integer (numpy's too, not a bool) in [low, high], as a plain ``int``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and low <= int(value) <= high
    require(ok, field, f"an integer in [{low}, {high}]", value)
    assert isinstance(value, numbers.Integral)
    return int(value)


def check_float(field: str, value: object, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite real number (numpy's too, not a bool) in [low, high], as a plain ``float``."""
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    ok = math.isfinite(number) and low <= number <= high
    require(ok, field, f"a finite number in [{low}, {high}]", value)
    return number


def check_json(field: str, value: object, mapping: bool = True) -> Any:
    """A deep, plain copy of JSON data *value* with finite numbers only; a mapping unless not *mapping*."""
    require(not mapping or isinstance(value, Mapping), field, "a mapping", type(value).__name__)
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise RegistryError(
            f"{field} must be JSON data with finite numbers, but got {shown(value)} ({error})"
        ) from None


def check_state(state: object) -> str:
    """A strategy state as JSON text; non-finite floats are kept (as Python's JSON writes them)."""
    require(isinstance(state, Mapping), "state", "a mapping", type(state).__name__)
    try:
        return json.dumps(state)
    except (TypeError, ValueError) as error:
        raise RegistryError(f"state must be JSON data, but got {shown(state)} ({error})") from None


def check_values(field: str, value: object) -> dict[str, float]:
    """Raw proxy values: proxy names mapped to finite numbers."""
    require(isinstance(value, Mapping) and bool(value), field, "a non-empty mapping", value)
    assert isinstance(value, Mapping)
    return {
        check_text(f"{field} key", k, NAME_LENGTH): check_float(f"{field}[{k!r}]", v)
        for k, v in value.items()
    }
