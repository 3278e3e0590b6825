"""The one way the commands write their output files, so that an output never damages its target.

Where ``write_output`` writes, by what the path names (symbolic links followed one hop at a time):

- ``-``: standard output.
- An open descriptor of this process (``/dev/stdout``, ``/dev/fd/N``, ``/proc/self/fd/N``): written
  through that descriptor, as the shell opened it (so ``--out /dev/stdout >> log`` appends).
- An existing character device or FIFO (``/dev/null``, a named pipe), or anything under ``/proc``:
  written in place, like the shell's ``>``; it is never replaced, removed or turned into a regular file.
- A regular file, or a path that does not exist yet: replaced atomically (a temporary file in the same
  directory, fsynced, then ``os.replace``), so a reader sees the old file or the whole new one. A new
  file gets the mode the umask gives (``0o666 & ~umask``); an existing file keeps its mode (and its
  owner, where the process may set it). Replacing gives a new inode: other hard links keep the old data.
- A symbolic link to a regular file (or to a path that does not exist yet): its target is replaced
  atomically as above; the link stays a link.
- A directory, a block device or a socket: refused.

The parent directory must exist: a missing one is an error naming it, and nothing is created.

``ExclusiveFile`` is for secrets (API keys): the file is created now, only if nothing is at the path,
with mode 0600, and is filled later or removed again.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import click

MAX_LINK_HOPS = 40


class OutputError(click.ClickException):
    """An output that cannot be written; the message names the option, the rule and the path.

    A command that lets it escape prints it and exits 2 (a refused path) or 1 (a write that failed).
    """

    exit_code = 2


class OutputWriteError(OutputError):
    """Writing an accepted output failed (disk full, permission denied, ...)."""

    exit_code = 1


@dataclass(frozen=True)
class OutputTarget:
    """How to write: ``stdout``, ``descriptor`` (``fd``), ``in_place`` or ``atomic`` (at ``path``)."""

    how: str
    path: Path
    fd: int = -1


def _descriptor(path: Path, option: str) -> int | None:
    """The descriptor number if *path* names an open descriptor of this process, else None."""
    own = rf"/(?:dev/fd|proc/(?:self|thread-self|{os.getpid()})/fd)/(\d+)"
    found = re.fullmatch(own, str(path))
    if found is None:
        return None
    fd = int(found.group(1))
    try:
        mode, flags = os.fstat(fd).st_mode, fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        raise OutputError(f"{option}: descriptor {fd} ({path}) is not open") from None
    if stat.S_ISDIR(mode) or flags == os.O_RDONLY:
        raise OutputError(f"{option}: descriptor {fd} ({path}) is not open for writing")
    return fd


def _missing_directory(directory: Path, option: str) -> OutputError:
    if directory.exists():
        return OutputError(f"{option}: directory {directory} is not a directory")
    return OutputError(f"{option}: directory {directory} does not exist")


def resolve_output(path: Path, option: str = "--out") -> OutputTarget:
    """Where and how writing *path* will go; an ``OutputError`` now if it would be refused."""
    if str(path) == "-":
        return OutputTarget("stdout", path)
    try:
        return _resolve(path, option)
    except OSError as error:
        raise OutputError(f"{option}: cannot write {path}: {error.strerror or error}") from None


def _resolve(path: Path, option: str) -> OutputTarget:
    target = path
    for _ in range(MAX_LINK_HOPS):
        fd = _descriptor(target, option)
        if fd is not None:
            return OutputTarget("descriptor", target, fd)
        if str(target).startswith("/proc/") and target.exists():
            return OutputTarget("in_place", target)  # e.g. another process's descriptor: as the shell would
        if not target.is_symlink():
            break
        link = Path(os.readlink(target))
        target = link if link.is_absolute() else target.parent / link
    else:
        raise OutputError(f"{option}: too many levels of symbolic links from {path}")
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        if not target.parent.is_dir():
            raise _missing_directory(target.parent, option) from None
        return OutputTarget("atomic", target)
    except OSError as error:
        raise OutputError(f"{option}: cannot write {path}: {error.strerror}") from None
    if stat.S_ISREG(mode):
        return OutputTarget("atomic", target)
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return OutputTarget("in_place", target)
    kind = "a directory" if stat.S_ISDIR(mode) else "a block device" if stat.S_ISBLK(mode) else "a socket"
    raise OutputError(f"{option}: must be a file, a character device or a FIFO, but {path} is {kind}")


def check_output(path: Path, option: str = "--out") -> None:
    """Raise ``OutputError`` now (before long work) if writing *path* later would be refused."""
    resolve_output(path, option)


def check_output_directory(path: Path, option: str = "--out") -> None:
    """Raise ``OutputError`` unless *path* is an existing directory or can be made in an existing one."""
    if not path.parent.is_dir():
        raise _missing_directory(path.parent, option)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option}: must be a directory, but {path} exists and is not one")


def write_output(path: Path, text: str | bytes, option: str = "--out") -> str:
    """Write *text* (or bytes) to *path* by the rules of this module; returns a name for messages ("stdout",
    path)."""
    target, data = resolve_output(path, option), text if isinstance(text, bytes) else text.encode()
    try:
        if target.how == "stdout":
            if isinstance(text, bytes):
                sys.stdout.flush()
                sys.stdout.buffer.write(text)
                sys.stdout.buffer.flush()
            else:
                sys.stdout.write(text)
                sys.stdout.flush()
            return "stdout"
        if target.how == "descriptor":
            if target.fd in (1, 2):
                (sys.stdout if target.fd == 1 else sys.stderr).flush()
            _write_all(target.fd, data)
        elif target.how == "in_place":
            fd = os.open(target.path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        else:
            _replace_atomically(target.path, data)
    except OSError as error:
        raise OutputWriteError(f"{option}: writing {path} failed: {error.strerror or error}") from None
    return str(path)


def write_csv(path: Path, header: list[str], rows: Iterable[list[object]], option: str = "--out") -> str:
    """Write a CSV (header, then rows) with ``write_output``."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return write_output(path, buffer.getvalue(), option)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _replace_atomically(path: Path, data: bytes) -> None:
    """Replace the regular file (or create) *path* with *data*: a reader sees the old or the new file."""
    try:
        existing: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        existing = None
    while True:
        temporary = path.parent / f".{path.name[:200]}.{secrets.token_hex(6)}.tmp"
        try:  # 0o666: the kernel applies the umask, as for any new file
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:
            continue
    try:
        try:
            if existing is not None:
                if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
                    with contextlib.suppress(PermissionError):  # not ours to give: this process's owner
                        os.fchown(fd, existing.st_uid, existing.st_gid)
                os.fchmod(fd, stat.S_IMODE(existing.st_mode))
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the data itself is synced
    finally:
        os.close(fd)


class ExclusiveFile:
    """A secret's file: created now with mode 0600, only if nothing is at *path*; then filled or removed.

    Nothing is ever overwritten: an existing file, link or device at *path* is an ``OutputError``.
    """

    def __init__(self, path: Path, option: str) -> None:
        self.path, self.option = path, option
        if not path.parent.is_dir():
            raise _missing_directory(path.parent, option)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise OutputError(
                f"{option}: must not exist yet (it is never overwritten), but {path} exists"
            ) from None
        except OSError as error:
            raise OutputError(f"{option}: cannot create {path}: {error.strerror}") from None
        os.fchmod(self._fd, 0o600)  # whatever the umask: readable by its owner, by no one else

    def write(self, text: str) -> None:
        """Fill the file with *text*, sync it and close it."""
        try:
            _write_all(self._fd, text.encode())
            os.fsync(self._fd)
        except OSError as error:
            self.discard()
            raise OutputWriteError(f"{self.option}: writing {self.path} failed: {error.strerror}") from None
        os.close(self._fd)
        self._fd = -1

    def discard(self) -> None:
        """Close and remove the (unfilled) file this object created."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.path.unlink(missing_ok=True)
