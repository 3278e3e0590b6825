"""Outputs never damage their target: FIFOs, devices and links stay what they are, modes follow the umask,
a missing directory is an error, and a tenant's key file is never overwritten.

The command-line tests run the real ``nasfleet`` console script in a child process (as a user would, and
so that a FIFO's reader and writer are separate processes); the rest call the writer directly.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nasfleet.cli import app
from nasfleet.cli.outputs import ExclusiveFile, OutputError, check_output, write_csv, write_output
from nasfleet.server.registry import Registry
from nasfleet.spaces import get_space

NASFLEET = Path(sys.executable).with_name("nasfleet")
TIMEOUT_S = 300


def _nasfleet(*args: str, **options: object) -> subprocess.CompletedProcess[str]:
    command = [str(NASFLEET)] if NASFLEET.is_file() else [sys.executable, "-m", "nasfleet.cli"]
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*command, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False, **options
    )


def _cli(*args: str) -> tuple[int, str]:
    """In-process run: exit code and output, rich's box borders and line wraps collapsed to spaces."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


@pytest.fixture
def archs(tmp_path: Path) -> Path:
    space, rng = get_space("nb201"), np.random.default_rng(3)
    path = tmp_path / "archs.txt"
    path.write_text("".join(space.encode(space.sample(rng)) + "\n" for _ in range(3)))
    return path


def _expected_csv(archs: Path) -> list[list[str]]:
    space = get_space("nb201")
    rows = [["arch", "params", "flops"]]
    for text in archs.read_text().split():
        cost = space.cost(space.decode(text), 10, (3, 32, 32))
        rows.append([text, str(cost.params), str(cost.flops)])
    return rows


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.fixture
def umask_027() -> Iterator[int]:
    previous = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(previous)


# -- the real command ------------------------------------------------------------------------------------
def test_a_fifo_is_written_in_place_and_stays_a_fifo(tmp_path: Path, archs: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        done = _nasfleet("space", "cost", "--archs", str(archs), "--out", str(fifo))
    finally:
        if reader.is_alive() and not received:  # the command never opened it: release the reader
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=30)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert _rows(received[0].decode()) == _expected_csv(archs)
    assert f"wrote 3 rows to {fifo}" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archs.txt", "pipe"]  # no temporary left


def test_dev_stdout_is_written_through_and_never_replaced(archs: Path) -> None:
    assert Path("/dev/stdout").is_symlink()
    done = _nasfleet("space", "cost", "--archs", str(archs), "--out", "/dev/stdout")
    assert done.returncode == 0, done.stderr
    assert Path("/dev/stdout").is_symlink()  # as root, the old writer replaced it with a regular file
    assert _rows(done.stdout) == _expected_csv(archs)  # only the CSV: the message goes to stderr
    assert "wrote 3 rows to /dev/stdout" in done.stderr


