"""The synthetic proxy batch: determinism, label allocation, sketch moments, unlabeled and opt-out paths."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasfleet.clients.characteristics import extract_characteristics
from nasfleet.data.datasets import synthetic_dataset
from nasfleet.protocol.messages import DataCharacteristics
from nasfleet.search.probe import allocate_labels, synthetic_probe_batch

SHAPE = (1, 4, 4)
DIM = 16


def _characteristics(labeled: bool = True, rank: int = 3, seed: int = 0) -> DataCharacteristics:
    """Known sketches: distinct means, random low-rank factors."""
    rng = np.random.default_rng(seed)
    groups = 3 if labeled else 1
    means = rng.normal(0, 3, (groups, DIM)).astype(np.float32)
    bases = rng.normal(0, 1, (groups, rank, DIM)).astype(np.float32)
    histogram = (50, 30, 20) if labeled else ()
    return DataCharacteristics(SHAPE, 3, 100, histogram, labeled, means, bases, 1.0, 1e-5)


def _opted_out(labeled: bool = True) -> DataCharacteristics:
    return replace(_characteristics(labeled), class_means=None, class_bases=None, epsilon=None, delta=None)


def test_same_seed_same_batch_other_seed_other_batch() -> None:
    characteristics = _characteristics()

    first, again = (
        synthetic_probe_batch(characteristics, 32, 7),
        synthetic_probe_batch(characteristics, 32, 7),
    )
    other = synthetic_probe_batch(characteristics, 32, 8)

    assert torch.equal(first.inputs, again.inputs)
    assert first.labels is not None and again.labels is not None and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.inputs, other.inputs)


def test_batch_has_the_input_shape_dtype_and_finite_values() -> None:
    batch = synthetic_probe_batch(_characteristics(), 20, 0)

    assert batch.inputs.shape == (20, *SHAPE) and batch.inputs.dtype == torch.float32
    assert torch.isfinite(batch.inputs).all()
    assert batch.labels is not None and batch.labels.dtype == torch.int64 and batch.num_classes == 3


def test_labels_follow_the_histogram_by_largest_remainder() -> None:
    batch = synthetic_probe_batch(_characteristics(), 10, 0)

    assert batch.labels is not None
    assert np.bincount(batch.labels.numpy(), minlength=3).tolist() == [5, 3, 2]
    assert allocate_labels((1, 1, 1), 4, 0).tolist().count(0) == 2  # tie: the lower class wins
    assert 3 not in allocate_labels((5, 5, 5, 0), 30, 0).tolist()


@settings(max_examples=50, deadline=None)
@given(
    counts=st.lists(st.integers(0, 1000), min_size=2, max_size=12).filter(lambda c: sum(c) > 0),
    batch_size=st.integers(2, 500),
)
def test_allocation_sums_to_the_batch_and_stays_within_one_of_the_quota(
    counts: list[int], batch_size: int
) -> None:
    labels = allocate_labels(tuple(counts), batch_size, 0)

    allocated = np.bincount(labels, minlength=len(counts))
    quotas = batch_size * np.asarray(counts) / sum(counts)
    assert allocated.sum() == batch_size
    assert np.all(np.abs(allocated - quotas) < 1)


def test_large_batch_moments_approach_the_sketch() -> None:
    characteristics = _characteristics(rank=3)
    assert characteristics.class_means is not None and characteristics.class_bases is not None

    batch = synthetic_probe_batch(characteristics, 4096, 0)

    assert batch.labels is not None
    samples, labels = batch.inputs.reshape(4096, DIM).double().numpy(), batch.labels.numpy()
    for group in range(3):
        members = samples[labels == group]
        covariance = (
            characteristics.class_bases[group].T.astype(np.float64) @ characteristics.class_bases[group]
        )
        tolerance = 5 * np.sqrt(np.diag(covariance).max() / len(members))
        np.testing.assert_allclose(members.mean(axis=0), characteristics.class_means[group], atol=tolerance)
        error = np.linalg.norm(np.cov(members.T) - covariance) / np.linalg.norm(covariance)
        assert error < 0.15


def test_unlabeled_batch_has_no_labels_and_draws_from_the_pooled_group() -> None:
    characteristics = _characteristics(labeled=False, rank=2)
    assert characteristics.class_means is not None

    batch = synthetic_probe_batch(characteristics, 2000, 0)

    assert batch.labels is None
    mean = batch.inputs.reshape(2000, DIM).double().mean(dim=0).numpy()
    np.testing.assert_allclose(mean, characteristics.class_means[0], atol=0.3)


@pytest.mark.parametrize("labeled", [True, False])
def test_opted_out_device_gets_the_generic_standard_normal_prior(labeled: bool) -> None:
    batch = synthetic_probe_batch(_opted_out(labeled), 2000, 0)

    values = batch.inputs.double()
    assert abs(float(values.mean())) < 0.05 and abs(float(values.std()) - 1) < 0.05
    if labeled:
        assert batch.labels is not None
        assert np.bincount(batch.labels.numpy()).tolist() == [1000, 600, 400]
    else:
        assert batch.labels is None


def test_end_to_end_from_a_device_release_over_the_wire() -> None:
    data = synthetic_dataset(300, num_classes=3, input_shape=(3, 8, 8), seed=0)
    released = extract_characteristics(data, rank=4, seed=0)
    received = DataCharacteristics.from_wire(*released.to_wire())

    batch = synthetic_probe_batch(received, 64, 0)

    assert batch.inputs.shape == (64, 3, 8, 8) and batch.labels is not None
    assert set(batch.labels.tolist()) == {0, 1, 2}


@pytest.mark.parametrize(
    ("batch_size", "seed", "message"),
    [
        (1, 0, "batch_size must"),
        (4097, 0, "batch_size must"),
        (True, 0, "batch_size must"),
        (8, -1, "seed must"),
        (8, 1.5, "seed must"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_field(batch_size: int, seed: int, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        synthetic_probe_batch(_characteristics(), batch_size, seed)


def test_mismatched_sketch_shapes_are_rejected() -> None:
    characteristics = _characteristics()
    assert characteristics.class_means is not None
    broken = replace(characteristics, class_means=characteristics.class_means[:2])

    with pytest.raises(ValueError, match=r"^class_means must have shape \(3, 16\)"):
        synthetic_probe_batch(broken, 8, 0)
    with pytest.raises(TypeError, match=r"^characteristics must be"):
        synthetic_probe_batch("not a message", 8, 0)  # type: ignore[arg-type]
