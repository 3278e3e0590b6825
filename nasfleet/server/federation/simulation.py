"""A whole federation on Flower's simulation engine: N virtual SuperNodes, one nasfleet round.

`simulate` is ``nasfleet simulate``: Flower's supported path, ``flwr run`` on a SuperLink in simulation
mode (`nasfleet.server.federation.local_run`), the same App that ``flwr run nasfleet/flower_app`` runs.
`simulate_in_process` keeps Flower's deprecated in-process ``run_simulation`` for what only it allows:
a test or study that hands Flower its own ClientApp (a fault-injecting mod) and reads the round's
`RoundRecorder` in this process.
Each virtual device gets one CPU from Ray, so on a 2-core machine two devices work at a time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from nasfleet.protocol.wire import ConfigValue
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.local_run import FLOWER_ENV, FlowerRunError, run_app
from nasfleet.server.federation.outcomes import load_outcomes
from nasfleet.server.federation.round import DeviceOutcome, RoundRecorder


def simulate(
    config: RoundConfig, device_defaults: Mapping[str, ConfigValue], cpus: int | None = None
) -> list[DeviceOutcome]:
    """Run one round over ``config.num_clients`` simulated devices and return their outcomes.

    ``device_defaults`` is every device's setup (`nasfleet.clients.app.DeviceSetup` keys); Flower adds
    each device's ``partition-id`` and ``num-partitions``. Relative SQLite paths are made absolute here:
    the ServerApp runs in a process of Flower's.
    """
    with tempfile.TemporaryDirectory(prefix="nasfleet-outcomes-") as directory:
        outcomes_file = Path(directory) / "outcomes.pickle"
        registry = absolute_sqlite(config.registry)
        round_config = replace(config, registry=registry, outcomes_file=str(outcomes_file))
        run_config = {**round_config.to_run_config(), **device_defaults}
        run_app(run_config, config.num_clients, cpus or os.cpu_count() or 1)
        if not outcomes_file.exists():
            raise FlowerRunError("the round ended without its outcomes: the ServerApp failed (see above)")
        return load_outcomes(outcomes_file)


def absolute_sqlite(url: str) -> str:
    """*url* with a relative SQLite path made absolute against the current directory."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:") or os.path.isabs(database):
        return url
    return parsed.set(database=os.path.abspath(database)).render_as_string(hide_password=False)


@contextmanager
def flower_environment() -> Iterator[None]:
    """Telemetry and update checks off, and a throw-away ``FLWR_HOME`` unless one is set."""
    saved = {key: os.environ.get(key) for key in (*FLOWER_ENV, "FLWR_HOME")}
    with tempfile.TemporaryDirectory(prefix="nasfleet-flwr-") as home:
        os.environ.update(FLOWER_ENV)
        os.environ.setdefault("FLWR_HOME", home)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def simulate_in_process(
    config: RoundConfig, client_app: object, recorder: RoundRecorder, cpus: int = 2
) -> list[DeviceOutcome]:
    """The round on Flower's deprecated in-process ``run_simulation`` with *client_app* as every device's
    ClientApp; the outcomes are *recorder*'s. Flower logs its deprecation notice."""
    from flwr.simulation import run_simulation

    from nasfleet.server.federation.app import make_server_app

    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "include_dashboard": False},
    }
    with flower_environment():
        run_simulation(
            make_server_app(config, recorder),
            client_app,  # type: ignore[arg-type]
            config.num_clients,
            backend_config=backend,  # type: ignore[arg-type]
        )
    return recorder.outcomes
