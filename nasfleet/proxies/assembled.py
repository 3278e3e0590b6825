"""Assembled scorers: AZ-NAS's rule of assembly applied to more members.

AZ-NAS (Lee & Ham, CVPR 2024) assembles complementary zero-cost proxies by summing the logarithms of their
normalized ranks (`nasfleet.proxies.aznas.log_rank_sum`): every member weighs the same, and a network that
ranks low on any one member is pulled down more than a sum of ranks would pull it. These aggregates add
members to AZ-NAS's four with that same rule and no weight of their own:

- ``aznas_meco``: AZ-NAS's expressivity, progressivity, trainability and FLOPs, plus MeCo (Jiang et al.,
  NeurIPS 2023), a label-free view of the feature maps' correlation that costs one forward pass of one
  sample.
- ``aznas_meco_fi``: the same plus FG-NAS's feature information S_FI (`fg_fi`), which reads the block
  outputs the probe's forward pass already recorded.

They were defined, with ``fgnas``, ``aznas`` and ``meco``, as the candidates for the service's default
scorer before any of them was measured; ``experiments/correlation/default_scorer.py`` states the rule that
chose among them and the development sample it used.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nasfleet.proxies.aggregate import register_aggregate
from nasfleet.proxies.aznas import AZNAS, log_rank_sum
from nasfleet.proxies.fgnas import FeatureInformation
from nasfleet.proxies.hybrid import RankAggregate
from nasfleet.proxies.meco import MeCo


@register_aggregate
class AZNASMeCo(RankAggregate):
    """AZ-NAS's four members and MeCo, assembled by the sum of log normalized ranks; label-free."""

    name = "aznas_meco"
    INPUTS: ClassVar[tuple[str, ...]] = (*AZNAS.INPUTS, MeCo.name)

    def fuse(self, ranks: np.ndarray) -> np.ndarray:
        return log_rank_sum(ranks)


@register_aggregate
class AZNASMeCoFI(AZNASMeCo):
    """`AZNASMeCo` plus FG-NAS's S_FI; label-free."""

    name = "aznas_meco_fi"
    INPUTS = (*AZNASMeCo.INPUTS, FeatureInformation.name)
