"""Per-layer latency model: the device times every distinct layer it can meet; a network's latency is read
off that table.

Why not FLOPs: at batch 1 on a CPU most of a small network's time is per-call framework work, not
arithmetic. NAS-Bench-201's skip and pooling edges cost time and no FLOPs, and a depthwise convolution
costs far more per FLOP than a dense one, so ``overhead + flops / throughput`` ranks archs poorly
(Spearman about 0.4-0.6 on NAS-Bench-201, see ``experiments/latency``). The model here, as nn-Meter does
with kernels, sums measured layer times:

    latency_ms = scale * (call_ms * container_calls + sum of the table's time of each layer call)

- A *layer call* is a call of a leaf module (no children: ``Conv2d``, ``BatchNorm2d``, ``ReLU``,
  ``Identity``, ``AvgPool2d``, ``Linear``, ``LayerNorm`` ...) or a torch function called directly by a
  container's ``forward`` (the additions of a residual, ``torch.stack``, a mean, an attention's matmul and
  softmax). Its *signature* is the module's type, ``extra_repr`` and parameter shapes (or the function's
  name and non-tensor arguments) with the input and output shapes; the table holds each signature's
  measured time, keyed by a 12-hex-digit SHA-256 prefix to stay small on the wire.
- A *container call* (``Sequential``, a cell, a block) costs ``call_ms``: one ``nn.Module`` call measured
  on the device; the Python of a container's ``forward`` beyond that is left to ``scale``.
- ``scale`` is the median ratio of measured to summed time over a few calibration networks.

Nothing here knows a space: `trace_calls` finds the layer calls of any built network with forward hooks
and a `TorchFunctionMode`, so the same code serves every `SearchSpace` (it uses only ``build``,
``sample`` and ``choices``). A layer the table lacks is estimated from its kind's linear fit ``intercept
+ slope * work`` (work: the input and output elements plus a weight's multiply-adds), fitted on the
device's own table. A table names the spaces it was measured for with their `space_fingerprint`; the
server builds and traces (never times) a candidate to predict it, about 30 ms for a NAS-Bench-201 arch
and 80 ms for a MobileNetV2-style one on the development host, cached per arch.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode, resolve_name

from nasfleet.protocol.layers import ANY_KIND, SCALE, LayerTable
from nasfleet.spaces.base import Genome, InputShape, SearchSpace, check_input_shape

#: Calibration: archs traced per space at most; the sampling stops earlier once `SATURATION` archs in a
#: row add no new layer; the first `REFERENCES` archs of each space are timed whole to fit ``scale``.
MAX_ARCHS = 40
SATURATION = 8
REFERENCES = 6
#: Timed forward passes per calibration arch, and the quantile of a layer's in-place times kept.
PASSES = 3
QUANTILE = 0.0
#: `time_ms`'s defaults: the fastest of `LOOPS` loops of `CALLS` calls, after `WARMUP` calls.
LOOPS, CALLS, WARMUP = 5, 1, 1


@dataclass(frozen=True)
class LayerCall:
    """One layer call of a forward pass: its table id, its kind and its work (for the fallback)."""

    key: str
    kind: str
    work: float


@dataclass
class Trace:
    """The layer calls and container calls of one forward pass, and each layer call's time if timed."""

    calls: list[LayerCall] = field(default_factory=list)
    container_calls: int = 0
    elapsed_ms: list[float] = field(default_factory=list)


