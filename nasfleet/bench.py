"""The correlation benchmark: how well proxies rank architectures, against a ground-truth accuracy table.

The ground-truth file is read in two separate steps on purpose. Drawing the sample reads only its header
and its ``arch_str`` column; the accuracy columns are read only after every proxy and aggregate has been
scored, to measure them. No accuracy reaches a proxy, an aggregate or the sample.

Two protocols: the whole space (``sample=None``, every arch of the file, as AZ-NAS evaluates NB201), and
``repeats`` seeded samples of N archs (seeds ``seed .. seed + repeats - 1``, FG-NAS §V: "3,000 networks
are randomly sampled for evaluation, and the experiment is repeated 5 times to compute the average
results"), reported as mean ± std. The repeats share one network seed and one probe batch, so an arch
drawn by several repeats has one set of raw values and is scored once; aggregates, which rank a
population, are computed over each repeat's own sample.

Scoring is resumable (`nasfleet.bench_store`): raw values are appended to a checkpoint in the output
directory as each arch finishes, and a re-run of the same command scores only what is missing.

Metrics (`nasfleet.bench_metrics`) are computed on each score in its better direction (a proxy whose
``higher_is_better`` is False is negated; aggregates are higher-is-better), so a positive ρ always means
"ranks like accuracy".
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasfleet.bench_metrics import TOP_FRACTION, measure, summarize, top_count
from nasfleet.bench_report import write_outputs
from nasfleet.bench_store import Checkpoint, digest, open_checkpoint, score_missing
from nasfleet.bounds import MAX_REPEATS, MIN_SAMPLE
from nasfleet.proxies.base import PROXIES
from nasfleet.proxies.engine import (
    IsolationTiming,
    ScoreTable,
    add_aggregates,
    check_device,
    expand_names,
    time_proxies_in_isolation,
)
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.proxies.scorer import ScoringJob
from nasfleet.spaces import Genome, SearchSpace

ARCH_COLUMN = "arch_str"
NON_ACCURACY_COLUMNS = ("index", ARCH_COLUMN)


@dataclass(frozen=True)
class CorrelationRun:
    """One benchmark run: what to score, on what, against which ground truth.

    ``sample`` None means every arch of the file. ``probe_inputs`` is ``"images"`` (the dataset's) or
    ``"noise"`` (N(0, 1) shaped like ``probe_source``'s images); ``probe_source`` defaults to ``data``.
    """

    space: SearchSpace
    ground_truth: Path
    column: str
    sample: int | None
    seed: int
    data: str
    batch: ProbeBatch
    proxies: str = "all"
    labeled: bool = True
    device: str = "cpu"
    workers: int = 1
    timing_sample: int = 5
    command: str = ""
    progress: bool = True
    repeats: int = 1
    probe_inputs: str = "images"
    probe_source: str = ""
    top_fraction: float = TOP_FRACTION


# -- ground truth ----------------------------------------------------------------------------------------
def accuracy_columns(path: Path) -> list[str]:
    """Names of the accuracy columns of a ground-truth CSV: every column but ``index`` and ``arch_str``."""
    with path.open(newline="") as stream:
        header = next(csv.reader(stream), [])
    if ARCH_COLUMN not in header:
        raise ValueError(
            f"ground truth {path} must have an {ARCH_COLUMN!r} column, but its header is {header}"
        )
    columns = [name for name in header if name not in NON_ACCURACY_COLUMNS]
    if not columns:
        raise ValueError(f"ground truth {path} must have at least one accuracy column, but has none")
    return columns


def read_arch_strings(path: Path) -> list[str]:
    """The ``arch_str`` column alone, in file order."""
    with path.open(newline="") as stream:
        return [row[ARCH_COLUMN] for row in csv.DictReader(stream)]


def sample_arch_strings(strings: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` distinct rows drawn uniformly with ``seed``, kept in file order."""
    if not MIN_SAMPLE <= n <= len(strings):
        raise ValueError(f"sample must lie in [{MIN_SAMPLE}, {len(strings)}] (rows of the file), but got {n}")
    chosen = np.random.default_rng(seed).choice(len(strings), size=n, replace=False)
    return [strings[int(i)] for i in sorted(chosen)]


def draw_samples(strings: Sequence[str], sample: int | None, seed: int, repeats: int) -> list[list[str]]:
    """One sample per repeat, repeat r drawn with seed ``seed + r``; ``sample`` None takes every row."""
    if not 1 <= repeats <= MAX_REPEATS:
        raise ValueError(f"repeats must lie in [1, {MAX_REPEATS}], but got {repeats}")
    n = len(strings) if sample is None else sample
    if n == len(strings) and repeats > 1:
        raise ValueError(
            f"repeats must be 1 when the sample is the whole file ({n} rows): every repeat would draw "
            f"the same archs, but got {repeats}"
        )
    return [sample_arch_strings(strings, n, seed + r) for r in range(repeats)]


def read_accuracies(path: Path, archs: Sequence[str], columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Accuracy columns for ``archs``, in their order; call only after scoring is finished."""
    wanted = set(archs)
    found: dict[str, dict[str, str]] = {}
    with path.open(newline="") as stream:
        for row in csv.DictReader(stream):
            if row[ARCH_COLUMN] in wanted:
                found[row[ARCH_COLUMN]] = row
    missing = [arch for arch in archs if arch not in found]
    if missing:
        raise ValueError(f"ground truth {path} must hold every scored arch, but lacks {missing[:3]}")
    try:
        return {c: np.array([float(found[arch][c]) for arch in archs]) for c in columns}
    except ValueError as error:
        raise ValueError(f"ground truth {path}: accuracy columns must be numbers, but {error}") from None


# -- scoring ---------------------------------------------------------------------------------------------
def oriented(name: str, values: np.ndarray) -> np.ndarray:
    """A proxy's values with higher meaning better; aggregates are already so."""
    proxy = PROXIES.get(name)
    return -values if proxy is not None and not proxy.higher_is_better else values


def _decode_all(space: SearchSpace, strings: Sequence[str]) -> list[Genome]:
    genomes = []
    for text in strings:
        try:
            genomes.append(space.decode(text))
        except ValueError as error:
            raise ValueError(
                f"ground truth {ARCH_COLUMN} {text!r} is not a {space.name} arch: {error}"
            ) from None
    return genomes


def _settings(run: CorrelationRun, strings: Sequence[str], n: int, proxies: Sequence[str]) -> dict[str, Any]:
    """What decides which archs are scored and their raw values: a resume must match every entry."""
    batch = run.batch.to("cpu")
    labels = b"" if batch.labels is None else batch.labels.numpy().tobytes()
    return {
        "space": run.space.name,
        "space_revision": run.space.revision,
        "ground_truth_archs": digest(*(text.encode() for text in strings)),  # the arch_str column only
        "sample": n,
        "repeats": run.repeats,
        "seed": run.seed,
        "data": run.data,
        "probe_batch": digest(
            str((batch.input_shape, batch.num_classes)).encode(),
            batch.inputs.contiguous().numpy().tobytes(),
            labels,
        ),
        "batch_size": batch.size,
        "labeled": run.labeled,
        "device": run.device,
        "proxies": {name: PROXIES[name].revision for name in sorted(proxies)},
    }


def score_resumably(
    run: CorrelationRun,
    checkpoint: Checkpoint,
    archs: Sequence[str],
    genomes: Sequence[Genome],
    proxy_names: Sequence[str],
) -> ScoreTable:
    """Raw values of ``proxy_names`` for ``archs``, scored now where the checkpoint lacks them."""
    check_device(run.device)
    proxies = tuple(PROXIES[name] for name in checkpoint.proxies)
    job = ScoringJob(run.space, run.batch.to("cpu"), proxies, run.seed, run.device)
    score_missing(checkpoint, job, list(zip(archs, genomes, strict=True)), workers=run.workers,
                  progress=run.progress)  # fmt: skip
    rows = [checkpoint.scored[arch] for arch in archs]
    column = {name: i for i, name in enumerate(checkpoint.proxies)}
    values = {name: np.array([row[0][column[name]] for row in rows]) for name in proxy_names}
    encoded = tuple(run.space.encode(genome) for genome in genomes)
    return ScoreTable(encoded, values, np.array([row[1] for row in rows]))


def _subtable(table: ScoreTable, index: np.ndarray) -> ScoreTable:
    values = {name: column[index] for name, column in table.values.items()}
    return ScoreTable(tuple(table.archs[i] for i in index), values, table.seconds[index])


def _timing(
    run: CorrelationRun,
    checkpoint: Checkpoint,
    genomes: Sequence[Genome],
    names: tuple[Sequence[str], Sequence[str]],
) -> IsolationTiming:
    """The isolation timing of the checkpoint, or measured now (once per timed names and sample)."""
    proxy_names, aggregate_names = names
    key = {
        "timing_sample": run.timing_sample,
        "proxies": list(proxy_names),
        "aggregates": list(aggregate_names),
    }
    timing = checkpoint.load_timing(key)
    if timing is None:
        timing = time_proxies_in_isolation(
            run.space, genomes, run.batch, proxy_names, seed=run.seed, aggregate_names=aggregate_names,
            labeled=run.labeled, sample=run.timing_sample, device=run.device, progress=run.progress,
        )  # fmt: skip
        checkpoint.save_timing(key, timing)
    return timing


# -- the run ---------------------------------------------------------------------------------------------
def run_correlation(run: CorrelationRun, out: Path) -> dict[str, Any]:
    """Score the sample(s) resumably, time the proxies, then measure against the ground truth into ``out``.

    Writes ``scores.csv``, ``report.json``, ``report.md``, ``spearman.png`` and one ``scatter_NAME.png`` per
    top proxy into ``out``, each complete or not at all, beside the checkpoint (`nasfleet.bench_store`).
    Returns the report.
    """
    columns = accuracy_columns(run.ground_truth)
    if run.column not in columns:
        raise ValueError(f"column must be one of the accuracy columns {columns}, but got {run.column!r}")
    strings = read_arch_strings(run.ground_truth)
    samples = draw_samples(strings, run.sample, run.seed, run.repeats)
    chosen = set().union(*samples)
    distinct = list(dict.fromkeys(text for text in strings if text in chosen))
    genomes = _decode_all(run.space, distinct)
    names = expand_names(run.proxies, run.labeled)
    settings = _settings(run, strings, len(samples[0]), names[0])
    position = {text: i for i, text in enumerate(distinct)}
    indices = [np.array([position[text] for text in sample]) for sample in samples]
    with open_checkpoint(out, settings, sorted(names[0]), distinct) as checkpoint:
        resumed = len(checkpoint.scored)
        table = score_resumably(run, checkpoint, distinct, genomes, names[0])
        aggregates = add_aggregates(table, names[1], run.labeled)  # over every scored arch: scores.csv
        per_repeat = [add_aggregates(_subtable(table, index), names[1], run.labeled) for index in indices]
        timing = _timing(run, checkpoint, genomes, names)
    accuracies = read_accuracies(run.ground_truth, distinct, columns)  # only now, for measurement
    scores = [_repeat_scores(table, i, aggregates) for i, aggregates in zip(indices, per_repeat, strict=True)]
    results = []
    for name in [*names[0], *names[1]]:
        measured = [
            measure(repeat[name], {c: a[index] for c, a in accuracies.items()}, run.top_fraction)
            for repeat, index in zip(scores, indices, strict=True)
        ]
        results.append(_result(name, measured, run.column, timing))
    ranked = sorted(results, key=_by_spearman, reverse=True)
    report = _report(run, columns, (table, len(samples[0]), resumed), timing, ranked)
    header, rows = table.rows(aggregates)
    for i, row in enumerate(rows):
        row.extend(float(accuracies[c][i]) for c in columns)
    write_outputs(out, report, ([*header, *columns], rows), (scores[0], accuracies[run.column][indices[0]]))
    return report


def _repeat_scores(
    table: ScoreTable, index: np.ndarray, aggregates: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Every score of one repeat's sample, in its better direction (aggregates: over that sample)."""
    return {**{name: oriented(name, values[index]) for name, values in table.values.items()}, **aggregates}


def _result(
    name: str, measured: list[dict[str, dict[str, float | None]]], column: str, timing: IsolationTiming
) -> dict[str, Any]:
    summary = summarize(measured)
    return {
        "name": name,
        "kind": "proxy" if name in PROXIES else "aggregate",
        "higher_is_better": PROXIES[name].higher_is_better if name in PROXIES else True,
        **summary["mean"][column],
        "by_column": summary["mean"],
        "std_by_column": summary["std"],
        "per_repeat": measured,
        "seconds_per_arch": timing.seconds[name],
        "ratio_to_forward_backward": timing.ratio(name),
    }


def _by_spearman(result: Mapping[str, Any]) -> float:
    rho = result["spearman"]
    return -np.inf if rho is None else float(rho)


def _report(
    run: CorrelationRun,
    columns: list[str],
    scored: tuple[ScoreTable, int, int],
    timing: IsolationTiming,
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """The report; ``scored`` is the table of every scored arch, the sample size and the archs that were
    already in the checkpoint when this run began."""
    table, n, resumed = scored
    return {
        "command": run.command,
        "space": run.space.name,
        "ground_truth": str(run.ground_truth),
        "column": run.column,
        "accuracy_columns": columns,
        "sample": "all" if run.sample is None else run.sample,
        "n": n,
        "repeats": run.repeats,
        "repeat_seeds": [run.seed + r for r in range(run.repeats)],
        "distinct_archs": len(table.archs),
        "top_fraction": run.top_fraction,
        "top_count": top_count(n, run.top_fraction),
        "batch_size": run.batch.size,
        "seed": run.seed,
        "data": run.data,
        "probe": {
            "inputs": run.probe_inputs,
            "source": run.probe_source or run.data,
            "input_shape": list(run.batch.input_shape),
            "num_classes": run.batch.num_classes,
        },
        "labeled": run.labeled,
        "device": run.device,
        "workers": run.workers,
        "scoring_seconds_per_arch": float(np.median(table.seconds)),
        "already_scored_at_start": resumed,
        "timing": {
            "sample": len(timing.archs),
            "archs": list(timing.archs),
            "forward_backward_seconds": timing.reference,
        },
        "results": results,
    }
