"""Why NI does not rank NB201 under the 3,000 x 5 protocol: its ρ with and without the broken cells.

A cell is broken when no path of non-`none` edges joins its input (node 0) to its output (node 3): the
network's output then ignores the input, so NI's η is 0, its best value (`docs/garank.md`). This reads the
finished run's scores.csv and draws the same repeat samples (`nasfleet.bench.draw_samples`), and writes
ni_structure.md beside the run. Accuracies are read after scoring, to measure only: nothing here changes a
score.

    python experiments/correlation/ni_structure.py experiments/correlation/nb201-3000x5
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from nasfleet.bench import draw_samples, oriented, read_arch_strings


def connected(arch: str) -> bool:
    """Whether node 3 of an NB201 cell string is reached from node 0 through non-`none` edges."""
    reached = {0}
    for node, inputs in enumerate(arch.strip("|").split("|+|"), start=1):
        for edge in inputs.split("|"):
            op, source = edge.split("~")
            if op != "none" and int(source) in reached:
                reached.add(node)
    return 3 in reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    report = json.loads((args.run / "report.json").read_text())
    rows = {r["arch"]: r for r in csv.DictReader((args.run / "scores.csv").open())}
    strings = read_arch_strings(Path(report["ground_truth"]))
    samples = draw_samples(strings, report["n"], report["seed"], report["repeats"])
    column, top = report["column"], report["top_count"]
    lines = [
        f"# NI on `{column}`, with and without broken cells "
        f"({report['repeats']} repeats of N = {report['n']})",
        "",
        "| seed | broken cells | ρ all | ρ connected only | broken in NI's top P | mean acc. of NI's top P |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for seed, sample in zip(report["repeat_seeds"], samples, strict=True):
        score = oriented("ni", np.array([float(rows[a]["ni"]) for a in sample]))
        accuracy = np.array([float(rows[a][column]) for a in sample])
        keep = np.array([connected(a) for a in sample])
        best = np.argsort(-score, kind="stable")[:top]
        lines.append(
            f"| {seed} | {int((~keep).sum())} | {spearmanr(score, accuracy)[0]:.3f} "
            f"| {spearmanr(score[keep], accuracy[keep])[0]:.3f} | {int((~keep[best]).sum())} of {top} "
            f"| {accuracy[best].mean():.1f} |"
        )
    (args.run / "ni_structure.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
