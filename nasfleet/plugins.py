"""Plug-ins: the name-to-class table of built-ins (`PluginTable`) and third-party discovery (`PluginGroup`).

Names become classes only at the edges. Strategies, search spaces and proxies are each one `PluginGroup`:
their built-ins plus the classes third-party distributions publish in an entry-point group, whose entry
point's name must equal the class's ``name``::

    [project.entry-points."nasfleet.spaces"]
    tiny_mlp = "my_package.spaces:TinyMLPSpace"

A plug-in that cannot be used (it fails to import, is no concrete subclass of the contract, names itself
differently, or takes a name already provided) is left out with a `PluginProblem` naming its entry point
and distribution, so one broken plug-in never hides the built-ins or the other plug-ins.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")
BUILT_IN = "built-in"


class PluginTable(dict[str, type[T]], Generic[T]):
    """Plug-in classes by their ``name`` attribute; unknown names raise ``error`` listing the known ones."""

    def __init__(self, kind: str, error: type[Exception] = ValueError) -> None:
        super().__init__()
        self.kind = kind
        self.error = error

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator adding ``cls`` under its ``name``; a name may be registered once."""
        name: str = getattr(cls, "name")  # noqa: B009 - plug-in classes declare ``name`` as a ClassVar
        if name in self:
            raise ValueError(f"{self.kind} name must be unique, but {name!r} is registered twice")
        self[name] = cls
        return cls

    def create(self, name: str, **options: Any) -> T:
        """A fresh instance of the class registered as ``name``."""
        if name not in self:
            raise self.error(f"{self.kind} must be one of {sorted(self)}, but got {name!r}")
        return self[name](**options)


class PluginWarning(UserWarning):
    """A plug-in was found but cannot be used."""


@dataclass(frozen=True)
class PluginEntry(Generic[T]):
    """An available plug-in: its name, class and origin (``built-in`` or the providing distribution)."""

    name: str
    cls: type[T]
    origin: str
    entry_point: str | None = None

    @property
    def summary(self) -> str:
        """The first line of the class's docstring."""
        doc = inspect.getdoc(self.cls) or ""
        return doc.splitlines()[0].strip() if doc else ""


@dataclass(frozen=True)
class PluginProblem:
    """Why the ``kind`` plug-in at ``entry_point`` (``name = module:attr``) of ``origin`` was left out."""

    name: str
    entry_point: str
    origin: str
    reason: str
    kind: str = "plug-in"

    def __str__(self) -> str:
        return (
            f"{self.kind} plug-in entry point {self.entry_point!r} of {self.origin} is ignored: {self.reason}"
        )


def distribution(entry_point: EntryPoint) -> str:
    """``name version`` of the distribution that declares ``entry_point``."""
    dist = entry_point.dist
    if dist is None:
        return "an unknown distribution"
    return f"{dist.metadata['Name']} {dist.version}"


def registered_origin(cls: type) -> str:
    """``built-in`` for nasfleet's own classes, else the module that registered ``cls`` by import."""
    module = cls.__module__
    return BUILT_IN if module == "nasfleet" or module.startswith("nasfleet.") else f"registered by {module}"


@dataclass(frozen=True)
class PluginGroup(Generic[T]):
    """One kind of plug-in: the built-ins of ``builtins`` plus the entry points of ``group``.

    ``base`` is the contract every class must subclass concretely; ``reserved`` gives names taken by
    something else (name to what holds it), which a plug-in may not claim either; ``error`` is raised for a
    name `find` cannot resolve.
    """

    kind: str
    group: str
    base: type
    builtins: Callable[[], Mapping[str, type[T]]]
    error: type[Exception] = ValueError
    reserved: Callable[[], Mapping[str, str]] = field(default=lambda: {})

    def _check(self, entry_point: EntryPoint, loaded: object) -> type[T]:
        """The loaded object as a plug-in class, or ``ValueError`` saying which rule it breaks."""
        if not (inspect.isclass(loaded) and issubclass(loaded, self.base)):
            raise ValueError(
                f"it must load a subclass of nasfleet {self.base.__name__}, but loaded {loaded!r}"
            )
        if inspect.isabstract(loaded):
            missing = sorted(getattr(loaded, "__abstractmethods__", ()))
            raise ValueError(
                f"class {loaded.__qualname__} must be concrete, but does not implement {missing}"
            )
        name = getattr(loaded, "name", None)
        if name != entry_point.name:
            raise ValueError(
                "the entry point's name must equal the class's name, "
                f"but {loaded.__qualname__}.name is {name!r}"
            )
        return cast("type[T]", loaded)

    def _load(self, entry_point: EntryPoint, entries: Mapping[str, PluginEntry[T]]) -> PluginEntry[T]:
        """The entry for one entry point, or ``ValueError`` saying why it cannot be used."""
        try:
            loaded = entry_point.load()
        except Exception as error:  # any failure of third-party code must not break discovery
            raise ValueError(f"importing it failed with {type(error).__name__}: {error}") from None
        cls = self._check(entry_point, loaded)
        existing = entries.get(entry_point.name)
        if existing is not None and existing.cls is not cls:
            raise ValueError(f"the name {entry_point.name!r} is already provided by {existing.origin}")
        if (holder := self.reserved().get(entry_point.name)) is not None:
            raise ValueError(f"the name {entry_point.name!r} is already provided by {holder}")
        text = f"{entry_point.name} = {entry_point.value}"
        return PluginEntry(entry_point.name, cls, distribution(entry_point), text)

    def discover(self) -> tuple[dict[str, PluginEntry[T]], list[PluginProblem]]:
        """Every usable plug-in by name (built-ins and plug-ins, sorted), and those left out."""
        entries = {
            name: PluginEntry(name, cls, registered_origin(cls)) for name, cls in self.builtins().items()
        }
        problems: list[PluginProblem] = []
        found = sorted(entry_points(group=self.group), key=lambda ep: (ep.name, distribution(ep)))
        for entry_point in found:
            try:
                entries[entry_point.name] = self._load(entry_point, entries)
            except ValueError as error:
                text = f"{entry_point.name} = {entry_point.value}"
                problems.append(
                    PluginProblem(entry_point.name, text, distribution(entry_point), str(error), self.kind)
                )
        return dict(sorted(entries.items())), problems

    def available(self) -> dict[str, PluginEntry[T]]:
        """Every usable plug-in by name; each one left out is reported as a `PluginWarning`."""
        entries, problems = self.discover()
        for problem in problems:
            warnings.warn(str(problem), PluginWarning, stacklevel=3)  # the caller of its wrapper
        return entries

    def find(self, name: str) -> type[T]:
        """The class called ``name``; ``error`` says why a broken plug-in of that name is unavailable."""
        builtins = self.builtins()
        if name in builtins:  # a plug-in can never take a built-in's name: no scan needed
            return builtins[name]
        entries, problems = self.discover()
        if name in entries:
            return entries[name].cls
        for problem in problems:
            if problem.name == name:
                raise self.error(str(problem))
        raise self.error(f"{self.kind} must be one of {sorted(entries)}, but got {name!r}")
