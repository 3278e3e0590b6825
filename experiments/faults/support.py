"""Processes and private servers of the fault benchmark: started, found, faulted and always cleaned up.

Every process the benchmark starts carries ``NASFLEET_FAULTS_MARK=<token>`` in its environment (one
token per `Tracker`). Children inherit it (Celery's pool processes, a worker that `nasfleet orchestrate`
started in a session of its own, PostgreSQL's backends, RabbitMQ's epmd), so `Tracker.kill_all` finds
and SIGKILLs, by pid, exactly the processes this benchmark started and their descendants, orphaned or
not, and nothing else. It runs when a cell ends, on SIGINT/SIGTERM/SIGHUP and at exit.

Private servers listen on loopback only, keep their data in a temporary directory, and are never the
system's own (5432, 6379, 5672): Redis (``--save '' --appendonly no``), PostgreSQL (``initdb`` + ``pg_ctl``
as the ``postgres`` user) and a second RabbitMQ node (its own node name, ports, epmd port, mnesia and log
directories, no plugins).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

MARK = "NASFLEET_FAULTS_MARK"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the process table ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    cmdline: str
    cpu_s: float  # user + system time so far
    start: int  # clock ticks after boot: with the pid, names one process (pids are reused)


def proc_info(pid: int) -> ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] == "Z":
        return None  # a zombie is dead: only its parent's wait is missing
    ticks = int(fields[11]) + int(fields[12])
    return ProcInfo(pid, int(fields[1]), cmdline.strip(), ticks / CLK_TCK, int(fields[19]))


def _has_mark(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def descendants(root: int, table: dict[int, ProcInfo]) -> set[int]:
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    return proc_info(pid) is not None


def is_celery(info: ProcInfo) -> bool:
    return "celery" in info.cmdline and "worker" in info.cmdline


# -- what this benchmark started -----------------------------------------------------------------------------
class Tracker:
    """The processes of one cell: spawned with the mark, found by it, killed by pid at the end."""

    live: ClassVar[list[Tracker]] = []

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self.popens: list[subprocess.Popen[bytes]] = []
        # Every (pid, start) ever seen marked: a server may later overwrite its environment with its
        # process title (redis-server, PostgreSQL), so the mark alone cannot find it at the end.
        self.seen: set[tuple[int, int]] = set()
        Tracker.live.append(self)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **(extra or {}), MARK: self.token}

    def spawn(
        self,
        command: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start *command* in a session of its own, output appended to *log_path*."""
        with open(log_path, "ab") as output:
            output.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(command)}\n".encode())
            output.flush()
            proc = subprocess.Popen(list(command), stdout=output, stderr=subprocess.STDOUT, cwd=cwd,
                                    env=self.env(env), start_new_session=True)  # fmt: skip
        self.popens.append(proc)
        return proc

    def run(self, command: Sequence[str], log_path: Path, timeout_s: float = 120.0) -> None:
        """Run *command* to its end (marked; killed with the rest if it hangs); raise if it fails."""
        proc = self.spawn(command, log_path)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{command[0]} did not finish in {timeout_s} s; see {log_path}") from None
        if rc != 0:
            tail = log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{' '.join(command[:3])} exited with {rc}:\n{tail}")

    def marked(self) -> dict[int, ProcInfo]:
        """Every live process that carries this tracker's mark."""
        needle = f"{MARK}={self.token}".encode()
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _has_mark(int(entry.name), needle):
                info = proc_info(int(entry.name))
                if info is not None:
                    found[info.pid] = info
                    self.seen.add((info.pid, info.start))
        return found

    def _seen_alive(self) -> list[int]:
        return [
            pid for pid, start in self.seen if (info := proc_info(pid)) is not None and info.start == start
        ]

    def kill_all(self) -> int:
        """SIGKILL every process started here: each spawned one's process group, every process that
        carries the mark or ever did (repeatedly: a dying parent may still fork); how many."""
        killed: set[int] = set()
        for proc in self.popens:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                killed.add(proc.pid)
        for _ in range(20):
            pids = [pid for pid in {*self.marked(), *self._seen_alive()} if pid != os.getpid()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            time.sleep(0.1)
        for proc in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self in Tracker.live:
            Tracker.live.remove(self)
        return len(killed)


def _kill_everything() -> None:
    for tracker in list(Tracker.live):
        tracker.kill_all()


def install_cleanup() -> None:
    """Kill every tracked process at exit; SIGINT, SIGTERM and SIGHUP end the run through the finally
    blocks (which stop the cell's servers and kill its processes)."""
    atexit.register(_kill_everything)

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, leave)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored


