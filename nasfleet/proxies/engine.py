"""The scoring engine: proxy names to values for a population, aggregates over it, and per-proxy cost.

Names become classes here, once, from the registries (`PROXIES`, `AGGREGATES`); everything below works on
the classes. Each architecture is scored by `nasfleet.proxies.scorer` (one shared probe per architecture,
`SCORER_THREADS` threads, serially or in a pool of processes), so values are bit-identical for any
``workers``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nasfleet.bounds import DEVICES
from nasfleet.plugins import PluginWarning
from nasfleet.progress import progress as progress_display
from nasfleet.proxies.aggregate import AGGREGATES, get_aggregate
from nasfleet.proxies.base import PROXIES, Proxy, ProxyError
from nasfleet.proxies.discovery import load_proxy_plugins
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.proxies.scorer import SCORER_THREADS, ScoringJob, score_here, score_in_pool, scorer_context
from nasfleet.spaces import Genome, SearchSpace

__all__ = [
    "ALL",
    "DEVICES",
    "SCORER_THREADS",
    "IsolationTiming",
    "ScoreTable",
    "add_aggregates",
    "check_device",
    "expand_names",
    "progress_bar",
    "score_archs",
    "scorer_context",
    "time_proxies_in_isolation",
]

ALL = "all"


# -- names -----------------------------------------------------------------------------------------------
def _load_plugins(name: str | None = None) -> None:
    """Enter the installed proxy plug-ins into `PROXIES`: an error if the one called ``name`` is broken,
    a `PluginWarning` for each other broken one."""
    for problem in load_proxy_plugins():
        if problem.name == name:
            raise ProxyError(str(problem))
        warnings.warn(str(problem), PluginWarning, stacklevel=3)


def _kind(name: str) -> str:
    """``"proxy"`` or ``"aggregate"``; a name both registries hold, or neither, is an error."""
    if name not in PROXIES and name not in AGGREGATES:
        _load_plugins(name)  # built-in names never pay for the scan
    if name in PROXIES and name in AGGREGATES:
        raise ProxyError(f"name {name!r} must belong to a proxy or an aggregate, but both registries hold it")
    if name in PROXIES:
        return "proxy"
    if name in AGGREGATES:
        return "aggregate"
    raise ProxyError(
        f"proxies must name registered proxies, aggregates or {ALL!r}, but got {name!r}; "
        f"proxies: {', '.join(sorted(PROXIES)) or '(none)'}; "
        f"aggregates: {', '.join(sorted(AGGREGATES)) or '(none)'}"
    )


def _aggregate_inputs(name: str, labeled: bool) -> tuple[str, ...]:
    """The proxies an aggregate reads; an error when one is unknown or needs labels that are missing."""
    inputs = get_aggregate(name).inputs(labeled)
    for proxy in inputs:
        if proxy not in PROXIES:
            raise ProxyError(f"aggregate {name!r} reads proxy {proxy!r}, which is not registered")
        if PROXIES[proxy].needs_labels and not labeled:
            raise ProxyError(
                f"aggregate {name!r} reads proxy {proxy!r}, which needs labels; data is unlabeled"
            )
    return inputs


def _computable(name: str, labeled: bool) -> bool:
    if _kind(name) == "proxy":
        return labeled or not PROXIES[name].needs_labels
    try:
        _aggregate_inputs(name, labeled)
    except ProxyError:
        return False
    return True


def expand_names(spec: str, labeled: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Raw proxies and aggregates named by a comma-separated ``spec``, in order, without repeats.

    A name is a proxy, an aggregate (which pulls in the proxies it reads) or ``all``: every registered proxy
    and aggregate computable with or without labels. Without labels, ``all`` leaves out what needs them, but
    naming such a proxy or aggregate explicitly is an error.
    """
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise ProxyError(f"proxies must name at least one proxy, aggregate or {ALL!r}, but got {spec!r}")
    proxies: dict[str, None] = {}
    aggregates: dict[str, None] = {}
    for name in names:
        if name == ALL:
            _load_plugins()
            requested = [n for n in [*sorted(PROXIES), *sorted(AGGREGATES)] if _computable(n, labeled)]
        else:
            requested = [name]
        for item in requested:
            if _kind(item) == "aggregate":
                proxies.update(dict.fromkeys(_aggregate_inputs(item, labeled)))
                aggregates[item] = None
            elif PROXIES[item].needs_labels and not labeled:
                raise ProxyError(f"proxy {item!r} needs labels, but the data is unlabeled (alpha = 0)")
            else:
                proxies.setdefault(item)
    return tuple(proxies), tuple(aggregates)


