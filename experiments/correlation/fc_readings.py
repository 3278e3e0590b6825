"""Readings of S_FC's Pearson matrix (FG-NAS eqs. 13-15), compared on a development sample.

The issue says "nuclear norm of the reduced feature matrix divided by the sum of its Pearson correlation
matrix" and leaves open *which* variables are correlated. Over the whole population the principal
components are uncorrelated by construction, so the literal d x d matrix is the identity and cannot be
meant. This script computes the candidate readings on one probe per architecture and reports, for each,
Spearman rho of S_FC alone and of the FG-NAS aggregate that uses it, against ``cifar10_test``:

- ``positions`` (the reading nasfleet used first): per sample, the d x d Pearson matrix of the reduced
  components over the spatial positions; absolute sums averaged over samples.
- ``channels``: per sample, the C x C Pearson matrix of the block's channels over the spatial positions
  (the matrix MeCo, NeurIPS 2023, studies); absolute sums averaged over samples.
- ``samples``: the B x B Pearson matrix between the samples, each sample's reduced features flattened;
  absolute sum. Inputs a block maps to correlated features are hard to tell apart downstream.

The numerator is the nuclear norm of the reduced feature matrix in every reading. The architectures are
a **development sample** (``--seed``, default 3) with every architecture of the benchmark sample (seed 0,
1,000 archs) removed, so that the chosen reading can then be measured on the benchmark sample untouched.
Ground truth is read only after every score is computed. Writes ``fc_readings.json`` into ``--out``.

    python experiments/correlation/fc_readings.py --archs 150 --out experiments/correlation/fc-dev
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from scipy.stats import spearmanr

from nasfleet.bench import read_accuracies, read_arch_strings, sample_arch_strings
from nasfleet.data.datasets import load_dataset
from nasfleet.proxies import get_aggregate
from nasfleet.proxies.fgnas import (
    EPS,
    FeatureInformation,
    GradientChange,
    ImportantLayerGradient,
    feature_matrix,
    reduced_scores,
)
from nasfleet.proxies.probe import Probe, ProbeBatch
from nasfleet.spaces import get_space

GROUND_TRUTH = Path(__file__).resolve().parents[3] / "shared/data/nas-bench-201/nb201-accuracy-200ep.csv"


def pearson_abs_sum(observations: np.ndarray) -> np.ndarray:
    """Absolute sum of the Pearson matrix of the last axis's variables over the middle axis, per batch row.

    ``observations`` has shape (batch, n, variables); a variable that never varies correlates 0 with the
    others and 1 with itself.
    """
    centred = observations - observations.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    unit = np.divide(centred, norms, out=np.zeros_like(centred), where=norms > EPS)
    pearson = np.abs(np.einsum("bpi,bpj->bij", unit, unit))
    dims = observations.shape[-1]
    pearson[:, np.arange(dims), np.arange(dims)] = 1.0
    return pearson.sum(axis=(1, 2))


def denominators(output: torch.Tensor, scores: np.ndarray) -> dict[str, float]:
    """The Pearson-matrix sum of every reading for one block (output: B x C x H x W; scores: B x P x d)."""
    samples, positions, dims = scores.shape
    channels = feature_matrix(output).numpy()
    return {
        "positions": float(pearson_abs_sum(scores).mean()) if positions > 1 and dims > 1 else float(dims),
        "channels": float(pearson_abs_sum(channels).mean()) if positions > 1 else float(channels.shape[-1]),
        "samples": float(pearson_abs_sum(scores.reshape(1, samples, -1).transpose(0, 2, 1))[0]),
    }


READINGS = ("positions", "channels", "samples")


def score_arch(probe: Probe) -> dict[str, float]:
    """FI, GC, GI as nasfleet computes them, and every reading's S_FC with its two parts."""
    proxies = {"fg_fi": FeatureInformation, "fg_gc": GradientChange, "fg_gi": ImportantLayerGradient}
    row = {name: proxy()(probe) for name, proxy in proxies.items()}
    nuclear = 0.0
    ratios = dict.fromkeys(READINGS, 0.0)
    inverse = dict.fromkeys(READINGS, 0.0)
    for output in probe.block_outputs:
        scores = reduced_scores(output)
        norm = float(np.linalg.svd(scores.reshape(-1, scores.shape[-1]), compute_uv=False).sum())
        nuclear += norm
        for reading, value in denominators(output, scores).items():
            ratios[reading] += norm / value
            inverse[reading] += 1.0 / value
    row["nuclear"] = nuclear
    for reading in READINGS:
        row[f"fc_{reading}"] = ratios[reading]
        row[f"inv_{reading}"] = inverse[reading]
    return row


def rho(values: np.ndarray, accuracy: np.ndarray) -> float:
    return float(spearmanr(values, accuracy)[0])


def measure(rows: list[dict[str, float]], accuracy: np.ndarray) -> dict[str, float]:
    column: Callable[[str], np.ndarray] = lambda name: np.array([r[name] for r in rows])  # noqa: E731
    result = {name: rho(column(name), accuracy) for name in rows[0]}
    fgnas = get_aggregate("fgnas")
    for reading in READINGS:
        values = {name: column(name) for name in ("fg_fi", "fg_gc", "fg_gi")}
        values["fg_fc"] = column(f"fc_{reading}")
        result[f"fgnas_{reading}"] = rho(fgnas.combine(values, labeled=True), accuracy)
        result[f"fgnas_{reading}_unlabeled"] = rho(fgnas.combine(values, labeled=False), accuracy)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=3, help="seed of the development sample (not 0)")
    parser.add_argument("--ground-truth", type=Path, default=GROUND_TRUTH)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.seed == 0:
        parser.error("--seed 0 draws the benchmark sample; pick a development seed")
    strings = read_arch_strings(args.ground_truth)
    benchmark = set(sample_arch_strings(strings, 1000, 0))
    dev = [s for s in sample_arch_strings(strings, args.archs + 200, args.seed) if s not in benchmark]
    dev = dev[: args.archs]
    space = get_space("nb201")
    batch = ProbeBatch.from_dataset(load_dataset("cifar10"), 64, 0)
    torch.set_num_threads(1)
    rows = []
    for text in track(dev, description="S_FC readings"):
        torch.manual_seed(0)
        network = space.build(space.decode(text), batch.num_classes, batch.input_shape)
        with Probe(network, batch, seed=0) as probe:
            rows.append(score_arch(probe))
    accuracy = read_accuracies(args.ground_truth, dev, ["cifar10_test"])["cifar10_test"]  # measurement only
    result = {"archs": len(dev), "seed": args.seed, "spearman_cifar10_test": measure(rows, accuracy)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fc_readings.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
