"""How far the NB201 closed loop is from the best arch it could have sent: the ceiling of its candidates.

With ``--first 300`` (the default since stop 30) a device's candidates are the 300 zero-cost evaluations
of its search, which the three devices of a seed share (one CIFAR-10 probe for every task), and no later
round searches. Its 10 reports can only choose among that archive. This script replays each seed's
zero-cost search from the proxy-value cache (nothing is scored), and measures with the table, after the
runs, as `summarize.py` does:

- the archive's best accuracy on each task (the ceiling of any choice among the candidates);
- how many archive members lie above the arch the loop kept after 10 reports, on its own task;
- the loop's kept arch and the zero-cost-only arch, for comparison.

    .venv/bin/python experiments/personalization/archive_ceiling.py \
        --results experiments/personalization/results/nb201-aznas_meco_fi-first300 \
        --cache experiments/search/cache/nb201-cifar10-b64-p0-labeled-aznas_meco_fi.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "search"))

from nb201_loop import SHARED, TASKS, cache_probe  # noqa: E402
from run import JsonlCache  # noqa: E402

from nasfleet.data.datasets import load_dataset  # noqa: E402
from nasfleet.personalization import read_table  # noqa: E402
from nasfleet.proxies.probe import ProbeBatch  # noqa: E402
from nasfleet.search import SearchConfig, make_strategy, run_search  # noqa: E402
from nasfleet.spaces import get_space  # noqa: E402

REPORTS = 10


def search_config(run: dict) -> SearchConfig:
    """The loop's own search settings, from its result (the constraints are none in `nb201_loop.py`)."""
    kept = {k: v for k, v in run["config"].items() if k != "constraints"}
    if any(run["config"]["constraints"].values()):
        raise SystemExit(f"seed {run['seed']}: the run has search limits, which this replay does not set")
    return SearchConfig(**kept)


def archive_of(run: dict, batch: ProbeBatch, cache: JsonlCache) -> list[str]:
    """The seed's zero-cost archive, replayed with the loop's own search settings."""
    config = search_config(run)
    space = get_space(config.space)
    strategy = make_strategy(space, config, batch)
    result = run_search(space, strategy, batch, config, progress=False, cache=cache)
    if result.best_arch != run["zero_cost"]["arch"]:
        raise SystemExit(f"seed {run['seed']}: the replay found {result.best_arch}, not the run's arch")
    return [entry.arch for entry in result.archive]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--table", type=Path, default=SHARED / "nas-bench-201" / "nb201-accuracy-200ep.csv")
    args = parser.parse_args()
    runs = [json.loads(p.read_text()) for p in sorted(args.results.glob("seed-*.json"))]
    probe_seed = search_config(runs[0]).proxy_seed  # nb201_loop.py: the probe batch's seed too
    batch = ProbeBatch.from_dataset(load_dataset("cifar10", "train"), 64, probe_seed, True)
    cache = JsonlCache(args.cache, cache_probe(probe_seed))
    tables = {task: read_table(args.table, task) for task in TASKS}
    rows = [f"# Archive ceiling of the NB201 closed loop ({args.results.name}, {REPORTS} reports)", "",
            "| task | seed | archive size | archive best | kept after 10 | archive members above it "
            "| zero-cost only |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    gaps: dict[str, list[tuple[float, float, float]]] = {task: [] for task in TASKS}
    for run in runs:
        archive = archive_of(run, batch, cache)
        for task in TASKS:
            accuracies = np.array([tables[task][a] for a in archive])
            kept = tables[task][run["loop"][task]["rounds"][REPORTS - 1]["arch"]]
            zero = tables[task][run["zero_cost"]["arch"]]
            gaps[task].append((accuracies.max(), kept, zero))
            rows.append(f"| {task} | {run['seed']} | {len(archive)} | {accuracies.max():.2f} | {kept:.2f} "
                        f"| {int((accuracies > kept).sum())} | {zero:.2f} |")  # fmt: skip
    rows += ["", "| task | archive best (mean) | kept after 10 (mean) | zero-cost only (mean) |",
             "|---|---|---|---|"]  # fmt: skip
    for task, values in gaps.items():
        best, kept, zero = np.mean(values, axis=0)
        rows.append(f"| {task} | {best:.2f} | {kept:.2f} | {zero:.2f} |")
    out = args.results / "archive_ceiling.md"
    out.write_text("\n".join(rows) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
