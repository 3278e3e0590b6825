"""Scoring one architecture, in this process or in a pool of spawned processes.

Each architecture is built under ``torch.manual_seed(seed)``, so its initial weights depend only on the
seed, and probed once: every requested proxy reads the same `Probe`, which runs the forward and the loss
backward pass at most once.

Every scorer, serial or pooled, runs torch's CPU operators and numpy's BLAS/LAPACK calls (PCA, SVD) on
`SCORER_THREADS` thread(s): how a float reduction is split across threads changes its rounding (by up to
~1e-6 relative for gradient proxies), so a fixed count is what makes the values bit-identical for any
``workers``; and BLAS threads of several workers would otherwise contend for the same cores. To use more
cores, use more workers (a pool of spawned processes, one architecture at a time each).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace

import torch
from threadpoolctl import threadpool_limits
from torch import nn

from nasfleet.proxies.base import Proxy, ProxyError
from nasfleet.proxies.probe import Probe, ProbeBatch
from nasfleet.spaces import Genome, SearchSpace

SCORER_THREADS = 1
Scored = tuple[list[float], float]  # raw values of the job's proxies, and the seconds they took


@dataclass(frozen=True)
class ScoringJob:
    """Everything a (possibly remote) scorer needs, picklable: classes, not registry names."""

    space: SearchSpace
    batch: ProbeBatch
    proxies: tuple[type[Proxy], ...]
    seed: int
    device: str

    def on_device(self) -> ScoringJob:
        return replace(self, batch=self.batch.to(self.device))

    def build(self, arch: Genome) -> nn.Module:
        """The network of ``arch`` with initial weights fixed by the seed alone."""
        torch.manual_seed(self.seed)
        network = self.space.build(arch, self.batch.num_classes, self.batch.input_shape)
        return network.to(self.device)

    def probe(self, arch: Genome, proxies: Sequence[type[Proxy]]) -> Probe:
        codes = any(proxy.needs_activation_codes for proxy in proxies)
        return Probe(self.build(arch), self.batch, seed=self.seed, record_activation_codes=codes)

    def values(self, arch: Genome, probe: Probe, proxies: Sequence[type[Proxy]]) -> list[float]:
        """Values of ``proxies`` on ``probe`` (of ``arch``); errors name the architecture."""
        try:
            return [proxy()(probe) for proxy in proxies]
        except ValueError as error:
            raise ProxyError(f"arch {self.space.encode(arch)}: {error}") from error

    def synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def score_one(job: ScoringJob, arch: Genome) -> Scored:
    """Raw values of every proxy of the job, and the wall time of building, probing and all proxies."""
    start = time.perf_counter()
    values = job.values(arch, job.probe(arch, job.proxies), job.proxies)
    job.synchronize()
    return values, time.perf_counter() - start


@contextmanager
def scorer_context(device: str) -> Iterator[None]:
    """Score as every pooled worker does: on `SCORER_THREADS` threads (torch and BLAS); restore the caller's
    threads and RNG.

    Scoring reseeds torch's generator per architecture; forking it keeps the caller's random stream intact.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(SCORER_THREADS)
    try:
        devices: list[int] | None = None if device == "cuda" else []
        with threadpool_limits(SCORER_THREADS), torch.random.fork_rng(devices=devices):
            yield
    finally:
        torch.set_num_threads(previous)


_WORKER_JOB: ScoringJob | None = None


def _init_worker(job: ScoringJob) -> None:
    global _WORKER_JOB
    torch.set_num_threads(SCORER_THREADS)
    threadpool_limits(SCORER_THREADS)
    _WORKER_JOB = job.on_device()


def _score_in_worker(arch: Genome) -> Scored:
    if _WORKER_JOB is None:
        raise RuntimeError("a scoring worker must be initialised with its job before it scores")
    return score_one(_WORKER_JOB, arch)


def _stream_here(job: ScoringJob, archs: Sequence[Genome]) -> Generator[tuple[int, Scored], None, None]:
    local = job.on_device()
    with scorer_context(job.device):
        for index, arch in enumerate(archs):
            yield index, score_one(local, arch)


def _stream_in_pool(
    job: ScoringJob, archs: Sequence[Genome], workers: int
) -> Generator[tuple[int, Scored], None, None]:
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(job,))
    try:
        futures: dict[Future[Scored], int] = {
            pool.submit(_score_in_worker, arch): index for index, arch in enumerate(archs)
        }
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def stream_scores(
    job: ScoringJob, archs: Sequence[Genome], workers: int = 1
) -> Generator[tuple[int, Scored], None, None]:
    """``(index, score_one(job, archs[index]))`` for each architecture as it finishes: in this process, in
    order and in `scorer_context`, when ``workers`` is 1 (or there is nothing to score); else in
    ``min(workers, len(archs))`` spawned processes, in the order they finish. Close the generator to stop
    early: a pool then cancels what has not started."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, but got {workers}")
    if workers == 1 or not archs:
        return _stream_here(job, archs)
    return _stream_in_pool(job, archs, min(workers, len(archs)))


def _collect(
    stream: Generator[tuple[int, Scored], None, None], count: int, on_done: Callable[[int], None]
) -> list[Scored]:
    results: dict[int, Scored] = {}
    with closing(stream):
        for index, scored in stream:
            results[index] = scored
            on_done(len(results))
    return [results[index] for index in range(count)]


def score_here(job: ScoringJob, archs: Sequence[Genome], on_done: Callable[[int], None]) -> list[Scored]:
    """`score_one` of each architecture here, in `scorer_context`; ``on_done(count)`` after each."""
    return _collect(stream_scores(job, archs), len(archs), on_done)


def score_in_pool(
    job: ScoringJob, archs: Sequence[Genome], workers: int, on_done: Callable[[int], None]
) -> list[Scored]:
    """`score_one` of each architecture in ``workers`` spawned processes, in order; ``on_done(count)``
    as each finishes (a pool even for one worker, unlike `stream_scores`)."""
    return _collect(_stream_in_pool(job, archs, workers), len(archs), on_done)
