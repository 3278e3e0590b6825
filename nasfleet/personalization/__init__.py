"""Personalization that closes the loop: device reports, the per-device model, the fleet's rounds.

`reports` checks what a device reports and simulates a device from the NAS-Bench-201 table; `model` is
the per-device model (zero-cost prior, architecture, the fleet's reports); `fleet` runs the rounds.
"""

from __future__ import annotations

from nasfleet.personalization.fleet import (
    KEEP_RULES,
    DeviceRun,
    LoopSettings,
    ReportSource,
    RoundRecord,
    run_fleet,
)
from nasfleet.personalization.model import DeviceModel, Observation, arch_features
from nasfleet.personalization.reports import BenchmarkDevice, Report, ReportError, check_report, read_table

__all__ = [
    "KEEP_RULES",
    "BenchmarkDevice",
    "DeviceModel",
    "DeviceRun",
    "LoopSettings",
    "Observation",
    "Report",
    "ReportError",
    "ReportSource",
    "RoundRecord",
    "arch_features",
    "check_report",
    "read_table",
    "run_fleet",
]
