"""The correlation benchmark's checkpoint, so that a run of hours resumes where it stopped.

In the run's output directory:

- ``run.json``: the settings that decide which archs are scored and what their raw values are (space,
  ground-truth arch column, sample, repeats, seed, probe data and batch, labels, device, proxies and
  their revisions). A resume whose settings differ is refused, naming the first setting that differs.
- ``scores.partial.csv``: ``arch``, one column per raw proxy, ``seconds``; one row appended and flushed
  as each arch finishes (synced to disk every `SYNC_EVERY` rows), so a kill loses only the archs in
  flight. A half-written last line (a kill mid-write) is dropped on resume. The file is locked while a
  run writes it, so two runs cannot append to one checkpoint.
- ``timing.json``: the isolation timing, measured once per set of timed proxies and timing sample.

Values are written with ``repr`` and read back bit for bit. Each arch is scored exactly as the engine
scores it (`nasfleet.proxies.scorer`: the same job, the same one-thread scorer, in this process or in the
engine's pooled workers), so the values do not depend on ``workers`` or on where a run was resumed.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from nasfleet.progress import progress as progress_display
from nasfleet.proxies.engine import IsolationTiming
from nasfleet.proxies.scorer import Scored, ScoringJob, stream_scores
from nasfleet.spaces import Genome

PARTIAL = "scores.partial.csv"
SETTINGS = "run.json"
TIMING = "timing.json"
FORMAT = 1
SYNC_EVERY = 64


class ResumeError(ValueError):
    """An output directory whose checkpoint cannot be resumed by this run."""


def digest(*parts: bytes) -> str:
    """SHA-256 of the parts, each length-prefixed (so that ``a|bc`` and ``ab|c`` differ)."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "little") + part)
    return hasher.hexdigest()


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    """Write ``content`` to ``path`` atomically (a sibling temporary file, then a rename)."""
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(scratch, path)


def _check_settings(directory: Path, settings: Mapping[str, Any]) -> None:
    """Record ``settings`` in a new checkpoint, or refuse a resume whose settings differ."""
    path, wanted = directory / SETTINGS, json.loads(json.dumps(settings))
    if not path.exists():
        if (directory / PARTIAL).exists():
            raise ResumeError(f"{directory} holds {PARTIAL} without its {SETTINGS}: remove {PARTIAL} first")
        _write_json(path, {"format": FORMAT, "settings": wanted})
        return
    stored = json.loads(path.read_text())
    if stored.get("format") != FORMAT:
        raise ResumeError(f"{path} must have format {FORMAT}, but has {stored.get('format')!r}")
    for key in [*wanted, *(k for k in stored["settings"] if k not in wanted)]:
        before, now = stored["settings"].get(key), wanted.get(key)
        if before != now:
            raise ResumeError(
                f"{directory} holds a run started with {key} = {before!r}, but this run has {key} = {now!r}: "
                f"resume with the same settings, use another --out, or remove {SETTINGS} and {PARTIAL} "
                "there to start over"
            )


