"""One personalized search, with no backend: its configuration, the loop and its archive, the result.

The loop (`loop.SearchLoop`: ask, check, raw values for what is new, aggregate over the whole archive,
tell, refresh) is written once and driven two ways: `local.run_search` scores in this process, and a job
of the service (`nasfleet.server.service.jobs.JobRun`) answers from the shared cache and the workers.
`limits` turns a device's constraints and profile into the one feasibility check; `probe` rebuilds the
synthetic probe batch from a device's characteristics.
"""

from __future__ import annotations

from nasfleet.search.config import SearchConfig, SearchError
from nasfleet.search.local import ProxyCache, make_strategy, run_search, search_progress
from nasfleet.search.result import ArchiveEntry, HistoryEntry, SearchResult

__all__ = [
    "ArchiveEntry",
    "HistoryEntry",
    "ProxyCache",
    "SearchConfig",
    "SearchError",
    "SearchResult",
    "make_strategy",
    "run_search",
    "search_progress",
]
