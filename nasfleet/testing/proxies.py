"""The proxy contract: every check a zero-cost proxy, built-in or plug-in, must pass.

Each check scores a few seeded random architectures of each space on a seeded synthetic batch, as the
scorer does (`ScoringJob`: weights fixed by the seed, one shared `Probe`). The checks: a declaration the
engine can read (name, direction, needs, revision); a finite float for every network, the same again for
the same network and batch; not one value for every network; labels refused with `ProxyError` when it
needs them and not needed otherwise; the network's weights unchanged, since every proxy of a request reads
the same probe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

from nasfleet.proxies.base import Proxy, ProxyError
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.proxies.scorer import ScoringJob
from nasfleet.spaces.base import Genome, SearchSpace
from nasfleet.testing.contract import Check, default_spaces, expect, raises, run_checks

BATCH_SIZE = 8
ARCHS_PER_SPACE = 3


def synthetic_batch(labeled: bool = True, seed: int = 0) -> ProbeBatch:
    """A seeded Gaussian batch of `BATCH_SIZE` 3x32x32 inputs with 10 balanced labels (or none)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(BATCH_SIZE, 3, 32, 32, generator=generator)
    labels = torch.arange(BATCH_SIZE) % 10 if labeled else None
    return ProbeBatch(inputs, labels, 10)


class ProxyCase:
    """A proxy class with the spaces and architectures its checks score."""

    def __init__(self, proxy: type[Proxy], spaces: Iterable[SearchSpace]) -> None:
        self.proxy = proxy
        self.archs = [
            (space, space.sample(np.random.default_rng([1, i])))
            for space in spaces
            for i in range(ARCHS_PER_SPACE)
        ]
        self._first: dict[int, tuple[float, list[str]]] = {}

    @property
    def label(self) -> str:
        return str(getattr(self.proxy, "name", self.proxy.__qualname__))

    def score(self, space: SearchSpace, arch: Genome, labeled: bool = True) -> float:
        job = ScoringJob(space, synthetic_batch(labeled), (self.proxy,), seed=0, device="cpu")
        return job.values(arch, job.probe(arch, (self.proxy,)), (self.proxy,))[0]

    def first_score(self, index: int) -> tuple[float, list[str]]:
        """Arch ``index``'s labeled score, and the names of the parameters the proxy changed, computed once
        and shared by the checks that only read them (`check_values` still scores each arch a second time).
        """
        if index not in self._first:
            space, arch = self.archs[index]
            job = ScoringJob(space, synthetic_batch(), (self.proxy,), seed=0, device="cpu")
            probe = job.probe(arch, (self.proxy,))
            before = {name: p.detach().clone() for name, p in probe.network.named_parameters()}
            value = job.values(arch, probe, (self.proxy,))[0]
            after = probe.network.named_parameters()
            self._first[index] = (value, [name for name, p in after if not torch.equal(p, before[name])])
        return self._first[index]


def check_declaration(case: ProxyCase) -> None:
    """A `Proxy` subclass with a name, boolean needs and direction, and a positive int revision."""
    proxy = case.proxy
    expect(isinstance(proxy, type) and issubclass(proxy, Proxy), f"{proxy!r} must be a subclass of Proxy")
    expect(isinstance(getattr(proxy, "name", None), str) and bool(proxy.name), "name must be a non-empty str")
    for flag in ("higher_is_better", "needs_labels", "needs_activation_codes"):
        expect(type(getattr(proxy, flag)) is bool, f"{flag} must be a bool, but got {getattr(proxy, flag)!r}")
    expect(
        type(proxy.revision) is int and proxy.revision >= 1,
        f"revision must be an int >= 1, but got {proxy.revision!r}",
    )


def check_values(case: ProxyCase) -> None:
    """A finite float for every network, and the same again for the same network and batch."""
    for index, (space, arch) in enumerate(case.archs):
        value, _ = case.first_score(index)
        expect(type(value) is float and math.isfinite(value), f"{space.encode(arch)}: got {value!r}")
        again = case.score(space, arch)
        expect(
            math.isclose(value, again, rel_tol=1e-6, abs_tol=1e-12),
            f"{space.encode(arch)}: the same network and batch gave {value} and then {again}",
        )


def check_discriminates(case: ProxyCase) -> None:
    """Not one value for every network: a proxy that ties them all ranks nothing."""
    values = [case.first_score(index)[0] for index in range(len(case.archs))]
    expect(len(set(values)) > 1, f"every network scored {values[0]}: the proxy tells none apart")


def check_labels(case: ProxyCase) -> None:
    """Without labels: `ProxyError` if it needs them, a finite value if it does not."""
    space, arch = case.archs[0]
    if case.proxy.needs_labels:
        expect(
            raises(ProxyError, case.score, space, arch, False) is not None,
            "needs_labels is true, yet an unlabeled batch raised no ProxyError",
        )
    else:
        expect(
            math.isfinite(case.score(space, arch, labeled=False)),
            "an unlabeled batch gave a non-finite value",
        )


def check_weights_unchanged(case: ProxyCase) -> None:
    """The network's parameters after the proxy are those before it: other proxies read the same probe."""
    for index, (space, arch) in enumerate(case.archs):
        changed = case.first_score(index)[1]
        expect(not changed, f"{space.encode(arch)}: the proxy changed the weights of {changed[:3]}")


CHECKS: tuple[Callable[[ProxyCase], None], ...] = (
    check_declaration,
    check_values,
    check_discriminates,
    check_labels,
    check_weights_unchanged,
)


def proxy_checks(
    proxy: type[Proxy], spaces: Iterable[SearchSpace] | None = None, skip: Iterable[str] = ()
) -> list[Check]:
    """Every contract check of ``proxy`` on each space (NB201 and MobileNetV2 by default), less ``skip``."""
    skipped = set(skip)
    names = {check.__name__ for check in CHECKS}
    if not skipped <= names:
        raise ValueError(f"skip must name checks among {sorted(names)}, but got {sorted(skipped - names)}")
    case = ProxyCase(proxy, default_spaces() if spaces is None else spaces)

    def bound(check: Callable[[ProxyCase], None]) -> Check:
        return Check(f"{case.label}-{check.__name__.removeprefix('check_')}", lambda: check(case))

    return [bound(check) for check in CHECKS if check.__name__ not in skipped]


def check_proxy(
    proxy: type[Proxy], spaces: Iterable[SearchSpace] | None = None, skip: Iterable[str] = ()
) -> None:
    """Run every contract check on ``proxy``; one `ContractError` lists every failure."""
    run_checks(proxy_checks(proxy, spaces, skip))
