"""The name-to-class plug-in table (`PluginTable`): names become classes only at the edges."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

T = TypeVar("T")


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
