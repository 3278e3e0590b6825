"""Characteristics extraction: exact noiseless sketches, DP accounting, clipping, wire round trip, privacy."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from nasfleet.clients.characteristics import (
    DEFAULT_DELTA,
    analytic_gaussian_delta,
    clip_rows,
    default_clip,
    extract_characteristics,
    gaussian_mu,
    noise_scales,
    public_basis,
    sketch_dataset,
)
from nasfleet.data.datasets import Dataset, synthetic_dataset
from nasfleet.protocol.messages import DataCharacteristics

SMALL_SHAPE = (1, 8, 8)  # the public basis spans all 64 values: sketches are exact without noise
BIG_CLIP = 1e6  # never clips


def _small(n: int = 200, num_classes: int = 4, seed: int = 0) -> Dataset:
    return synthetic_dataset(n, num_classes=num_classes, input_shape=SMALL_SHAPE, seed=seed)


def _flat(dataset: Dataset) -> np.ndarray:
    return dataset.images.reshape(len(dataset), -1).astype(np.float64)


# -- the mechanism ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("epsilon", [0.1, 1.0, 4.0, 16.0])
def test_gaussian_mu_spends_exactly_delta(epsilon: float) -> None:
    mu = gaussian_mu(epsilon, DEFAULT_DELTA)

    assert analytic_gaussian_delta(epsilon, mu) == pytest.approx(DEFAULT_DELTA, rel=1e-6)
    assert analytic_gaussian_delta(epsilon, mu * 1.01) > DEFAULT_DELTA


def test_analytic_mechanism_needs_no_more_noise_than_the_classic_bound() -> None:
    for epsilon in (0.25, 0.5, 1.0):  # the classic bound holds for epsilon <= 1
        classic_mu = epsilon / math.sqrt(2 * math.log(1.25 / DEFAULT_DELTA))

        assert gaussian_mu(epsilon, DEFAULT_DELTA) >= classic_mu


def test_noise_scales_split_the_budget_between_sum_and_moment() -> None:
    clip = 3.0
    scales = noise_scales(2.0, DEFAULT_DELTA, clip, mean_share=0.3)

    mu_sum, mu_moment = clip / scales.sum_sigma, clip**2 / scales.moment_sigma
    assert math.hypot(mu_sum, mu_moment) == pytest.approx(gaussian_mu(2.0, DEFAULT_DELTA))
    assert mu_sum**2 / (mu_sum**2 + mu_moment**2) == pytest.approx(0.3)


# -- basis and clipping ----------------------------------------------------------------------------------
def test_public_basis_is_orthonormal_and_keeps_the_lowest_frequencies() -> None:
    basis = public_basis((3, 32, 32), frequencies=8)

    assert basis.shape == (3 * 8 * 8, 3072)
    np.testing.assert_allclose(basis @ basis.T, np.eye(192), atol=1e-10)
    np.testing.assert_allclose(basis[0, :1024], 1 / 32)  # channel 0's first vector: the constant image
    assert not basis[0, 1024:].any()


def test_clip_rows_bounds_every_norm_and_keeps_directions() -> None:
    rows = np.random.default_rng(0).normal(0, 5, (100, 20))
    rows[:10] *= 0.01  # inside the ball: unchanged

    clipped = clip_rows(rows, 2.0)

    norms = np.linalg.norm(clipped, axis=1)
    assert norms.max() <= 2.0 + 1e-12
    np.testing.assert_array_equal(clipped[:10], rows[:10])
    cosines = np.sum(clipped * rows, axis=1) / (norms * np.linalg.norm(rows, axis=1))
    np.testing.assert_allclose(cosines, 1.0)


def test_released_sketches_respect_the_clip_bound() -> None:
    data, clip = _small(), 0.5  # every sample is longer than 0.5

    for noise in (None, noise_scales(0.5, DEFAULT_DELTA, clip)):
        sketches = sketch_dataset(data, labeled=True, rank=4, clip=clip, noise=noise, seed=0)

        assert np.linalg.norm(sketches.means, axis=1).max() <= clip * (1 + 1e-5)
        assert (sketches.bases.astype(np.float64) ** 2).sum(axis=(1, 2)).max() <= clip**2 * (1 + 1e-5)


# -- exactness and noise ---------------------------------------------------------------------------------
def test_noiseless_sketches_are_the_true_class_means_and_top_eigenpairs() -> None:
    data = _small()
    rows = _flat(data)

    sketches = sketch_dataset(data, labeled=True, rank=5, clip=BIG_CLIP, noise=None, seed=0)

    for label in range(data.num_classes):
        members = rows[data.labels == label]
        np.testing.assert_allclose(sketches.means[label], members.mean(axis=0), atol=1e-5)
        top = np.sort(np.linalg.eigvalsh(np.cov(members.T, bias=True)))[::-1][:5]
        released = np.sort((sketches.bases[label].astype(np.float64) ** 2).sum(axis=1))[::-1]
        np.testing.assert_allclose(released, top, rtol=1e-4)


def test_noise_shrinks_as_epsilon_grows_at_the_calibrated_scale() -> None:
    data = _small(n=2000)  # 500 per class: the noisy means stay inside the clip ball
    clip = default_clip(data.input_shape)
    exact = sketch_dataset(data, labeled=True, rank=4, clip=clip, noise=None, seed=0).means
    counts = np.bincount(data.labels)[:, None]
    errors = []
    for epsilon in (0.5, 2.0, 8.0):
        scales = noise_scales(epsilon, DEFAULT_DELTA, clip)
        noisy = [
            sketch_dataset(data, labeled=True, rank=4, clip=clip, noise=scales, seed=seed).means
            for seed in range(1, 6)
        ]
        standardized = (np.stack(noisy) - exact) * counts / scales.sum_sigma  # N(0, 1) per value
        errors.append(float(np.linalg.norm(np.stack(noisy) - exact)))
        assert standardized.std() == pytest.approx(1.0, abs=0.08)  # 1,280 values: 4 standard errors

    assert errors[0] > 2 * errors[1] > 4 * errors[2]


def test_extraction_is_deterministic_under_its_seed() -> None:
    data = _small()

    first, again = extract_characteristics(data, seed=3), extract_characteristics(data, seed=3)
    other = extract_characteristics(data, seed=4)

    assert first.digest() == again.digest()
    assert first.digest() != other.digest()


# -- the message -----------------------------------------------------------------------------------------
def test_message_survives_the_wire_round_trip() -> None:
    data = _small()

    released = extract_characteristics(data, epsilon=2.0, rank=3, seed=0)
    received = DataCharacteristics.from_wire(*released.to_wire())

    assert received.digest() == released.digest()
    assert received.label_histogram == tuple(np.bincount(data.labels, minlength=4).tolist())
    assert (received.num_samples, received.input_shape, received.labeled) == (200, SMALL_SHAPE, True)
    assert received.class_bases is not None and received.class_bases.shape == (4, 3, 64)
    assert (received.epsilon, received.delta) == (2.0, DEFAULT_DELTA)


def test_no_raw_sample_appears_in_the_message() -> None:
    data = _small(n=41)  # label 0 holds 11 samples; give one class a single member, whose mean *is* it
    data = data.subset(
        np.concatenate([np.flatnonzero(data.labels != 3), np.flatnonzero(data.labels == 3)[:1]])
    )
    rows = _flat(data)

    released = extract_characteristics(data, rank=4, seed=0)

    assert released.class_means is not None and released.class_bases is not None
    vectors = np.concatenate([released.class_means, released.class_bases.reshape(-1, 64)]).astype(np.float64)
    distances = np.linalg.norm(vectors[:, None, :] - rows[None, :, :], axis=2)
    assert distances.min() > 0.1 * np.linalg.norm(rows, axis=1).min()


def test_unlabeled_data_gives_one_pooled_group_and_no_histogram() -> None:
    data = _small()

    released = extract_characteristics(data, labeled=False, rank=2, seed=0)
    received = DataCharacteristics.from_wire(*released.to_wire())

    assert received.label_histogram == () and not received.labeled
    assert received.class_means is not None and received.class_means.shape == (1, 64)
    assert received.class_bases is not None and received.class_bases.shape == (1, 2, 64)
    exact = sketch_dataset(data, labeled=False, rank=2, clip=BIG_CLIP, noise=None, seed=0)
    np.testing.assert_allclose(exact.means[0], _flat(data).mean(axis=0), atol=1e-5)


def test_opting_out_sends_no_sketches_and_no_budget() -> None:
    released = extract_characteristics(_small(), seed=0, sketches=False)

    received = DataCharacteristics.from_wire(*released.to_wire())

    assert not received.has_sketches and received.class_bases is None
    assert (received.epsilon, received.delta) == (None, None)
    assert sum(received.label_histogram) == 200


def test_a_class_absent_from_the_partition_gets_zero_sketches() -> None:
    data = _small()
    data = data.subset(np.flatnonzero(data.labels != 2))

    released = DataCharacteristics.from_wire(*extract_characteristics(data, rank=2, seed=0).to_wire())

    assert released.label_histogram[2] == 0
    assert released.class_means is not None and not released.class_means[2].any()


def test_cifar_sized_partition_is_extracted_in_seconds() -> None:
    data = synthetic_dataset(5000, input_shape=(3, 32, 32), seed=0)

    started = time.perf_counter()
    released = extract_characteristics(data, rank=8, seed=0)
    elapsed = time.perf_counter() - started

    assert released.class_bases is not None and released.class_bases.shape == (10, 8, 3072)
    assert elapsed < 10.0  # about 0.2 s alone; generous for a shared machine


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": math.inf}, "epsilon"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 0.5}, "delta"),
        ({"rank": 0}, "rank"),
        ({"rank": 33}, "rank"),
        ({"clip": -1.0}, "clip"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_field(arguments: dict[str, float], field: str) -> None:
    settings: dict[str, float] = {"seed": 0, **arguments}

    with pytest.raises(ValueError, match=rf"^{field} must"):
        extract_characteristics(_small(), **settings)  # type: ignore[arg-type]
