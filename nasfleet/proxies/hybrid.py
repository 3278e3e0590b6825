"""Hybrid rankings of a population: TE-NAS, GA-rk (and the base of COER-NAS's, in `nasfleet.proxies.coer`).

Each aggregate ranks the population once per input proxy, in that proxy's own direction, with
`normalized_rank` (best 1, worst 1/N, ties share their average rank), and combines the ranks into one score
per architecture, higher is better. None of them needs labels, so ``labeled`` changes nothing.

- ``tenas``: TE-NAS (Chen et al., ICLR 2021; VITA-Group/TENAS ``prune_tenas.py``) sums the rank of the NTK
  condition number (ascending: lower is better) and the rank of the number of linear regions (descending).
  The reference ranks with dense ranks of values rounded to 3 significant digits (ties share a rank and
  the next value gets the next integer); here ties get average ranks, which keeps both terms on the same
  1..N scale even though ``linear_regions`` ties often (it saturates at the batch size).
- ``garank``: GA-rk's rank combination (Hsieh & Tsai, "GA-based Training-Free NAS Algorithm with Hybrid
  Score Function", 2023): see `GARank`.
- ``coer`` and ``coer_linear`` (defined in `nasfleet.proxies.coer`, beside their four dimensions):
  COER-NAS's "rank-driven nonlinear geometric fusion" (a RECONSTRUCTION: docs/coer.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from nasfleet.proxies.activation import NASWOT, LinearRegions, NoiseImmunity, NTKCondition
from nasfleet.proxies.aggregate import Aggregate, normalized_rank, register_aggregate
from nasfleet.proxies.base import PROXIES, ProxyError

LOGSYNFLOW = "logsynflow"
# Directions of inputs registered by other modules, for when those modules are not imported.
# LogSynFlow (Cavagnero et al. 2023), like SynFlow, is "higher is better".
KNOWN_DIRECTIONS = {LOGSYNFLOW: True}


def higher_is_better(name: str) -> bool:
    """The registered direction of proxy ``name``, else its known direction; unknown names are an error."""
    if name in PROXIES:
        return PROXIES[name].higher_is_better
    if name in KNOWN_DIRECTIONS:
        return KNOWN_DIRECTIONS[name]
    raise ProxyError(f"an aggregate input must be a registered proxy, but {name!r} is not registered")


def input_ranks(names: Sequence[str], values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Normalized ranks, one row per proxy of ``names``, each ranked in its own direction; shape (P, N)."""
    missing = [name for name in names if name not in values]
    if missing:
        raise ProxyError(f"aggregate needs proxies {missing}, but the values hold only {sorted(values)}")
    lengths = {name: int(np.asarray(values[name]).size) for name in names}
    if len(set(lengths.values())) != 1:
        raise ProxyError(f"aggregate inputs must have one value per architecture each, but got {lengths}")
    return np.stack([normalized_rank(values[name], higher_is_better(name)) for name in names])


class RankAggregate(Aggregate):
    """An aggregate of fixed, label-free inputs combined from their normalized ranks."""

    INPUTS: ClassVar[tuple[str, ...]]

    def inputs(self, labeled: bool) -> tuple[str, ...]:
        return self.INPUTS

    def combine(self, values: Mapping[str, np.ndarray], labeled: bool) -> np.ndarray:
        return self.fuse(input_ranks(self.INPUTS, values))

    def fuse(self, ranks: np.ndarray) -> np.ndarray:
        """One score per architecture from the (P, N) ranks; the mean rank unless overridden."""
        return np.asarray(ranks.mean(axis=0), dtype=float)


@register_aggregate
class TENAS(RankAggregate):
    """TE-NAS: rank of ``ntk_cond`` (lower is better) plus rank of ``linear_regions`` (higher is better)."""

    name = "tenas"
    INPUTS = (NTKCondition.name, LinearRegions.name)


@register_aggregate
class GARank(RankAggregate):
    """GA-rk: the equal-weight rank sum of ``ni``, ``naswot`` and ``logsynflow`` (smallest sum is best).

    The paper proposes "cooperating three heterogeneous score functions with rank-based search method":
    NI "as an indicator of the ability to distinguish two images", NASWOT "to estimate the ability of
    expression" and LogSynFlow "as the measurement of trainability" (Section 1); Tables 2-3 list "rk" as a
    method of its own. Its Section 3 ("The proposed algorithm") is empty in the text we have, so the
    arithmetic is not stated there. Readings:

    - each score is ranked over the population in its own better direction: NI ascending ("the small eta
      the better", Section 2.1), NASWOT eq. 2 descending ("An architecture shall learn better when inputs
      are well separated"), LogSynFlow eq. 7 descending (no direction is stated; the paper's Table 1
      reports its positive correlation with accuracy, as for SynFlow);
    - the three ranks are added with equal weights, as the authors' later version of the paper
      ("Rank-based Training-Free NAS Algorithm", its Algorithm "The Ranking Algorithm") does: the paper
      names no weights, and any other weighting would be ours;
    - ties share their average rank.

    The score is the mean of the three `normalized_rank` values (best 1, worst 1/N), higher is better;
    with rank_k = 1 for the best architecture under score k it equals (N + 1)/N - sum_k rank_k / (3N),
    so it orders the population exactly as the rank sum does, smallest sum first.
    """

    name = "garank"
    INPUTS = (NoiseImmunity.name, NASWOT.name, LOGSYNFLOW)
