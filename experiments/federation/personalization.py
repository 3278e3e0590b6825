"""Personalization study: per-device SubNets against one shared architecture, on Flower's simulation engine.

Each seed runs one whole `nasfleet simulate` round with ``--shared-baseline``: every device gets its own
FG-NAS search (on the synthetic batch rebuilt from its DP characteristics, under its tier's limits) and,
as the baseline, the one data-agnostic architecture searched under the tightest limits of the fleet.
Each device trains both with the same local budget and reports held-out accuracy. We check that every
personalized SubNet meets its device's limits and compare the two accuracies.

    python experiments/federation/personalization.py --out experiments/federation/personalization
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.round import DeviceOutcome
from nasfleet.server.federation.simulation import simulate
from nasfleet.spaces import get_space


def device_row(seed: int, outcome: DeviceOutcome, space_name: str) -> dict[str, Any]:
    """One device's line: limits, SubNet cost, feasibility, latencies, both accuracies."""
    assert outcome.report is not None and outcome.characteristics is not None and outcome.constraints
    space, chars, limits = get_space(space_name), outcome.characteristics, outcome.constraints
    cost = space.cost(space.decode(outcome.report.arch), chars.num_classes, chars.input_shape)
    max_params, predicted = limits.effective_max_params(), outcome.predicted_latency_ms
    feasible = (
        (max_params is None or cost.params <= max_params)
        and (limits.max_flops is None or cost.flops <= limits.max_flops)
        and (limits.max_latency_ms is None or (predicted is not None and predicted <= limits.max_latency_ms))
    )
    return {
        "seed": seed,
        "device": outcome.name,
        "tier": outcome.profile.tier if outcome.profile else "",
        "samples": chars.num_samples,
        "max_params": max_params,
        "max_flops": limits.max_flops,
        "max_latency_ms": limits.max_latency_ms,
        "arch": outcome.report.arch,
        "params": cost.params,
        "flops": cost.flops,
        "feasible": feasible,
        "latency_predicted_ms": predicted,
        "latency_measured_ms": outcome.report.latency_ms,
        "accuracy": outcome.report.accuracy,
        "shared_arch": outcome.shared_report.arch if outcome.shared_report else None,
        "shared_accuracy": outcome.shared_report.accuracy if outcome.shared_report else None,
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        registry = args.out / f"registry-seed{seed}.db"
        registry.unlink(missing_ok=True)
        config = RoundConfig(
            num_clients=args.clients,
            strategy=args.strategy,
            budget=args.budget,
            probe_batch=args.probe_batch,
            seed=seed,
            registry=f"sqlite:///{registry}",
            train_epochs=args.epochs,
            shared_baseline=True,
            train_max_seconds=600.0,
        )
        devices = {"dataset": args.dataset, "partition": args.partition, "seed": seed}
        outcomes = simulate(config, devices)
        failed = [f"{o.name}: {o.status} {o.error}" for o in outcomes if not o.ok]
        if failed or len(outcomes) != args.clients:
            raise SystemExit(f"seed {seed}: round incomplete: {failed or len(outcomes)}")
        rows += [device_row(seed, o, config.space) for o in outcomes]
    return rows


def summarize(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    personal = np.array([r["accuracy"] for r in rows])
    shared = np.array([r["shared_accuracy"] for r in rows])
    by_tier = {
        tier: {
            "devices": int(sum(r["tier"] == tier for r in rows)),
            "personalized": float(np.mean([r["accuracy"] for r in rows if r["tier"] == tier])),
            "shared": float(np.mean([r["shared_accuracy"] for r in rows if r["tier"] == tier])),
        }
        for tier in sorted({r["tier"] for r in rows})
    }
    return {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "devices": len(rows),
        "all_feasible": all(r["feasible"] for r in rows),
        "mean_accuracy_personalized": float(personal.mean()),
        "mean_accuracy_shared": float(shared.mean()),
        "devices_personalized_at_least_shared": int((personal >= shared).sum()),
        "latency_ratio_measured_over_predicted": float(
            np.median([r["latency_measured_ms"] / r["latency_predicted_ms"] for r in rows])
        ),
        "by_tier": by_tier,
    }


def write_report(rows: list[dict[str, Any]], summary: dict[str, Any], out: Path) -> None:
    (out / "report.json").write_text(json.dumps({"summary": summary, "devices": rows}, indent=2) + "\n")
    lines = [
        "# Personalization: per-device SubNets vs one shared architecture",
        "",
        f"{summary['devices']} device-rounds; every SubNet feasible: **{summary['all_feasible']}**; "
        f"mean local accuracy personalized **{summary['mean_accuracy_personalized']:.3f}** vs shared "
        f"**{summary['mean_accuracy_shared']:.3f}**; personalized ≥ shared on "
        f"{summary['devices_personalized_at_least_shared']}/{summary['devices']} devices; median measured/"
        f"predicted latency {summary['latency_ratio_measured_over_predicted']:.2f}.",
        "",
        "| seed | device | tier | samples | params (limit) | MFLOPs (limit) | latency pred / meas ms (limit) "
        "| acc personalized | acc shared |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['device']} | {r['tier']} | {r['samples']} "
            f"| {r['params']:,} ({r['max_params']:,}) "
            f"| {r['flops'] / 1e6:.2f} ({r['max_flops'] / 1e6:.2f}) | {r['latency_predicted_ms']:.1f} / "
            f"{r['latency_measured_ms']:.1f} ({r['max_latency_ms']:.0f}) | {r['accuracy']:.3f} | "
            f"{r['shared_accuracy']:.3f} |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")
    figure, axis = plt.subplots(figsize=(7, 4))
    tiers = list(summary["by_tier"])
    x = np.arange(len(tiers))
    for offset, key in ((-0.2, "personalized"), (0.2, "shared")):
        axis.bar(x + offset, [summary["by_tier"][t][key] for t in tiers], width=0.4, label=key)
    axis.set_xticks(x, tiers)
    axis.set_ylabel("mean local held-out accuracy")
    axis.set_title("Personalized SubNets vs one shared architecture, by device tier")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "accuracy_by_tier.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("experiments/federation/personalization"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--partition", default="dirichlet:0.3")
    parser.add_argument("--strategy", default="evolution")
    parser.add_argument("--budget", type=int, default=48)
    parser.add_argument("--probe-batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run(args)
    summary = summarize(rows, args)
    write_report(rows, summary, args.out)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
