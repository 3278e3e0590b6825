"""Load on the tenant HTTP API (issue 7): many clients polling while the service runs their jobs.

Starts ``nasfleet serve`` in embedded mode (its own SQLite broker and registry in a temporary directory,
``--workers`` local worker process) as a separate process on a free 127.0.0.1 port and creates
``--tenants`` tenants with ``nasfleet tenants create``. Then, for each think time of ``--think-ms``
(one phase each): submits ``--jobs-per-tenant`` fresh jobs per tenant over HTTP, runs ``--clients``
concurrent polling clients (`client.load`) for ``--duration`` seconds while the jobs run, and cancels
the jobs still unfinished. The CPU seconds of the server process, its workers and the load generator are
read from /proc around each phase. The server is stopped with SIGTERM at the end.

Writes report.json, report.md and latency.png (`report`) beside this file (or in ``--out``).

    python experiments/api_load/run.py                                   # the committed run, ~4 minutes
    python experiments/api_load/run.py --clients 100 --duration 20 --think-ms 100 --out /tmp/load
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from client import Run, load
from report import markdown, plot, summarize_phase

HERE = Path(__file__).resolve().parent
SERVE = [sys.executable, "-c", "import typer; from nasfleet.cli.serve import serve; typer.run(serve)"]
TENANTS = [sys.executable, "-c", "from nasfleet.cli.serve import tenants_app; tenants_app()"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def request_body(seed: int, budget: int) -> dict[str, Any]:
    """A small device: 3x16x16 inputs, 10 classes, rank-2 sketches (base64), a small NB201."""
    rng = np.random.default_rng(seed)
    histogram = [int(v) for v in rng.integers(20, 80, 10)]
    dim = 3 * 16 * 16
    arrays = {"class_means": (rng.standard_normal((10, dim)) * 0.5).astype("<f4"),
              "class_bases": (rng.standard_normal((10, 2, dim)) * 0.3).astype("<f4")}  # fmt: skip
    encoded = {name: {"shape": list(a.shape), "float32": base64.b64encode(a.tobytes()).decode()}
               for name, a in arrays.items()}  # fmt: skip
    characteristics = {"input_shape": [3, 16, 16], "num_classes": 10, "num_samples": sum(histogram),
                       "label_histogram": histogram, "labeled": True, "epsilon": 4.0, "delta": 1e-5,
                       **encoded}  # fmt: skip
    return {"space": "nb201", "space_options": {"channels": 8, "cells_per_stage": 1},
            "characteristics": characteristics, "strategy": "evolution", "budget": budget, "seed": seed,
            "ask_size": 8, "probe_batch_size": 16}  # fmt: skip


# -- the server and its processes ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(state: Path, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    options = ["--port", str(port), "--registry", f"sqlite:///{state / 'registry.sqlite'}",
               "--broker", f"sqlite:///{state / 'broker.sqlite'}", "--state-dir", str(state / "workers"),
               "--local-workers", str(args.workers), "--max-active-jobs", str(args.jobs_per_tenant),
               "--max-jobs-per-tenant", str(args.jobs_per_tenant),
               "--threads", str(args.threads)]  # fmt: skip
    with open(state / "serve.log", "ab") as output:
        proc = subprocess.Popen([*SERVE, *options], stdout=output, stderr=output, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nasfleet serve exited: {(state / 'serve.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("nasfleet serve did not come up in 120 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process *pid* (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def cpu_pressure() -> str:
    """The kernel's CPU pressure line (share of time some task waited for a CPU), if it has one."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


# -- tenants and jobs over the API ---------------------------------------------------------------------------
def create_keys(state: Path, count: int) -> dict[str, str]:
    registry = f"sqlite:///{state / 'registry.sqlite'}"
    keys = {}
    for index in range(count):
        name = f"tenant{index:02d}"
        done = subprocess.run(
            [*TENANTS, "create", name, "--registry", registry], capture_output=True, check=True
        )
        keys[name] = done.stdout.decode().strip()
    return keys


def submit_jobs(url: str, keys: dict[str, str], args: argparse.Namespace, phase: int) -> dict[str, list[str]]:
    jobs: dict[str, list[str]] = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        for t, (tenant, key) in enumerate(sorted(keys.items())):
            for j in range(args.jobs_per_tenant):
                body = request_body(1000 * phase + 100 * t + j, args.budget)
                response = http.post("/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"})
                response.raise_for_status()
                jobs.setdefault(tenant, []).append(response.json()["id"])
    return jobs


