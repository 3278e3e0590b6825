"""The tenant HTTP API: ``nasfleet serve`` and ``nasfleet tenants`` (see `nasfleet.server.api.app`)."""

from __future__ import annotations

from nasfleet.server.api.app import ApiSettings, create_app
from nasfleet.server.api.runner import OrchestratorLoop, running_service
from nasfleet.server.api.validation import Limits

__all__ = ["ApiSettings", "Limits", "OrchestratorLoop", "create_app", "running_service"]
