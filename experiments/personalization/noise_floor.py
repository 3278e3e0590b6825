"""Issue 14's noise floor: how often an arch *exactly as good as* the tier's shared SubNet beats it by chance.

The real-device study (`real_devices.py`) compares each device's personalized SubNet with its tier's
shared SubNet on the device's one held-out split, each trained once with the round's seed. Here every
device of those runs retrains its tier's shared SubNet with other *init* seeds (weights, batch order), on
the same splits and with the same budget, and compares each copy with the original: a copy that "beats"
the original does so by training noise alone. For a device that tried k SubNets of its own (distinct from
the shared arch), the chance that the best of k equal copies beats the original is the null rate its
kept best is measured against.

    .venv/bin/python experiments/personalization/noise_floor.py \
        --results experiments/personalization/results/real_devices-rounds3 --datasets digits

Writes ``noise_floor.json``, ``noise_floor.md`` and ``noise_floor.png`` into ``--results``; a device
already retrained there is not retrained (``noise_floor.partial.jsonl``). No ground truth is read.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from real_devices import reports_by_device

from nasfleet.clients.app import DeviceSetup, local_dataset
from nasfleet.clients.training import train_subnet
from nasfleet.protocol.messages import SubNetAssignment
from nasfleet.server.federation.config import RoundConfig

HERE = Path(__file__).parent


def device_reports(export: dict[str, Any]) -> list[dict[str, Any]]:
    """Per device: its shared report and its own reports on other archs, by round."""
    found = []
    for device, (mine, shared) in sorted(reports_by_device(export).items()):
        if not shared:
            continue
        own = sorted(mine, key=lambda r: r["round"])
        found.append({"device": device, "shared": shared[0],
                      "own": [r for r in own if r["arch"] != shared[0]["arch"]],
                      "found_shared": any(r["arch"] == shared[0]["arch"] for r in own),
                      "all_own": own})  # fmt: skip
    return found


def kept_after(row: dict[str, Any], n: int) -> dict[str, Any]:
    """The device's kept best after round *n*: its best own report so far (the first of ties)."""
    own = [r for r in row["all_own"] if r["round"] <= n]
    return max(own, key=lambda r: r["accuracy"])


def retrain(
    dataset: str, seed: int, clients: int, report: dict[str, Any], init_seeds: list[int]
) -> list[float]:
    """The report's SubNet retrained on its device with each init seed, on the round's splits and budget."""
    setup = DeviceSetup(dataset=dataset, partition_id=int(report["device"].split("-")[1]),
                        num_partitions=clients, seed=seed)  # fmt: skip
    data = local_dataset(setup)
    config = RoundConfig(num_clients=clients, seed=seed).train
    assignment = SubNetAssignment(report["job_id"], "nb201", report["arch"], data.num_classes,
                                  data.input_shape, config)  # fmt: skip
    return [train_subnet(assignment, data, init_seed=s).accuracy for s in init_seeds]


def by_chance(original: float, copies: list[float], k: int, found_shared: bool) -> tuple[float, float]:
    """The chance that the best of k of the copies (every k-subset alike) beats the original, and the
    expected gain of the kept best over it (a device whose own search found the shared arch keeps at
    least the original)."""
    subsets = [list(s) + ([original] if found_shared else []) for s in itertools.combinations(copies, k)]
    if not subsets[0]:
        return 0.0, 0.0
    return (
        statistics.mean(max(s) > original for s in subsets),
        statistics.mean(max(s) - original for s in subsets),
    )


