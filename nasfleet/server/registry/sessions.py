"""The registry's connections and its one session scope, which every operation goes through.

`Sessions` opens the engines and migrates the schema; `Sessions._session` is the scope: a write commits,
or rolls back and re-raises as `RegistryError`, so a failed call leaves nothing half-written. Every
concern of the `Registry` (tenants, jobs, evaluations, results, workers) is a mixin of this class.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from sqlalchemy import Engine
from sqlmodel import Session

from nasfleet.bounds import DEFAULT_REGISTRY_URL
from nasfleet.server.registry.checks import RegistryError
from nasfleet.server.registry.engines import create_engines, shown_url
from nasfleet.server.registry.schema import migrate


class Sessions:
    """Opens the registry at *url* (creating or upgrading its schema) and scopes its sessions."""

    def __init__(self, url: str = DEFAULT_REGISTRY_URL) -> None:
        self.url = url
        self._read, self._write = create_engines(url)
        try:
            migrate(self._write)
        except RegistryError:
            self.close()
            raise
        except Exception as error:
            self.close()
            raise RegistryError(f"cannot open the registry at {self._shown_url}: {error}") from error

    @property
    def _shown_url(self) -> str:
        return shown_url(self._write)

    def close(self) -> None:
        """Release the registry's connections."""
        self._read.dispose()
        self._write.dispose()

    def forget_connections(self) -> None:
        """Drop the pooled connections without closing them: in a forked child, they are the parent's."""
        self._read.dispose(close=False)
        self._write.dispose(close=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        """The session scope: commit a write on success; on any failure roll back, raise `RegistryError`."""
        engine: Engine = self._write if write else self._read
        session = Session(engine, expire_on_commit=False)
        try:
            yield session
            if write:
                session.commit()
        except RegistryError:
            session.rollback()
            raise
        except Exception as error:
            session.rollback()
            action, detail = "write to" if write else "read from", getattr(error, "orig", None) or error
            raise RegistryError(f"could not {action} the registry at {self._shown_url}: {detail}") from error
        finally:
            session.close()
