"""Simulated edge hardware: device tiers, on-device latency calibration and the latency model.

A federation simulated on one machine still needs heterogeneous devices. Each `DeviceTier` carries the
`ResourceConstraints` a device of that class sends to the server and a ``slowdown``
factor. The slowdown is *emulation*: every network runs on this host, and each time measured on it is
multiplied by the tier's slowdown, as if the hardware were that many times slower. Nothing sleeps.

`calibrate_profile` fits the `DeviceProfile` latency model ``latency_ms = overhead_ms + flops /
flops_per_ms`` by timing a fixed ladder of NAS-Bench-201 reference networks on this host and, for the
spaces it is given, measures a per-layer table (`nasfleet.search.latency`);
`nasfleet.search.limits.latency_model` turns a profile into the predictor a search uses to reject slow
candidates (the table for a space it was measured for, the FLOPs model otherwise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from nasfleet.protocol.messages import DeviceProfile, ResourceConstraints
from nasfleet.search.latency import calibrate_table
from nasfleet.spaces import InputShape, SearchSpace, get_space
from nasfleet.spaces.base import check_input_shape

#: The input shape at which the tiers' FLOP limits are stated (CIFAR-10 images).
REFERENCE_INPUT_SHAPE: InputShape = (3, 32, 32)
DEFAULT_REPEATS = 7
DEFAULT_WARMUP = 2
#: Fastest throughput a fit may report (MACs per ms); keeps ``flops_per_ms`` finite when times are flat.
MAX_FLOPS_PER_MS = 1e12

#: The calibration ladder: NAS-Bench-201 cells from the cheapest to the dearest in FLOPs (7.8 M, 31.4 M,
#: about 90 M and 220.1 M at 3×32×32). Pooling is left out because FLOP counts ignore it (see
#: ``nasfleet.spaces.counting``), so a pooling-heavy reference would only add scatter to the fit.
REFERENCE_ARCHS: tuple[str, ...] = (
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|",
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
)


@dataclass(frozen=True)
class DeviceTier:
    """A class of emulated edge hardware.

    Attributes
    ----------
    name
        Short name, also the ``tier`` of the profiles calibrated for it.
    slowdown
        Emulation factor (> 0; >= 1 for hardware slower than this host): times measured on this host
        are multiplied by it.
    constraints
        Limits stated for `REFERENCE_INPUT_SHAPE`. ``max_flops`` scales with the input's spatial size
        (see `constraints_for`); ``max_params`` and ``max_memory_mb`` do not depend on the input, and
        ``max_latency_ms`` is an absolute deadline in emulated milliseconds.
    """

    name: str
    slowdown: float
    constraints: ResourceConstraints

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slowdown) and self.slowdown > 0):
            raise ValueError(f"slowdown must be a positive finite number, but got {self.slowdown}")
        if self.constraints.max_memory_mb is None:
            raise ValueError(f"constraints.max_memory_mb must be set for a tier, but got None ({self.name})")

    @property
    def memory_mb(self) -> float:
        """Memory available for the model's weights, in MiB."""
        assert self.constraints.max_memory_mb is not None
        return self.constraints.max_memory_mb

    def constraints_for(self, input_shape: InputShape) -> ResourceConstraints:
        """The tier's constraints for inputs of ``input_shape``.

        A NAS-Bench-201 network's FLOPs grow with the number of spatial positions ``H * W`` (every
        layer's output is a fixed fraction of the input's area) and hardly with the channels, so
        ``max_flops`` is scaled by ``H * W / (32 * 32)``. Parameters, memory and the latency deadline
        are kept: weights do not depend on the input size, and a deadline is a property of the task.
        """
        _, height, width = check_input_shape(input_shape, 2)
        limit = self.constraints.max_flops
        if limit is None:
            return self.constraints
        _, ref_height, ref_width = REFERENCE_INPUT_SHAPE
        scaled = max(1, round(limit * height * width / (ref_height * ref_width)))
        return replace(self.constraints, max_flops=scaled)


#: Tiers from the tightest to the loosest. At 3×32×32 (and at 1×8×8 after scaling) about 26 %, 62 % and
#: 90 % of the 15,625 NB201 cells meet the params/FLOPs/memory limits of micro, mobile and edge-gpu.
#: The deadlines grow looser per unit of host time (100/8, 60/4, 20/1 ms = 12.5, 15, 20 host ms). The
#: development host (a 2-core x86 VM) spends 2-9 ms of framework overhead on one forward pass of any
#: NB201 network, depending on the moment; the earlier deadlines (50/8 = 6.25 host ms for micro) were
#: then unreachable and a micro device's search found nothing. At these, the FLOP limit binds on a fast
#: moment and the deadline on a slow one; it is also a guard on real measurements.
DEVICE_TIERS: tuple[DeviceTier, ...] = (
    DeviceTier("micro", 8.0, ResourceConstraints(200_000, 25_000_000, 100.0, 1.0)),
    DeviceTier("mobile", 4.0, ResourceConstraints(400_000, 60_000_000, 60.0, 2.0)),
    DeviceTier("edge-gpu", 1.0, ResourceConstraints(800_000, 120_000_000, 20.0, 4.0)),
)


def get_tier(name: str) -> DeviceTier:
    """The tier of `DEVICE_TIERS` called ``name``."""
    for tier in DEVICE_TIERS:
        if tier.name == name:
            return tier
    raise ValueError(f"tier must be one of {[t.name for t in DEVICE_TIERS]}, but got {name!r}")


