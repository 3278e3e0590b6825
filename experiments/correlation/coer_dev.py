"""Choose one reading of each COER-NAS dimension on a development sample, by a rule fixed before it ran.

COER-NAS (seed 003; only its abstract and tables survive, no equation) assesses a candidate "from four
dimensions, namely robustness, isotropy, uncertainty and regularity, and merges multi-dimensional scores
into a comprehensive indicator through a rank-driven nonlinear geometric fusion mechanism". A search for
"COER-NAS" (pages and code corpora, again on this run) found no text with its equations, so every
definition below is a RECONSTRUCTION from the dimension's name. This docstring was written, with every
candidate and its direction, before any candidate was measured.

Directions, fixed from the words:

- robustness: stable under perturbation is better (a smaller response to a perturbation, higher score);
- isotropy: variance spread evenly over directions is better;
- uncertainty: the four names are read as four qualities each scored "higher is better", and the zero-cost
  reading of a high predictive uncertainty at initialisation is the desirable one: a well-initialised
  classifier starts near the uniform prediction (initial loss ln K) and does not collapse onto a class
  before training; a confident untrained network signals exploding logit scale. Entropy-based zero-cost
  proxies (Zen-NAS, MAE-DET) likewise reward more entropy. So: more uncertainty is better;
- regularity: regular (neither exploding nor vanishing, geometry-preserving) signal or gradient
  propagation is better.

Candidates (each a proxy; ``today`` marks the definition nasfleet held before this run):

- robustness
  - ``cand_rob_grad`` (today): -ln(eps + mean_i ||d sum_c f_c(x_i) / d x_i||), input-gradient norm.
  - ``cand_rob_noise``: -ln(eps + N / (D + eps)), the logits' noise-to-signal ratio under input noise,
    N = mean_i ||f(x_i + 0.1 z_i) - f(x_i)||^2, z ~ N(0, 1), D = mean_i ||f(x_i) - mean_j f(x_j)||^2.
  - ``cand_rob_weight``: the same ratio when every conv/linear weight is perturbed multiplicatively,
    w (1 + 0.1 z) (flatness / weight-perturbation stability).
- isotropy
  - ``cand_iso_sample`` (today): mean over main blocks of the effective-rank ratio of the centred
    B x (C H W) block output (samples' variance spread over directions).
  - ``cand_iso_channel``: mean over main blocks of the channel-covariance spectral entropy over ln C
    (AZ-NAS's s_E^l, normalised by its maximum), in [0, 1].
  - ``cand_iso_jacobian``: effective-rank ratio of the per-sample input gradients (Jacobian isotropy).
- uncertainty (higher is better, as argued above)
  - ``cand_unc_entropy`` (today): mean_i H(softmax f(x_i)) / ln K.
  - ``cand_unc_marginal``: H(mean_i softmax f(x_i)) / ln K, the batch's total predictive uncertainty
    (low when the batch collapses onto a class).
  - ``cand_unc_least_confidence``: (1 - mean_i max_c p_ic) K / (K - 1).
- regularity (higher is better)
  - ``cand_reg_forward`` (today): -mean over blocks |ln rms(out) - ln rms(in)| (forward gain 1).
  - ``cand_reg_backward``: -mean over blocks |ln g| / 2, g = ||J^T v||^2 / ||v||^2 for one Rademacher
    v over the block output (`Probe.block_jacobian_sketches`, the same sketch FG-NAS uses): backward
    gain 1 (dynamical isometry in mean square).
  - ``cand_reg_angles``: -mean over blocks |c(out) - c(in)|, c the mean off-diagonal cosine similarity
    between the samples' flattened features: a block keeps the angles between samples (the correlation
    map of signal propagation; no collapse, no spurious decorrelation).

Rule: for each dimension, the candidate with the highest Kendall tau-b on ``cifar10_test`` over the
development sample, each ranked in its fixed direction. The rule picks a candidate; it sets no weight.
Fusion is not chosen: ``coer`` is the equal-weight geometric mean of the four normalized ranks, and
``coer_linear`` their mean (Table 2's L row), both measured for the record.

Development sample: the 200 archs of ``experiments/correlation/default-scorer-dev/dev-ground-truth.csv``
(drawn by `default_scorer.py` outside every reported sample). Probe: the service default, 64 CIFAR-10
training images, seed 0, labeled. The bench runs in this process (``--processes 1``) so that the candidates
registered here are visible to it.

    python experiments/correlation/coer_dev.py --out experiments/correlation/coer-dev
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasfleet.bench_metrics import measure
from nasfleet.cli import app
from nasfleet.proxies.activation import side_pass
from nasfleet.proxies.aggregate import normalized_rank
from nasfleet.proxies.base import Proxy, register
from nasfleet.proxies.coer import (
    COER,
    EPS,
    CoerIsotropy,
    COERLinear,
    CoerRegularity,
    CoerRobustness,
    CoerUncertainty,
    noise_to_signal,
)
from nasfleet.proxies.probe import Probe, stream_seed

DEV_TRUTH = Path(__file__).parent / "default-scorer-dev" / "dev-ground-truth.csv"
COLUMN = "cifar10_test"
COLUMNS = ("cifar10_test", "cifar100_test", "imagenet16_test")
SIGMA = 0.1
NOISE_STREAM = 0xC0E1
DIMENSIONS = {
    "robustness": ("cand_rob_grad", "cand_rob_noise", "cand_rob_weight"),
    "isotropy": ("cand_iso_sample", "cand_iso_channel", "cand_iso_jacobian"),
    "uncertainty": ("cand_unc_entropy", "cand_unc_marginal", "cand_unc_least_confidence"),
    "regularity": ("cand_reg_forward", "cand_reg_backward", "cand_reg_angles"),
}


# -- the chosen readings: nasfleet's coer_* proxies since this run, under their candidate names. Their
# values are those measured as revision 1 of each candidate, so the candidates keep revision 1.
@register
class RobWeight(CoerRobustness):
    name = "cand_rob_weight"
    revision = 1


@register
class IsoChannel(CoerIsotropy):
    name = "cand_iso_channel"
    revision = 1


@register
class UncEntropy(CoerUncertainty):
    name = "cand_unc_entropy"


@register
class RegBackward(CoerRegularity):
    name = "cand_reg_backward"
    revision = 1


# -- the readings that lost --------------------------------------------------------------------------------
def effective_rank_ratio(features: torch.Tensor) -> float:
    """exp(spectral entropy) / (B - 1) of the centred B x D matrix (rows: samples); 0 if constant."""
    matrix = features.detach().flatten(1).double()
    centred = matrix - matrix.mean(dim=0, keepdim=True)
    eigenvalues = torch.linalg.eigvalsh(centred @ centred.T).clamp_min(0.0)
    total = float(eigenvalues.sum())
    if total <= EPS:
        return 0.0
    p = eigenvalues[eigenvalues > 0] / total
    return math.exp(float(-(p * p.log()).sum())) / (matrix.shape[0] - 1)


def probabilities(probe: Probe) -> torch.Tensor:
    return torch.softmax(probe.logits.detach().double(), dim=1)


def mean_cosine(features: torch.Tensor) -> float:
    """Mean off-diagonal cosine similarity between the samples' flattened features (0 for zero rows)."""
    rows = features.detach().flatten(1).double()
    unit = rows / rows.norm(dim=1, keepdim=True).clamp_min(EPS)
    gram = unit @ unit.T
    n = rows.shape[0]
    return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))


