"""FG-NAS Fig. 3 at CPU scale: Spearman rho of S_GI and of the FG-NAS aggregate against the ratio gamma.

Reuses the architectures, seed, batch and the other three raw proxies of a `nasfleet bench correlation`
run (its scores.csv), recomputes S_GI for every gamma from one probe per architecture (block sigmas and
per-layer gradient signals are shared across gammas), and writes gamma.json and gamma.png beside it.
Ground-truth accuracies are read from scores.csv only after every score is computed.

    python experiments/correlation/gamma_sweep.py experiments/correlation/nb201-cifar10 --archs 300
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.progress import track
from scipy.stats import spearmanr

from nasfleet.data.datasets import load_dataset
from nasfleet.proxies import get_aggregate
from nasfleet.proxies.fgnas import DEFAULT_PROBES, block_sigmas, gradient_signal, important_blocks
from nasfleet.proxies.probe import Probe, ProbeBatch
from nasfleet.spaces import get_space

GAMMAS = (0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0)


def gi_for_gammas(probe: Probe, gammas: tuple[float, ...]) -> list[float]:
    """S_GI of one network for every gamma, sharing sigmas and per-layer signals."""
    sigmas = block_sigmas(probe, DEFAULT_PROBES)
    signals = [gradient_signal(probe.per_sample_grads(layer)) for layer in probe.layers]
    values = []
    for gamma in gammas:
        kept = set(important_blocks(sigmas, gamma).tolist())
        pairs = zip(probe.layers, signals, strict=True)
        values.append(sum(signal for layer, signal in pairs if signal is not None and layer.block in kept))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="output directory of a bench correlation run")
    parser.add_argument("--archs", type=int, default=300, help="how many of its architectures to use")
    args = parser.parse_args()
    settings = json.loads((args.run / "report.json").read_text())
    rows = list(csv.DictReader((args.run / "scores.csv").open()))[: args.archs]
    space, data = get_space(settings["space"]), load_dataset(settings["data"])
    batch = ProbeBatch.from_dataset(data, settings["batch_size"], settings["seed"])
    torch.set_num_threads(1)
    gi = []
    for row in track(rows, description="S_GI over gamma"):
        torch.manual_seed(settings["seed"])
        network = space.build(space.decode(row["arch"]), batch.num_classes, batch.input_shape)
        with Probe(network, batch, seed=settings["seed"]) as probe:
            gi.append(gi_for_gammas(probe, GAMMAS))
    values = {name: np.array([float(r[name]) for r in rows]) for name in ("fg_fi", "fg_fc", "fg_gc")}
    accuracy = np.array([float(r[settings["column"]]) for r in rows])  # read after scoring: measurement only
    result = {"archs": len(rows), "column": settings["column"], "gammas": list(GAMMAS)}
    result.update({"fg_gi": [], "fgnas": []})
    for index, _ in enumerate(GAMMAS):
        values["fg_gi"] = np.array([g[index] for g in gi])
        result["fg_gi"].append(float(spearmanr(values["fg_gi"], accuracy)[0]))
        aggregate = get_aggregate("fgnas").combine(values, labeled=True)
        result["fgnas"].append(float(spearmanr(aggregate, accuracy)[0]))
    (args.run / "gamma.json").write_text(json.dumps(result, indent=2) + "\n")
    figure = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(GAMMAS, result["fgnas"], "o-", label="FG-NAS aggregate")
    axes.plot(GAMMAS, result["fg_gi"], "s--", label="S_GI alone")
    axes.set(xlabel="important-layer ratio gamma", ylabel=f"Spearman rho vs {settings['column']}")
    axes.set_title(f"gamma sweep, {len(rows)} NB201 archs")
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.run / "gamma.png", dpi=120)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
