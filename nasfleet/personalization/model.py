"""The per-device model that closes the loop: zero-cost evidence and the device's own reports, warm-started
from the fleet.

For one device, the model predicts how well each candidate would do *on that device* from

- the candidate's zero-cost prior: its normalized rank (in (0, 1]) under the search's aggregate in the
  archive it was scored in (raw proxy values of different devices' probe batches are not comparable,
  their ranks are);
- the candidate's architecture: one indicator per gene value (`arch_features`);

fitted to reports. The device's own reports have weight 1; the reports of the tenant's other devices
enter with ``fleet_weight`` (the fleet prior), each device's accuracies standardized by its own mean
and spread first, since devices differ in task and difficulty. Until the reports say something relative
(no report, or one per device, whose standardized value is 0), the model is the zero-cost prior itself.

The regressor is a named choice (``regressor``, one of `REGRESSORS`):

- ``"bayesian-ridge"`` (the default): scikit-learn's `BayesianRidge`, which also gives a predictive
  spread for the acquisition (an upper confidence bound, mean + ``kappa`` x std);
- ``"lightgbm"`` and ``"xgboost"``: gradient-boosted trees, imported only when chosen. Trees give no
  predictive spread, so their std is 0 and ``kappa`` has no effect: the acquisition is the mean. Their
  settings (`TREE_SETTINGS`) are for 1-60 rows: shallow trees, small leaves, a fixed seed, one thread.

`experiments/personalization/models.md` measures the three in the closed loop.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


REGRESSORS = ("bayesian-ridge", "lightgbm", "xgboost")
"""The regressors `DeviceModel` can fit; see the module docstring."""

TREE_SETTINGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # name: (package, estimator class, keyword arguments): for 1-60 rows, picked on development seeds
    # 100-104 (experiments/personalization/models.md); lightgbm: stumps beat 50 trees of 4 leaves there
    "lightgbm": (
        "lightgbm", "LGBMRegressor",
        {"n_estimators": 100, "learning_rate": 0.1, "num_leaves": 2, "min_child_samples": 2,
         "min_data_in_bin": 1, "random_state": 0, "n_jobs": 1, "verbose": -1},
    ),
    "xgboost": (
        "xgboost", "XGBRegressor",
        {"n_estimators": 50, "learning_rate": 0.1, "max_depth": 2, "min_child_weight": 1.0,
         "random_state": 0, "n_jobs": 1},
    ),
}  # fmt: skip


def check_regressor(name: str) -> None:
    """Refuse an unknown regressor name, or a tree regressor whose package is not installed."""
    if name not in REGRESSORS:
        raise ValueError(f"regressor must be one of {', '.join(REGRESSORS)}, but got {name!r}")
    if name in TREE_SETTINGS and importlib.util.find_spec(TREE_SETTINGS[name][0]) is None:
        package = TREE_SETTINGS[name][0]
        raise ValueError(f"regressor {name!r} needs the {package} package: pip install {package}")


def make_regressor(name: str) -> Any:
    """A fresh, unfitted regressor *name* (`REGRESSORS`); tree packages are imported only here."""
    check_regressor(name)
    if name not in TREE_SETTINGS:
        return BayesianRidge()
    package, estimator, settings = TREE_SETTINGS[name]
    return getattr(importlib.import_module(package), estimator)(**settings)


class DeviceModel:
    """What one device's next SubNets are chosen by; see the module docstring."""

    def __init__(
        self,
        space: SearchSpace,
        device: str,
        *,
        fleet_weight: float = 0.5,
        kappa: float = 1.0,
        regressor: str = "bayesian-ridge",
    ) -> None:
        if not 0.0 <= fleet_weight <= 1.0:
            raise ValueError(f"fleet_weight must lie in [0, 1], but got {fleet_weight!r}")
        if not kappa >= 0.0:
            raise ValueError(f"kappa must be >= 0, but got {kappa!r}")
        check_regressor(regressor)
        self.space, self.device, self.fleet_weight, self.kappa = space, device, fleet_weight, kappa
        self.kind = regressor
        self.regressor: Any = None
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
        self.regressor = make_regressor(self.kind).fit(x, targets, sample_weight=weights)
        return self

    def predict(self, archs: Sequence[str], priors: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of each arch's standardized accuracy here; the prior itself before any fit."""
        prior = np.asarray(priors, dtype=float)
        if self.regressor is None:
            return prior, np.zeros_like(prior)
        x = self._features(archs, prior)
        if isinstance(self.regressor, BayesianRidge):
            mean, std = self.regressor.predict(x, return_std=True)
            return np.asarray(mean), np.asarray(std)
        return np.asarray(self.regressor.predict(x), dtype=float), np.zeros(len(prior))  # trees: no spread

    def acquisition(self, archs: Sequence[str], priors: Sequence[float]) -> np.ndarray:
        """Upper confidence bound of each arch: what the next reports are spent on."""
        mean, std = self.predict(archs, priors)
        return mean + self.kappa * std

    def _features(self, archs: Sequence[str], priors: Sequence[float] | np.ndarray) -> np.ndarray:
        genomes = [self.space.decode(arch) for arch in archs]
        prior = np.asarray(priors, dtype=float).reshape(-1, 1)
        return np.hstack([prior, arch_features(self.space, genomes)])


#: The zero-cost prior of an arch a device's search did not score (the middle of the (0, 1] ranks).
NEUTRAL_PRIOR = 0.5


def priors(archs: Sequence[str], fitness: np.ndarray) -> Mapping[str, float]:
    """Each arch's zero-cost prior: its normalized rank in (0, 1] under *fitness* (higher is better; of
    equal values, the earlier arch ranks higher, as the search's best does)."""
    order = np.argsort(-np.asarray(fitness, dtype=float), kind="stable")
    size = len(archs)
    return {archs[int(i)]: (size - k) / size for k, i in enumerate(order)}
