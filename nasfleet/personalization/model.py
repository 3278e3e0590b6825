"""The per-device model that closes the loop: zero-cost evidence and the device's own reports, warm-started
from the fleet.

For one device, the model predicts how well each candidate would do *on that device* from

- the candidate's zero-cost prior: its normalized rank (in (0, 1]) under the search's aggregate in the
  archive it was scored in (raw proxy values of different devices' probe batches are not comparable,
  their ranks are);
- the candidate's architecture: one indicator per gene value (`arch_features`);

fitted to reports. The device's own reports have weight 1; the reports of the tenant's other devices
enter with ``fleet_weight`` (the fleet prior), each device's accuracies standardized by its own mean
and spread first, since devices differ in task and difficulty. The regressor is scikit-learn's
`BayesianRidge`, which also gives a predictive spread for the acquisition (an upper confidence bound,
mean + ``kappa`` x std). Until the reports say something relative (no report, or one per device, whose
standardized value is 0), the model is the zero-cost prior itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import BayesianRidge

from nasfleet.spaces import Genome, SearchSpace


@dataclass(frozen=True)
class Observation:
    """A report as the model sees it: device, arch, accuracy, and the arch's zero-cost prior there."""

    device: str
    arch: str
    accuracy: float
    prior: float


def arch_features(space: SearchSpace, genomes: Sequence[Genome]) -> np.ndarray:
    """One row per genome: an indicator for every (gene, value) pair of the space."""
    offsets = np.concatenate([[0], np.cumsum(space.choices)[:-1]]).astype(int)
    rows = np.zeros((len(genomes), int(sum(space.choices))))
    for i, genome in enumerate(genomes):
        rows[i, offsets + np.asarray(genome, dtype=int)] = 1.0
    return rows


def standardized(observations: Sequence[Observation]) -> np.ndarray:
    """Each observation's accuracy minus its device's mean, over its device's spread (1 when undefined)."""
    by_device: dict[str, list[float]] = defaultdict(list)
    for o in observations:
        by_device[o.device].append(o.accuracy)
    stats = {}
    for device, values in by_device.items():
        spread = float(np.std(values)) if len(values) > 1 else 0.0
        stats[device] = (float(np.mean(values)), spread if spread > 1e-9 else 1.0)
    return np.array([(o.accuracy - stats[o.device][0]) / stats[o.device][1] for o in observations])


class DeviceModel:
    """What one device's next SubNets are chosen by; see the module docstring."""

    def __init__(
        self, space: SearchSpace, device: str, *, fleet_weight: float = 0.5, kappa: float = 1.0
    ) -> None:
        if not 0.0 <= fleet_weight <= 1.0:
            raise ValueError(f"fleet_weight must lie in [0, 1], but got {fleet_weight!r}")
        if not kappa >= 0.0:
            raise ValueError(f"kappa must be >= 0, but got {kappa!r}")
        self.space, self.device, self.fleet_weight, self.kappa = space, device, fleet_weight, kappa
        self.regressor: BayesianRidge | None = None
        self.reports = 0

    def fit(self, observations: Sequence[Observation]) -> DeviceModel:
        """Fit to the fleet's observations (this device's and, weighted, the others')."""
        used = [o for o in observations if o.device == self.device or self.fleet_weight > 0]
        self.reports = sum(o.device == self.device for o in used)
        if len(used) < 2:
            self.regressor = None
            return self
        targets = standardized(used)
        if np.ptp(targets) < 1e-12:  # e.g. one report per device: nothing relative to learn yet
            self.regressor = None
            return self
        x = self._features([o.arch for o in used], [o.prior for o in used])
        weights = np.array([1.0 if o.device == self.device else self.fleet_weight for o in used])
        self.regressor = BayesianRidge().fit(x, targets, sample_weight=weights)
        return self

    def predict(self, archs: Sequence[str], priors: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of each arch's standardized accuracy here; the prior itself before any fit."""
        prior = np.asarray(priors, dtype=float)
        if self.regressor is None:
            return prior, np.zeros_like(prior)
        mean, std = self.regressor.predict(self._features(archs, prior), return_std=True)
        return np.asarray(mean), np.asarray(std)

    def acquisition(self, archs: Sequence[str], priors: Sequence[float]) -> np.ndarray:
        """Upper confidence bound of each arch: what the next reports are spent on."""
        mean, std = self.predict(archs, priors)
        return mean + self.kappa * std

    def _features(self, archs: Sequence[str], priors: Sequence[float] | np.ndarray) -> np.ndarray:
        genomes = [self.space.decode(arch) for arch in archs]
        prior = np.asarray(priors, dtype=float).reshape(-1, 1)
        return np.hstack([prior, arch_features(self.space, genomes)])


def priors(archs: Sequence[str], fitness: np.ndarray) -> Mapping[str, float]:
    """Each arch's zero-cost prior: its normalized rank in (0, 1] under *fitness* (higher is better; of
    equal values, the earlier arch ranks higher, as the search's best does)."""
    order = np.argsort(-np.asarray(fitness, dtype=float), kind="stable")
    size = len(archs)
    return {archs[int(i)]: (size - k) / size for k, i in enumerate(order)}
