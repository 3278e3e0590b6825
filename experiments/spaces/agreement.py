"""Issue 16: the proxies on the spaces with no ground truth (COER, AutoFormer-edge), as rank agreement.

No benchmark table of trained accuracies exists for these spaces, so no proxy can be checked against
accuracy there. What can be measured is whether the proxies agree with each other: for N random archs of
each space, every proxy's raw value on one real probe batch, then Spearman's rho and Kendall's tau between
every pair. NAS-Bench-201 is run the same way as a reference (there the pairs can also be compared with
ground truth in `experiments/correlation/`). A proxy that fails on a space (NASWOT's activation codes hook
ReLU only, and AutoFormer uses GELU) is reported as failing, with its error, not dropped silently.

    python experiments/spaces/agreement.py              # 60 archs per space, about 10 min here
    python experiments/spaces/agreement.py --archs 20   # a quick look

Writes results/agreement.json, agreement.png (one heat map per space) and the table in README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from nasfleet.data.datasets import load_dataset
from nasfleet.proxies.engine import ScoreTable, add_aggregates, score_archs
from nasfleet.proxies.probe import ProbeBatch
from nasfleet.spaces import get_space

HERE = Path(__file__).resolve().parent
SPACES = ("nb201", "coer", "autoformer-edge")
PROXIES = ("fg_fi", "fg_fc", "fg_gc", "fg_gi", "naswot", "synflow", "snip", "grad_norm", "params", "flops")
AGGREGATES = ("fgnas",)
SHAPE_NOTE = "real CIFAR-10 probe batch of 32 (3x32x32), seed 0"


def score_space(name: str, archs: int, batch: ProbeBatch) -> dict[str, Any]:
    """Every proxy that works on *name*'s space, for *archs* random archs; the failures with their errors."""
    space = get_space(name)
    rng = np.random.default_rng(0)
    genomes = list(dict.fromkeys(space.sample(rng) for _ in range(archs * 3)))[:archs]
    values: dict[str, list[float]] = {}
    failed: dict[str, str] = {}
    for proxy in PROXIES:
        try:
            table = score_archs(space, genomes, batch, [proxy], seed=0, progress=False)
        except Exception as error:  # a proxy that cannot run on this space is a finding, not a crash
            failed[proxy] = f"{type(error).__name__}: {str(error)[:160]}"
            continue
        values[proxy] = [float(v) for v in table.values[proxy]]
        print(f"{name}: {proxy} done", file=sys.stderr, flush=True)
    fg = [p for p in ("fg_fi", "fg_fc", "fg_gc", "fg_gi") if p in values]
    if len(fg) == 4:  # the FG-NAS aggregate ranks over this population of archs
        columns: dict[str, np.ndarray] = {p: np.array(values[p]) for p in fg}
        table = ScoreTable(tuple(space.encode(g) for g in genomes), columns, np.zeros(len(genomes)))
        values["fgnas"] = [float(v) for v in add_aggregates(table, AGGREGATES, True)["fgnas"]]
    return {"archs": [space.encode(g) for g in genomes], "values": values, "failed": failed}


def agreement(values: dict[str, list[float]]) -> dict[str, dict[str, dict[str, float]]]:
    names = list(values)
    result: dict[str, dict[str, dict[str, float]]] = {}
    for a in names:
        result[a] = {}
        for b in names:
            rho = float(stats.spearmanr(values[a], values[b]).statistic)
            tau = float(stats.kendalltau(values[a], values[b]).statistic)
            result[a][b] = {"spearman": rho, "kendall": tau}
    return result


def plot(path: Path, report: dict[str, Any]) -> None:
    figure, panels = plt.subplots(1, len(report["spaces"]), figsize=(6 * len(report["spaces"]), 5.2))
    for panel, (name, found) in zip(np.atleast_1d(panels), report["spaces"].items(), strict=True):
        names = list(found["agreement"])
        matrix = np.array([[found["agreement"][a][b]["spearman"] for b in names] for a in names])
        image = panel.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
        panel.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
        panel.set_yticks(range(len(names)), names, fontsize=8)
        panel.set_title(f"{name}: Spearman between proxies ({len(found['archs'])} archs)", fontsize=9)
        figure.colorbar(image, ax=panel, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", type=int, default=60)
    args = parser.parse_args()
    batch = ProbeBatch.from_dataset(load_dataset("cifar10", "train"), 32, 0, True)
    report: dict[str, Any] = {"probe": SHAPE_NOTE, "spaces": {}}
    for name in SPACES:
        found = score_space(name, args.archs, batch)
        found["agreement"] = agreement(found["values"])
        report["spaces"][name] = found
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "agreement.json").write_text(json.dumps(report, indent=1))
    plot(HERE / "agreement.png", report)
    for name, found in report["spaces"].items():
        row = found["agreement"].get("fgnas", {})
        pairs = [(other, cell["spearman"]) for other, cell in row.items() if other != "fgnas"]
        shown = ", ".join(f"{other} {rho:.2f}" for other, rho in pairs)
        print(f"{name}: fgnas vs {shown}; failed: {sorted(found['failed'])}")


if __name__ == "__main__":
    main()
