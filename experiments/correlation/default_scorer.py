"""Choose the service's default scorer on a development sample, by a rule fixed before it ran.

Candidates (every one registered in nasfleet before any was measured here): ``fgnas`` (the default
until now), ``aznas``, ``meco``, ``aznas_meco`` and ``aznas_meco_fi`` (`nasfleet.proxies.assembled`).

Rule: among the candidates whose isolated cost is at most 2x one plain forward+backward pass of the same
network and batch (issue 15's budget), the one with the highest mean Spearman rho over ``cifar10_test``,
``cifar100_test`` and ``imagenet16_test``. The rule picks a candidate; it sets no weight or threshold.

Development sample: ``--archs`` NB201 archs drawn with ``--seed`` from the archs that none of the reported
samples holds: the FG-NAS paper's protocol (3,000 archs with each of seeds 0-4) and the 1,000-arch seed-0
benchmark. The whole-space run (all 15,625) necessarily contains them; that is disclosed with its numbers.
The script copies the sample's rows of the ground truth into ``OUT/dev-ground-truth.csv`` (the bench
reads its accuracy columns only after scoring, as always), runs ``nasfleet bench correlation`` on it with
the service's default probe (64 CIFAR-10 training images, seed 0, labeled), and applies the rule.

    python experiments/correlation/default_scorer.py --out experiments/correlation/default-scorer-dev
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from nasfleet.bench import read_arch_strings, sample_arch_strings
from nasfleet.data.datasets import default_data_dir

CANDIDATES = ("fgnas", "aznas", "meco", "aznas_meco", "aznas_meco_fi")
COLUMNS = ("cifar10_test", "cifar100_test", "imagenet16_test")
MAX_RATIO = 2.0
REPORTED = [(3000, seed) for seed in range(5)] + [(1000, 0)]


def development_sample(truth: Path, archs: int, seed: int) -> list[str]:
    strings = read_arch_strings(truth)
    reported = {text for n, s in REPORTED for text in sample_arch_strings(strings, n, s)}
    free = [text for text in strings if text not in reported]
    chosen = np.random.default_rng(seed).choice(len(free), size=archs, replace=False)
    return [free[int(i)] for i in sorted(chosen)]


def write_subset(truth: Path, archs: list[str], out: Path) -> None:
    wanted = set(archs)
    with truth.open(newline="") as source, out.open("w", newline="") as target:
        reader = csv.reader(source)
        writer = csv.writer(target)
        header = next(reader)
        column = header.index("arch_str")
        writer.writerow(header)
        writer.writerows(row for row in reader if row[column] in wanted)


def choose(report: dict[str, Any]) -> tuple[str | None, list[tuple[str, float, float]]]:
    table = []
    for result in report["results"]:
        if result["name"] in CANDIDATES:
            rhos = [result["by_column"][column]["spearman"] for column in COLUMNS]
            table.append((result["name"], float(np.mean(rhos)), float(result["ratio_to_forward_backward"])))
    eligible = [row for row in table if row[2] <= MAX_RATIO]
    best = max(eligible, key=lambda row: row[1])[0] if eligible else None
    return best, sorted(table, key=lambda row: -row[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--archs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--timing-sample", type=int, default=10)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    truth = default_data_dir() / "nas-bench-201" / "nb201-accuracy-200ep.csv"
    args.out.mkdir(parents=True, exist_ok=True)
    subset = args.out / "dev-ground-truth.csv"
    write_subset(truth, development_sample(truth, args.archs, args.seed), subset)
    command = [
        sys.executable, "-m", "nasfleet.cli", "bench", "correlation", "--ground-truth", str(subset),
        "--sample", "all", "--proxies", ",".join(CANDIDATES), "--data", "cifar10", "--seed", "0",
        "--timing-sample", str(args.timing_sample), "--processes", str(args.processes),
        "--out", str(args.out / "bench"),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    report = json.loads((args.out / "bench" / "report.json").read_text())
    best, table = choose(report)
    lines = [
        f"{name}: mean rho {rho:.3f} over {', '.join(COLUMNS)}; cost {ratio:.2f}x"
        for name, rho, ratio in table
    ]
    lines.append(f"chosen (rule: cost <= {MAX_RATIO}x, highest mean rho): {best}")
    (args.out / "choice.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
