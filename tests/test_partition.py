"""Partitioners: cover and disjointness, determinism, label skew, and every rejected argument."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasfleet.data.partition import (
    MIN_DEVICE_SAMPLES,
    device_partition,
    label_histogram,
    partition,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)

SPECS = ["iid", "dirichlet:0.3", "dirichlet:5", "shards:2"]


def _labels(per_class: int = 100, num_classes: int = 10, seed: int = 0) -> npt.NDArray[np.int64]:
    """Balanced labels in random order."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def _assert_exact_cover(parts: list[npt.NDArray[np.int64]], num_samples: int) -> None:
    assert all(part.dtype == np.int64 and part.ndim == 1 for part in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(num_samples))


def _mean_label_entropy(labels: npt.NDArray[np.int64], parts: list[npt.NDArray[np.int64]]) -> float:
    entropies = []
    for part in parts:
        shares = label_histogram(labels[part], 10) / part.size
        shares = shares[shares > 0]
        entropies.append(float(-(shares * np.log(shares)).sum()))
    return float(np.mean(entropies))


@pytest.mark.parametrize("spec", SPECS)
def test_every_scheme_covers_each_sample_exactly_once(spec: str) -> None:
    labels = _labels()

    parts = partition(labels, spec, num_clients=7, seed=0)

    assert len(parts) == 7 and min(part.size for part in parts) >= 1
    _assert_exact_cover(parts, labels.size)


@pytest.mark.parametrize("spec", SPECS)
def test_every_scheme_is_deterministic_under_a_seed_and_varies_across_seeds(spec: str) -> None:
    labels = _labels()

    first, again, other = (partition(labels, spec, 5, seed) for seed in (1, 1, 2))

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_iid_client_sizes_differ_by_at_most_one() -> None:
    sizes = [part.size for part in partition_iid(_labels(), num_clients=7, seed=0)]

    assert max(sizes) - min(sizes) <= 1


def test_small_alpha_gives_more_label_skew_than_large_alpha() -> None:
    labels = _labels()

    skewed = partition_dirichlet(labels, 10, alpha=0.1, seed=0)
    mild = partition_dirichlet(labels, 10, alpha=100.0, seed=0)

    assert _mean_label_entropy(labels, skewed) < 0.6 * _mean_label_entropy(labels, mild)
    assert _mean_label_entropy(labels, mild) > 0.95 * np.log(10)


def test_dirichlet_gives_every_client_at_least_min_size() -> None:
    parts = partition_dirichlet(_labels(), 10, alpha=0.5, seed=0, min_size=40)

    assert min(part.size for part in parts) >= 40


def test_a_draw_that_leaves_a_client_short_is_mended_keeping_the_rest() -> None:
    # Prepare: alpha 0.01 puts each class on about one client, so one draw leaves most clients short
    labels = _labels()
    drawn = partition_dirichlet(labels, 10, alpha=0.01, seed=0, max_attempts=1, min_size=0)
    short = [i for i, part in enumerate(drawn) if part.size < 30]
    # Execute
    parts = partition_dirichlet(labels, 10, alpha=0.01, seed=0, max_attempts=1, min_size=30)
    # Assert: every client has its 30, the cover is exact, the short clients kept what they had and
    # only took samples, the others only gave; it is a pure function of the seed
    assert len(short) >= 3 and min(part.size for part in parts) >= 30
    _assert_exact_cover(parts, labels.size)
    for i, (before, after) in enumerate(zip(drawn, parts, strict=True)):
        kept = np.intersect1d(before, after)
        assert kept.size == (before.size if i in short else after.size), i
    again = partition_dirichlet(labels, 10, alpha=0.01, seed=0, max_attempts=1, min_size=30)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    # the whole data at the least: every client exactly its share
    exact = partition_dirichlet(labels, 10, alpha=0.01, seed=0, min_size=100)
    assert [part.size for part in exact] == [100] * 10


def test_a_simulated_fleet_gives_every_device_enough_to_train_where_the_data_allows() -> None:
    # Prepare: 1,000 samples over 256 devices with strong skew (alone, some devices get 0 or 1)
    labels = _labels()
    alone = partition(labels, "dirichlet:0.1", 256, seed=0)
    # Execute
    parts = device_partition(labels, "dirichlet:0.1", 256, seed=0)
    scarce = device_partition(labels[:300], "dirichlet:0.5", 256, seed=0)  # 1 per device is all there is
    # Assert
    assert min(part.size for part in alone) < MIN_DEVICE_SAMPLES <= min(part.size for part in parts)
    _assert_exact_cover(parts, labels.size)
    assert min(part.size for part in scarce) == 1
    _assert_exact_cover(scarce, 300)


def test_shards_give_each_client_at_most_k_labels_when_shards_align_with_classes() -> None:
    labels = _labels(per_class=100)  # 20 shards of 50: each shard holds one label

    parts = partition_shards(labels, num_clients=10, shards_per_client=2, seed=0)

    assert all(np.unique(labels[part]).size <= 2 for part in parts)
    assert [part.size for part in parts] == [100] * 10


