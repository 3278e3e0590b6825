"""Fidelity of the synthetic proxy batch: does FG-NAS rank NB201 archs the same on it as on real data?

A device holds a partition of the real CIFAR-10 training images. The server never sees them: it scores
on a batch rebuilt from the device's DP characteristics (`extract_characteristics` ->
`synthetic_probe_batch`). For a seeded sample of NB201 archs this script computes the FG-NAS aggregate
(`fgnas`, over its four raw proxies) on

* the real probe batch of the partition (the reference), and a second real batch (another seed: how much
  rankings move between two real batches anyway);
* the synthetic batch for several epsilons (with a noiseless point) at the default rank, and for
  several ranks at the default epsilon;
* the generic prior (a device that opted out of sketches),

then reports Spearman rho of each against the reference and, read only after all scoring, against the
ground-truth ``cifar10_test`` column. Raw proxy values are cached per point under ``OUT/cache`` so an
interrupted run resumes. Ground truth never reaches a score or a choice here.

    nice -n 19 python experiments/federation/fidelity.py --archs 250 --out experiments/federation/fidelity
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from nasfleet import bench
from nasfleet.clients.characteristics import (
    DEFAULT_DELTA,
    DEFAULT_EPSILON,
    DEFAULT_RANK,
    default_clip,
    extract_characteristics,
    noise_scales,
    sketch_dataset,
)
from nasfleet.data.datasets import CIFAR10_DIRNAME, Dataset, default_data_dir, load_cifar10
from nasfleet.protocol.messages import DataCharacteristics
from nasfleet.proxies.engine import ScoreTable, add_aggregates, expand_names, score_archs
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.search.probe import synthetic_probe_batch
from nasfleet.spaces import get_space

AGGREGATE = "fgnas"
COLUMN = "cifar10_test"
MIN_RHO_VS_REAL = 0.9
MAX_GT_GAP = 0.03


@dataclass(frozen=True)
class Point:
    """One probe batch to score: real data, DP sketches at (epsilon, rank), or the generic prior."""

    name: str
    kind: str  # "real", "sketch" or "prior"
    epsilon: float | None = None  # None with kind "sketch": noiseless (not private)
    rank: int | None = None
    batch_seed: int = 0


def grid(epsilons: list[float], ranks: list[int]) -> list[Point]:
    """Reference, second real batch, epsilon curve (default rank), rank curve (default epsilon), prior."""
    points = [Point("real", "real"), Point("real-other-batch", "real", batch_seed=1)]
    points.append(Point(f"no-noise-r{DEFAULT_RANK}", "sketch", None, DEFAULT_RANK))
    for epsilon in sorted({*epsilons, DEFAULT_EPSILON}):
        points.append(Point(f"eps{epsilon:g}-r{DEFAULT_RANK}", "sketch", epsilon, DEFAULT_RANK))
    for rank in sorted(set(ranks) - {DEFAULT_RANK}):
        points.append(Point(f"eps{DEFAULT_EPSILON:g}-r{rank}", "sketch", DEFAULT_EPSILON, rank))
    points.append(Point("generic-prior", "prior"))
    return points


# -- batches ---------------------------------------------------------------------------------------------
def device_partition(data: Dataset, size: int, seed: int) -> Dataset:
    """``size`` training images drawn with ``seed`` (all of them when size >= len(data))."""
    if size >= len(data):
        return data
    return data.subset(np.sort(np.random.default_rng(seed).choice(len(data), size, replace=False)))


def characteristics_for(point: Point, partition: Dataset, seed: int) -> DataCharacteristics:
    """The device's release for a point; the noiseless point bypasses the message path (not private)."""
    if point.kind == "prior":
        return extract_characteristics(partition, seed=seed, sketches=False)
    assert point.rank is not None
    if point.epsilon is not None:
        return extract_characteristics(partition, epsilon=point.epsilon, rank=point.rank, seed=seed)
    opted_out = extract_characteristics(partition, seed=seed, sketches=False)
    clip = default_clip(partition.input_shape)
    exact = sketch_dataset(partition, labeled=True, rank=point.rank, clip=clip, noise=None, seed=seed)
    return replace(opted_out, class_means=exact.means, class_bases=exact.bases)