def cancel_unfinished(url: str, keys: dict[str, str], jobs: dict[str, list[str]]) -> dict[str, int]:
    """Cancel the jobs still queued or running; how many ended in each state."""
    states: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        for tenant, ids in jobs.items():
            headers = {"Authorization": f"Bearer {keys[tenant]}"}
            for job in ids:
                state = http.get(f"/v1/jobs/{job}", headers=headers).json()["status"]
                if state in ("queued", "running"):
                    http.post(f"/v1/jobs/{job}/cancel", headers=headers).raise_for_status()
                    state = "cancelled at the end"
                states[state] = states.get(state, 0) + 1
    return states


def run_phase(
    proc: subprocess.Popen[bytes], port: int, keys: dict[str, str], args: argparse.Namespace, phase: int,
    think_ms: float,
) -> tuple[Run, dict[str, Any]]:  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    began = time.perf_counter()
    jobs = submit_jobs(url, keys, args, phase)
    submitted = time.perf_counter() - began
    log(f"phase {phase}: {sum(map(len, jobs.values()))} jobs submitted; {args.clients} clients, "
        f"{think_ms:.0f} ms think, {args.duration:.0f} s")  # fmt: skip
    pids = {
        "server process (API + orchestrator thread)": [proc.pid],
        "local worker processes": descendants(proc.pid),
    }
    before = {name: sum(map(cpu_seconds, group)) for name, group in pids.items()}
    client_before, pressure = time.process_time(), cpu_pressure()
    run = asyncio.run(load(port, keys, jobs, args.clients, args.duration, think_ms / 1000, args.list_every))
    used = {name: sum(map(cpu_seconds, group)) - before[name] for name, group in pids.items()}
    used["load generator (this process)"] = time.process_time() - client_before
    extra = {"jobs_submitted": sum(map(len, jobs.values())), "submit_seconds": submitted,
             "end_states": cancel_unfinished(url, keys, jobs), "cpu_seconds": used,
             "cpu_pressure_before": pressure, "cpu_pressure_after": cpu_pressure()}  # fmt: skip
    return run, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--tenants", type=int, default=6)
    parser.add_argument("--jobs-per-tenant", type=int, default=2)
    parser.add_argument("--budget", type=int, default=48)
    parser.add_argument("--duration", type=float, default=45.0, help="seconds per phase")
    parser.add_argument("--think-ms", type=float, nargs="+", default=[1000.0, 250.0, 50.0])
    parser.add_argument("--list-every", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="local worker processes of the server")
    parser.add_argument("--threads", type=int, default=40, help="the server's request threads")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    runs, phases = [], []
    with tempfile.TemporaryDirectory(prefix="nasfleet-api-load-") as directory:
        state, port = Path(directory), free_port()
        log(f"starting nasfleet serve on 127.0.0.1:{port} in {state}")
        proc = start_server(state, port, args)
        try:
            keys = create_keys(state, args.tenants)
            machine = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0],
                       "cpu_pressure_at_start": cpu_pressure(), "python": platform.python_version(),
                       "platform": platform.platform()}  # fmt: skip
            for phase, think_ms in enumerate(args.think_ms):
                run, extra = run_phase(proc, port, keys, args, phase, think_ms)
                runs.append(run)
                phases.append(summarize_phase(run, think_ms, args.duration, extra))
                stats = phases[-1]["latency_ms"]["all"]
                log(f"phase {phase}: {phases[-1]['throughput_rps']:.0f} req/s, p50 {stats['p50']:.1f} ms, "
                    f"p95 {stats['p95']:.1f} ms, p99 {stats['p99']:.1f} ms")  # fmt: skip
        finally:
            stop_server(proc)
    report = {"command": " ".join(["python", "experiments/api_load/run.py", *sys.argv[1:]]),
              "client": "asyncio, one keep-alive HTTP/1.1 connection per client (a minimal GET client)",
              "config": {**vars(args), "out": os.path.relpath(args.out, HERE.parent.parent)},
              "machine": machine, "phases": phases}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(runs, report, args.out / "latency.png")
    (args.out / "report.md").write_text(markdown(report))
    log(f"wrote {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
