"""Zero-cost proxies: the contract, the shared probe, FG-NAS, the baselines and population aggregates.

Importing this package fills the registries (`PROXIES`, `AGGREGATES`) with every built-in scorer;
third-party proxies of the ``nasfleet.proxies`` entry-point group join `PROXIES` when a name is resolved
(`discovery`). `nasfleet.testing.check_proxy` checks any proxy against the contract.
"""

from __future__ import annotations

from nasfleet.proxies import (
    activation,
    assembled,
    aznas,
    coer,
    fgnas,
    fgnas_paper,
    hybrid,
    meco,
    saliency,
    size,
)
from nasfleet.proxies.aggregate import AGGREGATES, Aggregate, get_aggregate, normalized_rank
from nasfleet.proxies.base import PROXIES, Proxy, ProxyError
from nasfleet.proxies.discovery import PROXY_PLUGINS, discover_proxies, get_proxy, load_proxy_plugins
from nasfleet.proxies.probe import Probe, ProbeBatch

__all__ = [
    "AGGREGATES",
    "PROXIES",
    "PROXY_PLUGINS",
    "Aggregate",
    "Probe",
    "ProbeBatch",
    "Proxy",
    "ProxyError",
    "activation",
    "assembled",
    "aznas",
    "coer",
    "discover_proxies",
    "fgnas",
    "fgnas_paper",
    "get_aggregate",
    "get_proxy",
    "hybrid",
    "load_proxy_plugins",
    "meco",
    "normalized_rank",
    "saliency",
    "size",
]
