"""Table II / Table V of FG-NAS from a `nasfleet bench correlation` run, with and without labels.

The label-free (alpha = 0) FG-NAS scores are the same aggregate over the same raw columns: S_FI, S_FC
and S_GC never read labels, so an unlabeled run would compute exactly these values. Writes tables.md
beside the run. Accuracies are read from scores.csv after scoring, to measure only.

    python experiments/correlation/summarize.py experiments/correlation/nb201-cifar10
    python experiments/correlation/summarize.py --family fgnas_paper experiments/correlation/nb201-cifar10-500

``--family fgnas_paper`` gives the same table for FG-NAS as the paper prints it (`fgnas_paper` and its
``_nofp`` / ``_nogp`` / ``_linear`` ablations, from the raw ``fgp_*`` columns), so a run that scored only
``fgnas_paper`` still gets its Table V.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from nasfleet.proxies import get_aggregate

FAMILIES = {"fgnas": "FG-NAS", "fgnas_paper": "FG-NAS as printed (`fgnas_paper`)"}
ABLATIONS = (("", "FG-NAS"), ("_nofp", "-FP"), ("_nogp", "-GP"), ("_linear", "-NL"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--family", choices=FAMILIES, default="fgnas", help="ours or the paper's")
    args = parser.parse_args()
    report = json.loads((args.run / "report.json").read_text())
    rows = list(csv.DictReader((args.run / "scores.csv").open()))
    raw = {name: np.array([float(r[name]) for r in rows]) for name in get_aggregate(args.family).INPUTS}
    columns = report["accuracy_columns"]
    accuracy = {c: np.array([float(r[c]) for r in rows]) for c in columns}
    lines = [
        f"# {FAMILIES[args.family]} ablations and label availability ({report['n']} NB201 archs, seed "
        f"{report['seed']})",
        "",
        f"Probe data: `{report['data']}`, batch {report['batch_size']}. Every column is scored with this one",
        "probe batch: CIFAR-100 and ImageNet16-120 images are not available here.",
        "",
        "| scorer | labels | " + " | ".join(f"ρ {c}" for c in columns) + f" | τ {report['column']} |",
        "|---|---|" + "---|" * (len(columns) + 1),
    ]
    for suffix, label in ABLATIONS:
        for labeled in (True, False):
            scores = get_aggregate(args.family + suffix).combine(raw, labeled)
            rhos = " | ".join(f"{spearmanr(scores, accuracy[c])[0]:.3f}" for c in columns)
            tau = kendalltau(scores, accuracy[report["column"]])[0]
            lines.append(f"| {label} | {'α = 1' if labeled else 'α = 0'} | {rhos} | {tau:.3f} |")
    name = "tables.md" if args.family == "fgnas" else f"tables-{args.family}.md"
    (args.run / name).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
