"""``nasfleet simulate`` on Flower's current simulation path: ``flwr run`` against a SuperLink of its own.

Flower deprecated ``flwr.simulation.run_simulation``; the supported way to simulate is to submit the
Flower App to a SuperLink in simulation mode with ``flwr run`` (Flower's "Run simulations" guide). So
`run_app` does what a Flower user does by hand, with nasfleet's App (`APP_DIR`, the same definition
``flwr run`` and the deployment engine use):

1. a private ``FLWR_HOME`` (a temporary directory) whose ``config.toml`` names one SuperLink connection;
2. ``flower-superlink --simulation`` on a free loopback port, with runtime dependency installation off
   (nasfleet is already installed here), in a process group of its own;
3. ``flwr run APP_DIR nasfleet --stream`` with the round as a run-config file and the federation's size
   (``num-supernodes``) and CPUs as ``--federation-config``; its output is passed on, less Flower's own
   INFO log lines and the notices `flower_noise` names (why each is dropped, not fixed, is written there);
4. the SuperLink's whole process group is stopped, whatever happened.

Flower runs the ServerApp in a ``flwr-serverapp`` process, so the round's outcomes come back through
the ``outcomes-file`` the round writes (`nasfleet.server.federation.outcomes`).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import tomli_w

from nasfleet.processes import stop_trees
from nasfleet.protocol.wire import ConfigValue

APP_DIR = Path(__file__).resolve().parents[2] / "flower_app"
CONNECTION = "nasfleet"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
#: The environment of every Flower process the run starts. Ray's variable opts in to its future default
#: (not to override CUDA_VISIBLE_DEVICES with num_gpus=0), which is what its FutureWarning asks for.
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}
#: Lines of Flower's that are dropped from the streamed output: its INFO/DEBUG log lines (start-up chatter
#: such as "Starting logstream"; nasfleet prints its own progress), the CLI's run bookkeeping, and two
#: WARNINGs Flower emits unconditionally, which no setting of ours can avoid: the default-federation-size
#: notice (printed even when num-supernodes is given) and Ray's "Manually terminating ClientAppActor"
#: (printed whenever the simulation shuts its actors down, i.e. at the end of every run).
FLOWER_NOISE = re.compile(
    r"^(?:\x1b\[\d+m)?(?:INFO|DEBUG)\s*(?:\x1b\[0m)?\s*:"
    r"|^Using SuperLink: |^Successfully (?:started run|installed) "
    r"|Since flwr 1\.32, default simulated SuperNodes|Manually terminating ClientAppActor"
    r"|To change federation size|flwr federation simulation-config"
)


class FlowerRunError(RuntimeError):
    """The SuperLink did not start, or ``flwr run`` failed; the message says which and where its log is."""


def run_app(
    run_config: Mapping[str, ConfigValue], num_supernodes: int, cpus: int, app_dir: Path = APP_DIR
) -> None:
    """Run the Flower App in *app_dir* once on *num_supernodes* simulated SuperNodes (one CPU each, *cpus*
    in all) with *run_config* overriding its config, printing its filtered output as it streams."""
    with tempfile.TemporaryDirectory(prefix="nasfleet-flwr-") as home:
        # Flower starts its helpers (flower-superexec, flwr-serverapp, flwr-simulation) by name from PATH
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": home, "PATH": path}
        with superlink(Path(home), env) as address:
            write_connection(Path(home), address)
            config_file = Path(home) / "run-config.toml"
            config_file.write_text(tomli_w.dumps(dict(run_config)))
            federation = f"num-supernodes={num_supernodes} client-resources-num-cpus=1"
            federation += f" init-args-num-cpus={cpus}"
            command = [flower_executable("flwr"), "run", str(app_dir), CONNECTION, "--stream"]
            command += ["--run-config", str(config_file), "--federation-config", federation]
            stream(command, env)


def stream(command: list[str], env: Mapping[str, str]) -> None:
    """Run *command*, printing each output line that is not `FLOWER_NOISE`; `FlowerRunError` if it fails."""
    kept: list[str] = []
    with subprocess.Popen(
        command, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if FLOWER_NOISE.search(line) is None:
                sys.stdout.write(line)
                sys.stdout.flush()
                kept = [*kept[-20:], line]
    if process.returncode != 0:
        raise FlowerRunError(f"flwr run exited with status {process.returncode}: {''.join(kept).strip()}")


@contextmanager
def superlink(home: Path, env: Mapping[str, str]) -> Iterator[str]:
    """A ``flower-superlink --simulation`` on a free loopback port, logging to *home*; yields its address.

    It and every process it started (its SuperExec and the ``flwr-serverapp`` and ``flwr-simulation``
    processes, which Flower detaches into sessions of their own) are stopped on the way out.
    """
    port = free_port()
    log = home / "superlink.log"
    command = [flower_executable("flower-superlink"), "--insecure", "--simulation"]
    command += ["--disable-runtime-dependency-installation", "--host", HOST, "--port", str(port)]
    command += ["--database", str(home / "state.db"), "--log-file", str(log)]
    process = subprocess.Popen(
        command, env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_healthy(process, port, log)
        yield f"{HOST}:{port}"
    finally:
        stop_trees([process])


def wait_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Return once the SuperLink on *port* answers its health check; `FlowerRunError` if it exits or
    does not answer within `START_TIMEOUT_S`."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FlowerRunError(f"flower-superlink exited with status {process.returncode}: {tail(log)}")
        with suppress(OSError), urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1) as reply:
            if reply.status == 200:
                return
        time.sleep(0.2)
    raise FlowerRunError(f"flower-superlink did not answer on {HOST}:{port} within {START_TIMEOUT_S:.0f} s")


def tail(log: Path, lines: int = 15) -> str:
    """The last *lines* of *log*, or a note that there is none."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"


def write_connection(home: Path, address: str, name: str = CONNECTION) -> None:
    """The CLI's ``config.toml`` in *home* (created if need be): one insecure SuperLink connection,
    *name*, the default."""
    config = {"superlink": {"default": name, name: {"address": address, "insecure": True}}}
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(tomli_w.dumps(config))


def flower_executable(name: str) -> str:
    """Flower's console script *name*, beside this interpreter (a venv's bin) or else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port
