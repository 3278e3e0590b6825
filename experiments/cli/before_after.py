"""Issue 18's before/after table: each point the issue raised, checked by running the real command.

Two source trees run side by side with one virtual environment (``PYTHONPATH`` picks the tree; the
Celery workers a command starts inherit it), so the same dependencies answer both:

    git archive 8246b97 | tar -x -C /tmp/before        # the tree before issue 18's work
    .venv/bin/python experiments/cli/before_after.py --before /tmp/before --after . \
        --out experiments/cli/results/before_after.json

Every check runs the real ``python -m nasfleet.cli`` (or a real Python import) at ``COLUMNS=100``,
in a fresh temporary directory, against real SQLite registries and a real Redis; a check the old tree
cannot run says why (its exit status and last line). The JSON holds every raw answer; the Markdown table
it prints is what the closing note shows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SEARCH = ["search", "--strategy", "random", "--space", "nb201", "--data", "synthetic", "--batch-size", "16",
          "--local-workers", "1"]  # fmt: skip
HEAVY = ("celery", "sqlmodel", "sqlalchemy", "fastapi", "torch")
LISTINGS = (["registry", "list", "--what", "jobs"], ["registry", "list", "--what", "results"],
            ["registry", "list", "--what", "tenants"], ["strategies", "list"], ["tenants", "list"],
            ["jobs", "list"], ["spaces", "list"], ["proxies", "list"])  # fmt: skip


@dataclass
class Answer:
    code: int | None  # None: killed at the timeout
    seconds: float
    out: str
    err: str

    @property
    def last(self) -> str:
        """The last line of text (stderr, else stdout), without the frame rich draws round an error."""
        lines = [line.strip(" │╭╮╰╯─") for line in (self.err or self.out).splitlines()]
        lines = [line for line in lines if line and not line.startswith(("Usage:", "Try '"))]
        return lines[-1][:160] if lines else ""


class Tree:
    """One source tree, run with this interpreter from its own temporary directory."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root.resolve(), name
        self.work = Path(tempfile.mkdtemp(prefix=f"nasfleet-{name}-"))
        self.env = {**os.environ, "PYTHONPATH": str(self.root), "COLUMNS": "100", "NO_COLOR": "1",
                    "FLWR_HOME": str(self.work / "flwr"), "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_UPDATE_CHECK": "1", "TERM": "dumb"}  # fmt: skip
        for key in ("NASFLEET_REGISTRY", "NASFLEET_BROKER"):
            self.env.pop(key, None)

    def registry(self, label: str) -> str:
        return f"sqlite:///{self.work / label}.db"

    def python(self, code: str, timeout: float = 60) -> Answer:
        return self._run([sys.executable, "-c", code], timeout)

    def cli(self, *args: str, timeout: float = 120) -> Answer:
        return self._run([sys.executable, "-m", "nasfleet.cli", *args], timeout)

    def _run(self, command: list[str], timeout: float) -> Answer:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=self.work, env=self.env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # fmt: skip
        try:
            out, err = process.communicate(timeout=timeout)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            code = None
        return Answer(code, time.perf_counter() - started, out, err)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "nasfleet.cli", *args], cwd=self.work, env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)  # fmt: skip


def _failed(answer: Answer) -> str:
    return "killed at the timeout" if answer.code is None else f"exit {answer.code}: {answer.last}"


def _count(registry: str, sql: str) -> Any:
    with sqlite3.connect(registry.removeprefix("sqlite:///")) as db:
        return db.execute(sql).fetchone()[0]


# -- the checks: each takes a tree and returns what a reader of the table needs ------------------------------
def help_time(tree: Tree) -> dict[str, Any]:
    times = [tree.cli("--help").seconds for _ in range(5)]
    return {"median_seconds": statistics.median(times), "times": times}


def version(tree: Tree) -> dict[str, Any]:
    answer = tree.cli("--version")
    return {"ok": answer.code == 0, "shown": answer.out.strip() if answer.code == 0 else _failed(answer)}