def summarize(rows: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """Observed beats against the noise floor after each round (k = the device's own tries so far)."""
    diffs = [c - r["original"] for r in rows for c in r["copies"]]
    per_round = []
    for n in range(1, rounds + 1):
        kept, chance = [], []
        for r in rows:
            tries = [a for rnd, a in r["own"] if rnd <= n]
            kept.append(max(tries + [r["original"]] * r["found_shared"]) - r["original"])
            chance.append(by_chance(r["original"], r["copies"], len(tries), r["found_shared"]))
        per_round.append({
            "round": n, "devices": len(rows), "own_tries": sum(rnd <= n for r in rows for rnd, _ in r["own"]),
            "observed_beats": sum(g > 0 for g in kept), "chance_beats": sum(b for b, _ in chance),
            "observed_gain_points": 100 * statistics.mean(kept),
            "chance_gain_points": 100 * statistics.mean(g for _, g in chance),
            # the kept best and the shared SubNet each retrained with the init seeds: unselected estimates
            "fresh_gain_points": 100 * statistics.mean(r["fresh"][n - 1] for r in rows),
            "fresh_better": sum(r["fresh"][n - 1] > 0 for r in rows),
            "fresh_worse": sum(r["fresh"][n - 1] < 0 for r in rows),
        })  # fmt: skip
    return {
        "devices": len(rows), "copies_per_device": len(rows[0]["copies"]),
        "copy_beats_original": sum(d > 0 for d in diffs) / len(diffs),
        "copy_ties_original": sum(d == 0 for d in diffs) / len(diffs),
        "copy_minus_original_sd_points": 100 * statistics.pstdev(diffs),
        "copy_minus_original_mean_abs_points": 100 * statistics.mean(abs(d) for d in diffs),
        "own_minus_shared": [a - r["original"] for r in rows for _, a in r["own"]],
        "after_round": per_round,
    }  # fmt: skip


def write(summary: dict[str, Any], rows: list[dict[str, Any]], out: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [f"# Noise floor, {dataset}: the shared SubNet retrained with other init seeds", "",
             f"{summary['devices']} devices, {summary['copies_per_device']} copies each. A copy beats the "
             f"original on {summary['copy_beats_original']:.0%} of pairs and ties on "
             f"{summary['copy_ties_original']:.0%}; copy − original: sd "
             f"{summary['copy_minus_original_sd_points']:.1f} points, mean |·| "
             f"{summary['copy_minus_original_mean_abs_points']:.1f}.", "",
             "| after round | own tries | kept best beats shared: observed | by chance | gain, points: "
             "observed | by chance | retrained: gain | better | worse |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for a in summary["after_round"]:
        lines.append(f"| {a['round']} | {a['own_tries']} | {a['observed_beats']} of {a['devices']} | "
                     f"{a['chance_beats']:.1f} of {a['devices']} | {a['observed_gain_points']:+.1f} | "
                     f"{a['chance_gain_points']:+.1f} | {a['fresh_gain_points']:+.1f} | "
                     f"{a['fresh_better']} | {a['fresh_worse']} |")  # fmt: skip
    (out / "noise_floor.md").write_text("\n".join(lines) + "\n")
    figure, axis = plt.subplots(figsize=(6, 4))
    copies = [100 * (c - r["original"]) for r in rows for c in r["copies"]]
    own = [100 * d for d in summary["own_minus_shared"]]
    bins = [x - 0.5 for x in range(-30, 32, 3)]
    axis.hist([copies, own], bins=bins, density=True, label=["shared retrained − shared (noise)",
              "own SubNet − shared"])  # fmt: skip
    axis.set(title=f"{dataset}: held-out accuracy against the tier's shared SubNet", xlabel="points",
             ylabel="density")  # fmt: skip
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "noise_floor.png", dpi=120)


def study(
    dataset: str, results: Path, clients: int, init_seeds: list[int]
) -> tuple[list[dict[str, Any]], int]:
    """Every device of the dataset's runs: its shared SubNet's and kept bests' retrained copies (kept in
    ``noise_floor-DATASET.partial.jsonl``, so a cut run resumes), and the number of rounds."""
    partial = results / f"noise_floor-{dataset}.partial.jsonl"
    lines = map(json.loads, partial.open()) if partial.exists() else iter(())
    cache = {(r["seed"], r["device"], r["arch"]): r["copies"] for r in lines}

    def copies_of(seed: int, report: dict[str, Any]) -> list[float]:
        key = (seed, report["device"], report["arch"])
        if key not in cache:
            cache[key] = retrain(dataset, seed, clients, report, init_seeds)
            line = {"seed": seed, "device": report["device"], "arch": report["arch"], "copies": cache[key]}
            with partial.open("a") as file:
                file.write(json.dumps(line) + "\n")
            print(f"{dataset} seed {seed} {report['device']}: {len(cache)} SubNets retrained", flush=True)
        return cache[key]

    rows, rounds = [], 1
    for path in sorted(results.glob(f"{dataset}-seed-*.json")):
        seed = int(path.stem.split("-seed-")[1])
        for row in device_reports(json.loads(path.read_text())):
            last = max(r["round"] for r in row["all_own"])
            rounds = max(rounds, last)
            shared = row["shared"]
            base = statistics.mean(copies_of(seed, shared))
            kept = [kept_after(row, n) for n in range(1, last + 1)]
            fresh = [0.0 if k["arch"] == shared["arch"] else statistics.mean(copies_of(seed, k)) - base
                     for k in kept]  # fmt: skip
            rows.append({"original": shared["accuracy"], "copies": copies_of(seed, shared),
                         "own": [(r["round"], r["accuracy"]) for r in row["own"]],
                         "found_shared": row["found_shared"], "fresh": fresh})  # fmt: skip
    return rows, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=HERE / "results" / "real_devices-rounds3")
    parser.add_argument("--datasets", nargs="*", default=["digits"])
    parser.add_argument("--init-seeds", nargs="*", type=int, default=[101, 102, 103, 104])
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)  # with 1 thread a retrain reproduces the round's report bit for bit
    for dataset in args.datasets:
        rows, rounds = study(dataset, args.results, args.clients, args.init_seeds)
        summary = summarize(rows, rounds)
        out = args.results / f"noise_floor-{dataset}"
        out.mkdir(exist_ok=True)
        (out / "noise_floor.json").write_text(json.dumps(summary, indent=1) + "\n")
        write(summary, rows, out, dataset)
        print(json.dumps({k: v for k, v in summary.items() if k != "own_minus_shared"}, indent=1))


if __name__ == "__main__":
    main()