def _shapes(value: object) -> str:
    """The signature of an argument: tensors by shape (and dtype unless float32), others by value."""
    if isinstance(value, torch.Tensor):
        dtype = "" if value.dtype == torch.float32 else str(value.dtype)
        return "T" + "x".join(map(str, value.shape)) + dtype
    if isinstance(value, list | tuple):
        inner = ",".join(_shapes(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={_shapes(v)}" for k, v in sorted(value.items())) + "}"
    if value is None or isinstance(value, bool | int | float | str | torch.dtype):
        return repr(value)
    return type(value).__name__  # a device, a memory format: the same on the device and the server


def _elements(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, list | tuple):
        return sum(_elements(v) for v in value)
    return 0


def _layer_id(signature: str) -> str:
    return hashlib.sha256(signature.encode()).hexdigest()[:12]


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


class _Recorder(TorchFunctionMode):
    """Records layer calls, leaf modules through hooks and container code through the function mode,
    and (``timed``) the time of each, taken around the call itself: in the network, with its caches."""

    def __init__(self, trace: Trace, timed: bool) -> None:
        super().__init__()
        self.trace, self.timed = trace, timed
        self.stack: list[tuple[bool, float]] = []  # per active module: is it a leaf, when it started
        self.inside_hook = False

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if not self.stack or self.stack[-1][0] or self.inside_hook:
            return func(*args, **kwargs)
        start = time.perf_counter()
        result = func(*args, **kwargs)
        elapsed = time.perf_counter() - start
        name = resolve_name(func) or getattr(func, "__qualname__", repr(func))
        self._record(f"{name}{_shapes(args)}{_shapes(kwargs)}", name, _elements(args) + _elements(result))
        if self.timed:
            self.trace.elapsed_ms.append(elapsed * 1e3)
        return result

    def _record(self, signature: str, kind: str, work: float) -> None:
        self.trace.calls.append(LayerCall(_layer_id(signature), kind, float(work)))

    def pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.stack and self.stack[-1][0]:  # a module called inside a leaf's forward is part of the leaf
            self.stack.append((True, math.nan))
            return
        leaf = _is_leaf(module)
        self.trace.container_calls += not leaf
        self.stack.append((leaf, time.perf_counter()))

    def post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        end = time.perf_counter()
        _, start = self.stack.pop()
        if not _is_leaf(module) or (self.stack and self.stack[-1][0]):
            return
        self.inside_hook = True
        try:
            self._record(*_leaf_signature(module, args, output))
            if self.timed:
                self.trace.elapsed_ms.append((end - start) * 1e3)
        finally:
            self.inside_hook = False


def _leaf_signature(module: nn.Module, args: tuple[Any, ...], output: Any) -> tuple[str, str, float]:
    """A leaf module's signature, kind and work (elements in and out, plus a weight's multiply-adds)."""
    weights = list(module.parameters(recurse=False))
    shapes = ",".join("x".join(map(str, p.shape)) for p in weights)
    signature = f"{type(module).__name__}({module.extra_repr()})[{shapes}]{_shapes(args)}->{_shapes(output)}"
    kind = type(module).__name__ + ("/grouped" if getattr(module, "groups", 1) != 1 else "")
    work = float(_elements(args) + _elements(output))
    weight = next((p for p in weights if p.dim() >= 2), None)
    if weight is not None:  # a conv or linear layer: weight size x output positions
        work += weight.numel() * _elements(output) / weight.shape[0]
    return signature, kind, work


def trace_calls(network: nn.Module, input_shape: InputShape, *, timed: bool = False) -> Trace:
    """The layer and container calls of one batch-1 forward pass of ``network`` (eval, inference mode).

    With ``timed`` the trace also holds each layer call's time (``elapsed_ms``), measured in place; the
    hooks' own work falls between the layers, never inside a layer's interval.
    """
    trace = Trace()
    recorder = _Recorder(trace, timed)
    handles = [h for m in network.modules() for h in (m.register_forward_pre_hook(recorder.pre),
                                                        m.register_forward_hook(recorder.post))]  # fmt: skip
    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    was_training = network.training
    try:
        network.eval()
        with torch.inference_mode(), recorder:
            network(torch.zeros(1, *input_shape, device=device))
    finally:
        network.train(was_training)
        for handle in handles:
            handle.remove()
    return trace


@contextmanager
def one_thread() -> Iterator[None]:
    """Run with one torch thread (as the device's latency is defined), restoring the count after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def time_ms(run: Callable[[], object], loops: int = LOOPS, calls: int = CALLS, warmup: int = WARMUP) -> float:
    """ms per call of ``run``: the fastest of ``loops`` loops of ``calls`` calls, divided by ``calls``.

    The minimum over loops drops what other processes added; the mean within a loop keeps the call's
    ordinary cost (a single fastest call would undercount what a network pays on average).
    """
    with torch.inference_mode():
        for _ in range(warmup):
            run()
        best = math.inf
        for _ in range(loops):
            start = time.perf_counter()
            for _ in range(calls):
                run()
            best = min(best, time.perf_counter() - start)
    return best / calls * 1e3


def raw_sum_ms(table: LayerTable, trace: Trace) -> float:
    """The trace's container calls times ``call_ms`` plus its layers' table times (fallback for a miss)."""
    times, kinds = _lookups(table)
    total = table.call_ms * trace.container_calls
    for call in trace.calls:
        known = times.get(call.key)
        if known is None:
            intercept, slope = kinds.get(call.kind, kinds[ANY_KIND])
            known = intercept + slope * call.work
        total += known
    return total


@functools.lru_cache(maxsize=16)
def _lookups(table: LayerTable) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    return dict(table.times), {kind: (a, b) for kind, a, b in table.kinds}


def predict_ms(table: LayerTable, trace: Trace) -> float:
    """Predicted emulated latency (ms) of the traced network: ``scale`` times `raw_sum_ms`."""
    return table.scale * raw_sum_ms(table, trace)


def table_model(
    table: LayerTable, space: SearchSpace, num_classes: int, input_shape: InputShape, cache: int = 4096
) -> Callable[[Genome], float]:
    """The predictor of ``space``'s archs on a device with ``table``: build (under a forked RNG), trace,
    sum; cached per canonical arch, since a build and trace costs tens of milliseconds."""
    shape = check_input_shape(input_shape, num_classes)

    @functools.lru_cache(maxsize=cache)
    def predict(arch: Genome) -> float:
        with torch.random.fork_rng(devices=[]), one_thread():
            network = space.build(arch, num_classes, shape)
        return predict_ms(table, trace_calls(network, shape))

    return lambda arch: predict(space.validate(arch))


def space_fingerprint(space: SearchSpace, num_classes: int, input_shape: InputShape) -> str:
    """12 hex digits naming ``space``'s layers at this class count and input shape: the SHA-256 of its name,
    revision and choices and of the layer calls of its all-first-option arch (stem, head, classifier). Other
    options (NB201's ``channels``), classes, input shapes, definitions or torch versions change it."""
    shape = check_input_shape(input_shape, num_classes)
    with torch.random.fork_rng(devices=[]), one_thread():
        network = space.build(space.canonical((0,) * len(space.choices)), num_classes, shape)
        trace = trace_calls(network, shape)
    calls = ",".join(call.key for call in trace.calls)
    return _layer_id(f"{space.name}|{space.revision}|{space.choices}|{trace.container_calls}|{calls}")


def fit_kinds(calls: Sequence[LayerCall], times: dict[str, float]) -> tuple[tuple[str, float, float], ...]:
    """Per kind (and `ANY_KIND` over all), a least-squares ``ms = intercept + slope * work`` over the
    measured layers, both kept >= 0 (a kind with one work value gets its mean time and slope 0)."""
    seen: dict[str, LayerCall] = {call.key: call for call in calls if call.key in times}
    groups: dict[str, list[LayerCall]] = {ANY_KIND: list(seen.values())}
    for call in seen.values():
        groups.setdefault(call.kind, []).append(call)
    fits = []
    for kind, members in sorted(groups.items()):
        work = np.array([c.work for c in members])
        ms = np.array([times[c.key] for c in members])
        if len(members) < 2 or np.ptp(work) <= 0:
            fits.append((kind, float(ms.mean()) if len(ms) else 0.0, 0.0))
            continue
        slope, intercept = (float(v) for v in np.polyfit(work, ms, 1))
        if slope < 0:
            slope, intercept = 0.0, float(ms.mean())
        elif intercept < 0:
            slope, intercept = float(work @ ms / (work @ work)), 0.0
        fits.append((kind[:100], intercept, slope))
    return tuple(fits)


def _container_call_ms() -> float:
    """One call of an empty container module (``nn.Sequential()``), in ms."""
    empty, sample = nn.Sequential(), torch.zeros(1)
    return time_ms(lambda: empty(sample), calls=200)


def calibrate_table(
    spaces: Sequence[SearchSpace],
    input_shape: InputShape,
    num_classes: int,
    slowdown: float = 1.0,
    *,
    seed: int = 0,
    max_archs: int = MAX_ARCHS,
    passes: int = PASSES,
    max_seconds: float = math.inf,
    record: list[tuple[str, Genome]] | None = None,
) -> LayerTable:
    """Measure a `LayerTable` on this host for archs of ``spaces`` on inputs of ``input_shape``.

    For each space, random archs (drawn under ``seed``) are built and run ``passes`` times with every
    layer call timed in place, until `SATURATION` archs in a row add no new layer, ``max_archs``, or
    ``max_seconds`` spent on the space (checked after each arch, so one arch always runs). A
    layer's time is the `QUANTILE` of its in-place times (one per call): low enough to leave out what
    other processes add on a shared machine, not so low as a minimum, which no network pays on every
    layer at once. The first `REFERENCES` networks of each space are also timed whole (the fastest of
    2 runs per pass) to fit ``scale``, the median ratio of whole to summed time. Every time is multiplied
    by ``slowdown`` (the tier's emulation factor).
    """
    shape = check_input_shape(input_shape, num_classes)
    if not (math.isfinite(slowdown) and slowdown > 0):
        raise ValueError(f"slowdown must be a positive finite number, but got {slowdown}")
    if not spaces or max_archs < 1 or passes < 1 or not max_seconds > 0:
        raise ValueError(f"calibration needs >= 1 space, max_archs >= 1, passes >= 1, max_seconds > 0, but "
                         f"got {len(spaces)} spaces, {max_archs=}, {passes=}, {max_seconds=}")  # fmt: skip
    samples: dict[str, list[float]] = {}
    calls: list[LayerCall] = []
    references: list[tuple[Trace, float]] = []
    with torch.random.fork_rng(devices=[]), one_thread():
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        for space in spaces:
            archs = _sample_space(
                space, shape, num_classes, rng, (max_archs, passes, max_seconds), samples, calls, references
            )
            if record is not None:
                record.extend((space.name, arch) for arch in archs)
        call_ms = _container_call_ms()
    # 4 significant digits: far finer than the timing's repeatability, and 40 % fewer characters on the wire
    times = {key: float(f"{np.quantile(ms, QUANTILE) * slowdown:.4g}") for key, ms in samples.items()}
    table = LayerTable(tuple(sorted(times.items())), fit_kinds(calls, times), call_ms * slowdown, 1.0)
    ratios = [whole * slowdown / raw_sum_ms(table, trace) for trace, whole in references]
    names = tuple(sorted({(s.name, space_fingerprint(s, num_classes, shape)) for s in spaces}))
    scale = float(np.clip(np.median(ratios), *SCALE))
    return LayerTable(table.times, table.kinds, table.call_ms, scale, names)


def _sample_space(
    space: SearchSpace,
    shape: InputShape,
    num_classes: int,
    rng: np.random.Generator,
    limits: tuple[int, int, float],
    samples: dict[str, list[float]],
    calls: list[LayerCall],
    references: list[tuple[Trace, float]],
) -> list[Genome]:
    """Run random archs of ``space`` until no new layers come (or a limit); collect times and references."""
    max_archs, passes, max_seconds = limits
    deadline = time.perf_counter() + max_seconds
    seen: set[Genome] = set()
    quiet = 0
    for _ in range(max_archs):
        if seen and time.perf_counter() > deadline:
            break
        arch = space.sample(rng)
        if arch in seen:
            continue
        seen.add(arch)
        network = space.build(arch, num_classes, shape).eval()
        run = functools.partial(network, torch.zeros(1, *shape))
        with torch.inference_mode():
            run()  # warm-up: the first call of a network pays one-off costs
        new, whole = False, math.inf
        for _ in range(passes):
            trace = trace_calls(network, shape, timed=True)
            for call, ms in zip(trace.calls, trace.elapsed_ms, strict=True):
                new |= call.key not in samples
                samples.setdefault(call.key, []).append(ms)
            if len(seen) <= REFERENCES:
                whole = min(whole, time_ms(run, loops=3, calls=1, warmup=0))
        calls.extend(trace.calls)
        if len(seen) <= REFERENCES:
            references.append((trace, whole))
        quiet = 0 if new else quiet + 1
        if quiet >= SATURATION:
            break
    return list(seen)
