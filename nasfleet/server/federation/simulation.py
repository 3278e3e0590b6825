"""A whole federation on Flower's simulation engine: N virtual SuperNodes, one nasfleet round.

Flower writes state under ``FLWR_HOME``; unless the caller set it, the run uses a temporary directory
(removed afterwards) so nothing lands in the home directory, with telemetry and update checks off.
Each virtual device gets one CPU from Ray, so on a 2-core machine two devices work at a time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from flwr.simulation import run_simulation

from nasfleet.clients.app import make_client_app
from nasfleet.protocol.wire import ConfigValue
from nasfleet.server.federation.app import make_server_app
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.round import DeviceOutcome, RoundRecorder

QUIET_FLOWER = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


@contextmanager
def flower_environment() -> Iterator[None]:
    """Telemetry and update checks off, and a throw-away ``FLWR_HOME`` unless one is set."""
    saved = {key: os.environ.get(key) for key in (*QUIET_FLOWER, "FLWR_HOME")}
    with tempfile.TemporaryDirectory(prefix="nasfleet-flwr-") as home:
        os.environ.update(QUIET_FLOWER)
        os.environ.setdefault("FLWR_HOME", home)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def simulate(
    config: RoundConfig,
    device_defaults: Mapping[str, ConfigValue],
    recorder: RoundRecorder | None = None,
    cpus: int | None = None,
) -> list[DeviceOutcome]:
    """Run one round over ``config.num_clients`` simulated devices and return their outcomes.

    ``device_defaults`` is every device's setup (`nasfleet.clients.app.DeviceSetup` keys); Flower
    adds each device's ``partition-id`` and ``num-partitions``.
    """
    recorder = recorder or RoundRecorder(config.registry)
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus or os.cpu_count() or 1, "include_dashboard": False},
    }
    with flower_environment():
        run_simulation(
            make_server_app(config, recorder),
            make_client_app(device_defaults),
            config.num_clients,
            backend_config=backend,  # type: ignore[arg-type]
        )
    return recorder.outcomes
