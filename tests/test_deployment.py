"""Flower's deployment engine, end to end: the recipe of docs/deployment.md, run for real.

One ``flower-superlink`` and two ``flower-supernode`` processes (insecure, on free ports of 127.0.0.1,
each with its own temporary ``FLWR_HOME``), the Flower App ``nasfleet/flower_app`` submitted with
``flwr run`` through a SuperLink connection in the CLI's ``config.toml``, and one full round. The
ServerApp runs in a ``flwr-serverapp`` process the SuperLink starts, so the registry it writes is what
the test observes, with ``flwr ls`` for the run's status.

This test is never skipped: a missing Flower executable is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flwr.cli.config_utils import load_and_validate

from nasfleet.clients.app import DeviceSetup
from nasfleet.processes import stop_trees
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.local_run import APP_DIR, free_port, write_connection
from nasfleet.server.registry import Registry

HOST = "127.0.0.1"
CONNECTION = "nasfleet-test"
NUM_DEVICES = 2
STARTUP_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 240.0
POLL_S = 3.0
STOP_TIMEOUT_S = 15.0
QUIET_FLOWER = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}


def flower_executable(name: str) -> str:
    """The Flower console script ``name`` of this interpreter's environment (or on PATH); fail if absent."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed next to {sys.executable} nor on PATH: install flwr", pytrace=False
        )
    return found


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args!r} exited with {process.returncode}:\n{tail(log)}", pytrace=False)
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"nothing listens on {HOST}:{port} after {timeout} s:\n{tail(log)}", pytrace=False)


def tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:])


class Processes:
    """The processes a test started, and `stop`, which ends them and every process they started.

    Flower detaches some helpers into sessions of their own (the SuperLink's ``flower-superexec`` and its
    ``flwr-serverapp``), so a process group is not enough: `stop` signals each started process and each
    of its descendants, by PID, as found in ``/proc`` just before.
    """

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory, self.env = directory, env
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, command: list[str], home: Path) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.directory / f"{name}.log"
        home.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=self.directory, env={**self.env, "FLWR_HOME": str(home)},
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.started.append((process, log))
        return process, log

    def logs(self) -> str:
        return "\n".join(tail(log) for _, log in self.started)

    def stop(self) -> None:
        """Every started process and its descendants: SIGTERM, then SIGKILL (`nasfleet.processes`)."""
        stop_trees([process for process, _ in self.started], STOP_TIMEOUT_S)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    env = {**os.environ, **QUIET_FLOWER}
    # Flower starts its helpers (flower-superexec, flwr-serverapp, flwr-clientapp) by name from PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("FLWR_HOME", None)
    running = Processes(tmp_path, env)
    try:
        yield running
    finally:
        running.stop()


def flwr_cli(processes: Processes, home: Path, *args: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run ``flwr ARGS --format json`` with the CLI's ``FLWR_HOME``; its JSON reply, which must succeed."""
    command = [flower_executable("flwr"), *args, "--format", "json"]
    done = subprocess.run(
        command, cwd=processes.directory, env={**processes.env, "FLWR_HOME": str(home)},
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    try:
        reply: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])
    except ValueError:
        reply = {"success": False, "stdout": done.stdout}
    if done.returncode != 0 or not reply.get("success"):
        pytest.fail(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
            + processes.logs(),
            pytrace=False,
        )
    return reply


