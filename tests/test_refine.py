"""Rounds 2..R (`refine`) on a real SQLite registry, with the devices' training as the boundary: what each
device is sent next, given its round-1 report and its tier's shared baseline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from itertools import product
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from nasfleet.bounds import DEFAULT_AGGREGATE
from nasfleet.protocol.messages import DeviceIdentity, TrainingReport
from nasfleet.proxies.assembled import AZNASMeCoFI
from nasfleet.search.loop import archive_fitness
from nasfleet.server.federation.app import shared_from_round_one
from nasfleet.server.federation.config import RoundConfig
from nasfleet.server.federation.refine import refine
from nasfleet.server.federation.round import DeviceOutcome
from nasfleet.server.registry import EvaluationRecord, Registry
from tests.service_support import characteristics, sqlite_url

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
ARCHS = [
    f"|{a}~0|+|{b}~0|{c}~1|+|nor_conv_3x3~0|skip_connect~1|{d}~2|" for a, b, c, d in product(OPS, repeat=4)
][:12]


def report(job_id: str, arch: str, accuracy: float) -> TrainingReport:
    return TrainingReport(job_id, arch, accuracy, 0.5, 1.0, 2.0, 80, 20, 3)


def archive(tmp_path: Path) -> tuple[Registry, str, list[str]]:
    """One device's finished search over `ARCHS` with random raw values; its archs best first."""
    registry = Registry(sqlite_url(tmp_path))
    registry.create_tenant("acme")
    registry.upsert_device("acme", "cam-1", tier="micro")
    job = registry.create_job(
        "acme", space="nb201", strategy="random", characteristics_hash="c" * 64, budget=12, device="cam-1"
    )
    rng = np.random.default_rng(0)
    values = {name: rng.random(len(ARCHS)).tolist() for name in AZNASMeCoFI.INPUTS}
    registry.add_evaluations(
        job.id,
        [
            EvaluationRecord(a, {n: v[i] for n, v in values.items()}, 1000, 10_000, 0.1)
            for i, a in enumerate(ARCHS)
        ],
    )
    fitness = archive_fitness(ARCHS, values, DEFAULT_AGGREGATE, True)
    return registry, job.id, [ARCHS[i] for i in np.argsort(-fitness, kind="stable")]


def run_rounds(registry: Registry, outcome: DeviceOutcome, rounds: int) -> list[str]:
    """`refine` over *rounds*; the archs the device was sent, in order (each reported at 0.5)."""
    sent: list[str] = []

    def train(chosen: Mapping[int, str], number: int) -> dict[int, TrainingReport]:
        sent.append(chosen[outcome.node])
        return {outcome.node: report(outcome.job_id, chosen[outcome.node], 0.5)}

    results = {outcome.job_id: object()}  # refine asks only which jobs have a result
    refine([outcome], results, RoundConfig(rounds=rounds), registry, train)  # type: ignore[arg-type]
    return sent


def device(job_id: str, own: str, shared: str | None) -> DeviceOutcome:
    outcome = DeviceOutcome(1, identity=DeviceIdentity("acme", "cam-1"), characteristics=characteristics())
    outcome.job_id, outcome.report = job_id, report(job_id, own, 0.6)
    if shared is not None:
        outcome.shared_report = report("shared-job", shared, 0.99)
    return outcome


def test_without_a_shared_baseline_round_two_trains_the_archive_second_best(tmp_path: Path) -> None:
    registry, job_id, ranked = archive(tmp_path)
    assert run_rounds(registry, device(job_id, ranked[0], None), 2) == [ranked[1]]


def test_the_shared_subnet_a_device_trained_is_never_sent_again_and_is_not_its_subnet(tmp_path: Path) -> None:
    """The archive's second best is the tier's shared SubNet, which the device has trained already: later
    rounds send other archs, and the shared one, although reported best, stays the baseline."""
    registry, job_id, ranked = archive(tmp_path)
    outcome = device(job_id, ranked[0], ranked[1])
    sent = run_rounds(registry, outcome, 4)
    assert len(sent) == 3 and len(set(sent)) == 3 and ranked[0] not in sent and ranked[1] not in sent
    assert outcome.best is not None and outcome.best.arch == ranked[0], "0.6 beats the later rounds' 0.5"
    assert all(r.arch != ranked[1] for r in outcome.trained)


def test_a_shared_subnet_that_is_the_devices_own_counts_once(tmp_path: Path) -> None:
    """Round 1's SubNet and the tier's are one arch: one distinct report, so round 2 is the prior's next."""
    registry, job_id, ranked = archive(tmp_path)
    assert run_rounds(registry, device(job_id, ranked[0], ranked[0]), 2) == [ranked[1]]


def test_the_shared_report_is_evidence_for_the_model(tmp_path: Path) -> None:
    """With the shared SubNet's report beside round 1's, the device has two reports, so its model is fitted
    on them rather than falling back to the prior: round 2 is the model's choice, here not the prior's."""
    registry, job_id, ranked = archive(tmp_path)
    choices = {run_rounds(registry, device(job_id, ranked[0], shared), 2)[0] for shared in ranked[2:]}
    assert choices - {ranked[1]}, "some shared report moves round 2 off the prior's second best"


def test_a_round_one_subnet_that_is_the_tiers_shared_arch_stands_for_the_baseline() -> None:
    """No second training of the same arch: the round-1 report, under the shared job, is the baseline's."""
    own = device("own-job", ARCHS[0], None)
    assert own.report is not None
    results = {"shared-job": SimpleNamespace(arch=ARCHS[0]), "other-job": SimpleNamespace(arch=ARCHS[1])}
    assert shared_from_round_one(own, "shared-job", results)  # type: ignore[arg-type]
    assert own.shared_report == replace(own.report, job_id="shared-job")
    assert own.rounds == [(1, own.report), (1, own.shared_report)], "both are stored, each under its job"
    other = device("own-job", ARCHS[0], None)
    assert not shared_from_round_one(other, "other-job", results)  # type: ignore[arg-type]
    assert not shared_from_round_one(other, None, results)  # type: ignore[arg-type]
    assert not shared_from_round_one(other, "missing-job", results)  # type: ignore[arg-type]
    assert other.shared_report is None
