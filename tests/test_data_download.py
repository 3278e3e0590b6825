"""``nasfleet data cifar10``: a tiny CIFAR-10 archive in the official format, served by a real HTTP server
on 127.0.0.1, fetched by the real command; every failure leaves --dir as it was and names what was wrong."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.data.datasets import load_cifar10, load_dataset

BATCHES = {**{f"data_batch_{i}": 3 for i in range(1, 6)}, "test_batch": 2}  # images per batch
ARCHIVE = "/cifar-10-python.tar.gz"


def _rows(batch: int, size: int) -> np.ndarray:
    """Image i of batch b: every pixel of channel c is 40*c + 5*b + i, so each image is recognisable."""
    return np.stack([np.repeat(np.arange(3, dtype=np.uint8) * 40 + 5 * batch + i, 1024) for i in range(size)])


def _batch_bytes(batch: int, size: int) -> bytes:
    content = {
        b"batch_label": b"fake",
        b"data": _rows(batch, size),
        b"labels": [(batch + i) % 10 for i in range(size)],
    }
    return pickle.dumps(content, protocol=2)  # the official release's protocol


def _member(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def make_archive(skip: str = "", extra: tuple[tarfile.TarInfo, ...] = ()) -> bytes:
    """A gzipped tar laid out like the official one: ``cifar-10-batches-py/`` with 7 files and a readme."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        _member(tar, "cifar-10-batches-py", type=tarfile.DIRTYPE, mode=0o755)
        for index, (name, size) in enumerate(BATCHES.items()):
            if name != skip:
                _member(tar, f"cifar-10-batches-py/{name}", _batch_bytes(index, size), mode=0o644)
        meta = pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}, protocol=2)
        _member(tar, "cifar-10-batches-py/batches.meta", meta, mode=0o644)
        _member(tar, "cifar-10-batches-py/readme.html", b"<p>fake</p>", mode=0o644)
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.size else None)
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass
class Server:
    """What the test server answers (path -> body) and which paths it was asked for."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)  # path -> announced length larger than the body
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[Server]:
    """A real `ThreadingHTTPServer` on a free port of 127.0.0.1, in a thread, shut down after the test."""
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(state.short.get(self.path, len(body))))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def fetch(directory: Path, url: str, checksum: str, *extra: str) -> tuple[int, str, str]:
    """Run ``nasfleet data cifar10`` in-process; its exit code, stdout and stderr (unwrapped)."""
    argv = ["data", "cifar10", "--dir", str(directory), "--url", url, "--md5", checksum, *extra]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "1000"})  # no wrapped paths in the error box
    unwrap = " ".join(result.stderr.replace("│", " ").split())
    return result.exit_code, result.stdout, unwrap


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` (hidden ones too) with its bytes (None for a directory)."""
    if not directory.exists():
        return {}
    return {
        str(path.relative_to(directory)): None if path.is_dir() else path.read_bytes()
        for path in sorted(directory.rglob("*"))
    }


