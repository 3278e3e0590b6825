"""Issue 14's real-device study: personalized SubNets against their tier's shared SubNet, trained for real.

Each (dataset, seed) is one ``nasfleet simulate`` run, with 8 devices dealt to the 3 hardware tiers,
Dirichlet(0.5) label skew and the command's defaults (2 rounds, 20 local epochs, one shared baseline
per tier); every device trains its round-1 SubNet, its round-2 SubNet and its tier's shared SubNet on its
own data and reports held-out accuracy. The run is named, so a run cut short resumes (its searches are
reused; the training runs again); a finished run's registry export is kept and not run again.

    .venv/bin/python experiments/personalization/real_devices.py --datasets digits --seeds 0 1 2
    .venv/bin/python experiments/personalization/real_devices.py --summarize   # real_devices.md/.json

``--rounds R`` passes R to every run; the summary gives the kept best after each round.
``--train-max-seconds S`` passes each local training's time cap (the command's default: 60 s); where the
exports keep the epochs done (registry schema 6), the summary counts the trainings it cut short.

No ground truth is read: every number is a device's own held-out accuracy from its training report.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "real_devices"
CLIENTS = 8
EPOCHS = 20  # simulate's --train-epochs, which every run keeps


def run(dataset: str, seed: int, clients: int, results: Path = RESULTS, extra: tuple[str, ...] = ()) -> Path:
    """One simulate run with the *extra* options; its registry export (JSON) is the result. Skipped if
    already exported."""
    out = results / f"{dataset}-seed-{seed}.json"
    if out.exists():
        return out
    results.mkdir(parents=True, exist_ok=True)
    registry = results / f"{dataset}-seed-{seed}.db"
    url = f"sqlite:///{registry}"
    env = {**os.environ, "FLWR_HOME": tempfile.mkdtemp(), "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1"}  # fmt: skip
    name = f"study-{dataset}-{seed}"
    command = [sys.executable, "-m", "nasfleet.cli", "simulate", "--clients", str(clients), "--dataset",
               dataset, "--seed", str(seed), "--registry", url, "--name", name]  # fmt: skip
    command += extra
    print(" ".join(command[1:]), file=sys.stderr, flush=True)
    done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL)  # a failed device: exit 1, kept
    subprocess.run([sys.executable, "-m", "nasfleet.cli", "registry", "export", "--registry", url, "--out",
                    str(out)], check=True, env=env)  # fmt: skip
    exported = json.loads(out.read_text())
    out.write_text(json.dumps({**exported, "simulate_exit": done.returncode}, indent=1) + "\n")
    registry.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{registry}{suffix}").unlink(missing_ok=True)
    return out


def reports_by_device(export: dict[str, Any]) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Each device's own reports (its searched and later SubNets) and its shared-baseline reports, in the
    export's order."""
    shared = {job["id"] for job in export["jobs"] if job["options"].get("role") == "shared-baseline"}
    found: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
        d["name"]: ([], []) for d in export["devices"]
    }
    for report in export["reports"]:
        found[report["device"]][report["job_id"] in shared].append(report)
    return found


def devices(export: dict[str, Any]) -> list[dict[str, Any]]:
    """Per device: tier, round-1 / round-2 / kept-best / tier-shared accuracy and SubNets."""
    tiers = {d["name"]: d["tier"] for d in export["devices"]}
    reports = reports_by_device(export)
    rows = []
    for name in sorted(tiers):
        own, base = reports[name]
        by_round = {r["round"]: r for r in own}
        if 1 not in by_round or not base:
            rows.append({"device": name, "tier": tiers[name], "complete": False})
            continue
        best, baseline = max(own, key=lambda r: r["accuracy"]), base[0]["accuracy"]
        kept = [max(r["accuracy"] for r in own if r["round"] <= n) for n in range(1, max(by_round) + 1)]
        rows.append({
            "device": name, "tier": tiers[name], "complete": True,
            "round1": by_round[1]["accuracy"], "round2": by_round.get(2, by_round[1])["accuracy"],
            "best": best["accuracy"], "shared": baseline,
            "subnet": best["arch"], "shared_subnet": base[0]["arch"], "kept_after_round": kept,
            "tries_vs_shared": [r["accuracy"] - baseline for r in own if r["arch"] != base[0]["arch"]],
        })  # fmt: skip
    return rows


