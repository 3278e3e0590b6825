"""Runs the search experiment of issue 4: strategies x seeds with FG-NAS fitness on a real probe batch.

Every run is one `nasfleet.search.run_search` in this process, exactly as `nasfleet search` runs it, with
two additions that make the experiment affordable without changing any search:

- A persistent proxy-value cache shared by all runs (a JSON-lines file under ``cache/``): raw proxy
  values depend only on the arch and the scoring inputs (space, probe batch, scoring seed, proxies), so
  the file's header names those inputs and a run with other inputs refuses the file. Lines are appended
  as archs are scored, so a killed experiment loses at most the arch being scored.
- An optional prefill of the cache from a `nasfleet bench correlation` ``scores.csv`` (raw columns
  ``fg_*`` only; the accuracy columns are never read), trusted only after re-scoring ``--verify`` of its
  archs with this experiment's probe batch and finding every value equal to ``--rtol``.

The probe batch (which images) and the scoring seed (network initialisation, the probe's randomness)
are fixed by ``--probe-seed``; the run's ``--seeds`` vary only the strategy's randomness
(`SearchConfig.scoring_seed`). Runs go seed-major (every strategy's seed 0, then seed 1, ...) and a
run whose result JSON exists is skipped, so the experiment resumes where it stopped.

This script never reads ground truth; `summarize.py` does, after the searches, to report only.

    python experiments/search/run.py --budget 300 --seeds 0 1 2 \\
        --prefill experiments/correlation/nb201-cifar10/scores.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from nasfleet.data.datasets import load_dataset
from nasfleet.proxies.base import revised
from nasfleet.proxies.engine import score_archs
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.search import SearchConfig, make_strategy, run_search
from nasfleet.spaces import SearchSpace, get_space
from nasfleet.strategies import SearchLimits

HERE = Path(__file__).resolve().parent
STRATEGIES = ("random", "evolution", "ga", "cmaes", "annealing")
FG_COLUMNS = ("fg_fi", "fg_fc", "fg_gc", "fg_gi")
CACHE_VERSION = 1

Entry = tuple[dict[str, float], float]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the persistent cache ---------------------------------------------------------------------------------
class JsonlCache(MutableMapping[str, Entry]):
    """Arch string -> (raw values, scoring seconds), persisted as JSON lines appended on every write.

    The first line is a header with the scoring inputs (``probe``); opening the file with other inputs
    is an error. ``source`` remembers where each entry came from (``scored`` here or ``prefill``); a
    prefill entry's seconds are an estimate (see `prefill`). A last line cut short by a kill is ignored.
    """

    def __init__(self, path: Path, probe: dict[str, Any]) -> None:
        self.path, self.probe = path, probe
        self.data: dict[str, Entry] = {}
        self.source: dict[str, str] = {}
        self.prefill_info: dict[str, Any] | None = None
        if path.exists() and path.stat().st_size > 0:
            self._load()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"kind": "header", "version": CACHE_VERSION, "probe": probe})

    def _load(self) -> None:
        lines = self.path.read_text().splitlines()
        header = json.loads(lines[0])
        if header.get("kind") != "header" or header.get("probe") != self.probe:
            raise SystemExit(
                f"{self.path} holds values for other scoring inputs:\n  file: {header.get('probe')}\n"
                f"  this run: {self.probe}\nuse another --cache"
            )
        for number, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # cut short by a kill: that arch is scored again
                    continue
                raise
            if record.get("kind") == "prefill":
                self.prefill_info = record
            else:
                self.data[record["arch"]] = (record["values"], float(record["seconds"]))
                self.source[record["arch"]] = record["source"]
        if not self.path.read_text().endswith("\n"):
            with self.path.open("a") as file:
                file.write("\n")

    def _append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
            file.flush()

    def put(self, arch: str, entry: Entry, source: str) -> None:
        values, seconds = entry
        self.data[arch], self.source[arch] = (dict(values), float(seconds)), source
        self._append({"arch": arch, "values": values, "seconds": seconds, "source": source})

    def mark_prefilled(self, info: dict[str, Any]) -> None:
        self.prefill_info = {"kind": "prefill", **info}
        self._append(self.prefill_info)

    def __getitem__(self, arch: str) -> Entry:
        return self.data[arch]

    def __setitem__(self, arch: str, entry: Entry) -> None:
        self.put(arch, entry, "scored")

    def __delitem__(self, arch: str) -> None:
        raise TypeError("entries of the proxy-value cache are never deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def prefill(
    cache: JsonlCache, scores: Path, space: SearchSpace, batch: ProbeBatch, names: tuple[str, ...],
    scoring_seed: int, verify: int, rtol: float,
) -> None:  # fmt: skip
    """Fill ``cache`` from a correlation run's scores.csv, after re-scoring ``verify`` of its archs.

    Only ``arch``, the raw ``fg_*`` columns and ``seconds`` are read. ``seconds`` there timed *every*
    proxy of that run (two workers in parallel), so a prefilled entry's seconds is an estimate: that
    value times the median ratio (FG-NAS-only seconds measured here / file seconds) of the verified archs.
    """
    if cache.prefill_info is not None:
        log(f"cache already prefilled from {cache.prefill_info['from']}")
        return
    missing = [name for name in names if name not in FG_COLUMNS]
    if missing:
        raise SystemExit(f"--prefill can only provide {FG_COLUMNS}, but the fitness needs {missing}")
    with scores.open(newline="") as file:
        rows = [
            {"arch": row["arch"], "seconds": float(row["seconds"]), **{n: float(row[n]) for n in names}}
            for row in csv.DictReader(file)
        ]  # only these columns are read
    chosen = np.random.default_rng(12345).choice(len(rows), size=min(verify, len(rows)), replace=False)
    check = [rows[int(i)] for i in sorted(chosen)]
    log(f"verifying the prefill: re-scoring {len(check)} of {len(rows)} archs of {scores}")
    genomes = [space.decode(row["arch"]) for row in check]
    table = score_archs(space, genomes, batch, names, seed=scoring_seed, progress=False)
    worst, ratios = 0.0, []
    for i, row in enumerate(check):
        for name in names:
            ours, theirs = float(table.values[name][i]), row[name]
            worst = max(worst, abs(ours - theirs) / max(abs(theirs), 1e-30))
        ratios.append(float(table.seconds[i]) / row["seconds"])
        values = {n: float(table.values[n][i]) for n in names}
        cache.put(row["arch"], (values, float(table.seconds[i])), "scored")
    same_order = all(
        np.array_equal(np.argsort(table.values[name], kind="stable"),
                       np.argsort([row[name] for row in check], kind="stable"))
        for name in names
    )  # fmt: skip
    log(f"largest relative difference {worst:.2e} (tolerance {rtol:g}), same ranking per proxy: {same_order}")
    log(f"FG-NAS-only seconds here / the file's all-proxy seconds: {[round(r, 3) for r in ratios]}")
    if worst > rtol or not same_order:
        raise SystemExit(f"{scores} was scored with another probe batch: not prefilling (drop --prefill)")
    ratio = float(np.median(ratios))
    added = 0
    for row in rows:
        if row["arch"] not in cache:
            cache.put(row["arch"], ({n: row[n] for n in names}, ratio * row["seconds"]), "prefill")
            added += 1
    cache.mark_prefilled({
        "from": str(scores), "rows": len(rows), "added": added, "verified": [row["arch"] for row in check],
        "max_relative_difference": worst, "rtol": rtol, "seconds_ratio": ratio,
    })  # fmt: skip
    log(f"prefilled {added} archs (seconds estimated as {ratio:.3f} x the file's)")


# -- the runs ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="nb201", choices=("nb201", "mbv2"))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="Strategy seeds.")
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--ask", type=int, default=8, help="Archs asked per step (the CLI's default).")
    parser.add_argument("--data", default="cifar10", help="Probe data: its train split (see nasfleet).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--probe-seed", type=int, default=0, help="Probe batch and scoring seed, fixed.")
    parser.add_argument("--unlabeled", action="store_true")
    parser.add_argument("--max-params", type=int)
    parser.add_argument("--max-flops", type=int)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "nb201")
    parser.add_argument("--cache", type=Path, help="Cache file (default: cache/ named by the inputs).")
    parser.add_argument("--prefill", type=Path, help="A correlation run's scores.csv to prefill from.")
    parser.add_argument("--verify", type=int, default=10, help="Prefill archs re-scored before trusting it.")
    parser.add_argument("--rtol", type=float, default=1e-4, help="Largest relative difference accepted.")
    parser.add_argument("--prefill-only", action="store_true", help="Prefill the cache, run nothing.")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


# The published mbv2 run and its cache used the mbv2 space's revision-1 defaults (widths 0.5-1.0, a
# 1280-channel head); they are pinned so that cached values keep their meaning (nasfleet/spaces/mbv2.py).
PINNED_SPACE_OPTIONS: dict[str, dict[str, Any]] = {"mbv2": {"widths": (0.5, 0.75, 1.0), "scale_head": False}}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    labeled = not args.unlabeled
    space = get_space(args.space, PINNED_SPACE_OPTIONS.get(args.space))
    dataset = load_dataset(args.data, "train")
    batch = ProbeBatch.from_dataset(dataset, args.batch_size, args.probe_seed, labeled)
    constraints = SearchLimits(max_params=args.max_params, max_flops=args.max_flops)
    names = SearchConfig(args.space, "random", 1, labeled=labeled).proxy_names
    probe = {
        "space": args.space, "data": args.data, "split": "train", "batch_size": args.batch_size,
        "probe_seed": args.probe_seed, "scoring_seed": args.probe_seed, "labeled": labeled,
        "proxies": list(names), "device": "cpu",
    }  # fmt: skip
    if revisions := revised(names):  # a revised proxy's old values must not be reused
        probe["revisions"] = revisions
    label = "labeled" if labeled else "unlabeled"
    data = args.data.replace(":", "_").replace("/", "_")
    default = f"{args.space}-{data}-b{args.batch_size}-p{args.probe_seed}-{label}.jsonl"
    cache_path = args.cache or HERE / "cache" / default
    cache = JsonlCache(cache_path, probe)
    log(f"cache {cache_path}: {len(cache)} archs")
    if args.prefill is not None:
        prefill(cache, args.prefill, space, batch, names, args.probe_seed, args.verify, args.rtol)
    if args.prefill_only:
        return

    plan = [(seed, strategy) for seed in args.seeds for strategy in args.strategies]  # seed-major
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    for number, (seed, strategy) in enumerate(plan, start=1):
        path = args.out / f"{strategy}-s{seed}.json"
        if path.exists():
            log(f"run {number}/{len(plan)}: {strategy} seed {seed}: done before, skipped ({path.name})")
            continue
        config = SearchConfig(
            args.space, strategy, args.budget, seed, args.ask, labeled=labeled, constraints=constraints,
            scoring_seed=args.probe_seed,
        )  # fmt: skip
        log(f"run {number}/{len(plan)}: {strategy} seed {seed}, budget {args.budget}, cache {len(cache)}")
        searcher = make_strategy(space, config, batch)
        started = time.time()
        result = run_search(space, searcher, batch, config, progress=not args.no_progress, cache=cache)
        prefilled = sum(cache.source.get(entry.arch) == "prefill" for entry in result.archive)
        payload = {
            **result.to_dict(),
            "data": args.data,
            "probe_seed": args.probe_seed,
            "cache": {
                "file": os.path.relpath(cache_path, HERE), "hits": result.cached_evaluations,
                "prefill_hits": prefilled, "scored": result.unique_evaluations - result.cached_evaluations,
            },
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "command": command,
        }  # fmt: skip
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(payload, indent=1) + "\n")
        temporary.replace(path)
        scored = result.unique_evaluations - result.cached_evaluations
        per_eval = result.scoring_seconds / scored if scored else float("nan")
        log(
            f"  {strategy} seed {seed}: {result.evaluations} evals ({result.unique_evaluations} unique, "
            f"{result.cached_evaluations} cached, {scored} scored at {per_eval:.2f} s), "
            f"wall {result.wall_seconds:.0f} s (uncached {result.uncached_wall_seconds:.0f} s), overhead "
            f"{result.overhead_seconds:.2f} s = {result.uncached_overhead_fraction:.2%} uncached / "
            f"{result.overhead_fraction:.2%} measured; best {result.best_arch} "
            f"({result.best_params:,} params, {result.best_flops:,} FLOPs)"
        )


if __name__ == "__main__":
    main()