class Checkpoint:
    """The open, locked ``scores.partial.csv`` of one run: what is scored so far, and appending to it."""

    def __init__(self, directory: Path, stream: IO[bytes], proxies: Sequence[str]) -> None:
        self.directory, self.proxies = directory, tuple(proxies)
        self._stream, self._unsynced = stream, 0
        self.scored: dict[str, Scored] = {}

    @property
    def path(self) -> Path:
        return self.directory / PARTIAL

    def load(self, wanted: set[str]) -> None:
        """Read the complete rows; drop a half-written last line; refuse anything else malformed."""
        self._stream.seek(0)
        data = self._stream.read()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            self._stream.truncate(len(data))
        header = ["arch", *self.proxies, "seconds"]
        rows = list(csv.reader(io.StringIO(data.decode())))
        if not rows:
            self._write([header])
            return
        if rows[0] != header:
            raise ResumeError(f"{self.path} must have the header {header}, but has {rows[0]}")
        for number, row in enumerate(rows[1:], start=2):
            self._add(number, row, wanted)

    def _add(self, number: int, row: list[str], wanted: set[str]) -> None:
        where = f"{self.path} line {number}"
        if len(row) != len(self.proxies) + 2 or row[0] not in wanted or row[0] in self.scored:
            raise ResumeError(f"{where} must be a new arch of this run with {len(self.proxies) + 2} fields")
        try:
            numbers = [float(cell) for cell in row[1:]]
        except ValueError:
            raise ResumeError(f"{where} must hold numbers after the arch, but holds {row[1:]}") from None
        if not all(np.isfinite(numbers)):
            raise ResumeError(f"{where} must hold finite numbers, but holds {row[1:]}")
        self.scored[row[0]] = (numbers[:-1], numbers[-1])

    def _write(self, rows: list[list[str]]) -> None:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        self._stream.write(text.getvalue().encode())  # append mode: always at the end
        self._stream.flush()
        self._unsynced += len(rows)
        if self._unsynced >= SYNC_EVERY:
            self.sync()

    def append(self, arch: str, scored: Scored) -> None:
        """Record one arch's raw values and seconds, flushed to the operating system at once."""
        values, seconds = scored
        self._write([[arch, *(repr(float(v)) for v in values), repr(float(seconds))]])
        self.scored[arch] = (list(values), seconds)

    def sync(self) -> None:
        os.fsync(self._stream.fileno())
        self._unsynced = 0

    # -- timing, once ------------------------------------------------------------------------------------
    def load_timing(self, key: Mapping[str, Any]) -> IsolationTiming | None:
        """The timing measured earlier for the same ``key`` (timed names and sample), if any."""
        path = self.directory / TIMING
        if not path.exists():
            return None
        stored = json.loads(path.read_text())
        if stored.get("key") != json.loads(json.dumps(key)):
            return None
        return IsolationTiming(stored["seconds"], stored["reference"], tuple(stored["archs"]))

    def save_timing(self, key: Mapping[str, Any], timing: IsolationTiming) -> None:
        content = {"key": key, "seconds": timing.seconds, "reference": timing.reference}
        _write_json(self.directory / TIMING, {**content, "archs": list(timing.archs)})


@contextmanager
def open_checkpoint(
    directory: Path, settings: Mapping[str, Any], proxies: Sequence[str], archs: Sequence[str]
) -> Iterator[Checkpoint]:
    """The checkpoint of ``directory`` (made if missing) for a run of ``settings`` over ``archs``."""
    directory.mkdir(exist_ok=True)
    _check_settings(directory, settings)
    with (directory / PARTIAL).open("a+b") as stream:
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResumeError(f"another run is writing {directory / PARTIAL}; wait for it to end") from None
        checkpoint = Checkpoint(directory, stream, proxies)
        try:
            checkpoint.load(set(archs))
            yield checkpoint
        finally:
            checkpoint.sync()


# -- scoring what is missing -----------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    minutes, second = divmod(round(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}h{minute:02d}m" if hours else f"{minute}m{second:02d}s"


class _Pace:
    """Time left, from the pace since the first arch finished (so a pool's start-up does not count)."""

    def __init__(self, total: int) -> None:
        self.total, self.started, self.first = total, time.perf_counter(), 0.0

    def note(self, count: int) -> str:
        now = time.perf_counter()
        if count == 1:
            self.first = now
            per_arch = now - self.started
        else:
            per_arch = (now - self.first) / (count - 1)
        return f"eta {_duration(per_arch * (self.total - count))}"


def score_missing(
    checkpoint: Checkpoint,
    job: ScoringJob,
    archs: Sequence[tuple[str, Genome]],
    *,
    workers: int = 1,
    progress: bool = True,
) -> None:
    """Score every arch of ``archs`` the checkpoint lacks, appending each as it finishes.

    The progress display counts every arch of the run (those already scored included) and estimates the
    time left from this session's pace.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, but got {workers}")
    todo = [(text, arch) for text, arch in archs if text not in checkpoint.scored]
    done, pace = len(archs) - len(todo), _Pace(len(todo))
    with progress_display("scoring", len(archs), progress) as update:
        update(done, f"resumed, {done} already scored" if done else "")
        with closing(stream_scores(job, [arch for _, arch in todo], workers)) as stream:
            for count, (index, scored) in enumerate(stream, 1):
                checkpoint.append(todo[index][0], scored)
                update(done + count, pace.note(count))
