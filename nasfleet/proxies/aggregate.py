"""Population-level scorers: combine raw proxy values of many architectures into one score each.

Rank-based aggregates are relative to a population (a file of architectures, a search's archive), so
they take every architecture's raw values at once. Convention: ``normalized_rank`` maps values to
(0, 1], where 1 is the best architecture of the population and 1/N the worst; ties share their average
rank. A proxy whose ``higher_is_better`` is False is ranked on its negated values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from scipy.stats import rankdata

from nasfleet.plugins import PluginTable
from nasfleet.proxies.base import PROXIES, ProxyError


def directed_ranks(values: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Average ranks 1..N in the values' better direction: the best value gets N, the worst 1."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ProxyError(f"ranking needs a non-empty 1-D array of values, but got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ProxyError("ranking needs finite values, but got NaN or inf")
    return np.asarray(rankdata(array if higher_is_better else -array, method="average"), dtype=float)


def normalized_rank(values: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Average ranks scaled to (0, 1]: the best value gets 1, the worst 1/N."""
    ranks = directed_ranks(values, higher_is_better)
    return ranks / ranks.size


def proxy_rank(name: str, values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Normalized rank of one registered proxy's column, in its own direction."""
    if name not in values:
        raise ProxyError(f"aggregate needs proxy {name!r}, but the values hold only {sorted(values)}")
    return normalized_rank(values[name], PROXIES[name].higher_is_better)


class Aggregate(ABC):
    """A score over a population, from the raw values of the proxies it declares."""

    name: ClassVar[str]

    @abstractmethod
    def inputs(self, labeled: bool) -> tuple[str, ...]:
        """Names of the raw proxies this aggregate reads, given label availability."""

    @abstractmethod
    def combine(self, values: Mapping[str, np.ndarray], labeled: bool) -> np.ndarray:
        """One score per architecture (higher is better), from columns of raw proxy values."""


AGGREGATES: PluginTable[Aggregate] = PluginTable("aggregate", ProxyError)
register_aggregate = AGGREGATES.register


def get_aggregate(name: str) -> Aggregate:
    """A fresh instance of the aggregate called ``name``."""
    return AGGREGATES.create(name)