# -- ports ---------------------------------------------------------------------------------------------------
def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int, avoid: Sequence[int] = (5432, 6379, 5672, 4369, 25672, 15672)) -> int:
    """*preferred* if free, else a free loopback port; never one of the system services'."""
    if preferred not in avoid and port_free(preferred):
        return preferred
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in avoid:
            return port
    raise RuntimeError("no free loopback port")


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition: object, timeout_s: float, what: str, step_s: float = 0.1) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(step_s)


# -- private servers -----------------------------------------------------------------------------------------
class Server:
    """A private server of one cell on a loopback *port* (the one asked for if free, see `pick_port`);
    `restart` is the fault (kill, *down_s* away, start again)."""

    name = "server"

    def __init__(self, tracker: Tracker, directory: Path, port: int) -> None:
        self.tracker, self.directory = tracker, directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_path = directory / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = pick_port(port)

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Best effort, at the end of a cell (`Tracker.kill_all` follows)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self, down_s: float) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()


class RedisServer(Server):
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", str(self.directory)]  # fmt: skip
        self.proc = self.tracker.spawn(command, self.log_path)
        wait_until(lambda: port_open(self.port), 20, f"redis-server on {self.port}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


def pg_bin() -> Path | None:
    found = sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/")))
    return found[-1] if found and (found[-1] / "pg_ctl").exists() else None


class PostgresServer(Server):
    """initdb + pg_ctl as the ``postgres`` user (trust auth on loopback, fsync off); `restart` is an
    immediate shutdown (a crash: no checkpoint, connections cut) and a start (crash recovery)."""

    name = "postgres"

    def __init__(self, tracker: Tracker, directory: Path, port: int) -> None:
        super().__init__(tracker, directory, port)
        binary = pg_bin()
        if binary is None or shutil.which("runuser") is None:
            raise RuntimeError(f"no PostgreSQL binaries in {PG_BIN_GLOB} (or no runuser)")
        self.bin = binary
        self.data = directory / "data"
        shutil.chown(directory, "postgres")
        self.tracker.run(self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                                           "--no-sync"), self.log_path)  # fmt: skip

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, program: str, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", str(self.bin / program), *args]

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=200")  # fmt: skip
        self.tracker.run(self._as_postgres("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                                           str(self.directory / "server.log"), "-w", "start"),
                         self.log_path)  # fmt: skip

    def kill(self) -> None:
        self.tracker.run(self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"),
                         self.log_path)  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self.kill()

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class RabbitServer(Server):
    """A second RabbitMQ node: own node name, AMQP/distribution/epmd ports, mnesia and logs, no plugins."""

    name = "rabbitmq"
    SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")

    def __init__(self, tracker: Tracker, directory: Path, port: int) -> None:
        if not self.SCRIPT.exists():
            raise RuntimeError(f"no RabbitMQ server script at {self.SCRIPT}")
        super().__init__(tracker, directory, port)
        self.dist_port = pick_port(port + 20000)
        self.epmd_port = pick_port(4379)
        home = directory / "home"
        for sub in ("home", "mnesia", "log"):
            (directory / sub).mkdir(exist_ok=True)
        (directory / "enabled_plugins").write_text("[].\n")
        (directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (directory / "env.conf").write_text("")
        self.env = {
            "HOME": str(home), "RABBITMQ_CONF_ENV_FILE": str(directory / "env.conf"),
            "RABBITMQ_NODENAME": f"nasfleet-faults-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port), "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1", "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }  # fmt: skip

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        self.proc = self.tracker.spawn([str(self.SCRIPT)], self.log_path, env=self.env, cwd=self.directory)
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"the private RabbitMQ exited with {proc.returncode}:\n{tail}")
            return port_open(self.port)

        wait_until(up, 90, f"the private RabbitMQ on {self.port}", step_s=0.25)

    def kill(self) -> None:
        """SIGKILL the node (its process group: the script and beam.smp); its epmd lives on."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        wait_until(lambda: not port_open(self.port), 10, "the RabbitMQ port to close")


def nasfleet_command() -> list[str]:
    script = Path(sys.executable).with_name("nasfleet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nasfleet.cli"]
