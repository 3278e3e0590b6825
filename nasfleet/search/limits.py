"""A device's search limits: its resource constraints and calibrated profile as the strategy sees them.

Every device's search is a job of the service (`nasfleet.server.service.jobs`): the job rebuilds the device's
synthetic proxy batch from its characteristics and turns its constraints and profile into a feasibility
check (exact params/FLOPs, weight memory, and the profile's latency model against its latency limit).
"""

from __future__ import annotations

from nasfleet.protocol.messages import DeviceProfile, ResourceConstraints
from nasfleet.strategies.base import Constraints


def search_constraints(constraints: ResourceConstraints, profile: DeviceProfile | None) -> Constraints:
    """The strategy-side limits: weight memory folds into max_params; latency needs a profile."""
    max_latency = constraints.max_latency_ms if profile is not None else None
    return Constraints(constraints.effective_max_params(), constraints.max_flops, max_latency)
