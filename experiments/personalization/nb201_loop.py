"""NB201 closed loop with simulated device reports (issue 14): a fleet of three devices whose tasks are
``cifar10_test``, ``cifar100_test`` and ``imagenet16_test``, each with its own search, sent SubNets and
reports answered by `BenchmarkDevice` (the table's accuracy plus seed-to-seed noise, every read counted).

Per seed, one JSON file under ``--out`` (a finished seed is skipped, so the run resumes):

- ``loop``: per device and round, the reports and zero-cost evaluations so far and its SubNet;
- ``zero_cost``: the plain zero-cost search (same strategy, budget and probe, no reports): one arch,
  the same for every device, since the probe batch does not depend on the task;
- ``shared``: per round, the one arch the fleet would share: the best report of all devices'
  reports, each standardized by its device's mean and spread;
- ``fit_seconds``: the wall time of every refit of the run (each device after each round), replayed
  after the loop on the same reports with the device's final priors, so that the loop's timing is not
  disturbed (the regressor is ``--regressor``, see `DeviceModel`).

Only `summarize.py` reads the ground truth to *measure* the archs; nothing here reads it except
through the devices' counted reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "search"))

from run import JsonlCache  # noqa: E402  (the search study's persistent proxy-value cache)

from nasfleet.data.datasets import load_dataset  # noqa: E402
from nasfleet.personalization import (  # noqa: E402
    KEEP_RULES,
    BenchmarkDevice,
    DeviceRun,
    LoopSettings,
    read_table,
    run_fleet,
)
from nasfleet.personalization.model import (  # noqa: E402
    NEUTRAL_PRIOR,
    REGRESSORS,
    TREE_SETTINGS,
    DeviceModel,
    Observation,
    standardized,
)
from nasfleet.proxies.probe import ProbeBatch  # noqa: E402
from nasfleet.search import SearchConfig, make_strategy, run_search  # noqa: E402
from nasfleet.spaces import get_space  # noqa: E402

TASKS = ("cifar10_test", "cifar100_test", "imagenet16_test")
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cache_probe(probe_seed: int = 0) -> dict[str, Any]:
    """The scoring inputs a proxy-value cache of this loop is keyed by: the default scorer's raw proxies
    on 64 labeled CIFAR-10 training images, probe and scoring seed *probe_seed*, on the CPU."""
    return {
        "space": "nb201", "data": "cifar10", "split": "train", "batch_size": 64,
        "probe_seed": probe_seed, "scoring_seed": probe_seed, "labeled": True,
        "proxies": list(SearchConfig("nb201", "random", 1).proxy_names), "device": "cpu",
    }  # fmt: skip


def shared_arch(reports: list[dict[str, Any]], upto: int) -> str | None:
    """The fleet's one arch after round *upto*: the best standardized report of every device's reports."""
    seen = [Observation(r["device"], r["arch"], r["accuracy"], 0.0) for r in reports if r["round"] <= upto]
    if not seen:
        return None
    return seen[int(np.argmax(standardized(seen)))].arch


def run_seed(seed: int, args: argparse.Namespace, batch: ProbeBatch, cache: JsonlCache) -> dict[str, Any]:
    space = get_space("nb201")
    config = SearchConfig("nb201", args.strategy, args.budget, seed, args.ask, scoring_seed=args.probe_seed)
    started = time.perf_counter()
    plain = run_search(space, make_strategy(space, config, batch), batch, config, progress=False, cache=cache)
    log(f"seed {seed}: zero-cost search done ({time.perf_counter() - started:.0f} s), {plain.best_arch}")
    tables = {task: read_table(args.table, task) for task in TASKS}
    sources = {
        task: BenchmarkDevice(task, task, tables[task], budget=args.reports, seed=1000 * seed + i)
        for i, task in enumerate(TASKS)
    }
    settings = LoopSettings(
        rounds=args.reports, first_budget=args.first, round_budget=args.ask,
        fleet_weight=args.fleet_weight, kappa=args.kappa, regressor=args.regressor,
        spread=not args.per_device, keep=args.keep,
    )  # fmt: skip
    runs = run_fleet(space, sources, batch, config, settings, tenant="bench", cache=cache)
    reports = [
        {"device": r.device, "arch": r.arch, "accuracy": r.accuracy, "round": r.round}
        for run in runs.values()
        for r in run.reports
    ]
    log(f"seed {seed}: closed loop done ({time.perf_counter() - started:.0f} s)")
    return {
        "seed": seed,
        "settings": vars(settings),
        "regressor_settings": TREE_SETTINGS.get(args.regressor, ("", "", {}))[2],
        "config": config.to_dict(),
        "zero_cost": {"arch": plain.best_arch, "evaluations": plain.evaluations},
        "loop": {
            name: {
                "reads": sources[name].reads,
                "noise": sources[name].noise,
                "rounds": [vars(record) for record in run.rounds],
            }
            for name, run in runs.items()
        },
        "reports": reports,
        "shared": {str(n): shared_arch(reports, n) for n in range(1, args.reports + 1)},
        "seconds": time.perf_counter() - started,
        "fit_seconds": refit_seconds(runs, settings),
    }


def refit_seconds(runs: dict[str, DeviceRun], settings: LoopSettings) -> list[float]:
    """Wall seconds of each refit the loop made (every device after every round), replayed."""
    space, seconds = get_space("nb201"), []
    prior = {name: run.zero_cost_priors() for name, run in runs.items()}
    for number in range(1, settings.rounds + 1):
        seen = [
            Observation(name, r.arch, r.accuracy, prior[name].get(r.arch, NEUTRAL_PRIOR))
            for name, run in runs.items()
            for r in run.reports
            if r.round <= number
        ]
        for name in runs:
            model = DeviceModel(space, name, fleet_weight=settings.fleet_weight, regressor=settings.regressor)
            started = time.perf_counter()
            model.fit(seen)
            seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--strategy", default="evolution")
    parser.add_argument("--budget", type=int, default=300, help="Zero-cost evaluations per device.")
    parser.add_argument(
        "--first", type=int, default=300, help="Zero-cost evals before round 1 (stop 30: 300, was 200)."
    )
    parser.add_argument("--ask", type=int, default=8, help="Archs per step; also each later round's evals.")
    parser.add_argument("--reports", type=int, default=20, help="Rounds, one report per device each.")
    parser.add_argument("--fleet-weight", type=float, default=1.0)
    parser.add_argument("--kappa", type=float, default=0.0)
    parser.add_argument("--per-device", action="store_true", help="Send what the device has not trained "
                        "(LoopSettings.spread False), not what no device of the fleet has.")  # fmt: skip
    parser.add_argument("--keep", choices=KEEP_RULES, default="report", help="LoopSettings.keep: a device "
                        "keeps its best report, or the reported arch of highest model mean.")  # fmt: skip
    parser.add_argument("--regressor", choices=REGRESSORS, default="bayesian-ridge", help="DeviceModel's.")
    parser.add_argument("--tree-params", type=json.loads, default={}, help="JSON updating TREE_SETTINGS.")
    parser.add_argument("--probe-seed", type=int, default=0)
    parser.add_argument("--table", type=Path, default=SHARED / "nas-bench-201" / "nb201-accuracy-200ep.csv")
    cache = HERE.parent / "search" / "cache" / "nb201-cifar10-b64-p0-labeled.jsonl"
    parser.add_argument("--cache", type=Path, default=cache, help="The search study's proxy-value cache.")
    parser.add_argument("--out", type=Path, help="Default: results/nb201, or results/models/REGRESSOR.")
    args = parser.parse_args(argv)
    if args.tree_params and args.regressor not in TREE_SETTINGS:
        parser.error(f"--tree-params needs a tree --regressor, but got {args.regressor!r}")
    TREE_SETTINGS.get(args.regressor, ("", "", {}))[2].update(args.tree_params)  # this process only
    if args.out is None:
        default = args.regressor == "bayesian-ridge"
        args.out = HERE / "results" / ("nb201" if default else f"models/{args.regressor}")
    batch = ProbeBatch.from_dataset(load_dataset("cifar10", "train"), 64, args.probe_seed, True)
    cache = JsonlCache(args.cache, cache_probe(args.probe_seed))
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        path = args.out / f"seed-{seed}.json"
        if path.exists():
            log(f"seed {seed}: done before ({path.name})")
            continue
        log(f"seed {seed}: start, cache {len(cache)} archs")
        payload = run_seed(seed, args, batch, cache)
        payload["command"] = " ".join(["python", *sys.argv])
        path.with_suffix(".tmp").write_text(json.dumps(payload, indent=1) + "\n")
        path.with_suffix(".tmp").replace(path)


if __name__ == "__main__":
    main()
