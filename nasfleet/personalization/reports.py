"""What a device tells the server after training a SubNet, checked; and a simulated device that answers
from the NAS-Bench-201 table.

A `Report` is one device's measured accuracy of one SubNet it was sent. It carries no sample: only the
arch string, the device's name and tenant, the round and the held-out accuracy (a fraction in [0, 1]).
`check_report` refuses a report that is not finite, out of range, for a SubNet the device was not sent,
or from a device of another tenant, naming the field, the rule and the value.

`BenchmarkDevice` is the one place where benchmark ground truth may reach a search decision, and only
through this interface: it answers ``report(arch)`` with the table's accuracy on its task plus Gaussian
noise of the benchmark's seed-to-seed spread, and counts every read as one report. It refuses reads
beyond its report budget, so a benchmark cannot read more than it declares.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasfleet import checks

#: NAS-Bench-201 tasks a simulated device may have, with the seed-to-seed standard deviation (accuracy
#: points) its reports get. The shared table holds seed means only, so these spreads are assumptions,
#: of the order NAS-Bench-201's trials show for well-trained cells (see docs/personalization.md).
TASK_NOISE = {"cifar10_test": 0.2, "cifar100_test": 0.4, "imagenet16_test": 0.5}


class ReportError(ValueError):
    """A device report that is refused; nothing is stored from it."""


@dataclass(frozen=True)
class Report:
    """One device's held-out accuracy (a fraction in [0, 1]) of one SubNet it was sent, in one round."""

    tenant: str
    device: str
    arch: str
    accuracy: float
    round: int = 1


def check_report(report: Report, tenant: str, sent: Collection[str]) -> Report:
    """*report* if it is a finite accuracy in [0, 1] of an arch in *sent*, from a device of *tenant*."""

    def require(ok: bool, name: str, rule: str, value: object) -> None:
        checks.require(ok, name, rule, value, ReportError)

    accuracy = report.accuracy
    require(isinstance(accuracy, int | float) and not isinstance(accuracy, bool), "accuracy", "a number",
            accuracy)  # fmt: skip
    require(math.isfinite(accuracy), "accuracy", "finite", accuracy)
    require(0.0 <= accuracy <= 1.0, "accuracy", "a fraction in [0, 1]", accuracy)
    require(report.tenant == tenant, "tenant", f"the fleet's tenant {tenant!r}", report.tenant)
    require(report.arch in sent, "arch", f"a SubNet sent to device {report.device!r}", report.arch)
    require(isinstance(report.round, int) and report.round >= 1, "round", "an integer >= 1", report.round)
    return report


def read_table(path: Path | str, task: str) -> dict[str, float]:
    """Arch string -> accuracy (%) on *task* from the NAS-Bench-201 table (``nb201-accuracy-200ep.csv``)."""
    if task not in TASK_NOISE:
        raise ReportError(f"task must be one of {sorted(TASK_NOISE)}, but got {task!r}")
    with open(path, newline="") as handle:
        return {row["arch_str"]: float(row[task]) for row in csv.DictReader(handle)}


class BenchmarkDevice:
    """A simulated device whose training report is the table's accuracy plus seed-to-seed noise.

    Every ``report`` call is one read; ``reads`` counts them and a read beyond ``budget`` raises.
    """

    def __init__(
        self,
        name: str,
        task: str,
        table: Mapping[str, float],
        *,
        budget: int,
        seed: int = 0,
        noise: float | None = None,
        tenant: str = "bench",
    ) -> None:
        if task not in TASK_NOISE:
            raise ReportError(f"task must be one of {sorted(TASK_NOISE)}, but got {task!r}")
        if budget < 0:
            raise ReportError(f"budget must be an integer >= 0, but got {budget!r}")
        self.name, self.task, self.tenant, self.budget = name, task, tenant, budget
        self.noise = TASK_NOISE[task] if noise is None else noise
        self._table, self._rng = table, np.random.default_rng(seed)
        self.reads = 0

    def report(self, arch: str, round: int = 1) -> Report:
        """The device's measured accuracy of *arch*: one read of the table, with noise."""
        if self.reads >= self.budget:
            raise ReportError(
                f"device {self.name!r} may give at most {self.budget} reports, and all were read"
            )
        if arch not in self._table:
            raise ReportError(f"arch must be a NAS-Bench-201 cell, but got {arch!r}")
        self.reads += 1
        accuracy = self._table[arch] + self._rng.normal(0.0, self.noise)
        return Report(self.tenant, self.name, arch, float(np.clip(accuracy / 100.0, 0.0, 1.0)), round)