def _checked_proxy(name: str) -> str:
    if _kind(name) != "proxy":
        raise ProxyError(f"proxy names must name raw proxies, but {name!r} is an aggregate")
    return name


def check_device(device: str) -> torch.device:
    """The torch device for ``device`` ("cpu" or "cuda"); "cuda" needs an available GPU."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, but got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' needs a CUDA GPU, but torch.cuda.is_available() is False")
    return torch.device(device)


# -- many architectures ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreTable:
    """Raw proxy values of a population: one entry per architecture in every column."""

    archs: tuple[str, ...]
    values: dict[str, np.ndarray]
    seconds: np.ndarray

    def rows(self, extra: Mapping[str, np.ndarray] | None = None) -> tuple[list[str], list[list[object]]]:
        """CSV header and rows: ``arch``, raw proxies, ``extra`` columns, ``seconds``."""
        columns = {**self.values, **(extra or {})}
        header = ["arch", *columns, "seconds"]
        rows: list[list[object]] = [
            [arch, *(float(column[i]) for column in columns.values()), float(self.seconds[i])]
            for i, arch in enumerate(self.archs)
        ]
        return header, rows


@contextmanager
def progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[], None]]:
    """`nasfleet.progress.progress`, advanced by one item per call of the function it yields."""
    with progress_display(description, total, enabled) as update:
        done = 0

        def advance() -> None:
            nonlocal done
            done += 1
            update(done)

        yield advance


def score_archs(
    space: SearchSpace,
    archs: Sequence[Genome],
    batch: ProbeBatch,
    proxy_names: Sequence[str],
    *,
    seed: int,
    device: str = "cpu",
    workers: int = 1,
    progress: bool = True,
) -> ScoreTable:
    """Raw values of the named proxies for each architecture, each from one shared probe.

    ``seconds`` holds, per architecture, the wall time of building its network, probing it and computing
    every proxy. ``workers > 1`` scores in a pool of spawned processes; every scorer uses `SCORER_THREADS`
    threads, so the values are bit-identical for any ``workers``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, but got {workers}")
    if not archs:
        raise ValueError("archs must hold at least one architecture, but got none")
    check_device(device)
    if len(set(proxy_names)) != len(proxy_names):
        raise ValueError(f"proxy names must be distinct, but got {list(proxy_names)}")
    proxies = tuple(PROXIES[_checked_proxy(name)] for name in proxy_names)
    job = ScoringJob(space, batch.to("cpu"), proxies, seed, device)
    with progress_display("scoring", len(archs), progress) as update:
        if workers == 1:
            results = score_here(job, archs, update)
        else:
            results = score_in_pool(job, archs, min(workers, len(archs)), update)
    values = {name: np.array([r[0][i] for r in results]) for i, name in enumerate(proxy_names)}
    seconds = np.array([r[1] for r in results])
    return ScoreTable(tuple(space.encode(arch) for arch in archs), values, seconds)


def add_aggregates(table: ScoreTable, aggregate_names: Sequence[str], labeled: bool) -> dict[str, np.ndarray]:
    """One column per aggregate over the table's whole population (higher is better)."""
    columns: dict[str, np.ndarray] = {}
    for name in aggregate_names:
        aggregate = get_aggregate(name)
        inputs = aggregate.inputs(labeled)
        missing = [proxy for proxy in inputs if proxy not in table.values]
        if missing:
            raise ProxyError(
                f"aggregate {name!r} needs proxy columns {missing}, "
                f"but the table holds {sorted(table.values)}"
            )
        scores = np.asarray(aggregate.combine({p: table.values[p] for p in inputs}, labeled), dtype=float)
        if scores.shape != (len(table.archs),) or not np.all(np.isfinite(scores)):
            raise ProxyError(
                f"aggregate {name!r} must give {len(table.archs)} finite scores, "
                f"but got shape {scores.shape} with {int(np.count_nonzero(~np.isfinite(scores)))} non-finite"
            )
        columns[name] = scores
    return columns


