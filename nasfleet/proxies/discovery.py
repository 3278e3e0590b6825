"""Finding proxies by name: the built-ins plus third-party plug-ins of the ``nasfleet.proxies`` group.

A plug-in distribution declares each `Proxy` class in its ``pyproject.toml``; the entry point's name must
equal the class's ``name``, and may be neither a built-in proxy's nor an aggregate's::

    [project.entry-points."nasfleet.proxies"]
    my_proxy = "my_package.proxies:MyProxy"

`load_proxy_plugins` enters every usable plug-in into `PROXIES`, the one table the engine, the aggregates
and the cache keys read; the engine calls it when it meets a name it does not know (and for ``all``), so
built-in names never pay for the scan. A broken plug-in is left out with a `PluginProblem`
(`nasfleet.plugins`) and never hides the built-ins or the other plug-ins.
"""

from __future__ import annotations

from nasfleet.plugins import PluginEntry, PluginGroup, PluginProblem
from nasfleet.proxies.aggregate import AGGREGATES
from nasfleet.proxies.base import PROXIES, Proxy, ProxyError

ENTRY_POINT_GROUP = "nasfleet.proxies"
PROXY_PLUGINS: PluginGroup[Proxy] = PluginGroup(
    "proxy", ENTRY_POINT_GROUP, Proxy, lambda: PROXIES, ProxyError,
    reserved=lambda: {name: "an aggregate" for name in AGGREGATES},
)  # fmt: skip


def discover_proxies() -> tuple[dict[str, PluginEntry[Proxy]], list[PluginProblem]]:
    """Every usable proxy by name (built-ins and plug-ins), and the plug-ins that had to be left out."""
    return PROXY_PLUGINS.discover()


def load_proxy_plugins() -> list[PluginProblem]:
    """Enter every usable proxy plug-in into `PROXIES` (once); the problems of the plug-ins left out."""
    entries, problems = discover_proxies()
    for name, entry in entries.items():
        PROXIES.setdefault(name, entry.cls)
    return problems


def get_proxy(name: str) -> Proxy:
    """A fresh instance of the proxy called ``name``, built-in or plug-in (then entered into `PROXIES`);
    `ProxyError` says why a broken plug-in of that name is unusable."""
    cls = PROXY_PLUGINS.find(name)
    PROXIES.setdefault(name, cls)
    return cls()
