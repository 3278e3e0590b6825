"""Named jobs: a search takes a name and resumes by it, as an Optuna study does with ``load_if_exists``.

A name is unique within its tenant (the registry enforces it). Asking for a named job with some settings
(`nasfleet.server.service.jobs.job_settings`) finds the tenant's job of that name, or creates it:

- a done job is handed back as it is: its stored result answers, nothing is scored again;
- a queued or running job (left running by a crash) is handed back to be run on; a cancelled or failed
  one is queued again first (`Registry.reopen_job`): it resumes from its checkpoint, with every
  evaluation it stored;
- a job stored with other settings is refused (`JobSettingsError`, naming each setting that differs):
  resuming it would silently run a different search.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nasfleet.server.registry import JobRecord, Registry, RegistryError

#: Options that say nothing of the search: another value does not make it another search.
UNCOMPARED_OPTIONS = ("characteristics",)  # compared through the job's characteristics_hash


class JobSettingsError(ValueError):
    """A named job exists with other settings; its message names every setting that differs."""


def _plain(value: Any) -> Any:
    """*value* as the registry stores JSON data (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value))


def differences(job: JobRecord, settings: Mapping[str, Any]) -> list[str]:
    """``"field: stored X, asked Y"`` for each of *settings* (`job_settings`) that *job* has otherwise."""
    found = []
    for field, asked in settings.items():
        stored = getattr(job, field)
        if field == "options":
            legacy = {"space_revision"} - set(stored)  # jobs created before revisions were stored lack it
            keys = sorted((set(stored) | set(asked)) - set(UNCOMPARED_OPTIONS) - legacy)
            pairs = [(f"options.{key}", stored.get(key), asked.get(key)) for key in keys]
        else:
            pairs = [(field, stored, asked)]
        found += [f"{name}: stored {old!r}, asked {new!r}" for name, old, new in pairs if old != _plain(new)]
    return found


def find_named_job(
    registry: Registry, tenant: str, name: str, settings: Mapping[str, Any]
) -> JobRecord | None:
    """The tenant's job named *name*, or None; `JobSettingsError` if it was stored with other *settings*."""
    job = registry.find_job(tenant, name)
    differing = [] if job is None else differences(job, settings)
    if job is not None and differing:
        raise JobSettingsError(
            f"name {name!r} is job {job.id} of tenant {tenant!r}, stored with other settings "
            f"({'; '.join(differing)}): rerun with its settings, or choose another name"
        )
    return job


def open_named_job(registry: Registry, tenant: str, name: str, settings: Mapping[str, Any]) -> JobRecord:
    """The tenant's job named *name*, created with *settings* if new, queued again if cancelled or failed
    (it resumes from its checkpoint), as it is if queued, running or done (see the module docstring)."""
    job = find_named_job(registry, tenant, name, settings)
    if job is None:
        registry.create_tenant(tenant, exist_ok=True)
        try:
            return registry.create_job(tenant, name=name, **settings)
        except RegistryError:  # another search created it meanwhile: use that one (or re-raise)
            job = find_named_job(registry, tenant, name, settings)
            if job is None:
                raise
    return job if job.status == "done" else registry.reopen_job(job.id)
