"""nasfleet as a Flower App, run the way Flower's documentation runs apps: ``flwr run`` on a local
simulation federation, the managed local SuperLink that ``flwr`` starts itself (Flower >= 1.26).

The same tiny round is run twice: once with the user's command, ``flwr run nasfleet/flower_app --stream``
(a fresh ``FLWR_HOME``, so Flower's default connection ``local`` with ``address = ":local:"``), and once
with ``nasfleet simulate``'s `simulate`, which submits the same App to a SuperLink of its own. Both must
deliver the same SubNet to each device, and ``simulate``'s output must hold no warning or notice (the
main job's "quiet" promise). The managed SuperLink outlives ``flwr run`` by Flower's design;
the test stops it (and what it started) by PID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nasfleet.processes import stop_pids
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.local_run import APP_DIR, FLOWER_ENV, flower_executable, free_port
from nasfleet.server.federation.simulation import simulate
from nasfleet.server.registry import Registry

DEVICES = 2
TINY = {"budget": 8, "ask-size": 8, "probe-batch": 16, "train-epochs": 1, "rounds": 1, "seed": 0}
TINY |= {"shared-baseline": False, "train-max-seconds": 30.0}
RUN_TIMEOUT_S = 300
NOISE = ("warning", "deprecat", "traceback", "terminating")


@pytest.fixture
def flower_home(tmp_path: Path) -> Iterator[Path]:
    """A fresh ``FLWR_HOME``; afterwards, the managed local SuperLink started under it is stopped."""
    home = tmp_path / "flwr-home"
    yield home
    managed = [pid for pid, command in processes() if "flower-superlink" in command and str(home) in command]
    stop_pids(managed)


def processes() -> Iterator[tuple[int, str]]:
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            yield int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue


def subnets(registry_url: str) -> dict[str, str]:
    """Each device's delivered SubNet (the arch of its job's result), by device name."""
    with Registry(registry_url) as registry:
        export = registry.export()
    arch_of = {r["job_id"]: r["arch"] for r in export["results"]}
    return {job["device"]: arch_of[job["id"]] for job in export["jobs"] if job["device"]}


def test_flwr_run_on_the_local_simulation_federation_is_the_round_of_nasfleet_simulate(
    tmp_path: Path, flower_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    by_flwr, by_simulate = f"sqlite:///{tmp_path / 'flwr.db'}", f"sqlite:///{tmp_path / 'simulate.db'}"
    overrides = " ".join(f"{key}={json.dumps(value)}" for key, value in {**TINY, "registry": by_flwr}.items())
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(flower_home)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"], env["FLWR_LOCAL_CONTROL_API_PORT"] = map(
        str, (free_port(), free_port())
    )
    command = [flower_executable("flwr"), "run", str(APP_DIR), "--stream", "--run-config", overrides]
    command += ["--federation-config", f"num-supernodes={DEVICES}"]

    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Starting local SuperLink" in output  # Flower's managed one, not a SuperLink of the test's
    assert "one personalized SubNet per device" in output and "Traceback" not in output, output
    assert "uv sync" not in output or "No additional application dependencies" in output, output
    from_flwr = subnets(by_flwr)
    assert sorted(from_flwr) == [f"device-{n}" for n in range(DEVICES)]

    settings: dict[str, Any] = {key.replace("-", "_"): value for key, value in TINY.items()}
    outcomes = simulate(
        RoundConfig(num_clients=DEVICES, registry=by_simulate, **settings), {"seed": 0}, cpus=2
    )

    assert [(o.status, o.error) for o in outcomes] == [("ok", "")] * DEVICES
    assert subnets(by_simulate) == from_flwr
    shown = capfd.readouterr()
    printed = shown.out + shown.err
    assert "one personalized SubNet per device" in printed and "local training, round 1" in printed
    quiet = [line for line in printed.splitlines() if any(w in line.lower() for w in NOISE)]
    assert quiet == [], "the main job's output must hold no warning or notice"
