"""The zero-cost proxy contract.

A proxy turns one `Probe` (a network, one mini-batch, and the passes shared by every proxy) into one
finite number. It declares its direction and what it needs, so the engine can skip work nobody asked for
and refuse a label-needing proxy on unlabeled data.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from nasfleet.plugins import PluginTable

if TYPE_CHECKING:
    from nasfleet.proxies.probe import Probe


class ProxyError(ValueError):
    """A proxy that cannot be computed: unknown name, missing labels, or a non-finite value."""


class Proxy(ABC):
    """A training-free score of an untrained network on one mini-batch."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = False
    needs_activation_codes: ClassVar[bool] = False
    #: Bumped whenever a change of definition changes the values: stored values are keyed on it.
    revision: ClassVar[int] = 1

    @abstractmethod
    def compute(self, probe: Probe) -> float:
        """The raw value; may read anything the probe offers."""

    def __call__(self, probe: Probe) -> float:
        if self.needs_labels and probe.batch.labels is None:
            raise ProxyError(f"proxy {self.name!r} needs labels, but the probe batch has none (alpha = 0)")
        value = float(self.compute(probe))
        if not math.isfinite(value):
            raise ProxyError(f"proxy {self.name!r} must be finite, but got {value}")
        return value


PROXIES: PluginTable[Proxy] = PluginTable("proxy", ProxyError)
register = PROXIES.register


def revised(names: Iterable[str]) -> dict[str, int]:
    """The revision of each named proxy that has been revised (revision > 1), for cache keys.

    Revision-1 proxies are left out, so keys made before a proxy was first revised stay valid for the others.
    """
    return {name: PROXIES[name].revision for name in names if PROXIES[name].revision != 1}


def get_proxy(name: str) -> Proxy:
    """A fresh instance of the proxy registered as ``name`` (`nasfleet.proxies.get_proxy` finds plug-ins)."""
    return PROXIES.create(name)