def summarize(results: Path = RESULTS, out: Path = HERE) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(results.glob("*-seed-*.json")):
        dataset, seed = path.stem.split("-seed-")
        rows = devices(json.loads(path.read_text()))
        found.setdefault(dataset, {})[seed] = rows
    summary: dict[str, Any] = {}
    for dataset, short in short_trainings(results).items():
        summary.setdefault(dataset, {})["short_trainings"] = short
    for dataset, seeds in found.items():
        rows = [row for seed_rows in seeds.values() for row in seed_rows if row["complete"]]
        gains = [row["best"] - row["shared"] for row in rows]
        per_tier = {}
        for tier in sorted({row["tier"] for row in rows}):
            mine = [row for row in rows if row["tier"] == tier]
            per_tier[tier] = {
                "devices": len(mine), "personalized": statistics.mean(r["best"] for r in mine),
                "shared": statistics.mean(r["shared"] for r in mine),
                "beats_shared": sum(r["best"] > r["shared"] for r in mine) / len(mine),
            }  # fmt: skip
        distinct = [
            len({row["subnet"] for row in seed_rows if row["complete"]}) for seed_rows in seeds.values()
        ]
        summary[dataset] = {
            **summary.get(dataset, {}),
            "seeds": sorted(seeds, key=int), "devices": len(rows),
            "incomplete": sum(not row["complete"] for s in seeds.values() for row in s),
            "round1": statistics.mean(r["round1"] for r in rows),
            "round2": statistics.mean(r["round2"] for r in rows),
            "personalized": statistics.mean(r["best"] for r in rows),
            "shared": statistics.mean(r["shared"] for r in rows),
            "mean_gain_points": 100 * statistics.mean(gains),
            "beats_shared": sum(g > 0 for g in gains) / len(gains),
            "round2_beats_round1": sum(r["round2"] > r["round1"] for r in rows) / len(rows),
            # unselected: one SubNet per device, each measured once (the kept best is chosen on the same
            # held-out data it reports, so its gain is optimistic)
            "round1_gain_points": 100 * statistics.mean(r["round1"] - r["shared"] for r in rows),
            "round2_gain_points": 100 * statistics.mean(r["round2"] - r["shared"] for r in rows),
            "round2_beats_shared": sum(r["round2"] > r["shared"] for r in rows) / len(rows),
            "ties_with_shared": sum(r["best"] == r["shared"] for r in rows) / len(rows),
            "distinct_subnets_per_run": distinct, "per_tier": per_tier, "after_round": after_round(rows),
            "own_tries_vs_shared": tries_vs_shared(rows),
        }  # fmt: skip
    document = {"summary": summary, "devices": found}
    (out / "real_devices.json").write_text(json.dumps(document, indent=2) + "\n")
    write_report(summary, found, out)
    return summary


def short_trainings(results: Path) -> dict[str, dict[str, int]]:
    """Per dataset, the trainings that stopped before `EPOCHS` (the time cap), of those whose report says."""
    found: dict[str, dict[str, int]] = {}
    for path in sorted(results.glob("*-seed-*.json")):
        done = [r.get("epochs_done") for r in json.loads(path.read_text())["reports"]]
        known = [e for e in done if e is not None]
        if known:
            count = found.setdefault(path.stem.split("-seed-")[0], {"short": 0, "known": 0})
            count["short"] += sum(e < EPOCHS for e in known)
            count["known"] += len(known)
    return found


