"""The correlation benchmark's outputs: ``scores.csv``, ``report.json``, ``report.md`` and the plots.

Every file is written into a scratch directory beside the output directory and then moved into place
one by one, so each appears complete or not at all.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nasfleet.proxies.aggregate import normalized_rank

TOP_SCATTERS = 4
METRIC_HEADINGS = {"spearman": "ρ", "kendall": "τ", "precision_top": "prec@top", "ndcg_top": "nDCG@P"}


def write_outputs(
    out: Path,
    report: dict[str, Any],
    table: tuple[list[str], list[list[object]]],
    scatter: tuple[Mapping[str, np.ndarray], np.ndarray],
) -> None:
    """Write ``scores.csv`` (``table``: header and rows), the report, its bar chart and one scatter plot
    for each of the `TOP_SCATTERS` best scores (``scatter``: scores and accuracies of repeat 0)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        with (scratch / "scores.csv").open("w", newline="") as stream:
            csv.writer(stream).writerows([table[0], *table[1]])
        (scratch / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        (scratch / "report.md").write_text(render_markdown(report))
        plot_spearman(scratch / "spearman.png", report)
        scores, accuracy = scatter
        top = [r for r in report["results"] if r["spearman"] is not None][:TOP_SCATTERS]
        for result in top:
            path = scratch / f"scatter_{result['name']}.png"
            plot_scatter(path, result, scores[result["name"]], accuracy, report["column"])
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted(scratch.iterdir()):
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _cell(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _settings_lines(report: Mapping[str, Any]) -> list[str]:
    probe, repeats = report["probe"], report["repeats"]
    sample = (
        f"all {report['n']} architectures"
        if report["sample"] == "all"
        else f"N = {report['n']} architectures drawn with seed {report['seed']}"
    )
    if repeats > 1:
        sample = (
            f"{repeats} repeats of N = {report['n']} architectures, drawn with seeds "
            f"{report['repeat_seeds'][0]}..{report['repeat_seeds'][-1]} ({report['distinct_archs']} distinct "
            "archs, each scored once); cells are mean ± std (ddof 1) over the repeats"
        )
    inputs = (
        f"Gaussian noise N(0, 1) shaped like `{probe['source']}`'s images"
        if probe["inputs"] == "noise"
        else f"`{probe['source']}` training images"
    )
    return [
        f"- command: `{report['command']}`",
        f"- {sample}, from `{report['ground_truth']}`",
        f"- probe batch: {report['batch_size']} inputs of {inputs} {tuple(probe['input_shape'])}, "
        f"{probe['num_classes']} classes, {'labeled' if report['labeled'] else 'unlabeled'}; "
        f"networks initialised with seed {report['seed']}; device {report['device']}, "
        f"workers {report['workers']}",
        f"- scoring, all proxies on one shared probe: median {report['scoring_seconds_per_arch']:.4f} s/arch",
        f"- isolation timing on {report['timing']['sample']} archs; plain forward+backward "
        f"{report['timing']['forward_backward_seconds']:.4f} s",
        "- every score is ranked in its better direction (a lower-is-better proxy is negated), so positive "
        "ρ and τ mean it ranks like accuracy",
        f"- ρ Spearman, τ Kendall τ-b; prec@top: share of the score's top P = {report['top_count']} "
        f"({report['top_fraction']:.0%} of N) that is in the true top P; nDCG@P: discounted cumulative "
        "gain of the score's top P, with the accuracy as gain, over the ideal order's (ties in "
        "expectation: see `nasfleet.bench_metrics`)",
    ]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as a Markdown page: the settings, then one table per accuracy column (the primary one
    first) with a row per proxy and aggregate."""
    main, columns = report["column"], report["accuracy_columns"]
    lines = [f"# Proxy rank correlation on {report['space']}", "", *_settings_lines(report)]
    for column in [main, *(c for c in columns if c != main)]:
        lines += [
            "",
            f"## {column}{' (primary)' if column == main else ''}",
            "",
            "| name | kind | " + " | ".join(METRIC_HEADINGS.values()) + " | s/arch | × fwd+bwd |",
            "|---|---|" + "---:|" * len(METRIC_HEADINGS) + "---:|---:|",
        ]
        for result in report["results"]:
            mean, std = result["by_column"][column], result["std_by_column"][column]
            cells = [_cell(mean[metric], std[metric]) for metric in METRIC_HEADINGS]
            lines.append(
                f"| {result['name']} | {result['kind']} | {' | '.join(cells)} | "
                f"{result['seconds_per_arch']:.4g} | {result['ratio_to_forward_backward']:.3g} |"
            )
    return "\n".join(lines) + "\n"


def plot_spearman(path: Path, report: Mapping[str, Any]) -> None:
    """Horizontal bars of ρ against the primary column (mean, with the std over repeats as error bars),
    best at the top; aggregates in a second colour."""
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state

    results = [r for r in report["results"] if r["spearman"] is not None][::-1]
    column = report["column"]
    errors = [r["std_by_column"][column]["spearman"] or 0.0 for r in results]
    figure = Figure(figsize=(7, 0.3 * len(results) + 1.5), layout="constrained")
    axes = figure.subplots()
    colours = ["tab:orange" if r["kind"] == "aggregate" else "tab:blue" for r in results]
    axes.barh([r["name"] for r in results], [r["spearman"] for r in results], color=colours, xerr=errors)
    axes.axvline(0.0, color="black", linewidth=0.8)
    repeats = f", {report['repeats']} repeats" if report["repeats"] > 1 else ""
    axes.set_xlabel(f"Spearman ρ with {column} (N = {report['n']}{repeats})")
    axes.set_title("proxies (blue) and aggregates (orange)")
    figure.savefig(path, dpi=100)


def plot_scatter(
    path: Path, result: Mapping[str, Any], score: np.ndarray, accuracy: np.ndarray, column: str
) -> None:
    """Population rank of a score (1 = best) against accuracy, on the first repeat's sample."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4), layout="constrained")
    axes = figure.subplots()
    axes.scatter(normalized_rank(score), accuracy, s=8 if score.size <= 2000 else 2, alpha=0.6)
    axes.set_xlabel(f"normalized rank of {result['name']} (1 = best)")
    axes.set_ylabel(f"{column} accuracy")
    first = result["per_repeat"][0][column]
    axes.set_title(f"{result['name']}: ρ = {_cell(first['spearman'])}, τ = {_cell(first['kendall'])}")
    figure.savefig(path, dpi=100)
