"""A device's search limits: its resource constraints and calibrated profile as one feasibility check.

`device_feasibility` is the one place a device's limits become the strategy's `Feasibility`: exact
params/FLOPs, weight memory folded into params, and the profile's latency model (its layer table if it
has one, else its FLOPs model) against its latency limit (a latency limit without a profile cannot be
checked and is dropped).
"""

from __future__ import annotations

from nasfleet.protocol.messages import DeviceProfile, ResourceConstraints
from nasfleet.search.latency import table_model
from nasfleet.spaces import Genome, InputShape, SearchSpace
from nasfleet.spaces.base import check_input_shape
from nasfleet.strategies.base import Feasibility, LatencyModel, SearchLimits


def search_limits(constraints: ResourceConstraints, profile: DeviceProfile | None) -> SearchLimits:
    """The strategy-side limits: weight memory folds into max_params; latency needs a profile."""
    max_latency = constraints.max_latency_ms if profile is not None else None
    return SearchLimits(constraints.effective_max_params(), constraints.max_flops, max_latency)


def latency_model(
    profile: DeviceProfile, space: SearchSpace, num_classes: int, input_shape: InputShape
) -> LatencyModel:
    """Predicted latency (ms) of an architecture of ``space`` on ``profile``'s device: from its layer table
    when the profile has one (`nasfleet.search.latency.table_model`), else from its exact FLOPs."""
    shape = check_input_shape(input_shape, num_classes)
    if profile.layers is not None:
        return table_model(profile.layers, space, num_classes, shape)

    def predict(arch: Genome) -> float:
        return profile.predict_latency_ms(space.cost(arch, num_classes, shape).flops)

    return predict


def device_feasibility(
    space: SearchSpace,
    constraints: ResourceConstraints,
    profile: DeviceProfile | None,
    num_classes: int,
    input_shape: InputShape,
) -> Feasibility:
    """The feasibility check of a device's *constraints* and *profile* on data of this shape."""
    bounds = search_limits(constraints, profile)
    model = latency_model(profile, space, num_classes, input_shape) if profile is not None else None
    return Feasibility(space, bounds, num_classes, input_shape, model)