def test_the_flower_app_declares_every_round_and_device_key_with_the_codes_default() -> None:
    """``[tool.flwr.app.config]`` = RoundConfig + DeviceSetup keys, kebab-case, with their defaults;
    only ``partition-id``/``num-partitions`` are left to each SuperNode's node config."""
    config, warnings = load_and_validate(APP_DIR / "pyproject.toml")  # Flower's own check, modules included
    assert warnings == []
    components = config["tool"]["flwr"]["app"]["components"]
    assert components == {
        "serverapp": "nasfleet.server.federation.app:app",
        "clientapp": "nasfleet.clients.app:app",
    }
    declared = tomllib.loads((APP_DIR / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    defaults = {**vars(DeviceSetup()), **vars(RoundConfig())}
    expected = {key.replace("_", "-"): value for key, value in defaults.items()}
    del expected["partition-id"], expected["num-partitions"]
    assert declared == expected
    assert {key: type(value) for key, value in declared.items()} == {
        key: type(value) for key, value in expected.items()
    }, "a float default must be written as a float (60.0, not 60)"
    assert RoundConfig.from_run_config(declared) == RoundConfig()
    node = {"partition-id": 1, "num-partitions": NUM_DEVICES}
    assert DeviceSetup.from_config(node, declared) == DeviceSetup(partition_id=1, num_partitions=NUM_DEVICES)


def test_one_round_on_the_deployment_engine(tmp_path: Path, processes: Processes) -> None:
    started = time.monotonic()
    superlink_port = free_port()
    registry_url = f"sqlite:///{tmp_path / 'registry.db'}"

    superlink_address = f"{HOST}:{superlink_port}"
    superlink, log = processes.start(
        "superlink",
        [
            *(flower_executable("flower-superlink"), "--insecure"),
            *("--host", HOST, "--port", str(superlink_port), "--disable-runtime-dependency-installation"),
        ],
        tmp_path / "home-superlink",
    )
    wait_for_port(superlink_port, superlink, STARTUP_TIMEOUT_S, log)
    for partition in range(NUM_DEVICES):
        node_config = f"partition-id={partition} num-partitions={NUM_DEVICES}"
        if partition == 1:  # device-1's tier comes from its --node-config; device-0's is assigned
            node_config += ' tier="edge-gpu"'
        processes.start(
            f"supernode-{partition}",
            [
                *(flower_executable("flower-supernode"), "--insecure", "--superlink", superlink_address),
                *("--node-config", node_config, "--host", HOST, "--port", str(free_port())),
            ],
            tmp_path / f"home-supernode-{partition}",
        )

    cli_home = tmp_path / "home-cli"
    write_connection(cli_home, f"{HOST}:{superlink_port}", CONNECTION)
    overrides = (
        f"registry={json.dumps(registry_url)} num-clients={NUM_DEVICES} budget=8 ask-size=8 probe-batch=16 "
        "train-epochs=1 shared-baseline=false node-wait=60.0 query-timeout=120.0 train-timeout=120.0"
    )
    submitted = flwr_cli(processes, cli_home, "run", str(APP_DIR), CONNECTION, "--run-config", overrides)
    run_id = submitted["run-id"]
    assert submitted["fab-id"] == "nasfleet/nasfleet-federation"

    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = ""
    while time.monotonic() < deadline:
        [run] = flwr_cli(processes, cli_home, "ls", CONNECTION, "--run-id", str(run_id))["runs"]
        status = run["status"]
        if status.startswith("finished"):
            break
        for process, _ in processes.started:
            assert process.poll() is None, f"{process.args!r} exited early\n{processes.logs()}"
        time.sleep(POLL_S)
    assert status == "finished:completed", f"run {run_id}: {status!r}\n{processes.logs()}"

    with Registry(registry_url) as registry:
        export = registry.export()
    devices = {d["name"]: d for d in export["devices"]}
    assert sorted(devices) == ["device-0", "device-1"], processes.logs()
    assert all(d["status"] == "ok" and d["tenant"] == "default" for d in devices.values()), devices
    assert devices["device-1"]["tier"] == "edge-gpu", "a SuperNode's --node-config sets its device's tier"
    jobs = {job["device"]: job for job in export["jobs"]}
    assert sorted(jobs) == ["device-0", "device-1"] and all(j["status"] == "done" for j in jobs.values())
    reports: dict[str, list[dict[str, Any]]] = {}
    for report in export["reports"]:
        reports.setdefault(report["device"], []).append(report)
    assert sorted(reports) == ["device-0", "device-1"], "every device has training reports"
    for name, (first, second) in reports.items():  # the app's default: 2 rounds, no shared baseline
        assert first["job_id"] == second["job_id"] == jobs[name]["id"]
        assert first["arch"] == jobs[name]["best_arch"] != second["arch"], "round 2 trains another SubNet"
        for report in (first, second):
            assert 0.0 <= report["accuracy"] <= 1.0 and report["num_train"] > 0 and report["num_test"] > 0
    assert time.monotonic() - started < RUN_TIMEOUT_S + STARTUP_TIMEOUT_S
