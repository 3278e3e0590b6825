"""The web dashboard: a tenant's jobs, one job's progress, best-so-far curve, SubNet and archive, and its
fleet of devices with their SubNets, limits, latencies and training reports.

Served by ``nasfleet serve`` at ``/dashboard`` beside the API, and alone by ``nasfleet dashboard``. It
reads the registry and nothing else; a tenant logs in with the API's own keys and sees only its own jobs
(see `nasfleet.dashboard.sessions`). Everything it shows comes from the server: pages rendered from the
package's templates, plots as inline SVG (`nasfleet.dashboard.plots`), one small script; nothing is
fetched from the internet.
"""

from __future__ import annotations

from nasfleet.dashboard.app import MOUNT, create_dashboard, standalone_app
from nasfleet.dashboard.sessions import SessionStore

__all__ = ["MOUNT", "SessionStore", "create_dashboard", "standalone_app"]