def assign_tiers(n_devices: int, seed: int) -> tuple[DeviceTier, ...]:
    """A deterministic heterogeneous mix of ``n_devices`` tiers.

    The tiers are dealt in turn (so counts differ by at most one and every tier appears once
    ``n_devices >= len(DEVICE_TIERS)``), then shuffled by ``seed``.
    """
    if n_devices < 1:
        raise ValueError(f"n_devices must be >= 1, but got {n_devices}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, but got {seed}")
    dealt = [DEVICE_TIERS[i % len(DEVICE_TIERS)] for i in range(n_devices)]
    order = np.random.default_rng(seed).permutation(n_devices)
    return tuple(dealt[int(i)] for i in order)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency_ms(
    network: nn.Module,
    input_shape: InputShape,
    slowdown: float = 1.0,
    repeats: int = DEFAULT_REPEATS,
    *,
    warmup: int = DEFAULT_WARMUP,
) -> float:
    """Emulated inference latency of one sample: fastest wall time of ``repeats`` runs × ``slowdown``.

    The minimum, not the median: on a shared machine other processes only ever add time, so the
    fastest run is the best estimate of the network's own cost, for calibration and report alike.

    Runs in eval mode under `torch.inference_mode` with one torch thread after ``warmup`` untimed
    runs; the network's training mode and the thread count are restored afterwards.
    """
    if not (math.isfinite(slowdown) and slowdown > 0):
        raise ValueError(f"slowdown must be a positive finite number, but got {slowdown}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, but got {repeats=}, {warmup=}")
    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    sample = torch.zeros(1, *input_shape, device=device)
    was_training, threads = network.training, torch.get_num_threads()
    times: list[float] = []
    try:
        network.eval()
        torch.set_num_threads(1)
        with torch.inference_mode():
            for run in range(warmup + repeats):
                _synchronize(device)
                start = time.perf_counter()
                network(sample)
                _synchronize(device)
                if run >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        network.train(was_training)
        torch.set_num_threads(threads)
    return min(times) * 1e3 * slowdown


def fit_latency(flops: Sequence[int], latencies_ms: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``latency = overhead + flops / flops_per_ms`` with ``overhead >= 0``.

    Returns ``(flops_per_ms, overhead_ms)``. When the unconstrained intercept is negative the line is
    refitted through the origin (the constrained optimum). When the slope is below 1 / `MAX_FLOPS_PER_MS`
    (times do not grow with FLOPs) the throughput is capped at `MAX_FLOPS_PER_MS` (the top of the wire
    range of ``flops_per_ms``) and the overhead is the mean time.
    """
    x, y = np.asarray(flops, dtype=float), np.asarray(latencies_ms, dtype=float)
    if x.shape != y.shape or x.size < 2 or np.ptp(x) <= 0:
        raise ValueError(f"the fit needs >= 2 points with distinct FLOPs, but got flops {list(flops)}")
    if not (np.isfinite(y).all() and (y > 0).all()):
        raise ValueError(f"latencies must be positive and finite, but got {list(latencies_ms)}")
    slope, overhead = (float(v) for v in np.polyfit(x, y, 1))
    # With positive times a negative intercept implies a positive slope and vice versa: one case at most.
    if overhead < 0:
        slope, overhead = float(x @ y / (x @ x)), 0.0
    elif slope < 1.0 / MAX_FLOPS_PER_MS:  # flat or falling times; also a slope too small to invert
        slope = 1.0 / MAX_FLOPS_PER_MS
        overhead = float(np.mean(y - slope * x))
    return min(1.0 / slope, MAX_FLOPS_PER_MS), overhead


def calibrate_profile(
    tier: DeviceTier,
    input_shape: InputShape,
    num_classes: int,
    *,
    seed: int = 0,
    repeats: int = DEFAULT_REPEATS,
    spaces: Sequence[SearchSpace] = (),
    table_seconds: float = math.inf,
) -> DeviceProfile:
    """Fit the tier's latency model by timing the `REFERENCE_ARCHS` networks on this host.

    Each network (initialised under ``seed``) is timed with `measure_latency_ms` at batch 1, and the
    times, multiplied by ``tier.slowdown``, are fitted with `fit_latency`. Takes well under a second at
    3×32×32 on one CPU thread. ``memory_mb`` is the tier's weight memory. With ``spaces`` the profile
    also carries a per-layer table for them (`nasfleet.search.latency.calibrate_table`, a few seconds
    per space, its sampling stopped after ``table_seconds`` per space), which searches then predict from
    instead of FLOPs (`nasfleet.search.limits.latency_model`).
    """
    shape = check_input_shape(input_shape, num_classes)
    space = get_space("nb201")
    flops, times = [], []
    with torch.random.fork_rng(devices=[]):  # seed the weights without disturbing the caller's stream
        torch.manual_seed(seed)
        for text in REFERENCE_ARCHS:
            arch = space.decode(text)
            network = space.build(arch, num_classes, shape)
            flops.append(space.cost(arch, num_classes, shape).flops)
            times.append(measure_latency_ms(network, shape, tier.slowdown, repeats))
    flops_per_ms, overhead_ms = fit_latency(flops, times)
    layers = None
    if spaces:
        layers = calibrate_table(
            spaces, shape, num_classes, tier.slowdown, seed=seed, max_seconds=table_seconds
        )
    return DeviceProfile(tier.name, flops_per_ms, overhead_ms, tier.memory_mb, layers)