def test_a_new_file_gets_the_umasks_mode_in_a_real_run(tmp_path: Path, archs: Path) -> None:
    out = tmp_path / "costs.csv"
    done = _nasfleet(
        "space", "cost", "--archs", str(archs), "--out", str(out), preexec_fn=lambda: os.umask(0o002)
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o664  # 0o666 & ~0o002; the old writer gave 0o600
    assert _rows(out.read_text()) == _expected_csv(archs)


def test_a_key_file_is_never_overwritten(tmp_path: Path) -> None:
    url, key_file = f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "acme.key"
    first = _nasfleet("tenants", "create", "acme", "--registry", url, "--key-file", str(key_file))
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""  # the key is in the file only
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = _nasfleet(
        "tenants", "create", "acme", "--registry", url, "--key-file", str(key_file), "--exist-ok"
    )
    assert again.returncode != 0
    message = re.sub(r"[\s│╭╮╰╯─]+", " ", again.stderr)
    assert "--key-file" in message and str(key_file) in message and "exists" in message, message
    assert key_file.read_text().strip() == key
    with Registry(url) as registry:
        tenant = registry.verify_api_key(key)
        assert tenant is not None and tenant.name == "acme"
        assert len(registry.list_api_keys()) == 1  # the refused run created no key


# -- in process: modes, links, missing directories, key files ------------------------------------------------
def test_a_new_file_gets_0666_less_the_umask(tmp_path: Path, archs: Path, umask_027: int) -> None:
    out = tmp_path / "costs.csv"
    code, output = _cli("space", "cost", "--archs", str(archs), "--out", str(out))
    assert code == 0, output
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask_027 == 0o640


def test_an_existing_file_is_replaced_atomically_and_keeps_its_mode(tmp_path: Path, archs: Path) -> None:
    out = tmp_path / "costs.csv"
    out.write_text("previous\n")
    out.chmod(0o604)
    inode = out.stat().st_ino
    code, output = _cli("space", "cost", "--archs", str(archs), "--out", str(out))
    assert code == 0, output
    assert out.stat().st_ino != inode  # a new file moved into place, not the old one rewritten
    assert stat.S_IMODE(out.stat().st_mode) == 0o604
    assert _rows(out.read_text()) == _expected_csv(archs)


def test_a_link_to_dev_null_stays_a_link(tmp_path: Path, archs: Path) -> None:
    link = tmp_path / "discard.csv"
    link.symlink_to("/dev/null")
    code, output = _cli("space", "cost", "--archs", str(archs), "--out", str(link))
    assert code == 0, output
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_link_to_a_regular_file_stays_a_link_and_its_target_is_written(tmp_path: Path, archs: Path) -> None:
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "costs.csv"
    target.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(Path("data") / "costs.csv")  # relative, as links often are
    code, output = _cli("space", "cost", "--archs", str(archs), "--out", str(link))
    assert code == 0, output
    assert link.is_symlink() and os.readlink(link) == str(Path("data") / "costs.csv")
    assert _rows(target.read_text()) == _expected_csv(archs)
    assert sorted(p.name for p in target.parent.iterdir()) == ["costs.csv"]


@pytest.mark.parametrize("command", ["cost", "export"])
def test_a_missing_directory_is_an_error_naming_it_and_nothing_is_created(
    tmp_path: Path, archs: Path, command: str
) -> None:
    missing = tmp_path / "no" / "such"
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    if command == "export":
        Registry(url).close()
    before = sorted(tmp_path.rglob("*"))
    args = ["space", "cost", "--archs", str(archs)] if command == "cost" else ["registry", "export"]
    code, output = _cli(
        *args, *(["--registry", url] if command == "export" else []), "--out", str(missing / "o")
    )
    assert code == 2
    assert f"--out: directory {missing} does not exist" in output
    assert sorted(tmp_path.rglob("*")) == before


def test_a_missing_directory_is_refused_before_the_work(tmp_path: Path) -> None:
    code, output = _cli(
        "search", "--strategy", "random", "--budget", "2", "--data", "synthetic:16", "--batch-size", "4",
        "--registry", f"sqlite:///{tmp_path / 'r.db'}", "--out", str(tmp_path / "gone" / "result.json"),
    )  # fmt: skip
    assert code == 2 and f"--out: directory {tmp_path / 'gone'} does not exist" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no registry either: refused first


def test_bench_refuses_a_missing_parent_directory(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text("arch_str,cifar10_test\n")
    out = tmp_path / "runs" / "correlation"
    code, output = _cli("bench", "correlation", "--ground-truth", str(truth), "--out", str(out))
    assert code == 2 and f"--out: directory {tmp_path / 'runs'} does not exist" in output
    assert not (tmp_path / "runs").exists()


def test_registry_export_writes_stdout_for_a_dash(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry(url) as registry:
        registry.create_tenant("acme")
    result = CliRunner().invoke(app, ["registry", "export", "--registry", url, "--out", "-"])
    assert result.exit_code == 0, result.output
    assert '"name": "acme"' in result.stdout and "wrote" not in result.stdout


def test_tenants_create_makes_the_key_file_first(tmp_path: Path) -> None:
    url, key_file = f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "k.key"
    key_file.write_text("someone else's key\n")
    code, output = _cli("tenants", "create", "globex", "--registry", url, "--key-file", str(key_file))
    assert code != 0 and "--key-file" in output
    assert key_file.read_text() == "someone else's key\n"
    with Registry(url) as registry:
        assert registry.list_tenants() == []  # refused before the tenant was created
    # the tenant exists already: the registry refuses, and the new (empty) key file is removed again
    with Registry(url) as registry:
        registry.create_tenant("acme")
    fresh = tmp_path / "fresh.key"
    code, output = _cli("tenants", "create", "acme", "--registry", url, "--key-file", str(fresh))
    assert code != 0 and "acme" in output
    assert not fresh.exists()


def test_tenants_add_key_writes_a_key_file(tmp_path: Path) -> None:
    url, key_file = f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "second.key"
    with Registry(url) as registry:
        registry.create_tenant("acme")
    result = CliRunner().invoke(
        app, ["tenants", "add-key", "acme", "--registry", url, "--key-file", str(key_file)]
    )
    assert result.exit_code == 0, result.output
    key = key_file.read_text().strip()
    assert key not in result.output
    with Registry(url) as registry:
        found = registry.verify_api_key(key)
        assert found is not None and found.name == "acme"


# -- the writer itself -------------------------------------------------------------------------------------
def test_a_descriptor_path_writes_through_the_open_descriptor(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("kept\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        assert write_output(Path(f"/dev/fd/{fd}"), "appended\n") == f"/dev/fd/{fd}"
        write_output(Path(f"/proc/self/fd/{fd}"), "again\n")
    finally:
        os.close(fd)
    assert log.read_text() == "kept\nappended\nagain\n"  # not truncated, not replaced


def test_a_pipe_named_by_proc_self_fd_is_written_in_place(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        write_csv(Path(f"/proc/self/fd/{write_end}"), ["a", "b"], [[1, 2]])
        assert os.read(read_end, 100) == b"a,b\r\n1,2\r\n"
    finally:
        os.close(read_end)
        os.close(write_end)


def _directory(path: Path) -> None:
    path.mkdir()


def _link_to_a_directory(path: Path) -> None:
    path.symlink_to(path.parent)


def _link_below_a_file(path: Path) -> None:
    (path.parent / "file").write_text("x")
    path.symlink_to(path.parent / "file" / "inner")


def _link_loop(path: Path) -> None:
    path.symlink_to(path.name)


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        (_link_loop, "too many levels of symbolic links"),
        (_directory, "must be a file, a character device or a FIFO, but .* is a directory"),
        (_link_to_a_directory, "must be a file, a character device or a FIFO, but .* is a directory"),
        (_link_below_a_file, "directory .*file is not a directory"),
    ],
)
def test_refused_targets_name_the_option_and_are_left_alone(
    tmp_path: Path, make: Callable[[Path], None], rule: str
) -> None:
    path = tmp_path / "target"
    make(path)
    before = sorted((p.name, p.is_symlink()) for p in tmp_path.iterdir())
    with pytest.raises(OutputError, match=rf"^--result: .*{rule}") as caught:
        write_output(path, "data", "--result")
    assert caught.value.exit_code == 2
    assert sorted((p.name, p.is_symlink()) for p in tmp_path.iterdir()) == before


def test_a_dangling_link_gets_its_target_created_and_stays_a_link(tmp_path: Path) -> None:
    link = tmp_path / "latest.json"
    link.symlink_to("run-1.json")
    assert write_output(link, "{}\n") == str(link)
    assert link.is_symlink() and (tmp_path / "run-1.json").read_text() == "{}\n"


def test_a_failed_replace_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.json"
    out.write_text("old\n")

    def refuse(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError, match=r"--out: writing .*out\.json failed: No space left") as caught:
        write_output(out, "new\n")
    assert caught.value.exit_code == 1
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_check_output_accepts_stdout_and_a_new_file(tmp_path: Path) -> None:
    check_output(Path("-"))
    check_output(tmp_path / "new.csv")
    with pytest.raises(OutputError, match=r"--out: directory .*missing does not exist"):
        check_output(tmp_path / "missing" / "new.csv")


def test_an_exclusive_file_is_0600_whatever_the_umask_and_refuses_links(tmp_path: Path) -> None:
    previous = os.umask(0o777)
    try:
        secret = ExclusiveFile(tmp_path / "k", "--key-file")
    finally:
        os.umask(previous)
    secret.write("nfk_x_y\n")
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert (tmp_path / "k").read_text() == "nfk_x_y\n"
    (tmp_path / "dangling").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="--key-file: must not exist yet"):
        ExclusiveFile(tmp_path / "dangling", "--key-file")
    assert not (tmp_path / "elsewhere").exists()
    unused = ExclusiveFile(tmp_path / "unused", "--key-file")
    unused.discard()
    assert not (tmp_path / "unused").exists()


# -- finite ranges -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["space", "sample", "--seed", "-1"], "--seed"),
        (["space", "sample", "--seed", str(2**31)], "--seed"),
        (["space", "sample", "--n", "10000001"], "--n"),
        (["simulate", "--epsilon", "nan"], "--epsilon"),
        (["simulate", "--epsilon", "inf"], "--epsilon"),
        (["simulate", "--train-max-seconds", "0"], "--train-max-seconds"),
        (["simulate", "--train-max-seconds", "nan"], "--train-max-seconds"),
        (["serve", "--max-body-bytes", str(2**40)], "--max-body-bytes"),
        (["serve", "--max-budget", "1000001"], "--max-budget"),
        (["search", "--strategy", "random", "--budget", "0", "--out", "x.json"], "--budget"),
    ],
)
def test_numeric_options_have_finite_ranges(args: list[str], option: str) -> None:
    code, output = _cli(*args)
    assert code == 2 and option in output, output
    assert "range" in output or "finite" in output, output
