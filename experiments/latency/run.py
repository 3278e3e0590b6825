"""Latency-prediction benchmark (issue 16, item 5): per device tier and space, how well each latency model
predicts the measured batch-1 latency of built SubNets.

For each space and tier, the device calibrates today's FLOPs profile (`calibrate_profile`) and a per-layer
table for that space (`calibrate_table`, its own random archs); then ``--archs`` random archs the
calibration never ran are measured on this host (`measure_latency_ms`: min of 7 after 2 warm-ups, one
thread, x the tier's slowdown) in ``--passes`` passes in shuffled order, each tier its own measurement,
keeping the fastest pass. Reported: share of predictions within +-10 % of measurement and Spearman rank
correlation, per model. The noise floor: a few networks measured ``--noise`` times each, the share of
their min-of-7 measurements within +-10 % of their median.

    .venv/bin/python experiments/latency/run.py            # full: 200 archs per space, about 10 min
    .venv/bin/python experiments/latency/run.py --quick    # 30 archs per space, 1 pass

Resumable: each space's results go to ``results/<space>.json`` and a space already there is skipped
(``--fresh`` recomputes). Then ``latency.png`` and the table of ``README.md`` are written from all results.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from nasfleet.clients.device import DEVICE_TIERS, calibrate_profile, measure_latency_ms
from nasfleet.search.latency import calibrate_table, table_model
from nasfleet.spaces import SearchSpace, get_space

HERE = Path(__file__).parent
SHAPE = (3, 32, 32)
CLASSES = 10
EVAL_SEED = 20_000
#: README.md's table is rewritten between these markers.
TABLE_START, TABLE_END = "<!-- table -->", "<!-- /table -->"


def spaces() -> list[SearchSpace]:
    """nb201 and mbv2, and the AutoFormer (tiny) and COER spaces when this tree has them."""
    found = [get_space("nb201"), get_space("mbv2")]
    try:
        from nasfleet.spaces.autoformer import AutoFormerSpace

        found.append(AutoFormerSpace(preset="tiny"))
    except ImportError:
        pass
    try:
        from nasfleet.spaces.coer import COERSpace

        found.append(COERSpace())
    except ImportError:
        pass
    return found


def eval_archs(space: SearchSpace, count: int, exclude: set[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """``count`` distinct random archs, none of them in ``exclude`` (the calibration's)."""
    rng, archs = np.random.default_rng(EVAL_SEED), []
    seen = set(exclude)
    for _ in range(count * 50):
        arch = space.sample(rng)
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
        if len(archs) == count:
            break
    return archs


def noise_floor(space: SearchSpace, archs: list[tuple[int, ...]], repeats: int) -> dict[str, float]:
    """Repeatability of min-of-7: the share of ``repeats`` measurements of a net within +-10 % of their
    median (averaged over ``archs``), and the mean p95/p5 - 1 spread."""
    shares, spreads = [], []
    for arch in archs:
        net = space.build(arch, CLASSES, SHAPE)
        times = np.array([measure_latency_ms(net, SHAPE) for _ in range(repeats)])
        shares.append(float(np.mean(np.abs(times / np.median(times) - 1) <= 0.1)))
        spreads.append(float(np.percentile(times, 95) / np.percentile(times, 5) - 1))
    return {"within10_of_median": float(np.mean(shares)), "p95_over_p5": float(np.mean(spreads))}


def run_space(space: SearchSpace, args: argparse.Namespace) -> dict[str, Any]:
    """Calibrate every tier for ``space``, measure its evaluation archs, and score both models."""
    torch.set_num_threads(1)
    calibration, models, exclude = {}, {}, set()
    for index, tier in enumerate(DEVICE_TIERS):
        record: list[tuple[str, tuple[int, ...]]] = []
        start = time.perf_counter()
        profile = calibrate_profile(tier, SHAPE, CLASSES, seed=index)
        table = calibrate_table([space], SHAPE, CLASSES, tier.slowdown, seed=index, record=record)
        wire_chars = len(json.dumps(table.to_json()))
        calibration[tier.name] = {"seconds": time.perf_counter() - start, "layers": len(table.times),
                                  "scale": table.scale, "wire_chars": wire_chars}  # fmt: skip
        exclude |= {arch for _, arch in record}
        models[tier.name] = (profile, table_model(table, space, CLASSES, SHAPE))
    archs = eval_archs(space, args.archs, exclude)
    measured = np.full((len(DEVICE_TIERS), args.passes, len(archs)), np.inf)
    for step in range(args.passes):
        for i in np.random.default_rng(step).permutation(len(archs)):
            net = space.build(archs[i], CLASSES, SHAPE)
            for t, tier in enumerate(DEVICE_TIERS):
                measured[t, step, i] = measure_latency_ms(net, SHAPE, tier.slowdown)
    result: dict[str, Any] = {"space": space.name, "archs": len(archs), "passes": args.passes,
                              "calibration": calibration, "tiers": {}}  # fmt: skip
    for t, tier in enumerate(DEVICE_TIERS):
        profile, predict = models[tier.name]
        truth = measured[t].min(axis=0)
        flops_pred = [profile.predict_latency_ms(space.cost(a, CLASSES, SHAPE).flops) for a in archs]
        table_pred = [predict(a) for a in archs]
        result["tiers"][tier.name] = {
            "measured": truth.tolist(), "first_pass": measured[t, 0].tolist(),
            "flops": _score(flops_pred, truth), "table": _score(table_pred, truth),
            "table_first_pass": _score(table_pred, measured[t, 0]),
            "flops_pred": flops_pred, "table_pred": table_pred,
        }  # fmt: skip
    result["noise"] = noise_floor(space, archs[:3], args.noise)
    return result


def _score(predicted: list[float], measured: np.ndarray) -> dict[str, float]:
    ratio = np.asarray(predicted) / measured
    return {"within10": float(np.mean(np.abs(ratio - 1) <= 0.1)),
            "spearman": float(spearmanr(predicted, measured).statistic),
            "median_ratio": float(np.median(ratio))}  # fmt: skip


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.2), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        tier = result["tiers"]["edge-gpu"]
        measured = np.asarray(tier["measured"])
        ax.scatter(measured, tier["flops_pred"], s=8, alpha=0.6, label="FLOPs model")
        ax.scatter(measured, tier["table_pred"], s=8, alpha=0.6, label="layer table")
        low, high = measured.min() * 0.7, measured.max() * 1.3
        ax.plot([low, high], [low, high], "k-", lw=0.8)
        ax.fill_between([low, high], [low * 0.9, high * 0.9], [low * 1.1, high * 1.1], color="k", alpha=0.08)
        ax.set(title=f"{result['space']} (edge-gpu)", xlabel="measured ms", ylabel="predicted ms")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| tier | space | archs | FLOPs: within ±10 % | FLOPs: Spearman | table: within ±10 % | "
             "table: Spearman | table, 1st pass only: within ±10 % / Spearman | noise floor |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for tier in (t.name for t in DEVICE_TIERS):
        for result in results:
            row, noise = result["tiers"][tier], result["noise"]["within10_of_median"]
            first = row["table_first_pass"]
            flops, table = row["flops"], row["table"]
            lines.append(f"| {tier} | {result['space']} | {result['archs']} | {flops['within10']:.0%} | "
                         f"{flops['spearman']:.3f} | {table['within10']:.0%} | {table['spearman']:.3f} | "
                         f"{first['within10']:.0%} / {first['spearman']:.3f} | {noise:.0%} |")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 archs per space, 1 pass, 5 noise repeats")
    parser.add_argument("--archs", type=int, default=200)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--noise", type=int, default=10, help="repeats per network for the noise floor")
    parser.add_argument("--fresh", action="store_true", help="recompute spaces already in results/")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.quick:
        args.archs, args.passes, args.noise = 30, 1, 5
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for space in spaces():
        path = args.out / f"{space.name}.json"
        if path.exists() and not args.fresh:
            results.append(json.loads(path.read_text()))
            continue
        start = time.perf_counter()
        result = run_space(space, args)
        result["seconds"] = time.perf_counter() - start
        path.write_text(json.dumps(result))
        results.append(result)
        print(f"{space.name}: {result['seconds']:.0f} s", flush=True)
    plot(results, args.out.parent / "latency.png")
    table = "\n".join(table_lines(results))
    print(table)
    readme = HERE / "README.md"
    if readme.exists() and TABLE_START in (text := readme.read_text()) and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        readme.write_text(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{rest.split(TABLE_END, 1)[1]}")


if __name__ == "__main__":
    main()