def python_api(tree: Tree) -> dict[str, Any]:
    probe = ("import sys, time; t = time.perf_counter(); from nasfleet import {name}; "
             "print(time.perf_counter() - t); print([m for m in {heavy} if m in sys.modules])")  # fmt: skip
    found = {}
    for name in ("build_subnet", "TenantClient"):
        answer = tree.python(probe.format(name=name, heavy=HEAVY))
        lines = answer.out.split("\n")
        found[name] = ({"ok": True, "import_seconds": float(lines[0]), "heavy_modules": lines[1]}
                       if answer.code == 0 else {"ok": False, "why": _failed(answer)})  # fmt: skip
    return found


def search_and_tables(tree: Tree) -> dict[str, Any]:
    """One search (budget 24, --out -): its JSON read from stdout; then every listing and its width."""
    registry = tree.registry("main")
    answer = tree.cli(*SEARCH, "--budget", "24", "--registry", registry, "--out", "-", timeout=400)
    found: dict[str, Any] = {"out_dash": answer.code == 0 and answer.out.lstrip().startswith("{")}
    if not found["out_dash"]:
        return {**found, "why": _failed(answer)}
    document = json.loads(answer.out)
    history = document["history"]
    scores = [entry["score"] for entry in history]
    found["best_score_drops"] = sum(b < a for a, b in itertools.pairwise(scores))
    shown = [entry.get("best_percentile") for entry in history]
    found["monotone_best"] = (None if None in shown else
                              {"drops": sum(b < a for a, b in itertools.pairwise(shown)),
                               "first": shown[0], "last": shown[-1]})  # fmt: skip
    job = document["service"]["job_id"]
    found["job_id"] = job
    found["prefix_show"] = tree.cli("registry", "show", job[:8], "--registry", registry).code == 0
    widths, formats, lines = {}, {}, {}
    for words in LISTINGS:
        key = " ".join(words)
        table = tree.cli(*words, "--registry", registry) if words[0] in ("registry", "jobs", "tenants") \
            else tree.cli(*words)  # fmt: skip
        widths[key] = max((len(line) for line in table.out.splitlines()), default=0) if table.code == 0 \
            else _failed(table)  # fmt: skip
        lines[key] = len(table.out.splitlines()) if table.code == 0 else None  # one job: wrapping shows here
        listed = tree.cli(*words, "--format", "json", *(["--registry", registry] if words[0] in
                          ("registry", "jobs", "tenants") else []))  # fmt: skip
        try:
            formats[key] = listed.code == 0 and json.loads(listed.out) is not None
        except json.JSONDecodeError:
            formats[key] = False
    found["table_widths"], found["table_lines"], found["json_listings"] = widths, lines, formats
    return found


def environment(tree: Tree) -> dict[str, Any]:
    """Which service commands read NASFLEET_REGISTRY and NASFLEET_BROKER (their help names them)."""
    found = {}
    for command in ("search", "simulate", "serve", "worker", "orchestrate", "registry list"):
        text = tree.cli(*command.split(), "--help").out
        found[command] = all(var in text for var in ("NASFLEET_REGISTRY", "NASFLEET_BROKER")) or (
            command == "registry list" and "NASFLEET_REGISTRY" in text
        )
    return found


def serve_port_taken(tree: Tree) -> dict[str, Any]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        answer = tree.cli("serve", "--host", "127.0.0.1", "--port", port, "--registry",
                          tree.registry("serve"), timeout=60)  # fmt: skip
    text = answer.out + answer.err
    announced = "http://" in text and text.index("http://") < max(text.lower().find("in use"), 0)
    return {"seconds": answer.seconds, "code": answer.code, "announced_first": announced, "last": answer.last}


def simulate_tier_limits(tree: Tree) -> dict[str, Any]:
    return {"option": "--tier-limits" in tree.cli("simulate", "--help").out}


