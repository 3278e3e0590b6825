"""Reports the search experiment: ground truth of the found archs, timing, overhead, feasibility, a plot.

Reads the result JSONs that `run.py` wrote and, only now, the NAS-Bench-201 ground truth (``arch_str``
and ``cifar10_test``), to *measure* the searches; nothing here feeds back into a search. Writes
``report.md``, ``report.json`` and ``best_so_far.png`` into ``--out``.

- Found arch: the result's ``best.arch`` (the argmax of the final FG-NAS aggregate over the archive).
- Best-so-far curve: after each step, the arch that was best by the aggregate *as known then*
  (``history``), its ``cifar10_test``, held until the next step; the mean over seeds per strategy.
- ± is the sample standard deviation over seeds (ddof = 1).
- Wall time: measured, and uncached-equivalent (measured + the original scoring seconds of the cache
  hits; hits from the prefilled correlation run carry estimated seconds, see run.py). Overhead
  (everything but scoring, cache reads and writes included) is reported as a share of both.
- "best evaluated" (diagnostic only): the highest ``cifar10_test`` among all archs the search evaluated,
  what an oracle ranking would have picked from the same archive.

    python experiments/search/summarize.py
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nasfleet.data.datasets import default_data_dir
from nasfleet.spaces import get_space

HERE = Path(__file__).resolve().parent
ORDER = ("random", "evolution", "ga", "cmaes", "annealing")
MUST_REACH = ("ga", "cmaes", "evolution")
TARGET = 93.0
OVERHEAD_TARGET = 0.05
CHECKPOINTS = (50, 100, 200, 300)
RANDOM_SAMPLE = 1000
REFERENCES = {"GA-rk": 93.27, "EG-NAS": 93.56, "NASWOT best-of-1000": 92.96, "optimum": 94.37}


def read_truth(path: Path) -> dict[str, float]:
    """``arch_str -> cifar10_test``; no other column is read."""
    with path.open(newline="") as file:
        return {row["arch_str"]: float(row["cifar10_test"]) for row in csv.DictReader(file)}


def read_results(folder: Path) -> list[dict[str, Any]]:
    """The run JSONs in ``folder``; a report written there (``--out`` the same folder) is not one."""
    paths = sorted(path for path in folder.glob("*.json") if path.name != "report.json")
    return [json.loads(path.read_text()) for path in paths]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else float("nan")


def curve(result: Mapping[str, Any], truth: Mapping[str, float]) -> np.ndarray:
    """``cifar10_test`` of the best-so-far arch after each evaluation 1..budget (NaN before step 1)."""
    budget = result["config"]["budget"]
    values = np.full(budget, np.nan)
    for entry in result["history"]:
        values[entry["evaluations"] - 1 :] = truth[entry["arch"]]
    return values


def run_row(result: Mapping[str, Any], truth: Mapping[str, float]) -> dict[str, Any]:
    timing, cache = result["timing"], result.get("cache", {})
    scored = result["unique_evaluations"] - timing["cached_evaluations"]
    best_curve = curve(result, truth)
    return {
        "strategy": result["config"]["strategy"],
        "seed": result["config"]["seed"],
        "best_arch": result["best"]["arch"],
        "cifar10_test": truth[result["best"]["arch"]],
        "last_history_cifar10_test": truth[result["history"][-1]["arch"]],
        "best_evaluated_cifar10_test": max(truth[entry["arch"]] for entry in result["archive"]),
        "at": {str(k): float(best_curve[k - 1]) for k in CHECKPOINTS if k <= len(best_curve)},
        "evaluations": result["evaluations"],
        "unique_evaluations": result["unique_evaluations"],
        "cache_hits": timing["cached_evaluations"],
        "prefill_hits": cache.get("prefill_hits", 0),
        "scored": scored,
        "seconds_per_scored_eval": timing["scoring_seconds"] / scored if scored else None,
        "wall_seconds": timing["wall_seconds"],
        "uncached_wall_seconds": timing["uncached_wall_seconds"],
        "overhead_seconds": timing["overhead_seconds"],
        "overhead_fraction": timing["overhead_fraction"],
        "uncached_overhead_fraction": timing["uncached_overhead_fraction"],
        "curve": best_curve,
    }


def summarize_strategies(rows: Sequence[Mapping[str, Any]], budget: int) -> dict[str, dict[str, Any]]:
    by: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by[row["strategy"]].append(row)
    out: dict[str, dict[str, Any]] = {}
    for name in [s for s in ORDER if s in by] + sorted(set(by) - set(ORDER)):
        group = sorted(by[name], key=lambda r: r["seed"])
        mean, std = mean_std([r["cifar10_test"] for r in group])
        curves = np.vstack([r["curve"] for r in group])
        out[name] = {
            "seeds": [r["seed"] for r in group],
            "cifar10_test_mean": mean,
            "cifar10_test_std": std,
            "cifar10_test": [r["cifar10_test"] for r in group],
            "best_evaluated_mean": float(np.mean([r["best_evaluated_cifar10_test"] for r in group])),
            "at": {str(k): float(np.mean(curves[:, k - 1])) for k in CHECKPOINTS if k <= budget},
            "wall_seconds_mean": float(np.mean([r["wall_seconds"] for r in group])),
            "uncached_wall_seconds_mean": float(np.mean([r["uncached_wall_seconds"] for r in group])),
            "overhead_seconds_mean": float(np.mean([r["overhead_seconds"] for r in group])),
            "uncached_overhead_fraction_max": max(r["uncached_overhead_fraction"] for r in group),
            "overhead_fraction_max": max(r["overhead_fraction"] for r in group),
            "cache_hits_mean": float(np.mean([r["cache_hits"] for r in group])),
            "mean_curve": curves.mean(axis=0),
        }
    return out


def check_feasibility(result: Mapping[str, Any]) -> dict[str, Any]:
    """Every archive member's and the best arch's exact cost, recomputed, against the constraints."""
    config, probe = result["config"], result["probe"]
    space = get_space(config["space"])
    limits = config["constraints"]
    classes, shape = probe["num_classes"], tuple(probe["input_shape"])
    costs = [space.cost(space.decode(entry["arch"]), classes, shape) for entry in result["archive"]]

    def ok(params: int, flops: int) -> bool:
        return (limits["max_params"] is None or params <= limits["max_params"]) and (
            limits["max_flops"] is None or flops <= limits["max_flops"]
        )

    best = space.cost(space.decode(result["best"]["arch"]), classes, shape)
    rng = np.random.default_rng(0)  # context: how much of the space the limits exclude
    sampled = [space.cost(space.sample(rng), classes, shape) for _ in range(RANDOM_SAMPLE)]
    return {
        "strategy": config["strategy"],
        "seed": config["seed"],
        "budget": config["budget"],
        "max_params": limits["max_params"],
        "max_flops": limits["max_flops"],
        "archive_size": len(costs),
        "evaluations": result["evaluations"],
        "feasible_members": sum(ok(c.params, c.flops) for c in costs),
        "largest_params": max(c.params for c in costs),
        "largest_flops": max(c.flops for c in costs),
        "best_arch": result["best"]["arch"],
        "best_params": best.params,
        "best_flops": best.flops,
        "best_reported_matches": (best.params, best.flops)
        == (result["best"]["params"], result["best"]["flops"]),
        "best_feasible": ok(best.params, best.flops),
        "random_infeasible_share": float(np.mean([not ok(c.params, c.flops) for c in sampled])),
        "all_feasible": all(ok(c.params, c.flops) for c in costs) and ok(best.params, best.flops),
    }


def plot(
    path: Path, strategies: Mapping[str, Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], data: str
) -> None:
    figure, axis = plt.subplots(figsize=(8, 5))
    for name, group in strategies.items():
        mean_curve = group["mean_curve"]
        x = np.arange(1, len(mean_curve) + 1)
        label = f"{name} (n={len(group['seeds'])})"
        line = axis.plot(x, mean_curve, label=label, linewidth=1.8, drawstyle="steps-post")[0]
        curves = np.vstack([r["curve"] for r in rows if r["strategy"] == name])
        low, high = curves.min(axis=0), curves.max(axis=0)
        axis.fill_between(x, low, high, color=line.get_color(), alpha=0.12, step="post")
    axis.axhline(TARGET, color="black", linestyle="--", linewidth=1, label=f"target {TARGET}")
    axis.axhline(REFERENCES["optimum"], color="gray", linestyle=":", linewidth=1, label="NB201 optimum 94.37")
    axis.set_xlabel("evaluations")
    axis.set_ylabel("cifar10_test of the best-so-far arch (%)")
    axis.set_title(f"NB201, {data} probe batch: mean over seeds (band: min-max)")
    lowest = min(float(np.nanmin(r["curve"])) for r in rows)
    axis.set_ylim(min(91.0, np.floor(lowest) - 0.5), 94.8)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def cell(text: str) -> str:
    """``text`` safe in a markdown table cell (NB201 arch strings hold pipes)."""
    return text.replace("|", "\\|")


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def render(report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    strategies, budget = report["strategies"], report["budget"]
    lines = [
        "# Search experiment report (issue 4)",
        "",
        f"NB201, `{report['scorer']}` fitness on {report['probe']}; budget {budget}, "
        f"ask {report['ask_size']}; "
        f"{len(rows)} runs. Ground truth: `cifar10_test` (200 epochs), read only here.",
        "",
        "## Found arch: cifar10_test (mean ± sample std over seeds)",
        "",
        "| strategy | seeds | cifar10_test | per seed | "
        + "".join(f"@{k} | " for k in CHECKPOINTS if k <= budget)
        + "best evaluated (diagnostic) | wall s (measured) | wall s (uncached-equiv.) | overhead s "
        "| max overhead (uncached) | max overhead (measured) | cache hits |",
        "|---|---|---:|---|" + "---:|" * len([k for k in CHECKPOINTS if k <= budget]) + "---:|" * 7,
    ]
    for name, s in strategies.items():
        at = "".join(f"{fmt(s['at'].get(str(k)))} | " for k in CHECKPOINTS if k <= budget)
        per_seed = ", ".join(f"{v:.2f}" for v in s["cifar10_test"])
        lines.append(
            f"| {name} | {','.join(map(str, s['seeds']))} | **{fmt(s['cifar10_test_mean'])} ± "
            f"{fmt(s['cifar10_test_std'])}** | {per_seed} | {at}{fmt(s['best_evaluated_mean'])} | "
            f"{s['wall_seconds_mean']:.0f} | {s['uncached_wall_seconds_mean']:.0f} | "
            f"{s['overhead_seconds_mean']:.2f} | {s['uncached_overhead_fraction_max']:.2%} | "
            f"{s['overhead_fraction_max']:.2%} | {s['cache_hits_mean']:.0f} |"
        )
    lines += [
        "",
        f"`@k`: mean cifar10_test of the best-so-far arch after k evaluations of these budget-{budget} "
        "runs (not the same as a budget-k run for strategies whose schedule depends on the budget).",
        "",
        "## Targets",
        "",
    ]
    for check in report["targets"]:
        lines.append(f"- {'MET' if check['met'] else 'NOT MET'}: {check['what']} ({check['detail']})")
    header = (
        "| strategy | seed | found arch | cifar10_test | unique | cache hits (prefill) | scored | "
        "s/scored eval | wall s | uncached wall s | overhead s | overhead (uncached) | overhead (measured) |"
    )
    lines += ["", "## Runs", "", header, "|---|---:|---|---:|" + "---:|" * 9]
    for r in sorted(
        rows, key=lambda r: (ORDER.index(r["strategy"]) if r["strategy"] in ORDER else 99, r["seed"])
    ):
        lines.append(
            f"| {r['strategy']} | {r['seed']} | `{cell(r['best_arch'])}` | {r['cifar10_test']:.2f} | "
            f"{r['unique_evaluations']} | {r['cache_hits']} ({r['prefill_hits']}) | {r['scored']} | "
            f"{fmt(r['seconds_per_scored_eval'])} | {r['wall_seconds']:.0f} | "
            f"{r['uncached_wall_seconds']:.0f} | {r['overhead_seconds']:.2f} | "
            f"{r['uncached_overhead_fraction']:.2%} | {r['overhead_fraction']:.2%} |"
        )
    for item in report["feasibility"]:
        lines += [
            "",
            f"## Constrained run: {item['space']} {item['strategy']} seed {item['seed']}, "
            f"budget {item['budget']}",
            "",
            f"- constraints: max_params {item['max_params']:,}, max_flops {item['max_flops']:,}",
            f"- archive: {item['feasible_members']} of {item['archive_size']} evaluated archs feasible by "
            f"their exact recomputed cost ({item['evaluations']} evaluations); largest "
            f"{item['largest_params']:,} params, {item['largest_flops']:,} FLOPs",
            f"- found: `{item['best_arch']}`, {item['best_params']:,} params, {item['best_flops']:,} FLOPs "
            f"(matches the reported cost: {item['best_reported_matches']}); "
            f"feasible: {item['best_feasible']}",
            f"- the limits exclude {item['random_infeasible_share']:.0%} of {RANDOM_SAMPLE} uniformly random "
            "archs of the space (seed 0)",
            f"- **every evaluated arch and the result feasible: {item['all_feasible']}**",
        ]
    lines += ["", "References (issue 4): " + ", ".join(f"{k} {v}" for k, v in REFERENCES.items()), ""]
    return "\n".join(lines)


def where(row: Mapping[str, Any]) -> str:
    return f"{row['strategy']} seed {row['seed']}"


def targets(
    strategies: Mapping[str, Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    checks = []
    for name in MUST_REACH:
        if name in strategies:
            s = strategies[name]
            checks.append({
                "what": f"{name} mean cifar10_test >= {TARGET}", "met": s["cifar10_test_mean"] >= TARGET,
                "detail": f"{s['cifar10_test_mean']:.2f} over seeds {s['seeds']}",
            })  # fmt: skip
    if "random" in strategies:
        base = strategies["random"]["cifar10_test_mean"]
        for name, s in strategies.items():
            if name != "random":
                checks.append({
                    "what": f"{name} not worse than random (mean)", "met": s["cifar10_test_mean"] >= base,
                    "detail": f"{s['cifar10_test_mean']:.2f} vs random {base:.2f}",
                })  # fmt: skip
    if rows:
        checks.append(
            overhead_target(rows, "uncached_overhead_fraction", "(uncached-equivalent) wall time, every run")
        )
        measured = [r for r in rows if r["scored"] > 0]
        if measured:
            checks.append(
                overhead_target(measured, "overhead_fraction", "measured wall time (runs that scored)")
            )
    return checks


def overhead_target(rows: Sequence[Mapping[str, Any]], share: str, of: str) -> dict[str, Any]:
    """Whether every run's overhead (the column *share*, a share *of* a wall time) is under the target."""
    worst = max(rows, key=lambda r: r[share])
    return {"what": f"overhead < {OVERHEAD_TARGET:.0%} of the {of}", "met": worst[share] < OVERHEAD_TARGET,
            "detail": f"largest {worst[share]:.2%}, {where(worst)}"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results" / "nb201")
    parser.add_argument(
        "--constrained", type=Path, nargs="*", default=[HERE / "results" / "mbv2-constrained"]
    )
    truth = default_data_dir() / "nas-bench-201" / "nb201-accuracy-200ep.csv"
    parser.add_argument("--ground-truth", type=Path, default=truth)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    results = read_results(args.results)
    if not results:
        raise SystemExit(f"no result JSONs in {args.results}")
    truth = read_truth(args.ground_truth)
    rows = [run_row(result, truth) for result in results]
    budget = max(r["config"]["budget"] for r in results)
    strategies = summarize_strategies(rows, budget)
    first = results[0]
    probe = (
        f"`{first.get('data')}` train split, batch {first['probe']['batch_size']}, probe/scoring seed "
        f"{first.get('probe_seed')}, {'labeled' if first['probe']['labeled'] else 'unlabeled'}"
    )
    feasibility = []
    for folder in args.constrained:
        for result in read_results(folder):
            feasibility.append({"space": result["config"]["space"], **check_feasibility(result)})
    report = {
        "scorer": first["config"].get("aggregate", "fgnas"),
        "probe": probe,
        "budget": budget,
        "ask_size": first["config"]["ask_size"],
        "strategies": {
            name: {k: v for k, v in s.items() if k != "mean_curve"} for name, s in strategies.items()
        },
        "runs": [{k: v for k, v in r.items() if k != "curve"} for r in rows],
        "targets": targets(strategies, rows),
        "feasibility": feasibility,
        "ground_truth": str(args.ground_truth),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "report.md").write_text(render(report, rows))
    data = f"{report['scorer']} fitness on a {first.get('data')}"
    plot(args.out / "best_so_far.png", strategies, rows, data)
    print(render(report, rows))


if __name__ == "__main__":
    main()
