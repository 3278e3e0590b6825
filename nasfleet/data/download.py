"""Fetch the official CIFAR-10 python archive into a directory, verified, with nothing half-written.

`fetch_cifar10` downloads ``cifar-10-python.tar.gz`` (standard library only: urllib, hashlib, tarfile)
to a temporary file inside the target directory while computing its MD5, checks the length and the
checksum, checks every member path before extracting anything, extracts into a temporary directory
there, checks that the result is a complete CIFAR-10 that `nasfleet.data.datasets.load_cifar10` reads,
and only then renames ``cifar-10-batches-py`` into place. Any failure raises `DownloadError` naming what
was wrong and removes the temporary files, so the directory is left as it was (and directories this
call created are removed again). urllib, tarfile and the loader (numpy) are imported where they are
used, so that the command line can import this module for its defaults and stay quick to start.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tarfile

#: The official archive and its MD5, as published on https://www.cs.toronto.edu/~kriz/cifar.html
#: (the same pair torchvision verifies).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_META = "batches.meta"
URL_SCHEMES = ("http", "https", "file")
CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60.0
#: The official archive extracts to about 178 MB; anything far larger is not CIFAR-10 (or is a bomb).
MAX_EXTRACTED_BYTES = 1 << 30

#: ``report(done, total)``: bytes received so far and the announced total (None when not announced).
Report = Callable[[int, int | None], None]


class DownloadError(Exception):
    """The archive could not be fetched, verified or installed; the message says which and why."""


@dataclass(frozen=True)
class Fetched:
    """Where CIFAR-10 now is, and whether this call downloaded it (False: it was already there)."""

    path: Path
    downloaded: bool
    size: int = 0


def check_url(url: str) -> str:
    """``url`` if its scheme is one urllib fetches here (`URL_SCHEMES`), else a `ValueError` naming it."""
    scheme = url.partition(":")[0].lower()
    if scheme not in URL_SCHEMES or "://" not in url:
        raise ValueError(f"url must start with one of {[s + '://' for s in URL_SCHEMES]}, but got {url!r}")
    return url


def check_md5(md5: str) -> str:
    """``md5`` in lower case if it is 32 hexadecimal digits, else a `ValueError` naming it."""
    digits = md5.strip().lower()
    if len(digits) != 32 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"md5 must be 32 hexadecimal digits, but got {md5!r}")
    return digits


def cifar10_problems(path: Path) -> list[str]:
    """What keeps ``path`` from being a complete CIFAR-10 in the python format; empty if nothing does.

    The five training batches, the test batch and `CIFAR10_META` must be regular files, and every batch
    must read as the loader reads it (a pickled dict of uint8 rows of 3,072 pixels and one label per
    row). Any number of rows is accepted, as the loader accepts it.
    """
    from nasfleet.data.datasets import CIFAR10_TEST_BATCHES, CIFAR10_TRAIN_BATCHES, _read_cifar10_batch

    batches = (*CIFAR10_TRAIN_BATCHES, *CIFAR10_TEST_BATCHES)
    if not path.is_dir():
        return [f"{path} is not a directory"]
    missing = [name for name in (*batches, CIFAR10_META) if not (path / name).is_file()]
    if missing:
        return [f"{path.name} is missing {missing}"]
    problems = []
    for name in batches:
        try:
            _read_cifar10_batch(path / name)
        except (OSError, ValueError) as error:
            problems.append(str(error))
    return problems


def download(url: str, target: Path, md5: str, report: Report) -> int:
    """Write ``url``'s body to ``target``, check its length and MD5; return its size in bytes."""
    import http.client
    import urllib.error
    import urllib.request

    digest = hashlib.md5(usedforsecurity=False)
    done, total = 0, None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, target.open("wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            report(0, total)
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                report(done, total)
    except urllib.error.HTTPError as error:
        raise DownloadError(f"download of {url} failed: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise DownloadError(f"download of {url} failed: {error.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as error:  # reset, timeout, short read, full disk
        raise DownloadError(f"download of {url} failed after {done} bytes: {error}") from None
    if total is not None and done != total:
        raise DownloadError(f"download of {url} was truncated: got {done} of {total} bytes")
    if digest.hexdigest() != md5:
        raise DownloadError(
            f"checksum mismatch: expected md5 {md5}, got {digest.hexdigest()} ({done} bytes from {url})"
        )
    return done


def _unsafe_member(member: tarfile.TarInfo) -> str | None:
    """Why extracting ``member`` could write outside the extraction directory; None if it cannot."""
    path = PurePosixPath(member.name)
    if path.is_absolute():
        return "is an absolute path"
    if ".." in path.parts:
        return "has a '..' component"
    if member.issym() or member.islnk():
        return f"is a link (to {member.linkname!r})"
    if not (member.isfile() or member.isdir()):
        return "is a special file (a device or a FIFO)"
    return None


def extract(archive: Path, into: Path) -> Path:
    """Extract ``archive`` into ``into`` after checking every member; return its ``cifar-10-batches-py``."""
    import tarfile
    import zlib

    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                reason = _unsafe_member(member)
                if reason:
                    raise DownloadError(f"archive member {member.name!r} is unsafe: it {reason}")
            size = sum(member.size for member in members)
            if size > MAX_EXTRACTED_BYTES:
                raise DownloadError(
                    f"archive must extract to at most {MAX_EXTRACTED_BYTES} bytes, but holds {size}"
                )
            tar.extractall(into, filter="data")
    except OSError as error:
        if error.errno is None:  # gzip.BadGzipFile and the like: the bytes, not the disk
            raise DownloadError(f"archive is corrupt or truncated: {error}") from None
        raise DownloadError(f"archive cannot be extracted into {into}: {error}") from None  # a full disk
    except (tarfile.TarError, EOFError, ValueError, zlib.error) as error:
        raise DownloadError(f"archive is corrupt or truncated: {error}") from None
    from nasfleet.data.datasets import CIFAR10_DIRNAME

    result = into / CIFAR10_DIRNAME
    problems = cifar10_problems(result)
    if problems:
        shown = "; ".join(problems).replace(f"{into}{os.sep}", "")  # name files as the archive does
        raise DownloadError(f"archive is not CIFAR-10 in the python format: {shown}")
    return result


def fetch_cifar10(
    directory: Path,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    force: bool = False,
    report: Report | None = None,
) -> Fetched:
    """Make ``directory/cifar-10-batches-py`` a complete CIFAR-10, downloading it unless already there.

    With ``force`` an existing copy is replaced (renamed aside, the new one renamed in, the old one
    removed; if the second rename fails the old copy is put back). An existing but incomplete copy is
    refused without ``force``: it may be someone's data.
    """
    from nasfleet.data.datasets import CIFAR10_DIRNAME

    url, md5 = check_url(url), check_md5(md5)
    final = directory / CIFAR10_DIRNAME
    present = final.exists() or final.is_symlink()
    if present and not force:
        problems = cifar10_problems(final)
        if problems:
            raise DownloadError(
                f"{final} exists but is not a complete CIFAR-10 ({'; '.join(problems)}); "
                "pass --force to replace it"
            )
        return Fetched(final, downloaded=False)
    created = _make_directory(directory)
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".cifar10-", dir=directory))
    except OSError as error:
        _remove_created(created)
        raise DownloadError(f"directory {directory} cannot hold a temporary directory: {error}") from None
    try:
        size = download(url, scratch / "cifar-10-python.tar.gz", md5, report or _silent)
        extracted = extract(scratch / "cifar-10-python.tar.gz", scratch / "extracted")
        _install(extracted, final, scratch / "previous" if present else None)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        _remove_created(created)
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    return Fetched(final, downloaded=True, size=size)


def _make_directory(directory: Path) -> list[Path]:
    """Create ``directory`` and any missing parents; return those this call created, deepest first."""
    missing = [path for path in (directory, *directory.parents) if not path.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"directory {directory} cannot be created: {error}") from None
    return missing


def _install(extracted: Path, final: Path, previous: Path | None) -> None:
    """Rename ``extracted`` to ``final``; a ``previous`` copy is first renamed aside, and back on failure."""
    if previous is not None:
        try:
            os.rename(final, previous)
        except OSError as error:
            raise DownloadError(f"{final} cannot be moved aside to replace it: {error}") from None
    try:
        os.rename(extracted, final)
    except OSError as error:
        if previous is not None:
            os.rename(previous, final)
        raise DownloadError(f"{final} cannot be put in place: {error}") from None


def _remove_created(created: list[Path]) -> None:
    """Remove the directories `_make_directory` created, deepest first, as long as they are empty."""
    for path in created:
        try:
            path.rmdir()
        except OSError:
            return  # not empty: something else was put there meanwhile, and it is not ours to remove


def _silent(done: int, total: int | None) -> None:
    """The report of a caller that wants none."""