def block_pairs(probe: Probe) -> list[tuple[torch.Tensor, torch.Tensor]]:
    probe.logits  # noqa: B018 - the forward pass records the block inputs and outputs
    return list(zip(probe.block_inputs, probe.block_outputs, strict=True))


def _rms(tensor: torch.Tensor) -> float:
    return float(tensor.detach().double().pow(2).mean().sqrt())


@register
class RobGrad(Proxy):
    name = "cand_rob_grad"

    def compute(self, probe: Probe) -> float:
        return -math.log(EPS + float(probe.input_jacobian.double().norm(dim=1).mean()))


@register
class RobNoise(Proxy):
    name = "cand_rob_noise"

    def compute(self, probe: Probe) -> float:
        inputs = probe.batch.inputs.detach()
        generator = torch.Generator(device="cpu").manual_seed(stream_seed(probe.seed, NOISE_STREAM))
        noise = torch.randn(tuple(inputs.shape), generator=generator).to(inputs)
        with side_pass(probe.network), torch.no_grad():
            perturbed = probe.network(inputs + SIGMA * noise)
        return noise_to_signal(probe.logits, perturbed)


@register
class IsoSample(Proxy):
    name = "cand_iso_sample"

    def compute(self, probe: Probe) -> float:
        return float(np.mean([effective_rank_ratio(output) for _, output in block_pairs(probe)]))