def probe_batch(point: Point, partition: Dataset, batch_size: int, seed: int) -> ProbeBatch:
    """The batch a point is scored on; synthetic ones go through the wire format, as on a real server."""
    if point.kind == "real":
        return ProbeBatch.from_dataset(partition, batch_size, point.batch_seed)
    released = characteristics_for(point, partition, seed)
    if point.kind == "sketch" and point.epsilon is None:  # the message schema demands a finite epsilon
        return synthetic_probe_batch(released, batch_size, seed)
    received = DataCharacteristics.from_wire(*released.to_wire())
    return synthetic_probe_batch(received, batch_size, seed)


# -- scoring with a per-point cache ----------------------------------------------------------------------
def score_point(
    point: Point, archs: list[str], batch: ProbeBatch, settings: dict[str, Any], cache: Path
) -> ScoreTable:
    """Raw proxy values of every arch on ``batch``, from ``cache`` when an identical run stored them."""
    key = {"point": asdict(point), "archs": archs, **settings}
    path = cache / f"{point.name}.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            values = {name: np.asarray(column) for name, column in stored["values"].items()}
            return ScoreTable(tuple(archs), values, np.asarray(stored["seconds"]))
    space = get_space("nb201")
    proxies, _ = expand_names(AGGREGATE, True)
    genomes = [space.decode(text) for text in archs]
    table = score_archs(space, genomes, batch, proxies, seed=settings["seed"], progress=True)
    payload = {"key": key, "values": {k: v.tolist() for k, v in table.values.items()}}
    payload["seconds"] = table.seconds.tolist()
    cache.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(payload))
    os.replace(scratch, path)
    return table


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b).statistic)


def sketch_error(point: Point, partition: Dataset, seed: int) -> dict[str, float] | None:
    """How close a point's released sketches are to the noiseless ones of the same rank.

    ``mean_error``: mean over classes of ||noisy mean - exact mean|| / ||exact mean||. ``captured``: mean
    over classes of the share of the exact rank-r covariance's variance inside the released rank-r span.
    """
    if point.kind != "sketch" or point.rank is None:
        return None
    released = characteristics_for(point, partition, seed)
    clip = default_clip(partition.input_shape)
    exact = sketch_dataset(partition, labeled=True, rank=point.rank, clip=clip, noise=None, seed=seed)
    assert released.class_means is not None and released.class_bases is not None
    errors, captured = [], []
    for group, (mean, factor) in enumerate(zip(exact.means, exact.bases, strict=True)):
        errors.append(np.linalg.norm(released.class_means[group] - mean) / np.linalg.norm(mean))
        span, _ = np.linalg.qr(released.class_bases[group].T.astype(np.float64))
        captured.append(np.linalg.norm(factor @ span) ** 2 / np.linalg.norm(factor) ** 2)
    return {"mean_error": float(np.mean(errors)), "captured": float(np.mean(captured))}


