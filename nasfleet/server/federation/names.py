"""A named run of the federation, and the names of its jobs: how ``nasfleet simulate --name`` resumes.

A run named *NAME* opens each device's search job as the tenant's job ``NAME.<device>`` and the shared
baselines' as ``NAME.shared-<tier>``, one per hardware tier
(`nasfleet.server.service.named_jobs.open_named_job`). A rerun
with the same name therefore finds its jobs again: a done one answers from its stored result (nothing
is scored again), a cancelled, failed or interrupted one goes on from its checkpoint, and one stored with
other settings refuses its device (`JobSettingsError`, naming each setting that differs).

A job name has at most `NAME_LENGTH` (64) characters, so a run name has at most `MAX_RUN_NAME`: room is
left for ``.shared-<tier>`` with a built-in tier's name (``.shared-edge-gpu``). A device (or tier) whose
job name would be longer is named by a digest instead, ``NAME.<the first 12 hex digits of the SHA-256 of
the device's name>`` (``NAME.shared-<12 hex digits>``); the job still records
its device, so were two devices ever to share a digest, the second would be refused, never merged.

The latency profile is measured on the device at each query, so no two runs send the same numbers.
Within a job those numbers decide which archs are feasible, so a resumed job keeps the profile it was
started with (`started_profile`): the measured numbers come from the job, while the tier and the weight
memory, which the run's settings choose, are still compared.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from nasfleet.protocol.messages import DeviceProfile
from nasfleet.server.registry import Registry
from nasfleet.server.registry.checks import NAME_LENGTH, check_name

SHARED_PREFIX = ".shared-"
LONGEST_TIER = "edge-gpu"  # of the built-in tiers (nasfleet.clients.device.DEVICE_TIERS)
MAX_RUN_NAME = NAME_LENGTH - len(SHARED_PREFIX + LONGEST_TIER)
DEVICE_DIGEST = 12


def check_run_name(name: object) -> str:
    """A run's name: 1-`MAX_RUN_NAME` characters of [A-Za-z0-9_.-] (else `RegistryError`, naming it)."""
    return check_name("name", name, MAX_RUN_NAME)


def device_job_name(run: str, device: str) -> str:
    """The name of *device*'s job in the run named *run* (a digest of a device name too long for it)."""
    name = f"{run}.{device}"
    if len(name) <= NAME_LENGTH:
        return name
    return f"{run}.{hashlib.sha256(device.encode()).hexdigest()[:DEVICE_DIGEST]}"


def shared_job_name(run: str, tier: str) -> str:
    """The name of the shared baseline's job of *tier* in the run named *run*."""
    name = f"{run}{SHARED_PREFIX}{tier}"
    if len(name) <= NAME_LENGTH:
        return name
    return f"{run}{SHARED_PREFIX}{hashlib.sha256(tier.encode()).hexdigest()[:DEVICE_DIGEST]}"


def started_profile(
    registry: Registry, tenant: str, job_name: str, profile: DeviceProfile | None
) -> DeviceProfile | None:
    """*profile* with the measured numbers (FLOPs fit and layer table) of the one the job *job_name* was
    started with, if it exists with a profile of the same tier and memory; else *profile* as it is (the
    settings then compare)."""
    job = registry.find_job(tenant, job_name)
    wire = None if job is None or profile is None else job.options.get("profile")
    if not wire:
        return profile
    assert profile is not None
    stored = DeviceProfile.from_wire(wire)
    if (stored.tier, stored.memory_mb) != (profile.tier, profile.memory_mb):
        return profile
    return replace(
        profile, flops_per_ms=stored.flops_per_ms, overhead_ms=stored.overhead_ms, layers=stored.layers
    )
