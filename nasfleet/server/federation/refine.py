"""Rounds 2..R of a federation: the devices' reports choose what each device trains next.

After round 1 every ok device has trained its searched SubNet and reported. In each later round the
server fits every device's `DeviceModel` to all the reports of the round's tenant so far (the device's
own with weight 1, the other devices' as the fleet prior), ranks the device's archive (every architecture
its search scored, with its zero-cost prior: the rank under the job's aggregate) by the model's
acquisition, and sends the best one the device has not trained yet. The device trains it and reports. A
device's SubNet at the end is the one it reported best.

A device that also trained its tier's shared SubNet (the round's baseline) reported on one more arch:
that report enters its model like the others (with the neutral prior 0.5 where the arch is not in the
device's archive), and the arch counts as trained, so no later round sends it again. The shared SubNet
is the baseline, never the device's SubNet at the end, unless its own search found that arch too.

These rounds choose within each device's round-1 archive. `nasfleet.personalization.run_fleet` also
lets the model drive further zero-cost search steps; the service's jobs do not take a model yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from nasfleet.personalization import DeviceModel, Observation
from nasfleet.personalization.model import NEUTRAL_PRIOR, priors
from nasfleet.protocol.messages import TrainingReport
from nasfleet.search.loop import archive_fitness
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.round import DeviceOutcome
from nasfleet.server.registry import Registry, ResultRecord
from nasfleet.spaces import get_space

#: Sends each device (by node id) the arch it should train in the given round; returns its reports by node id.
TrainFn = Callable[[Mapping[int, str], int], Mapping[int, TrainingReport]]


def archive_priors(registry: Registry, outcome: DeviceOutcome, aggregate: str) -> dict[str, float]:
    """Every arch the device's search scored, with its zero-cost prior (its rank under *aggregate*)."""
    evaluations = registry.evaluations(outcome.job_id)
    archs = [e.arch for e in evaluations]
    names = sorted(evaluations[0].values) if evaluations else []
    labeled = outcome.characteristics is not None and outcome.characteristics.labeled
    values = {name: [e.values[name] for e in evaluations] for name in names}
    return dict(priors(archs, archive_fitness(archs, values, aggregate, labeled))) if archs else {}


def known(outcome: DeviceOutcome) -> list[TrainingReport]:
    """The device's reports, one per arch: its own SubNets', then its shared baseline's if that is another
    arch."""
    reports = list(outcome.trained)
    shared = outcome.shared_report
    if shared is not None and shared.arch not in {r.arch for r in reports}:
        reports.append(shared)
    return reports


def refine(
    outcomes: Sequence[DeviceOutcome],
    results: Mapping[str, ResultRecord],
    config: RoundConfig,
    registry: Registry,
    train: TrainFn,
) -> None:
    """Rounds 2..``config.rounds`` (see the module docstring); each device's reports go onto its outcome."""
    devices = [o for o in outcomes if o.ok and o.report is not None and o.job_id in results]
    if config.rounds < 2 or not devices:
        return
    space = get_space(config.space)
    archives = {o.node: archive_priors(registry, o, config.job_options.aggregate) for o in devices}
    observations = [
        Observation(o.name, r.arch, r.accuracy, archives[o.node].get(r.arch, NEUTRAL_PRIOR))
        for o in devices
        for r in known(o)
    ]
    for round_number in range(2, config.rounds + 1):
        chosen: dict[int, str] = {}
        for outcome in devices:
            tried = {r.arch for r in known(outcome)}
            candidates = [arch for arch in archives[outcome.node] if arch not in tried]
            if not outcome.ok or not candidates:
                continue
            model = DeviceModel(space, outcome.name).fit(observations)
            scores = model.acquisition(candidates, [archives[outcome.node][arch] for arch in candidates])
            chosen[outcome.node] = candidates[int(np.argmax(scores))]
        if not chosen:
            return
        reports = train(chosen, round_number)
        for outcome in devices:
            report = reports.get(outcome.node)
            if report is not None:
                outcome.refined(round_number, report)
                prior = archives[outcome.node][report.arch]
                observations.append(Observation(outcome.name, report.arch, report.accuracy, prior))
    for outcome in devices:
        chars = outcome.characteristics
        assert chars is not None
        costs = {
            r.arch: space.cost(space.decode(r.arch), chars.num_classes, chars.input_shape)
            for r in outcome.trained
        }
        for arch in costs:
            outcome.predict(arch)
        if (best := outcome.best) is not None:
            outcome.settle(best.arch, costs[best.arch].params, costs[best.arch].flops)