# -- cost ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IsolationTiming:
    """Median seconds per architecture of each proxy (or aggregate) alone, and of a forward+backward pass."""

    seconds: dict[str, float]
    reference: float
    archs: tuple[str, ...]

    def ratio(self, name: str) -> float:
        """Cost of ``name`` in plain forward+backward passes of the same network and batch."""
        return self.seconds[name] / self.reference


def _forward_backward_seconds(job: ScoringJob, arch: Genome) -> float:
    """Wall time of one plain training-mode forward pass and loss backward pass (building excluded)."""
    network = job.build(arch)
    start = time.perf_counter()
    network.train()
    logits = network(job.batch.inputs)
    labels = job.batch.labels
    loss = F.cross_entropy(logits, labels) if labels is not None else logits.square().mean()
    loss.backward()
    job.synchronize()
    return time.perf_counter() - start


def _group_seconds(job: ScoringJob, arch: Genome, proxies: Sequence[type[Proxy]]) -> float:
    """Wall time of ``proxies`` together on one fresh probe, building excluded."""
    probe = job.probe(arch, proxies)
    start = time.perf_counter()
    job.values(arch, probe, proxies)
    job.synchronize()
    return time.perf_counter() - start


def _timing_groups(
    proxy_names: Sequence[str], aggregate_names: Sequence[str], labeled: bool
) -> dict[str, tuple[type[Proxy], ...]]:
    """What is timed together on one fresh probe: each proxy alone, each aggregate with all its inputs."""
    groups: dict[str, tuple[type[Proxy], ...]] = {
        name: (PROXIES[_checked_proxy(name)],) for name in proxy_names
    }
    for name in aggregate_names:
        groups[name] = tuple(PROXIES[proxy] for proxy in _aggregate_inputs(name, labeled))
    return groups


def time_proxies_in_isolation(
    space: SearchSpace,
    archs: Sequence[Genome],
    batch: ProbeBatch,
    proxy_names: Sequence[str],
    *,
    seed: int,
    aggregate_names: Sequence[str] = (),
    labeled: bool = True,
    sample: int = 5,
    device: str = "cpu",
    progress: bool = True,
) -> IsolationTiming:
    """Per-proxy cost on a seeded sub-sample of ``sample`` architectures, in this process.

    For each sampled architecture, each proxy runs alone on its own fresh probe (so it pays for every pass it
    needs), each aggregate runs its input proxies together on one fresh probe, and a plain forward+backward
    pass of the same network and batch is timed in the same loop, all on `SCORER_THREADS` threads like
    scoring. One untimed pass warms up first.
    """
    if sample < 1 or not archs:
        raise ValueError(f"timing needs sample >= 1 and some archs, but got {sample=} and {len(archs)} archs")
    check_device(device)
    chosen = np.random.default_rng(seed).choice(len(archs), size=min(sample, len(archs)), replace=False)
    subset = [archs[int(i)] for i in sorted(chosen)]
    groups = _timing_groups(proxy_names, aggregate_names, labeled)
    job = ScoringJob(space, batch, (), seed, device).on_device()
    times: dict[str, list[float]] = {name: [] for name in [*groups, ""]}
    with scorer_context(device), progress_display("timing", len(subset), progress) as update:
        _forward_backward_seconds(job, subset[0])
        for arch in subset:
            times[""].append(_forward_backward_seconds(job, arch))
            for name, members in groups.items():
                times[name].append(_group_seconds(job, arch, members))
            update(len(times[""]))
    medians = {name: float(np.median(values)) for name, values in times.items()}
    reference = medians.pop("")
    return IsolationTiming(medians, reference, tuple(space.encode(arch) for arch in subset))
