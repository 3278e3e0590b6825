"""Start-up time of the ``nasfleet`` command, two installations side by side in one run.

Each round runs every case once per installation, in alternating order, so both see the same machine
load; the medians and their ratio are reported. A command's exit status is not checked: an installation
without ``--version`` is timed answering "no such option". Commands run in ``/``, so that ``python -c``
imports each installation's own package, not a checkout in the current directory.
Usage (from the repository root)::

    .venv/bin/python experiments/cli/startup.py --before /path/to/old/.venv --after .venv --rounds 15

Writes ``results/startup.json`` and ``results/startup.png`` beside this file (or under ``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

CASES = {
    "nasfleet --help": ["bin/nasfleet", "--help"],
    "nasfleet --version": ["bin/nasfleet", "--version"],
    "nasfleet search --help": ["bin/nasfleet", "search", "--help"],
    "import nasfleet.cli": ["bin/python", "-c", "import nasfleet.cli"],
}


def seconds(venv: Path, argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [str(venv / argv[0]), *argv[1:]], check=False, capture_output=True, cwd="/", stdin=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="venv of the installation before")
    parser.add_argument("--after", type=Path, required=True, help="venv of the installation after")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    venvs = {"before": args.before.resolve(), "after": args.after.resolve()}
    times: dict[str, dict[str, list[float]]] = {case: {"before": [], "after": []} for case in CASES}
    for round_ in range(args.rounds):
        order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
        for case, argv in CASES.items():
            for which in order:
                times[case][which].append(seconds(venvs[which], argv))
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
    report = {
        "rounds": args.rounds,
        "venvs": {k: str(v) for k, v in venvs.items()},
        "cases": {
            case: {
                "before_median_s": round(statistics.median(t["before"]), 3),
                "after_median_s": round(statistics.median(t["after"]), 3),
                "ratio": round(statistics.median(t["before"]) / statistics.median(t["after"]), 1),
                "before_s": [round(v, 3) for v in t["before"]],
                "after_s": [round(v, 3) for v in t["after"]],
            }
            for case, t in times.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps(report, indent=2) + "\n")
    figure, axes = plt.subplots(figsize=(7, 3.5))
    names = list(CASES)
    positions = range(len(names))
    axes.barh([p + 0.2 for p in positions], [report["cases"][n]["before_median_s"] for n in names], 0.4,
              label="before")  # fmt: skip
    axes.barh([p - 0.2 for p in positions], [report["cases"][n]["after_median_s"] for n in names], 0.4,
              label="after")  # fmt: skip
    axes.set_yticks(list(positions), names)
    axes.set_xlabel(f"median wall seconds over {args.rounds} rounds")
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.out / "startup.png", dpi=120)
    for case, row in report["cases"].items():
        print(f"{case:<24} before {row['before_median_s']:.3f} s  after {row['after_median_s']:.3f} s  "
              f"x{row['ratio']}")  # fmt: skip


if __name__ == "__main__":
    main()