def test_shards_stay_near_k_labels_when_shards_straddle_classes() -> None:
    labels = _labels(per_class=97)

    parts = partition_shards(labels, num_clients=9, shards_per_client=3, seed=4)

    assert all(np.unique(labels[part]).size <= 2 * 3 for part in parts)
    _assert_exact_cover(parts, labels.size)


def test_label_histogram_counts_every_class() -> None:
    assert label_histogram(np.array([0, 2, 2, 3]), 5).tolist() == [1, 0, 2, 1, 0]
    assert label_histogram(np.array([], dtype=np.int64), 2).tolist() == [0, 0]


@pytest.mark.parametrize(
    ("labels", "num_classes", "message"),
    [
        ([0, 5], 5, r"labels must lie in \[0, num_classes=5\), but got values in \[0, 5\]"),
        ([-1, 0], 5, r"but got values in \[-1, 0\]"),
        ([0.0, 1.0], 5, "1-D array of integers, but got dtype float64"),
        ([0, 1], 0, "num_classes must be >= 1, but got 0"),
    ],
)
def test_label_histogram_rejects_bad_arguments(labels: list[float], num_classes: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        label_histogram(labels, num_classes)


@pytest.mark.parametrize(
    ("spec", "num_clients", "message"),
    [
        ("iid", 0, r"num_clients must lie in \[1, number of samples = 1000\], but got 0"),
        ("iid", 1001, "num_clients must lie .* but got 1001"),
        ("dirichlet:0", 5, "alpha must be finite and > 0, but got 0.0"),
        ("dirichlet:-1", 5, "alpha must be finite and > 0, but got -1.0"),
        ("dirichlet:nan", 5, "alpha must be finite and > 0, but got nan"),
        ("dirichlet:inf", 5, "alpha must be finite and > 0, but got inf"),
        (
            "shards:0",
            5,
            r"shards_per_client must lie in \[1, number of samples // num_clients = 200\], but got 0",
        ),
        ("shards:201", 5, "shards_per_client must lie .* but got 201"),
        ("shards:1.5", 5, "partition spec must be one of .* but got 'shards:1.5'"),
        ("dirichlet:abc", 5, "partition spec must be one of .* but got 'dirichlet:abc'"),
        ("dirichlet", 5, "partition spec must be one of .* but got 'dirichlet'"),
        ("iid:3", 5, "partition spec must be one of .* but got 'iid:3'"),
        ("pathological", 5, r"'iid', 'dirichlet:ALPHA' \(ALPHA > 0\) or 'shards:K' \(K >= 1\), but got"),
    ],
)
def test_partition_rejects_bad_specs_and_values(spec: str, num_clients: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        partition(_labels(), spec, num_clients, seed=0)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            np.zeros((2, 5), np.int64),
            r"non-empty 1-D array of integers, but got dtype int64 and shape \(2, 5\)",
        ),
        (np.array([], np.int64), r"shape \(0,\)"),
        (np.array([0.0, 1.0]), "dtype float64"),
    ],
)
def test_partitioners_reject_bad_labels(labels: npt.NDArray[np.generic], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        partition_iid(labels, 1, seed=0)


def test_partitioners_reject_bad_seed_min_size_and_max_attempts() -> None:
    labels = _labels()

    with pytest.raises(ValueError, match="seed must be >= 0, but got -1"):
        partition_shards(labels, 2, 2, seed=-1)
    with pytest.raises(ValueError, match=r"min_size must lie in \[0, .* = 100\], but got 101"):
        partition_dirichlet(labels, 10, 1.0, seed=0, min_size=101)
    with pytest.raises(ValueError, match=r"min_size must lie .* but got -1"):
        partition(labels, "dirichlet:1", 10, seed=0, min_size=-1)
    with pytest.raises(ValueError, match="max_attempts must be >= 1, but got 0"):
        partition_dirichlet(labels, 10, 1.0, seed=0, max_attempts=0)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 9), min_size=1, max_size=120),
    client_share=st.floats(0.0, 1.0),
    scheme=st.sampled_from(["iid", "dirichlet", "shards"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_partition_is_an_exact_cover(
    labels: list[int], client_share: float, scheme: str, seed: int
) -> None:
    array = np.array(labels, dtype=np.int64)
    num_clients = 1 + int(client_share * (array.size - 1))

    if scheme == "iid":
        parts = partition_iid(array, num_clients, seed)
    elif scheme == "dirichlet":
        parts = partition_dirichlet(array, num_clients, alpha=0.5, seed=seed, min_size=0)
    else:
        parts = partition_shards(array, num_clients, max(1, array.size // num_clients // 2), seed)

    assert len(parts) == num_clients
    _assert_exact_cover(parts, array.size)
