"""Measures the regressor comparison (`nb201_loop.py --regressor`, results/models/*/): tables for models.md,
models.json, models.png.

Every folder under ``--results`` is one variant (a regressor with its settings). Like `summarize.py`, this
reads the ground truth only to measure the found archs, after the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from summarize import POINTS, SHARED, TASKS, curves  # noqa: E402  (before nb201_loop puts search/ first)

from nasfleet.personalization import read_table  # noqa: E402

BASELINE = "bayesian-ridge"
SHORT = {"cifar10_test": "C10", "cifar100_test": "C100", "imagenet16_test": "IN16"}


def load(folder: Path, seeds: list[int]) -> list[dict]:
    return [json.loads((folder / f"seed-{seed}.json").read_text()) for seed in seeds]


def measure(runs: list[dict], tables: dict[str, dict[str, float]]) -> dict:
    """Per task and point, the personalized accuracy per seed; the 3-task mean per seed; fit times."""
    data = curves(runs, tables)
    per_task = {task: np.array(data[task]["personalized"]) for task in TASKS}  # point x seed
    fits = np.concatenate([run["fit_seconds"] for run in runs]) * 1000
    return {
        "per_task": {task: values.tolist() for task, values in per_task.items()},
        "mean3": np.mean([per_task[t] for t in TASKS], axis=0).tolist(),  # point x seed
        "fit_ms": {"median": float(np.median(fits)), "max": float(np.max(fits))},
        "wall_s": [round(run["seconds"]) for run in runs],
        "settings": runs[0].get("regressor_settings", {}),
    }


def table(results: dict[str, dict], seeds: list[int]) -> list[str]:
    """The first of *results* is the baseline the others are compared with."""
    at, baseline = POINTS.index(10), next(iter(results))
    lines = [
        f"Seeds {seeds}. Accuracy (%) at 10 reports per device, mean ± sample std over seeds; the paired "
        f"difference to {baseline} on the 3-task mean, ± its standard error (std / √n).",
        "",
        "| variant | C10 | C100 | IN16 | 3-task mean | paired diff ± s.e. | fit ms per refit (median/max) |",
        "|---|---|---|---|---|---|---|",
    ]
    base = np.array(results[baseline]["mean3"][at])
    for name, r in results.items():
        cells = [_ms(r["per_task"][t][at]) for t in TASKS] + [_ms(r["mean3"][at])]
        diff = "—"
        if name != baseline:
            d = np.array(r["mean3"][at]) - base
            diff = f"{d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f}"
        fit = f"{r['fit_ms']['median']:.1f} / {r['fit_ms']['max']:.1f}"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {diff} | {fit} |")
    lines += ["", "Curve: 3-task mean (C10 / C100 / IN16) against reports per device:", ""]
    header = "| variant | " + " | ".join(str(n) for n in POINTS[1:]) + " |"
    lines += [header, "|---|" + "---|" * (len(POINTS) - 1)]
    for name, r in results.items():
        cells = []
        for k in range(1, len(POINTS)):
            tasks = " / ".join(f"{np.mean(r['per_task'][t][k]):.2f}" for t in TASKS)
            cells.append(f"**{np.mean(r['mean3'][k]):.2f}** ({tasks})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _ms(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def plot(results: dict[str, dict], path: Path, seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS) + 1, figsize=(4.2 * (len(TASKS) + 1), 3.8))
    for name, r in results.items():
        series = [("mean of 3 tasks", r["mean3"])] + [(t, r["per_task"][t]) for t in TASKS]
        for ax, (title, values) in zip(axes, series, strict=True):
            mean = [np.mean(v) for v in values]
            ax.plot(range(len(POINTS)), mean, "o-" if name == next(iter(results)) else ".--", label=name)
            ax.set_title(title)
    for ax in axes:
        ax.set_xticks(range(len(POINTS)), [str(n) for n in POINTS])
        ax.set_xlabel("reports per device")
    axes[0].set_ylabel("accuracy on its own task (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"NB201 closed loop, mean over development seeds {seeds}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results" / "models")
    parser.add_argument("--seeds", nargs="+", type=int, default=[100, 101, 102, 103, 104])
    parser.add_argument("--variants", nargs="*", help="Folders to compare (default: every complete one).")
    parser.add_argument("--baseline", default=BASELINE, help="The variant the others are compared with.")
    parser.add_argument("--plot", type=Path, help="Write the curves here (e.g. models.png).")
    parser.add_argument("--table", type=Path, default=SHARED / "nas-bench-201" / "nb201-accuracy-200ep.csv")
    args = parser.parse_args()
    tables = {task: read_table(args.table, task) for task in TASKS}
    folders = [args.results / v for v in args.variants] if args.variants else sorted(args.results.iterdir())
    complete = [f for f in folders if all((f / f"seed-{s}.json").exists() for s in args.seeds)]
    complete.sort(key=lambda f: f.name != args.baseline)
    results = {f.name: measure(load(f, args.seeds), tables) for f in complete}
    print("\n".join(table(results, args.seeds)))
    name = "models-" + "-".join(str(s) for s in (args.seeds[0], args.seeds[-1])) + ".json"
    (args.results / name).write_text(json.dumps(results, indent=1) + "\n")
    if args.plot:
        plot(results, args.plot, args.seeds)


if __name__ == "__main__":
    main()