# -- measurement -----------------------------------------------------------------------------------------
def measure(
    points: list[Point], tables: dict[str, ScoreTable], accuracy: np.ndarray, errors: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per point: rho of fgnas (and of each raw proxy) against the real batch's, and of fgnas vs accuracy."""
    scores = {name: add_aggregates(table, [AGGREGATE], True)[AGGREGATE] for name, table in tables.items()}
    reference, rows = scores["real"], []
    for point in points:
        table = tables[point.name]
        raw = {name: spearman(column, tables["real"].values[name]) for name, column in table.values.items()}
        rows.append({
            **asdict(point),
            "rho_vs_real": spearman(scores[point.name], reference),
            "raw_rho_vs_real": raw,
            "rho_vs_ground_truth": spearman(scores[point.name], accuracy),
            "median_seconds_per_arch": float(np.median(table.seconds)),
            "sketch_error": errors.get(point.name),
        })  # fmt: skip
    return rows


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The requirement at the default (epsilon, rank): rho vs real >= 0.9, GT rho within 0.03 of real's."""
    real = next(r for r in rows if r["name"] == "real")
    default = next(r for r in rows if r["epsilon"] == DEFAULT_EPSILON and r["rank"] == DEFAULT_RANK)
    gap = real["rho_vs_ground_truth"] - default["rho_vs_ground_truth"]
    return {
        "point": default["name"],
        "rho_vs_real": default["rho_vs_real"],
        "ground_truth_gap": gap,
        "passes": bool(default["rho_vs_real"] >= MIN_RHO_VS_REAL and abs(gap) <= MAX_GT_GAP),
    }


def privacy_table(epsilons: list[float], partition: Dataset) -> list[dict[str, float]]:
    """Noise standard deviations per epsilon at the default delta and clip (for the report)."""
    clip = default_clip(partition.input_shape)
    rows = []
    for epsilon in epsilons:
        scales = noise_scales(epsilon, DEFAULT_DELTA, clip)
        rows.append({"epsilon": epsilon, "sum_sigma": scales.sum_sigma, "moment_sigma": scales.moment_sigma})
    return rows


# -- outputs ---------------------------------------------------------------------------------------------
def _error_cells(error: dict[str, float] | None) -> str:
    return "– | –" if error is None else f"{error['mean_error']:.2f} | {error['captured']:.2f}"


def render_markdown(report: dict[str, Any]) -> str:
    """Settings, the verdict and one table row per point."""
    v, s = report["verdict"], report["settings"]
    lines = [
        "# Synthetic-batch fidelity (FG-NAS on NB201, real CIFAR-10 partition)",
        "",
        f"- command: `{report['command']}`",
        f"- {s['archs']} NB201 archs (seed {s['seed']}), partition of {s['partition_size']} CIFAR-10 "
        f"training images, batch size {s['batch_size']}, delta {DEFAULT_DELTA:g}, clip sqrt(D)",
        f"- default point `{v['point']}`: rho vs real = {v['rho_vs_real']:.3f} (need >= {MIN_RHO_VS_REAL}), "
        f"GT gap = {v['ground_truth_gap']:+.3f} (need |gap| <= {MAX_GT_GAP}): "
        f"**{'PASS' if v['passes'] else 'FAIL'}** (gap = real's GT ρ minus synthetic's)",
        "- sketch accuracy against the noiseless sketch of the same rank: mean error = relative L2 error of "
        "the class means; variance captured = share of the exact rank-r covariance inside the released span",
        "- noise std on each group's sum / second-moment sum (analytic Gaussian mechanism): "
        + ", ".join(
            f"ε={p['epsilon']:g}: {p['sum_sigma']:.4g} / {p['moment_sigma']:.4g}" for p in report["privacy"]
        ),
        "",
        "| point | epsilon | rank | ρ fgnas vs real | ρ fgnas vs "
        + COLUMN
        + " | mean error | variance captured | ρ raw proxies vs real | s/arch |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in report["points"]:
        raw = ", ".join(f"{k} {x:.3f}" for k, x in row["raw_rho_vs_real"].items())
        epsilon = (
            "–" if row["kind"] != "sketch" else ("∞" if row["epsilon"] is None else f"{row['epsilon']:g}")
        )
        lines.append(
            f"| {row['name']} | {epsilon} | {row['rank'] or '–'} | {row['rho_vs_real']:.3f} | "
            f"{row['rho_vs_ground_truth']:.3f} | {_error_cells(row['sketch_error'])} | {raw} | "
            f"{row['median_seconds_per_arch']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _panel(axes: Any, xs: list[float], ticks: list[str], curve: list[Any], rows: Any, label: str) -> None:
    axes.plot(xs, [r["rho_vs_real"] for r in curve], "o-", label="ρ fgnas: synthetic vs real batch")
    axes.plot(xs, [r["rho_vs_ground_truth"] for r in curve], "s-", label=f"ρ synthetic vs {COLUMN}")
    real_gt, other, prior = rows["real"], rows["real-other-batch"], rows["generic-prior"]
    axes.axhline(real_gt["rho_vs_ground_truth"], color="k", ls="--", label=f"ρ real vs {COLUMN}")
    axes.axhline(other["rho_vs_real"], color="grey", ls=":", label="ρ 2nd real batch vs real")
    axes.axhline(prior["rho_vs_real"], color="tab:red", ls="-.", label="ρ generic prior vs real")
    axes.axhline(prior["rho_vs_ground_truth"], color="tab:red", ls="--", label=f"ρ generic prior vs {COLUMN}")
    axes.set_xscale("log", base=2)
    axes.set_xticks(xs, ticks)
    axes.set_xlabel(label)


def plot(report: dict[str, Any], path: Path) -> None:
    """Two panels: rho over epsilon (default rank) and over rank (default epsilon), with references."""
    from matplotlib.figure import Figure

    rows = {row["name"]: row for row in report["points"]}
    sketches = [row for row in report["points"] if row["kind"] == "sketch"]
    at_rank = [r for r in sketches if r["rank"] == DEFAULT_RANK]
    by_eps = sorted(at_rank, key=lambda r: r["epsilon"] or math.inf)
    by_rank = sorted((r for r in sketches if r["epsilon"] == DEFAULT_EPSILON), key=lambda r: r["rank"])
    largest = max(r["epsilon"] or 0.0 for r in by_eps)
    figure = Figure(figsize=(11, 4), layout="constrained")
    left, right = figure.subplots(1, 2, sharey=True)
    eps_ticks = [f"{r['epsilon']:g}" if r["epsilon"] else "none" for r in by_eps]
    eps_xs = [r["epsilon"] or 2 * largest for r in by_eps]
    _panel(left, eps_xs, eps_ticks, by_eps, rows, "epsilon (none: no noise, not private)")
    ranks = [r["rank"] for r in by_rank]
    _panel(right, ranks, [str(rank) for rank in ranks], by_rank, rows, "sketch rank")
    left.set_ylabel("Spearman ρ")
    right.legend(loc="center right", fontsize=8)
    figure.savefig(path, dpi=100)


# -- the run ---------------------------------------------------------------------------------------------
def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    data = default_data_dir()
    parser.add_argument(
        "--archs", type=int, default=200, help="NB201 archs sampled from the ground-truth file"
    )
    parser.add_argument("--seed", type=int, default=0, help="arch sample, network init, noise, batches")
    parser.add_argument("--batch-size", type=int, default=32, help="as the server's search plan")
    parser.add_argument("--partition-size", type=int, default=5000, help="device's training images")
    parser.add_argument("--epsilons", default="0.25,1,4", help="comma-separated epsilons (default rank)")
    parser.add_argument("--ranks", default="2,8,32", help="comma-separated ranks (default epsilon)")
    parser.add_argument("--cifar10", type=Path, default=data / CIFAR10_DIRNAME)
    parser.add_argument(
        "--ground-truth", type=Path, default=data / "nas-bench-201" / "nb201-accuracy-200ep.csv"
    )
    parser.add_argument("--out", type=Path, default=Path("experiments/federation/fidelity"))
    return parser.parse_args(argv)


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Score every point (cached), then read the ground truth, measure and write the report."""
    archs = bench.sample_arch_strings(bench.read_arch_strings(args.ground_truth), args.archs, args.seed)
    partition = device_partition(load_cifar10(args.cifar10, "train"), args.partition_size, args.seed)
    epsilons = [float(x) for x in args.epsilons.split(",")]
    points = grid(epsilons, [int(x) for x in args.ranks.split(",")])
    settings = {"seed": args.seed, "batch_size": args.batch_size, "partition_size": len(partition)}
    tables = {}
    for index, point in enumerate(points, 1):
        print(f"[{index}/{len(points)}] {point.name}", flush=True)
        started = time.perf_counter()
        batch = probe_batch(point, partition, args.batch_size, args.seed)
        tables[point.name] = score_point(point, archs, batch, settings, args.out / "cache")
        print(
            f"[{index}/{len(points)}] {point.name} done in {time.perf_counter() - started:.0f} s", flush=True
        )
    accuracy = bench.read_accuracies(args.ground_truth, archs, [COLUMN])[COLUMN]  # only now, to measure
    errors = {point.name: sketch_error(point, partition, args.seed) for point in points}
    rows = measure(points, tables, accuracy, errors)
    report = {
        "command": command,
        "settings": {**settings, "archs": args.archs, "aggregate": AGGREGATE, "column": COLUMN},
        "defaults": {"epsilon": DEFAULT_EPSILON, "delta": DEFAULT_DELTA, "rank": DEFAULT_RANK},
        "privacy": privacy_table(sorted({*epsilons, DEFAULT_EPSILON}), partition),
        "verdict": verdict(rows),
        "points": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(render_markdown(report))
    plot(report, args.out / "fidelity.png")
    return report


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    report = run(parse(arguments), shlex.join(["python", "experiments/federation/fidelity.py", *arguments]))
    print(render_markdown(report))


if __name__ == "__main__":
    main()
