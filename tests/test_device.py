"""Device tiers, latency calibration and the latency model.

Timing on a shared 2-core host is noisy, so timing tests assert only robust facts: positivity, rank
agreement with a generous threshold, and a large emulated slowdown showing through.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from nasfleet.clients.device import (
    DEVICE_TIERS,
    REFERENCE_INPUT_SHAPE,
    DeviceTier,
    assign_tiers,
    calibrate_profile,
    fit_latency,
    get_tier,
    measure_latency_ms,
)
from nasfleet.protocol.messages import DeviceProfile, ResourceConstraints
from nasfleet.search.limits import latency_model
from nasfleet.spaces import get_space

DIGITS_SHAPE = (1, 8, 8)
#: Cells from cheap to dear, mixing in pooling and none so the model meets cells it was not fitted on.
CORRELATION_ARCHS = (
    "|none~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|none~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|skip_connect~0|avg_pool_3x3~1|none~2|",
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|nor_conv_1x1~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|nor_conv_1x1~0|nor_conv_3x3~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _limits(tier: DeviceTier) -> tuple[float, ...]:
    constraints = tier.constraints
    assert constraints.max_params and constraints.max_flops and constraints.max_latency_ms
    assert constraints.max_memory_mb
    host_deadline = constraints.max_latency_ms / tier.slowdown
    return constraints.max_params, constraints.max_flops, host_deadline, constraints.max_memory_mb


def test_tiers_are_distinct_and_ordered_from_tightest_to_loosest() -> None:
    # Prepare / Execute
    names = [tier.name for tier in DEVICE_TIERS]
    limits = np.array([_limits(tier) for tier in DEVICE_TIERS])
    slowdowns = [tier.slowdown for tier in DEVICE_TIERS]

    # Assert
    assert len(DEVICE_TIERS) >= 3
    assert len(set(names)) == len(names)
    assert (np.diff(limits, axis=0) > 0).all(), limits
    assert slowdowns == sorted(slowdowns, reverse=True) and min(slowdowns) >= 1
    assert all(get_tier(name).name == name for name in names)


def _feasible_count(tier: DeviceTier, profile: DeviceProfile, shape: tuple[int, int, int]) -> int:
    space, rng = get_space("nb201"), np.random.default_rng(0)
    constraints = tier.constraints_for(shape)
    predict = latency_model(profile, space, 10, shape)
    max_params, max_flops = constraints.effective_max_params(), constraints.max_flops
    assert max_params is not None and max_flops is not None and constraints.max_latency_ms is not None
    count = 0
    for _ in range(300):
        arch = space.sample(rng)
        cost = space.cost(arch, 10, shape)
        fits = cost.params <= max_params and cost.flops <= max_flops
        count += fits and predict(arch) <= constraints.max_latency_ms
    return count


@pytest.mark.parametrize("shape", [REFERENCE_INPUT_SHAPE, DIGITS_SHAPE])
def test_every_tier_admits_part_of_the_space_and_looser_tiers_admit_more(
    shape: tuple[int, int, int],
) -> None:
    # Prepare
    profiles = [calibrate_profile(tier, shape, 10, repeats=3) for tier in DEVICE_TIERS]

    # Execute
    counts = [_feasible_count(t, p, shape) for t, p in zip(DEVICE_TIERS, profiles, strict=True)]

    # Assert: the tightest tier is feasible, a looser tier never admits less, the loosest admits more than
    # the tightest, and every tier excludes a real part of the space. (Adjacent tiers may tie: which limit
    # binds depends on the host's measured speed, e.g. [85, 85, 194] under load.)
    assert counts[0] >= 30, counts
    assert counts == sorted(counts) and counts[0] < counts[-1], counts
    assert counts[-1] <= 285, counts


def test_constraints_for_scales_flops_with_spatial_size_only() -> None:
    # Prepare
    tier = DEVICE_TIERS[0]
    assert tier.constraints.max_flops is not None

    # Execute
    reference, digits = tier.constraints_for(REFERENCE_INPUT_SHAPE), tier.constraints_for(DIGITS_SHAPE)

    # Assert
    assert reference == tier.constraints
    assert digits.max_flops == round(tier.constraints.max_flops / 16)
    assert (digits.max_params, digits.max_latency_ms, digits.max_memory_mb) == (
        tier.constraints.max_params, tier.constraints.max_latency_ms, tier.constraints.max_memory_mb,
    )  # fmt: skip
    assert ResourceConstraints.from_wire(*digits.to_wire()) == digits


def test_assign_tiers_is_a_deterministic_balanced_mix() -> None:
    # Execute
    mix = assign_tiers(10, seed=3)

    # Assert
    counts = Counter(tier.name for tier in mix)
    assert set(counts) == {tier.name for tier in DEVICE_TIERS}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert assign_tiers(10, seed=3) == mix
    assert {assign_tiers(10, seed=s) for s in range(5)} != {mix}
    assert {t.name for t in assign_tiers(len(DEVICE_TIERS), seed=0)} == counts.keys()
    assert len(assign_tiers(1, seed=0)) == 1


@pytest.mark.parametrize(("n_devices", "seed"), [(0, 0), (3, -1)])
def test_assign_tiers_rejects_bad_arguments(n_devices: int, seed: int) -> None:
    with pytest.raises(ValueError, match="must be >= "):
        assign_tiers(n_devices, seed)


def test_tier_validation_names_the_rule() -> None:
    with pytest.raises(ValueError, match="tier must be one of"):
        get_tier("mainframe")
    with pytest.raises(ValueError, match="slowdown must be a positive finite number"):
        DeviceTier("bad", 0.0, ResourceConstraints(max_memory_mb=1.0))
    with pytest.raises(ValueError, match="max_memory_mb must be set"):
        DeviceTier("bad", 1.0, ResourceConstraints())


def test_fit_latency_recovers_a_line_and_keeps_overhead_non_negative() -> None:
    flops = [1_000_000, 4_000_000, 9_000_000]

    assert fit_latency(flops, [2 + f / 5e5 for f in flops]) == pytest.approx((5e5, 2.0))
    per_ms, overhead = fit_latency(flops, [1.0, 8.0, 18.0])  # negative intercept: through the origin
    assert overhead == 0.0 and per_ms > 0
    per_ms, overhead = fit_latency(flops, [3.0, 3.0, 2.0])  # no growth: capped throughput
    assert math.isfinite(per_ms) and overhead == pytest.approx(8 / 3, rel=1e-3)
    with pytest.raises(ValueError, match="distinct FLOPs"):
        fit_latency([1, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive and finite"):
        fit_latency([1, 2], [1.0, math.nan])


def test_calibrated_profile_is_positive_and_crosses_the_wire() -> None:
    # Execute
    profile = calibrate_profile(get_tier("mobile"), DIGITS_SHAPE, 10, repeats=3)

    # Assert
    assert profile.tier == "mobile" and profile.memory_mb == get_tier("mobile").memory_mb
    assert math.isfinite(profile.flops_per_ms) and profile.flops_per_ms > 0
    assert math.isfinite(profile.overhead_ms) and profile.overhead_ms >= 0
    assert profile.predict_latency_ms(10**6) > 0
    assert DeviceProfile.from_wire(*profile.to_wire()) == profile


def test_predicted_latency_ranks_like_measured_latency() -> None:
    # Prepare
    tier, space = get_tier("edge-gpu"), get_space("nb201")
    profile = calibrate_profile(tier, REFERENCE_INPUT_SHAPE, 10)
    predict = latency_model(profile, space, 10, REFERENCE_INPUT_SHAPE)
    archs = [space.decode(text) for text in CORRELATION_ARCHS]

    # Execute
    predicted = [predict(arch) for arch in archs]
    measured = [
        measure_latency_ms(space.build(arch, 10, REFERENCE_INPUT_SHAPE), REFERENCE_INPUT_SHAPE, tier.slowdown)
        for arch in archs
    ]

    # Assert
    assert float(spearmanr(predicted, measured).statistic) > 0.5, (predicted, measured)


def test_latency_model_predicts_from_exact_flops() -> None:
    space = get_space("nb201")
    profile = DeviceProfile("mobile", flops_per_ms=1e6, overhead_ms=2.0, memory_mb=2.0)
    arch = space.decode(CORRELATION_ARCHS[2])

    predicted = latency_model(profile, space, 10, DIGITS_SHAPE)(arch)

    assert predicted == pytest.approx(2.0 + space.cost(arch, 10, DIGITS_SHAPE).flops / 1e6)


def test_measure_latency_applies_slowdown_and_restores_state() -> None:
    # Prepare
    network = get_space("nb201").build(get_space("nb201").decode(CORRELATION_ARCHS[2]), 10, DIGITS_SHAPE)
    network.train()
    torch.set_num_threads(2)

    # Execute
    plain = measure_latency_ms(network, DIGITS_SHAPE, 1.0)
    slowed = measure_latency_ms(network, DIGITS_SHAPE, 50.0)

    # Assert
    assert 0 < plain < slowed and slowed > 5 * plain
    assert network.training and torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="slowdown must be"):
        measure_latency_ms(network, DIGITS_SHAPE, -1.0)
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        measure_latency_ms(network, DIGITS_SHAPE, 1.0, repeats=0)