def test_the_command_fetches_verifies_and_extracts_what_the_loader_reads(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = make_archive()
    server.files[ARCHIVE] = archive
    target = tmp_path / "data"

    done = subprocess.run(
        [sys.executable, "-m", "nasfleet.cli", "data", "cifar10", "--dir", str(target),
         "--url", server.url + ARCHIVE, "--md5", md5(archive)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=os.environ.copy(),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert server.requests == [ARCHIVE]
    assert f"downloading {server.url}{ARCHIVE}" in done.stderr
    assert f"downloading: {len(archive)}/{len(archive)}" in done.stderr  # progress, in bytes
    batches = target / "cifar-10-batches-py"
    last = done.stdout.strip().splitlines()[-1]
    assert f"cifar10:{batches.resolve()}" in last
    assert f"NASFLEET_DATA={target.resolve()}" in last
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py"]  # no temporary left
    train = load_cifar10(batches, "train")
    assert len(train) == 15
    monkeypatch.setenv("NASFLEET_DATA", str(target))
    test = load_dataset("cifar10", "test")  # found through the variable the last line names
    assert test.labels.tolist() == [5, 6]
    pixel = test.images[1, 2, 0, 0]  # test batch index 5, image 1, channel 2: 40*2 + 25 + 1 = 106
    assert pixel == pytest.approx((106 / 255 - 113.9 / 255) / (66.7 / 255), abs=1e-5)


def test_a_complete_copy_is_kept_and_nothing_is_downloaded_unless_forced(
    server: Server, tmp_path: Path
) -> None:
    archive = make_archive()
    server.files[ARCHIVE] = archive
    assert fetch(tmp_path, server.url + ARCHIVE, md5(archive))[0] == 0
    before = snapshot(tmp_path)

    code, out, err = fetch(tmp_path, server.url + ARCHIVE, md5(archive))

    assert code == 0
    assert "already holds a complete CIFAR-10; nothing downloaded" in err
    assert "export NASFLEET_DATA=" in out.splitlines()[-1]
    assert server.requests == [ARCHIVE]  # the first run only
    assert snapshot(tmp_path) == before

    code, _, err = fetch(tmp_path, server.url + ARCHIVE, md5(archive), "--force")

    assert code == 0, err
    assert server.requests == [ARCHIVE, ARCHIVE]
    assert snapshot(tmp_path) == before  # replaced by the same content, nothing left beside it


def test_a_wrong_checksum_is_named_and_leaves_the_directory_as_it_was(server: Server, tmp_path: Path) -> None:
    archive = make_archive()
    server.files[ARCHIVE] = archive
    (tmp_path / "mine.txt").write_text("keep me")
    before = snapshot(tmp_path)

    code, _, err = fetch(tmp_path, server.url + ARCHIVE, "0" * 32)

    assert code == 1
    assert f"checksum mismatch: expected md5 {'0' * 32}, got {md5(archive)}" in err
    assert snapshot(tmp_path) == before


def test_a_directory_the_command_created_is_removed_again_on_failure(server: Server, tmp_path: Path) -> None:
    code, _, err = fetch(tmp_path / "new" / "data", server.url + "/missing.tar.gz", "0" * 32)

    assert code == 1
    assert f"download of {server.url}/missing.tar.gz failed: HTTP 404 Not Found" in err
    assert list(tmp_path.iterdir()) == []


def _zeroed(data: bytes) -> bytes:
    return data[:300] + b"\0" * 40 + data[340:]


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[:-200], _zeroed, lambda data: b"not a gzip file"],
    ids=["truncated", "corrupt", "not-gzip"],
)
def test_a_broken_archive_is_refused(
    server: Server, tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    archive = damage(make_archive())  # its checksum matches: the archive itself is broken
    server.files[ARCHIVE] = archive

    code, _, err = fetch(tmp_path, server.url + ARCHIVE, md5(archive))

    assert code == 1
    assert "archive is corrupt or truncated" in err
    assert snapshot(tmp_path) == {}


def test_a_transfer_shorter_than_announced_is_refused(server: Server, tmp_path: Path) -> None:
    archive = make_archive()
    server.files[ARCHIVE], server.short[ARCHIVE] = archive, len(archive) + 1000

    code, _, err = fetch(tmp_path, server.url + ARCHIVE, md5(archive))

    assert code == 1
    assert f"download of {server.url}{ARCHIVE}" in err
    assert f"{len(archive)}" in err and f"{len(archive) + 1000}" in err  # got N of M bytes
    assert snapshot(tmp_path) == {}


def _unsafe(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_unsafe("../escaped"), "has a '..' component"),
        (_unsafe("cifar-10-batches-py/../../escaped"), "has a '..' component"),
        (_unsafe("/tmp/nasfleet-escaped"), "is an absolute path"),
        (_unsafe("cifar-10-batches-py/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link (to '/etc/passwd')"),
        (_unsafe("cifar-10-batches-py/hard", tarfile.LNKTYPE, "/etc/passwd"), "is a link (to '/etc/passwd')"),
        (_unsafe("cifar-10-batches-py/fifo", tarfile.FIFOTYPE), "is a special file (a device or a FIFO)"),
    ],
    ids=["parent", "nested-parent", "absolute", "symlink", "hardlink", "fifo"],
)
def test_an_archive_with_an_unsafe_member_is_refused_before_anything_is_extracted(
    server: Server, tmp_path: Path, member: tarfile.TarInfo, reason: str
) -> None:
    archive = make_archive(extra=(member,))
    server.files[ARCHIVE] = archive
    target = tmp_path / "inside" / "data"

    code, _, err = fetch(target, server.url + ARCHIVE, md5(archive))

    assert code == 1
    assert f"archive member {member.name!r} is unsafe: it {reason}" in err
    assert snapshot(tmp_path) == {}  # nothing extracted anywhere, not even beside --dir
    assert not Path("/tmp/nasfleet-escaped").exists()


def test_an_archive_without_every_batch_is_refused(server: Server, tmp_path: Path) -> None:
    archive = make_archive(skip="test_batch")
    server.files[ARCHIVE] = archive

    code, _, err = fetch(tmp_path, server.url + ARCHIVE, md5(archive))

    assert code == 1
    assert (
        "archive is not CIFAR-10 in the python format: cifar-10-batches-py is missing ['test_batch']" in err
    )
    assert snapshot(tmp_path) == {}


def test_an_incomplete_copy_is_not_replaced_without_force(server: Server, tmp_path: Path) -> None:
    archive = make_archive()
    server.files[ARCHIVE] = archive
    partial = tmp_path / "cifar-10-batches-py"
    partial.mkdir()
    (partial / "data_batch_1").write_bytes(_batch_bytes(0, 3))
    before = snapshot(tmp_path)

    code, _, err = fetch(tmp_path, server.url + ARCHIVE, md5(archive))

    assert code == 1
    assert f"{partial} exists but is not a complete CIFAR-10" in err and "pass --force to replace it" in err
    assert (
        "'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5', 'test_batch', 'batches.meta']" in err
    )
    assert server.requests == []
    assert snapshot(tmp_path) == before

    code, _, err = fetch(tmp_path, server.url + ARCHIVE, md5(archive), "--force")

    assert code == 0, err
    assert len(load_cifar10(partial, "train")) == 15


def test_an_unreachable_server_is_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound but not listening: connections are refused
        code, _, err = fetch(tmp_path, f"http://127.0.0.1:{port}/x.tar.gz", "0" * 32)

    assert code == 1
    assert f"download of http://127.0.0.1:{port}/x.tar.gz failed:" in err and "refused" in err
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--md5", "abc", "md5 must be 32 hexadecimal digits, but got 'abc'"),
        ("--url", "ftp://example.org/x", "url must start with one of"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, option: str, value: str, message: str) -> None:
    argv = ["data", "cifar10", "--dir", str(tmp_path / "d"), option, value]
    result = CliRunner().invoke(app, argv)

    assert result.exit_code == 2
    assert message in " ".join(result.stderr.replace("│", " ").split())
    assert option in result.stderr
    assert not (tmp_path / "d").exists()


def test_help_loads_neither_urllib_nor_tarfile_nor_the_loader() -> None:
    code = (
        "import sys\nfrom nasfleet.cli import app\n"
        "try:\n    app(['data', 'cifar10', '--help'])\nexcept SystemExit:\n    pass\n"
        "lazy = ('tarfile', 'urllib.request', 'nasfleet.data.datasets')\n"
        "print(sorted(m for m in lazy if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines()[-1] == "[]"
    assert "--md5" in done.stdout  # the help was printed