@register
class IsoJacobian(Proxy):
    name = "cand_iso_jacobian"

    def compute(self, probe: Probe) -> float:
        return effective_rank_ratio(probe.input_jacobian)


@register
class UncMarginal(Proxy):
    name = "cand_unc_marginal"

    def compute(self, probe: Probe) -> float:
        mean = probabilities(probe).mean(dim=0)
        return float(-(mean * mean.clamp_min(1e-300).log()).sum()) / math.log(mean.shape[0])


@register
class UncLeastConfidence(Proxy):
    name = "cand_unc_least_confidence"

    def compute(self, probe: Probe) -> float:
        p = probabilities(probe)
        classes = p.shape[1]
        return float(1 - p.max(dim=1).values.mean()) * classes / (classes - 1)


@register
class RegForward(Proxy):
    name = "cand_reg_forward"

    def compute(self, probe: Probe) -> float:
        gaps = [abs(math.log(EPS + _rms(out)) - math.log(EPS + _rms(inp))) for inp, out in block_pairs(probe)]
        return -float(np.mean(gaps))


@register
class RegAngles(Proxy):
    name = "cand_reg_angles"

    def compute(self, probe: Probe) -> float:
        gaps = [abs(mean_cosine(out) - mean_cosine(inp)) for inp, out in block_pairs(probe)]
        return -float(np.mean(gaps))


# -- the rule, and the fusions of the chosen four for the record -------------------------------------------
def choose(report: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    tau = {r["name"]: float(r["by_column"][COLUMN]["kendall"]) for r in report["results"]}
    rho = {r["name"]: float(r["by_column"][COLUMN]["spearman"]) for r in report["results"]}
    chosen, lines = {}, []
    for dimension, names in DIMENSIONS.items():
        chosen[dimension] = max(names, key=lambda name: tau[name])
        for name in sorted(names, key=lambda name: -tau[name]):
            lines.append(f"{dimension}: {name}: tau {tau[name]:.4f}, rho {rho[name]:.4f} on {COLUMN}")
        lines.append(f"{dimension}: chosen (rule: highest Kendall tau on {COLUMN}): {chosen[dimension]}")
    return chosen, lines


def fused_on_dev(scores: Path, chosen: dict[str, str]) -> list[str]:
    """tau / rho of ``coer`` and ``coer_linear`` over the chosen four's dev values (read after the choice)."""
    with scores.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    ranks = np.stack(
        [normalized_rank(np.array([float(r[name]) for r in rows]), True) for name in chosen.values()]
    )
    accuracies = {column: np.array([float(r[column]) for r in rows]) for column in COLUMNS}
    lines = []
    for aggregate in (COER(), COERLinear()):
        measured = measure(aggregate.fuse(ranks), accuracies)
        cells = [f"{c} tau {measured[c]['kendall']:.4f} rho {measured[c]['spearman']:.4f}" for c in COLUMNS]
        lines.append(f"{aggregate.name} of the chosen four (dev, for the record): " + "; ".join(cells))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timing-sample", type=int, default=3)
    args = parser.parse_args()
    names = [name for group in DIMENSIONS.values() for name in group]
    command = [
        "bench", "correlation", "--ground-truth", str(DEV_TRUTH), "--sample", "all",
        "--proxies", ",".join(names), "--data", "cifar10", "--seed", "0", "--batch-size", "64",
        "--timing-sample", str(args.timing_sample), "--processes", "1", "--out", str(args.out / "bench"),
    ]  # fmt: skip
    app(command, standalone_mode=False)
    report = json.loads((args.out / "bench" / "report.json").read_text())
    chosen, lines = choose(report)
    lines += fused_on_dev(args.out / "bench" / "scores.csv", chosen)
    (args.out / "choice.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
