"""A device's search limits and latency predictions: the one place a profile becomes either.

`device_feasibility` is the one place a device's limits become the strategy's `Feasibility`: exact
params/FLOPs, weight memory folded into params, and the device's latency model against its latency limit
(a latency limit without a profile cannot be checked and is dropped).

`latency_model` is the one place a device's latency for an arch is predicted, for searches and the
server alike (`predicted_latency_ms` is its cached form for arch strings):

- from the profile's per-layer table (`nasfleet.search.latency`) when the table was measured for this
  space at this class count and input shape: the table names the space with the same
  `space_fingerprint` the server computes;
- from the profile's FLOPs model ``overhead_ms + flops / flops_per_ms`` otherwise: a profile without a
  table (an older device, or an API request's profile), a table measured for other spaces, or for
  other space options, classes or input shapes, whose layers it would not know.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from nasfleet.protocol.layers import LayerTable
from nasfleet.protocol.messages import DeviceProfile, ResourceConstraints
from nasfleet.search.latency import space_fingerprint, table_model
from nasfleet.spaces import Genome, InputShape, SearchSpace, get_space
from nasfleet.spaces.base import check_input_shape
from nasfleet.strategies.base import Feasibility, LatencyModel, SearchLimits

#: Latency models the server keeps (per profile, space, options, classes and shape), each caching its archs.
CACHED_MODELS = 64


def search_limits(constraints: ResourceConstraints, profile: DeviceProfile | None) -> SearchLimits:
    """The strategy-side limits: weight memory folds into max_params; latency needs a profile."""
    max_latency = constraints.max_latency_ms if profile is not None else None
    return SearchLimits(constraints.effective_max_params(), constraints.max_flops, max_latency)


def uses_table(profile: DeviceProfile, space: SearchSpace, num_classes: int, input_shape: InputShape) -> bool:
    """Whether ``profile`` has a layer table measured for ``space`` at this class count and input shape."""
    return _table_space(profile, space, num_classes, input_shape) is not None


def latency_model(
    profile: DeviceProfile, space: SearchSpace, num_classes: int, input_shape: InputShape
) -> LatencyModel:
    """Predicted latency (ms) of an architecture of ``space`` on ``profile``'s device: from its layer table
    when `uses_table` (`nasfleet.search.latency.table_model`, cached per arch and shared by every space
    with the same fingerprint in this process), else from its exact FLOPs (see the module docstring)."""
    shape = check_input_shape(input_shape, num_classes)
    if profile.layers is not None and (keyed := _table_space(profile, space, num_classes, shape)) is not None:
        return _shared_table_model(profile.layers, keyed, num_classes, shape)

    def predict(arch: Genome) -> float:
        return profile.predict_latency_ms(space.cost(arch, num_classes, shape).flops)

    return predict


class _Fingerprinted:
    """A space, equal to (and hashed as) every space with its `space_fingerprint`: they build the same
    layers, so one table model serves them all."""

    def __init__(self, space: SearchSpace, num_classes: int, shape: InputShape) -> None:
        self.space, self.fingerprint = space, space_fingerprint(space, num_classes, shape)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Fingerprinted) and other.fingerprint == self.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)


def _table_space(
    profile: DeviceProfile, space: SearchSpace, num_classes: int, input_shape: InputShape
) -> _Fingerprinted | None:
    """``space`` keyed by its fingerprint if ``profile``'s table was measured for it, else None."""
    layers = profile.layers
    if layers is None or (measured := layers.fingerprint(space.name)) is None:
        return None  # no table for this space's name: nothing to trace
    keyed = _Fingerprinted(space, num_classes, input_shape)
    return keyed if keyed.fingerprint == measured else None


@functools.lru_cache(maxsize=CACHED_MODELS)
def _shared_table_model(
    table: LayerTable, space: _Fingerprinted, num_classes: int, shape: InputShape
) -> LatencyModel:
    """`table_model`, one per table and space fingerprint in this process: a search job, rebuilt from the
    registry at every step, keeps its archs' predictions (each a build and a trace, tens of ms)."""
    return table_model(table, space.space, num_classes, shape)


@functools.lru_cache(maxsize=CACHED_MODELS)
def _server_model(
    profile: DeviceProfile,
    space_name: str,
    options: tuple[tuple[str, object], ...],
    num_classes: int,
    shape: InputShape,
) -> tuple[SearchSpace, LatencyModel]:
    space = get_space(space_name, dict(options))
    return space, latency_model(profile, space, num_classes, shape)


def predicted_latency_ms(
    profile: DeviceProfile,
    space: str,
    arch: str,
    num_classes: int,
    input_shape: InputShape,
    space_options: Mapping[str, object] | None = None,
) -> float:
    """`latency_model`'s prediction for the arch string ``arch`` of the space called ``space`` (built with
    ``space_options``): the server's form, with the model kept per profile, space and data shape, so an
    arch is built and traced once however often it is asked for (`CACHED_MODELS` models)."""
    options = tuple(sorted((space_options or {}).items()))
    shape = check_input_shape(input_shape, num_classes)
    built, model = _server_model(profile, space, options, num_classes, shape)
    return model(built.decode(arch))


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
