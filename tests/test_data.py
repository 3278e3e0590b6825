"""Dataset container, loaders (real and fake CIFAR-10 batches, digits, synthetic) and dataset specs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits

from nasfleet.data import datasets as data
from nasfleet.data.datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Dataset,
    default_data_dir,
    load_cifar10,
    load_dataset,
    load_digits,
    synthetic_dataset,
)

CIFAR10_DIR = default_data_dir() / "cifar-10-batches-py"
# Outside CI a checkout without ../shared may skip these; in CI (CI=true) they run and fail loudly instead.
needs_cifar10 = pytest.mark.skipif(
    not CIFAR10_DIR.is_dir() and not os.environ.get("CI"),
    reason=f"shared CIFAR-10 not found at {CIFAR10_DIR}; set NASFLEET_DATA",
)


def _write_batch(path: Path, rows: np.ndarray, labels: list[int]) -> None:
    with path.open("wb") as handle:
        pickle.dump({b"batch_label": b"fake", b"data": rows, b"labels": labels}, handle)


@pytest.fixture
def fake_cifar10(tmp_path: Path) -> Path:
    """Five two-image training batches and a three-image test batch; channel c of image i is 50*c + i."""
    for name, size in [*((f"data_batch_{i}", 2) for i in range(1, 6)), ("test_batch", 3)]:
        rows = np.stack([np.repeat(np.arange(3, dtype=np.uint8) * 50 + i, 1024) for i in range(size)])
        _write_batch(tmp_path / name, rows, [i % 10 for i in range(size)])
    return tmp_path


def _dataset(n: int = 4, num_classes: int = 3) -> Dataset:
    images = np.arange(n * 12, dtype=np.float32).reshape(n, 3, 2, 2)
    return Dataset("tiny", images, np.arange(n, dtype=np.int64) % num_classes, num_classes)


# --- Dataset ----------------------------------------------------------------------------------------------


def test_dataset_exposes_shape_length_and_a_short_repr() -> None:
    dataset = _dataset()

    assert dataset.input_shape == (3, 2, 2)
    assert len(dataset) == 4
    assert repr(dataset) == "Dataset(name='tiny', size=4, input_shape=(3, 2, 2), num_classes=3)"


def test_subset_keeps_order_and_metadata() -> None:
    dataset = _dataset()

    part = dataset.subset(np.array([3, 1]))

    assert part.labels.tolist() == [0, 1]
    np.testing.assert_array_equal(part.images, dataset.images[[3, 1]])
    assert (part.name, part.num_classes, len(dataset.subset([]))) == ("tiny", 3, 0)


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([4], r"indices must lie in \[0, 4\), but got values in \[4, 4\]"),
        ([-1], "indices must lie"),
        ([0.5], "1-D"),
    ],
)
def test_subset_rejects_bad_indices(indices: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _dataset().subset(indices)


@pytest.mark.parametrize(
    ("images", "labels", "num_classes", "message"),
    [
        (np.zeros((2, 3, 2, 2)), np.zeros(2, np.int64), 2, "images must be a float32 array.*float64"),
        (np.zeros((2, 4), np.float32), np.zeros(2, np.int64), 2, r"images must .*shape \(2, 4\)"),
        (np.zeros((2, 1, 2, 2), np.float32), np.zeros(2, np.int32), 2, "labels must be an int64 array"),
        (np.zeros((2, 1, 2, 2), np.float32), np.zeros(3, np.int64), 2, "same length, but got 2 images and 3"),
        (np.zeros((2, 1, 2, 2), np.float32), np.array([0, 2]), 2, r"labels must lie in \[0, num_classes=2\)"),
        (np.zeros((2, 1, 2, 2), np.float32), np.array([-1, 0]), 2, r"but got values in \[-1, 0\]"),
        (np.full((2, 1, 2, 2), np.nan, np.float32), np.zeros(2, np.int64), 2, "finite, but got 8 NaN"),
        (np.zeros((2, 1, 2, 2), np.float32), np.zeros(2, np.int64), 0, "num_classes must be >= 1, but got 0"),
    ],
)
def test_dataset_validates_its_fields(
    images: np.ndarray, labels: np.ndarray, num_classes: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Dataset("bad", images, labels, num_classes)


# --- CIFAR-10 ---------------------------------------------------------------------------------------------


@needs_cifar10
@pytest.mark.parametrize(("split", "size"), [("train", 4660), ("test", 932)])
def test_real_cifar10_has_expected_sizes_and_is_normalised(split: data.Split, size: int) -> None:
    dataset = load_cifar10(CIFAR10_DIR, split)

    assert (len(dataset), dataset.input_shape, dataset.num_classes) == (size, (3, 32, 32), 10)
    assert dataset.images.dtype == np.float32 and dataset.labels.dtype == np.int64
    assert set(dataset.labels.tolist()) == set(range(10))
    np.testing.assert_allclose(dataset.images.mean(axis=(0, 2, 3)), 0.0, atol=0.05)
    np.testing.assert_allclose(dataset.images.std(axis=(0, 2, 3)), 1.0, atol=0.05)


def test_fake_cifar10_is_read_channel_major_and_normalised(fake_cifar10: Path) -> None:
    train = load_cifar10(fake_cifar10, "train")
    test = load_cifar10(str(fake_cifar10), "test")

    assert (len(train), len(test), train.input_shape) == (10, 3, (3, 32, 32))
    assert train.labels.tolist() == [0, 1] * 5 and test.labels.tolist() == [0, 1, 2]
    for channel in range(3):
        expected = ((50 * channel + 2) / 255 - CIFAR10_MEAN[channel]) / CIFAR10_STD[channel]
        np.testing.assert_allclose(test.images[2, channel], expected, rtol=1e-5)


def test_cifar10_reads_batches_pickled_by_numpy_1(fake_cifar10: Path) -> None:
    # The official release is pickle protocol 2 and names numpy.core.multiarray (numpy._core since numpy 2).
    batch = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 2]}
    legacy = pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in legacy
    (fake_cifar10 / "test_batch").write_bytes(legacy)

    assert len(load_cifar10(fake_cifar10, "test")) == 3


def test_cifar10_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"must exist, but .*nowhere"):
        load_cifar10(tmp_path / "nowhere")


def test_cifar10_names_the_missing_batch_files(fake_cifar10: Path) -> None:
    (fake_cifar10 / "data_batch_3").unlink()
    (fake_cifar10 / "test_batch").unlink()

    with pytest.raises(FileNotFoundError, match=r"\['data_batch_3'\] missing"):
        load_cifar10(fake_cifar10, "train")
    with pytest.raises(FileNotFoundError, match=r"\['test_batch'\] missing"):
        load_cifar10(fake_cifar10, "test")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({b"images": np.zeros((1, 3072), np.uint8), b"labels": [0]}, "keys b'data' and b'labels', but got"),
        ([1, 2], "must be a dict .* but got list"),
        ({b"data": np.zeros((1, 1024), np.uint8), b"labels": [0]}, r"shape \(N, 3072\), .*shape \(1, 1024\)"),
        ({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]}, "uint8 .* dtype float32"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "must hold 2 integers"),
        (
            {b"data": np.zeros((1, 3072), np.uint8), b"labels": [11]},
            r"labels must lie in \[0, num_classes=10\)",
        ),
        (os.getcwd, "may only hold numpy arrays, but refers to posix.getcwd"),
    ],
)
def test_cifar10_rejects_malformed_batches(fake_cifar10: Path, content: object, message: str) -> None:
    with (fake_cifar10 / "test_batch").open("wb") as handle:
        pickle.dump(content, handle)

    with pytest.raises(ValueError, match=message):
        load_cifar10(fake_cifar10, "test")


def test_cifar10_rejects_a_file_that_is_not_a_pickle(fake_cifar10: Path) -> None:
    (fake_cifar10 / "test_batch").write_bytes(b"not a pickle")

    with pytest.raises(ValueError, match="test_batch must be a python pickle"):
        load_cifar10(fake_cifar10, "test")


def test_loaders_reject_an_unknown_split(fake_cifar10: Path) -> None:
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\), but got 'valid'"):
        load_cifar10(fake_cifar10, "valid")  # type: ignore[arg-type]


# --- digits -----------------------------------------------------------------------------------------------


def test_digits_splits_are_stratified_disjoint_and_cover_the_dataset() -> None:
    labels = np.asarray(sklearn_digits().target, dtype=np.int64)

    train, test = data._digits_split_indices(labels)

    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    test_share = np.bincount(labels[test], minlength=10) / np.bincount(labels, minlength=10)
    np.testing.assert_allclose(test_share, 0.2, atol=0.01)


def test_digits_loads_standardised_deterministic_splits() -> None:
    train, test = load_digits("train"), load_digits("test")

    assert (len(train) + len(test), train.input_shape, train.num_classes) == (1797, (1, 8, 8), 10)
    assert abs(float(train.images.mean())) < 1e-4 and abs(float(train.images.std()) - 1.0) < 1e-4
    np.testing.assert_array_equal(load_digits("test").images, test.images)
    np.testing.assert_array_equal(load_digits("test").labels, test.labels)


# --- synthetic --------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed_and_split() -> None:
    first = synthetic_dataset(60, seed=3)
    again = synthetic_dataset(60, seed=3)
    other_seed = synthetic_dataset(60, seed=4)
    test_split = synthetic_dataset(60, seed=3, split="test")

    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert not np.allclose(first.images, other_seed.images)
    assert not np.allclose(first.images, test_split.images)


def test_synthetic_has_balanced_labels_requested_shape_and_unit_scale() -> None:
    dataset = synthetic_dataset(25, num_classes=5, input_shape=(1, 8, 12), seed=0)

    assert (len(dataset), dataset.input_shape, dataset.num_classes) == (25, (1, 8, 12), 5)
    assert np.bincount(dataset.labels).tolist() == [5] * 5
    assert 0.7 < float(dataset.images.std()) < 1.3


def test_synthetic_classes_are_learnable_across_splits() -> None:
    train = synthetic_dataset(200, seed=1)
    test = synthetic_dataset(100, seed=1, split="test")
    centroids = np.stack([train.images[train.labels == k].mean(axis=0) for k in range(10)])

    distances = ((test.images[:, None] - centroids[None]) ** 2).sum(axis=(2, 3, 4))
    accuracy = float((distances.argmin(axis=1) == test.labels).mean())

    assert accuracy > 0.9
    assert float(train.images[train.labels == 0].std(axis=0).mean()) > 0.3  # samples are not copies


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be >= 1, but got 0"),
        ({"num_classes": 0}, "num_classes must be >= 1, but got 0"),
        ({"input_shape": (3, 0, 4)}, r"input_shape must be three positive integers .* \(3, 0, 4\)"),
        ({"seed": -1}, "seed must be >= 0, but got -1"),
        ({"noise": float("nan")}, "noise must be finite and >= 0, but got nan"),
    ],
)
def test_synthetic_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthetic_dataset(**kwargs)  # type: ignore[arg-type]


# --- locations and specs ----------------------------------------------------------------------------------


def test_default_data_dir_prefers_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NASFLEET_DATA", str(tmp_path))

    assert default_data_dir() == tmp_path


def test_default_data_dir_looks_beside_the_checkout_then_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NASFLEET_DATA", raising=False)
    module = tmp_path / "checkout" / "nasfleet" / "data" / "datasets.py"
    monkeypatch.setattr(data, "__file__", str(module))
    work = tmp_path / "elsewhere" / "cwd"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)

    assert default_data_dir() == tmp_path / "elsewhere" / "shared" / "data"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert default_data_dir() == tmp_path / "shared" / "data"


def test_load_dataset_reads_cifar10_specs(monkeypatch: pytest.MonkeyPatch, fake_cifar10: Path) -> None:
    assert len(load_dataset(f"cifar10:{fake_cifar10}", "test")) == 3
    (fake_cifar10 / "cifar-10-batches-py").mkdir()
    (fake_cifar10 / "test_batch").rename(fake_cifar10 / "cifar-10-batches-py" / "test_batch")
    monkeypatch.setenv("NASFLEET_DATA", str(fake_cifar10))

    assert len(load_dataset("cifar10", "test")) == 3


def test_load_dataset_reads_digits_and_synthetic_specs() -> None:
    assert load_dataset("digits", "test").input_shape == (1, 8, 8)
    assert len(load_dataset("synthetic")) == data.DEFAULT_SYNTHETIC_SIZE
    synthetic = load_dataset("synthetic:40", "test")
    assert (len(synthetic), synthetic.input_shape, synthetic.num_classes) == (40, (3, 32, 32), 10)


@pytest.mark.parametrize(
    "spec", ["", "mnist", "cifar10:", "digits:1", "synthetic:", "synthetic:0", "synthetic:x"]
)
def test_load_dataset_rejects_unknown_specs(spec: str) -> None:
    with pytest.raises(ValueError, match=f"(must be one of|needs a positive integer).*but got {spec!r}"):
        load_dataset(spec)
