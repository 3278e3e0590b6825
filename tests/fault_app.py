"""The nasfleet Celery app with injected faults, for workers of the fault tests (``celery -A fault_app``).

``NASFLEET_TEST_FAULTS`` is a comma-separated list; ``NASFLEET_TEST_MARKS`` a directory for marker files:

- ``delay=S``: sleep S seconds before scoring each arch (so a kill lands mid-batch);
- ``raise-once``: the first attempt to score each arch raises `InjectedFaultError` (a transient error);
- always: touch ``started-<pid>-<n>`` before scoring, so a test knows which pool process is busy.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from nasfleet.server.service import tasks
from nasfleet.server.service.celery_app import app

__all__ = ["app"]

FAULTS = [item for item in os.environ.get("NASFLEET_TEST_FAULTS", "").split(",") if item]
MARKS = Path(os.environ.get("NASFLEET_TEST_MARKS", "."))
_score_arch = tasks._score_arch


class InjectedFaultError(RuntimeError):
    """A transient failure the fault tests inject."""


def _faulty_score_arch(space: Any, genome: Any, batch: Any, scoring: Any) -> Any:
    arch = space.encode(genome)
    (MARKS / f"started-{os.getpid()}-{time.monotonic_ns()}").touch()
    for fault in FAULTS:
        if fault.startswith("delay="):
            time.sleep(float(fault.removeprefix("delay=")))
    if "raise-once" in FAULTS:
        marker = MARKS / f"raised-{hashlib.sha256(arch.encode()).hexdigest()[:16]}"
        if not marker.exists():
            marker.touch()
            raise InjectedFaultError(f"injected fault scoring {arch}")
    return _score_arch(space, genome, batch, scoring)


if FAULTS or "NASFLEET_TEST_MARKS" in os.environ:
    tasks._score_arch = _faulty_score_arch
