"""Stopping a process with every process it started, including those that left its session.

Flower detaches some helpers into sessions of their own (a SuperLink's ``flower-superexec`` and the
``flwr-serverapp`` and ``flwr-simulation`` processes it starts), so signalling a process group misses
them. `stop_trees` finds each process's descendants in ``/proc`` just before signalling them, by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

STOP_TIMEOUT_S = 10.0


def descendants(pid: int) -> list[int]:
    """The live descendants of ``pid``, children before grandchildren (from ``/proc``; none elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(0), [])
        found += kids
        todo += kids
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    if not Path("/proc/self/stat").exists():  # no procfs: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_trees(started: Sequence[subprocess.Popen[bytes]], timeout: float = STOP_TIMEOUT_S) -> None:
    """`stop_pids` on the started processes (newest first), then reap them."""
    stop_pids([process.pid for process in reversed(started)], timeout, reap=started)
    for process in started:
        process.wait(timeout=timeout)


def stop_pids(
    roots: Sequence[int], timeout: float = STOP_TIMEOUT_S, reap: Sequence[subprocess.Popen[bytes]] = ()
) -> None:
    """SIGTERM every process of the trees under *roots*, SIGKILL those alive after *timeout* seconds;
    *reap* are the roots this process started (waited for, so that they leave no zombie)."""
    targets: list[int] = []
    for pid in roots:
        targets += [*descendants(pid), pid]
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in reap:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    while any(map(alive, targets)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in filter(alive, targets):
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
