"""Reading arch strings: what every macro space's ``decode`` shares, each error naming the space.

An arch string is parts joined by ``-``, each starting with its letter (``w…-d…-e…-k…`` for mbv2); a
part holds values separated by ``,`` (or ``.`` within a stage), each the spelling (``str``) of one of a
gene's options. Every error is an `ArchitectureError` that names the space, what was being read, the rule
and the text it got.
"""

from __future__ import annotations

from collections.abc import Sequence

from nasfleet.spaces.base import ArchitectureError


def is_int(value: object, minimum: int = 1) -> bool:
    """Whether *value* is an ``int`` (not a ``bool``) of at least *minimum*."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def prefixed_parts(space: str, text: str, prefixes: str) -> list[str]:
    """The parts of *text* (joined by ``-``, one per letter of *prefixes*, each starting with its letter),
    without their letters."""
    parts = text.strip().split("-")
    if len(parts) != len(prefixes):
        shape = "-".join(f"{prefix}…" for prefix in prefixes)
        raise ArchitectureError(
            f"{space}: an arch string has {len(prefixes)} parts '{shape}' joined by '-', "
            f"but got {len(parts)} in {text!r}"
        )
    for part, prefix in zip(parts, prefixes, strict=True):
        if not part.startswith(prefix):
            raise ArchitectureError(f"{space}: part {part!r} of {text!r} must start with {prefix!r}")
    return [part[1:] for part in parts]


def split_exactly(space: str, what: str, text: str, separator: str, count: int, why: str = "") -> list[str]:
    """*text* split at *separator*, which must give exactly *count* items (*why*: a note for the error)."""
    items = text.split(separator)
    if len(items) != count:
        raise ArchitectureError(
            f"{space}: {what} must be {count} values separated by {separator!r}{why}, "
            f"but got {len(items)} in {text!r}"
        )
    return items


def option_index(space: str, what: str, text: str, options: Sequence[object]) -> int:
    """Index of the option written *text*; only the option's own spelling (``str``) is accepted."""
    names = [str(option) for option in options]
    if text not in names:
        raise ArchitectureError(f"{space}: {what} must be one of {', '.join(names)}, but got {text!r}")
    return names.index(text)
