"""The one validation helper: ``"<field> must be <rule>, but got <value>"``, raised as the caller's error."""

from __future__ import annotations


def shown(value: object, limit: int = 200) -> str:
    """``repr(value)`` cut to *limit* characters; safe for values whose repr itself fails."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int of more than 4300 digits, a deeply nested list
        text = f"<{type(value).__name__} too large to show>"
    return text[:limit]


def require(ok: bool, field: str, rule: str, value: object, error: type[Exception] = ValueError) -> None:
    """Raise *error* unless *ok*, with a message naming the field, the rule and the value."""
    if not ok:
        raise error(f"{field} must be {rule}, but got {shown(value)}")