def named_resume(tree: Tree) -> dict[str, Any]:
    registry = tree.registry("named")
    args = (*SEARCH, "--budget", "8", "--registry", registry, "--out", "named.json", "--name", "demo")
    first = tree.cli(*args, timeout=300)
    if first.code != 0:
        return {"ok": False, "why": _failed(first)}
    second = tree.cli(*args, timeout=300)
    jobs = _count(registry, "select count(*) from jobs")
    return {"ok": second.code == 0, "rerun_seconds": second.seconds, "jobs": jobs, "last": second.last}


def jobs_command(tree: Tree) -> dict[str, Any]:
    answer = tree.cli("jobs", "list", "--registry", tree.registry("main"))
    return {"ok": answer.code == 0, "last": "" if answer.code == 0 else _failed(answer)}


def interrupt(tree: Tree) -> dict[str, Any]:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) once 3 evaluations are stored."""
    registry = tree.registry("interrupt")
    process = tree.spawn(*SEARCH, "--budget", "200", "--registry", registry, "--out", "i.json")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
        try:
            if _count(registry, "select count(*) from evaluations") >= 3:
                break
        except sqlite3.Error:
            continue
    os.killpg(process.pid, signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate()
        code = None
    time.sleep(2)
    left = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout.split()
    for pid in left:  # what the command left behind: stopped here, by PID, as this script started them
        os.kill(int(pid), signal.SIGKILL)
    status = _count(registry, "select status from jobs")
    kept = _count(registry, "select count(*) from evaluations")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return {"code": code, "job_status": status, "evaluations_kept": kept, "processes_left": len(left),
            "message": lines[-1][:200] if lines else ""}  # fmt: skip


def no_broker(tree: Tree) -> dict[str, Any]:
    answer = tree.cli(*SEARCH, "--budget", "4", "--broker", "redis://127.0.0.1:1/0", "--registry",
                      tree.registry("nobroker"), "--out", "x.json", timeout=120)  # fmt: skip
    return {"seconds": answer.seconds, "code": answer.code, "last": answer.last}


def no_worker(tree: Tree) -> dict[str, Any]:
    answer = tree.cli(*SEARCH[:-2], "--local-workers", "0", "--budget", "4", "--broker",
                      "redis://127.0.0.1:6379/15", "--registry", tree.registry("noworker"), "--out", "x.json",
                      timeout=60)  # fmt: skip
    return {"seconds": answer.seconds, "code": answer.code, "last": answer.last}


def export(tree: Tree) -> dict[str, Any]:
    answer = tree.cli("export", "--space", "nb201", "--arch", ARCH, "--format", "onnx", "--out", "m.onnx")
    if answer.code != 0:
        return {"ok": False, "why": _failed(answer)}
    run = tree.python("import numpy, onnxruntime; s = onnxruntime.InferenceSession('m.onnx'); "
                      "x = numpy.zeros((2, 3, 32, 32), numpy.float32); print(s.run(None, {s.get_inputs()[0].name: x})[0].shape)")  # fmt: skip  # noqa: E501
    return {"ok": run.code == 0, "onnxruntime_output_shape": run.out.strip()}


CHECKS: dict[str, Callable[[Tree], dict[str, Any]]] = {
    "help": help_time, "version": version, "python_api": python_api, "search": search_and_tables,
    "environment": environment, "serve_port_taken": serve_port_taken, "tier_limits": simulate_tier_limits,
    "named_resume": named_resume, "jobs": jobs_command, "interrupt": interrupt, "no_broker": no_broker,
    "no_worker": no_worker, "export": export,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, default=Path("experiments/cli/results/before_after.json"))
    parser.add_argument("--only", nargs="*", default=list(CHECKS))
    args = parser.parse_args()
    trees = [Tree(args.before, "before"), Tree(args.after, "after")]
    found: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.only:
        for tree in trees:  # side by side: the same check on both trees before the next check
            print(f"{name}: {tree.name} …", file=sys.stderr, flush=True)
            found.setdefault(name, {})[tree.name] = CHECKS[name](tree)
            print(f"  {json.dumps(found[name][tree.name])[:300]}", file=sys.stderr, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(found, indent=2) + "\n")  # resumable: each check as it ends


if __name__ == "__main__":
    main()
