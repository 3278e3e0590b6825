"""What every contract check shares: the error, the assertion, and running a list of checks at once.

A kind of plug-in (strategy, space, proxy) yields its checks, as scikit-learn's ``_yield_checks`` does;
`run_checks` runs them all and raises one `ContractError` that lists every broken rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from nasfleet.spaces.base import SearchSpace


class ContractError(AssertionError):
    """A plug-in breaks its contract."""


def expect(ok: bool, message: str) -> None:
    """Raise `ContractError` with ``message`` unless ``ok``."""
    if not ok:
        raise ContractError(message)


def raises(error: type[Exception], action: Callable[..., object], *args: Any) -> Exception | None:
    """The ``error`` that ``action(*args)`` raises, or None if it returns."""
    try:
        action(*args)
    except error as raised:
        return raised
    return None


class NamedCheck(Protocol):
    """Anything `run_checks` can run: an id for the report, and a call that raises on a breach."""

    @property
    def id(self) -> str: ...

    def __call__(self) -> None: ...


@dataclass(frozen=True)
class Check:
    """One named check of one subject; call it to run it (raises `ContractError` on a breach)."""

    id: str
    run: Callable[[], None]

    def __call__(self) -> None:
        self.run()


def default_spaces() -> tuple[SearchSpace, ...]:
    """The spaces checks run on unless told otherwise: NAS-Bench-201 and MobileNetV2."""
    from nasfleet.spaces import MBV2Space, NB201Space

    return NB201Space(), MBV2Space()


def run_checks(checks: Iterable[NamedCheck]) -> None:
    """Run every check; one `ContractError` lists each failure with its check id."""
    failures = []
    for check in checks:
        try:
            check()
        except Exception as error:  # report every broken rule, not only the first
            failures.append(f"{check.id}: {type(error).__name__}: {error}")
    if failures:
        raise ContractError(f"{len(failures)} contract check(s) failed:\n" + "\n".join(failures))


def parametrize(checks: list[NamedCheck]) -> Any:
    """A ``pytest.mark.parametrize`` over ``checks``, as argument ``check``."""
    import pytest

    return pytest.mark.parametrize("check", checks, ids=[check.id for check in checks])
