"""Measures `nb201_loop.py`'s results with the NAS-Bench-201 table: report.md, report.json, curve.png.

This is the only place the ground truth is read, to measure found archs after the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from nb201_loop import SHARED, TASKS  # noqa: E402

from nasfleet.personalization import read_table  # noqa: E402

POINTS = (0, 1, 2, 5, 10, 20)
GOALS = {"cifar10_test": 94.2, "cifar100_test": 73.0, "imagenet16_test": 46.5}


def curves(runs: list[dict], tables: dict[str, dict[str, float]]) -> dict[str, dict[str, list[list[float]]]]:
    """Per task and column (personalized, shared, zero_cost), per point, the accuracy in every seed."""
    out: dict[str, dict[str, list[list[float]]]] = {}
    for task in TASKS:
        table = tables[task]
        columns: dict[str, list[list[float]]] = {"personalized": [], "shared": [], "zero_cost": []}
        for n in POINTS:
            zero = [table[run["zero_cost"]["arch"]] for run in runs]
            columns["zero_cost"].append(zero)
            if n == 0:
                columns["personalized"].append(zero)
                columns["shared"].append(zero)
                continue
            found = [run["loop"][task]["rounds"][n - 1]["arch"] for run in runs]
            columns["personalized"].append([table[arch] for arch in found])
            columns["shared"].append([table[run["shared"][str(n)]] for run in runs])
        out[task] = columns
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results" / "nb201")
    parser.add_argument("--table", type=Path, default=SHARED / "nas-bench-201" / "nb201-accuracy-200ep.csv")
    parser.add_argument("--out", type=Path, default=HERE, help="Where report.md, report.json, curve.png go.")
    args = parser.parse_args()
    runs = [json.loads(p.read_text()) for p in sorted(args.results.glob("seed-*.json"))]
    tables = {task: read_table(args.table, task) for task in TASKS}
    data = curves(runs, tables)
    seeds = [run["seed"] for run in runs]
    lines = [
        f"# NB201 closed loop with simulated reports: seeds {seeds}",
        "",
        "Accuracy (%) of each device's SubNet on its own task, mean ± sample std over seeds.",
        "",
        "| task | optimum | zero-cost only | shared, 10 reports | personalized, 10 reports | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    at10 = POINTS.index(10)
    summary = {}
    for task in TASKS:
        col = data[task]
        best = max(tables[task].values())
        cells = {k: col[k][at10] for k in col}
        mean = {k: float(np.mean(v)) for k, v in cells.items()}
        std = {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in cells.items()}
        summary[task] = {"mean": mean, "std": std, "optimum": best, "goal": GOALS[task], "seeds": cells}
        fmt = {k: f"{mean[k]:.2f} ± {std[k]:.2f}" for k in mean}
        met = "yes" if mean["personalized"] >= GOALS[task] else "no"
        lines.append(
            f"| {task} | {best:.2f} | {fmt['zero_cost']} | {fmt['shared']} | {fmt['personalized']} | "
            f"≥ {GOALS[task]} | {met} |"
        )
    lines += ["", "Accuracy against the number of reports per device (personalized / shared):", ""]
    lines += ["| task | " + " | ".join(str(n) for n in POINTS) + " |", "|---|" + "---|" * len(POINTS)]
    for task in TASKS:
        col = data[task]
        cells = [
            f"{np.mean(p):.2f} / {np.mean(s):.2f}"
            for p, s in zip(col["personalized"], col["shared"], strict=True)
        ]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    reads = {task: [run["loop"][task]["reads"] for run in runs] for task in TASKS}
    lines += ["", f"Reports read per device (every read counted): {reads}."]
    lines += ["", f"Wall seconds per seed: {[round(run['seconds']) for run in runs]}."]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    (args.out / "report.json").write_text(json.dumps({"summary": summary, "curves": data}, indent=1) + "\n")
    plot(data, tables, args.out / "curve.png")
    print("\n".join(lines))


def plot(
    data: dict[str, dict[str, list[list[float]]]], tables: dict[str, dict[str, float]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 4))
    for ax, task in zip(axes, TASKS, strict=True):
        for column, style in (("personalized", "o-"), ("shared", "s--"), ("zero_cost", ":")):
            mean = [np.mean(v) for v in data[task][column]]
            std = [np.std(v) for v in data[task][column]]
            ax.errorbar(range(len(POINTS)), mean, yerr=std, fmt=style, capsize=3, label=column)
        ax.axhline(max(tables[task].values()), color="grey", lw=0.8, label="optimum")
        ax.axhline(GOALS[task], color="red", lw=0.8, ls="-.", label="goal")
        ax.set_xticks(range(len(POINTS)), [str(n) for n in POINTS])
        ax.set_xlabel("reports per device")
        ax.set_ylabel("accuracy on its own task (%)")
        ax.set_title(task)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