def after_round(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The kept best after rounds 1..n against the tier's shared SubNet, for each n every device reached."""
    found = []
    for n in range(min(len(row["kept_after_round"]) for row in rows)):
        kept = [(r["kept_after_round"][n], r["shared"]) for r in rows]
        found.append({
            "round": n + 1, "kept": statistics.mean(k for k, _ in kept),
            "gain_points": 100 * statistics.mean(k - s for k, s in kept),
            "beats_shared": sum(k > s for k, s in kept) / len(kept),
            "ties_with_shared": sum(k == s for k, s in kept) / len(kept),
        })  # fmt: skip
    return found


def tries_vs_shared(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Unselected: each of a device's own SubNets that is not its tier's arch, minus the tier's SubNet."""
    found = [d for row in rows for d in row["tries_vs_shared"]]
    spread = statistics.stdev(found) / len(found) ** 0.5 if len(found) > 1 else float("nan")
    return {"tries": len(found), "mean_points": 100 * statistics.mean(found) if found else float("nan"),
            "stderr_points": 100 * spread, "better": sum(d > 0 for d in found),
            "worse": sum(d < 0 for d in found)}  # fmt: skip


def _markdown(summary: dict[str, Any], found: dict[str, Any]) -> list[str]:
    lines = ["| dataset | seeds | devices | round 1 | round 2 | kept best | tier's shared | gain, kept | "
             "beats shared | gain, round 2 | round 2 beats shared | round 2 beats round 1 | ties | "
             "distinct SubNets per run |", "|" + "---|" * 14]  # fmt: skip
    for dataset, row in summary.items():
        lines.append(
            f"| {dataset} | {', '.join(row['seeds'])} | {row['devices']} | {100 * row['round1']:.1f} | "
            f"{100 * row['round2']:.1f} | {100 * row['personalized']:.1f} | {100 * row['shared']:.1f} | "
            f"{row['mean_gain_points']:+.1f} | {row['beats_shared']:.0%} | "
            f"{row['round2_gain_points']:+.1f} | "
            f"{row['round2_beats_shared']:.0%} | {row['round2_beats_round1']:.0%} | "
            f"{row['ties_with_shared']:.0%} | {', '.join(map(str, row['distinct_subnets_per_run']))} of 8 |"
        )
    lines += ["", "| dataset | after round | kept best | gain over tier's shared | beats shared | ties |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for dataset, row in summary.items():
        for a in row["after_round"]:
            lines.append(f"| {dataset} | {a['round']} | {100 * a['kept']:.1f} | {a['gain_points']:+.1f} | "
                         f"{a['beats_shared']:.0%} | {a['ties_with_shared']:.0%} |")  # fmt: skip
    for dataset, row in summary.items():
        if "short_trainings" in row:
            s = row["short_trainings"]
            lines.append(
                f"\n{dataset}: {s['short']} of {s['known']} trainings stopped before {EPOCHS} epochs."
            )
    lines += ["", "| dataset | own tries, not the tier's arch | minus tier's shared (points, mean ± se) | "
              "better | worse |", "|---|---|---|---|---|"]  # fmt: skip
    for dataset, row in summary.items():
        t = row["own_tries_vs_shared"]
        lines.append(f"| {dataset} | {t['tries']} | {t['mean_points']:+.2f} ± {t['stderr_points']:.2f} | "
                     f"{t['better']} | {t['worse']} |")  # fmt: skip
    lines += [
        "",
        "| dataset | tier | devices | kept best | tier's shared | beats shared |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, row in summary.items():
        for tier, t in row["per_tier"].items():
            lines.append(f"| {dataset} | {tier} | {t['devices']} | {100 * t['personalized']:.1f} | "
                         f"{100 * t['shared']:.1f} | {t['beats_shared']:.0%} |")  # fmt: skip
    lines += [
        "",
        "| dataset | seed | device | tier | round 1 | round 2 | tier's shared |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, seeds in found.items():
        for seed, rows in seeds.items():
            for r in (r for r in rows if r["complete"]):
                accuracies = " | ".join(f"{100 * r[key]:.1f}" for key in ("round1", "round2", "shared"))
                lines.append(f"| {dataset} | {seed} | {r['device']} | {r['tier']} | {accuracies} |")
    return lines


def write_report(summary: dict[str, Any], found: dict[str, Any], out: Path) -> None:
    """real_devices.md (tables) and real_devices.png (each device: personalized against its tier's shared)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "real_devices.md").write_text("\n".join(_markdown(summary, found)) + "\n")
    figure, axes = plt.subplots(1, len(found), figsize=(4.5 * len(found), 4), squeeze=False)
    for axis, (dataset, seeds) in zip(axes[0], found.items(), strict=True):
        rows = [r for s in seeds.values() for r in s if r["complete"]]
        for tier in sorted({r["tier"] for r in rows}):
            mine = [r for r in rows if r["tier"] == tier]
            axis.scatter([100 * r["shared"] for r in mine], [100 * r["best"] for r in mine], label=tier, s=18)
        low = min(100 * min(r["shared"], r["best"]) for r in rows) - 2
        axis.plot([low, 100], [low, 100], color="grey", linewidth=0.8)
        axis.set(title=dataset, xlabel="tier's shared SubNet (%)", ylabel="personalized, kept best (%)")
        axis.legend()
    figure.tight_layout()
    figure.savefig(out / "real_devices.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=["digits", "cifar10"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--rounds", type=int, help="Rounds per run (default: the command's).")
    parser.add_argument(
        "--train-max-seconds", type=float, help="Each training's cap (default: the command's)."
    )
    parser.add_argument("--summarize", action="store_true", help="Only summarize what has run.")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Where the runs' exports go.")
    parser.add_argument("--out", type=Path, help="Where real_devices.md/.json/.png go (default: beside the "
                        "exports, or this folder for the default --results).")  # fmt: skip
    args = parser.parse_args()
    if args.out is None:  # another --results never overwrites the default results' summary
        args.out = HERE if args.results == RESULTS else args.results
    options = (("--rounds", args.rounds), ("--train-max-seconds", args.train_max_seconds))
    extra = tuple(text for option, value in options if value is not None for text in (option, str(value)))
    if not args.summarize:
        for dataset in args.datasets:
            for seed in args.seeds:
                run(dataset, seed, args.clients, args.results, extra)
    print(json.dumps(summarize(args.results, args.out), indent=2))


if __name__ == "__main__":
    main()
