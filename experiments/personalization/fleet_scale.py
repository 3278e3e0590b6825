"""Issue 14's scale runs: one federation round with N simulated devices on this machine.

Each size is one real ``nasfleet simulate --rounds 1`` (Flower's simulation engine, the embedded Celery
service, local training on digits), timed from start to exit, with the peak of the whole process
tree's memory (the sum of every descendant's RSS, sampled every 0.5 s: the command, Ray's actors and
the Celery workers). A finished size is kept in the JSON and not run again.

    .venv/bin/python experiments/personalization/fleet_scale.py --sizes 4 16 64 256
    .venv/bin/python experiments/personalization/fleet_scale.py --plot-only      # fleet_scale.png

``--rerun`` runs the sizes again and replaces their kept results (after a change to the round). Each
result records the commit it ran on, and when each progress label (the devices' searches, each
training exchange) last printed, in seconds since the start (``phases``).

The settings (``--budget``, ``--train-epochs``) are the command's options, written into the results with
the service's default scorer (``scorer``; a result without one was run with ``fgnas``, the default
before stop 25).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from nasfleet.bounds import DEFAULT_AGGREGATE

HERE = Path(__file__).parent
OUT = HERE / "results" / "fleet_scale.json"


def _tree_rss(root: int) -> int:
    """Bytes resident in *root* and all its descendants (read from /proc; a process gone meanwhile is 0)."""
    parents, rss = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry.name)] = int(fields["PPid"])
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree, grew = tree | found, bool(found)
    return sum(rss.get(pid, 0) for pid in tree)


def run(clients: int, budget: int, epochs: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"fleet-{clients}-"))
    env = {**os.environ, "FLWR_HOME": str(work / "flwr"), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1"}  # fmt: skip
    command = [sys.executable, "-m", "nasfleet.cli", "simulate", "--clients", str(clients), "--rounds", "1",
               "--budget", str(budget), "--train-epochs", str(epochs), "--registry",
               f"sqlite:///{work / 'registry.db'}"]  # fmt: skip
    print(" ".join(command[1:]), file=sys.stderr, flush=True)
    commit = _commit()  # before the run: the code it started with
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    peak, root = [0], process.pid

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss(root))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert process.stdout is not None  # the command's stdout and stderr (Flower relays the round's to stdout)
    lines = [f"{time.perf_counter() - started:7.1f} s  {line.rstrip()}" for line in process.stdout]
    code = process.wait()
    wall = time.perf_counter() - started
    sampler.join()
    (work / "output.log").write_text("\n".join(lines) + "\n")  # each line with its seconds since the start
    return {"clients": clients, "budget": budget, "train_epochs": epochs, "scorer": DEFAULT_AGGREGATE,
            "commit": commit, "exit": code, "wall_seconds": wall, "peak_rss_gib": peak[0] / 2**30,
            "phases": _phases(lines), "stderr_tail": lines[-3:]}  # fmt: skip


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    return done.stdout.strip()


def _phases(lines: list[str]) -> dict[str, float]:
    """Seconds since the start at which each progress label (the text before its count) last printed."""
    last: dict[str, float] = {}
    for line in lines:
        seconds, _, text = line.strip().partition(" s  ")
        label, colon, count = text.rpartition(": ")
        if colon and count[:1].isdigit() and "/" in count:
            last[label] = float(seconds)
    return last


def plot(results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["clients"] for r in results]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(sizes, [r["wall_seconds"] / 60 for r in results], "o-")
    left.axhline(10, color="grey", linestyle="--", label="goal: 256 devices < 10 min")
    left.set(xscale="log", xlabel="devices", ylabel="wall time (min)", title="one round")
    left.legend()
    right.plot(sizes, [r["peak_rss_gib"] for r in results], "o-")
    right.set(xscale="log", xlabel="devices", ylabel="peak RSS of the process tree (GiB)")
    figure.tight_layout()
    figure.savefig(HERE / "fleet_scale.png", dpi=120)


def settings(result: dict[str, Any]) -> tuple[int, int, str]:
    """What a result was run with, besides its size."""
    return result["budget"], result["train_epochs"], result.get("scorer", "fgnas")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[4, 16, 64, 256])
    parser.add_argument("--budget", type=int, default=24)
    parser.add_argument("--train-epochs", type=int, default=20)
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--rerun", action="store_true", help="run the sizes again, replacing kept results")
    args = parser.parse_args()
    results: list[dict[str, Any]] = json.loads(OUT.read_text()) if OUT.exists() else []
    if not args.plot_only:
        for size in args.sizes:
            key = (size, args.budget, args.train_epochs, DEFAULT_AGGREGATE)
            kept = [r for r in results if (r["clients"], *settings(r)) == key]
            if kept and not args.rerun:
                continue
            result = run(size, args.budget, args.train_epochs)
            others = [r for r in results if r not in kept]
            results = sorted([*others, result], key=lambda r: (*settings(r), r["clients"]))
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps(result), file=sys.stderr, flush=True)
    plot([r for r in results if settings(r) == (args.budget, args.train_epochs, DEFAULT_AGGREGATE)])


if __name__ == "__main__":
    main()
