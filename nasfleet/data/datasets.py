"""Local datasets of an edge client: CIFAR-10 (official pickle batches), scikit-learn digits, synthetic.

Every loader returns a `Dataset`: normalised float32 images in N×C×H×W layout and int64 labels.
`load_dataset` turns a short spec string (``cifar10:DIR``, ``digits``, ``synthetic:N``) into one; it is the
edge where names become loaders.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from nasfleet.spaces import InputShape

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

#: Per-channel mean and standard deviation of the full CIFAR-10 training set, on the 0..1 scale
#: (the constants NAS-Bench-201 trains with: 125.3/123.0/113.9 and 63.0/62.1/66.7 out of 255).
CIFAR10_MEAN: tuple[float, float, float] = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD: tuple[float, float, float] = (63.0 / 255, 62.1 / 255, 66.7 / 255)
CIFAR10_TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCHES: tuple[str, ...] = ("test_batch",)
CIFAR10_DIRNAME = "cifar-10-batches-py"
DATA_ENV_VAR = "NASFLEET_DATA"
DEFAULT_SYNTHETIC_SIZE = 500
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
SPEC_FORMS = "'cifar10', 'cifar10:DIR', 'digits', 'synthetic' or 'synthetic:N'"


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A labelled image dataset held in memory.

    Attributes
    ----------
    name
        Short name of the source (``"cifar10"``, ``"digits"``, ``"synthetic"``).
    images
        Normalised float32 images, shape (N, C, H, W), all finite.
    labels
        int64 class labels in ``[0, num_classes)``, shape (N,).
    num_classes
        Number of classes of the source (not only those present in this dataset).
    """

    name: str
    images: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    num_classes: int

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.dtype != np.float32 or images.ndim != 4:
            raise ValueError(
                f"images must be a float32 array of shape (N, C, H, W), but got {_describe(images)}"
            )
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.ndim != 1:
            raise ValueError(f"labels must be an int64 array of shape (N,), but got {_describe(labels)}")
        if len(images) != len(labels):
            raise ValueError(
                f"images and labels must have the same length, but got {len(images)} images "
                f"and {len(labels)} labels"
            )
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, but got {self.num_classes}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, num_classes={self.num_classes}), but got values in "
                f"[{labels.min()}, {labels.max()}]"
            )
        if not np.isfinite(images).all():
            bad = int(np.count_nonzero(~np.isfinite(images)))
            raise ValueError(f"images must be finite, but got {bad} NaN or infinite values")

    @property
    def input_shape(self) -> InputShape:
        """Shape (C, H, W) of one image."""
        channels, height, width = (int(v) for v in self.images.shape[1:])
        return channels, height, width

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, size={len(self)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes})"
        )

    def subset(self, indices: npt.ArrayLike) -> Dataset:
        """The samples at ``indices`` (integers in ``[0, len)``), in that order, as a new `Dataset`."""
        index = np.asarray(indices)
        if index.ndim != 1 or not (index.size == 0 or np.issubdtype(index.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D array of integers, but got {_describe(index)}")
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise ValueError(
                f"indices must lie in [0, {len(self)}), but got values in [{index.min()}, {index.max()}]"
            )
        index = index.astype(np.int64)
        return Dataset(self.name, self.images[index], self.labels[index], self.num_classes)


def _describe(value: object) -> str:
    """``type``, ``dtype`` and ``shape`` of a value, for error messages about arrays."""
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    return f"a {type(value).__name__}"


def _check_split(split: str) -> Split:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, but got {split!r}")
    return "train" if split == "train" else "test"


# --- CIFAR-10 -------------------------------------------------------------------------------------------

_PICKLE_GLOBALS = frozenset(
    {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }
)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays, so a batch file cannot run arbitrary code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"a CIFAR-10 batch may only hold numpy arrays, but refers to {module}.{name}"
            )
        return super().find_class(module, name)


def _load_pickle(handle: BinaryIO) -> object:
    return _BatchUnpickler(handle, encoding="bytes").load()


def _read_cifar10_batch(path: Path) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Raw uint8 rows (N, 3072) and labels (N,) of one official batch file."""
    try:
        with path.open("rb") as handle:
            batch = _load_pickle(handle)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(
            f"CIFAR-10 batch {path} must be a python pickle of a dict, but reading it failed: {error}"
        ) from error
    if not isinstance(batch, dict) or not {b"data", b"labels"} <= batch.keys():
        keys = sorted(batch.keys(), key=repr) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(
            f"CIFAR-10 batch {path} must be a dict with keys b'data' and b'labels', but got {keys}"
        )
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"CIFAR-10 batch {path}: b'data' must be a uint8 array of shape (N, 3072), "
            f"but got {_describe(data)}"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"CIFAR-10 batch {path}: b'labels' must hold {len(data)} integers, one per row of b'data', "
            f"but got {_describe(labels)}"
        )
    return data, labels.astype(np.int64)


def load_cifar10(directory: str | os.PathLike[str], split: Split = "train") -> Dataset:
    """CIFAR-10 from the official python batches in ``directory``, normalised per channel.

    Reads ``data_batch_1`` … ``data_batch_5`` for ``split="train"`` and ``test_batch`` for ``"test"``; any
    number of rows per batch is accepted and no checksum is verified. Pixels are scaled to 0..1, then
    standardised with `CIFAR10_MEAN` and `CIFAR10_STD`.
    """
    split = _check_split(split)
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 directory must exist, but {str(root)!r} is not a directory")
    names = CIFAR10_TRAIN_BATCHES if split == "train" else CIFAR10_TEST_BATCHES
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 {split} split needs {list(names)} in {str(root)!r}, but {missing} missing"
        )
    batches = [_read_cifar10_batch(root / name) for name in names]
    rows = np.concatenate([data for data, _ in batches])
    labels = np.concatenate([batch_labels for _, batch_labels in batches])
    images = rows.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255)
    mean = np.asarray(CIFAR10_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(CIFAR10_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return Dataset("cifar10", (images - mean) / std, labels, num_classes=10)


# --- scikit-learn digits --------------------------------------------------------------------------------


def _digits_split_indices(
    labels: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Deterministic stratified train/test indices: `DIGITS_TEST_FRACTION` of every class goes to test."""
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * DIGITS_TEST_FRACTION)
        test.append(members[:cut])
        train.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(split: Split = "train") -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes) as 1×8×8 images.

    Pixels (0..16) are scaled to 0..1 and standardised with the mean and standard deviation of the
    training split's pixels, so both splits share one transform and the test split leaks nothing into it.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    split = _check_split(split)
    bunch = sklearn_digits()
    pixels = np.asarray(bunch.images, dtype=np.float32) / np.float32(16)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = _digits_split_indices(labels)
    mean, std = pixels[train].mean(), pixels[train].std()
    chosen = train if split == "train" else test
    images = ((pixels[chosen] - mean) / std)[:, np.newaxis].astype(np.float32)
    return Dataset("digits", images, labels[chosen], num_classes=10)


# --- synthetic ------------------------------------------------------------------------------------------


def _interpolation_matrix(size: int, coarse: int) -> npt.NDArray[np.float64]:
    """Matrix (size × coarse, coarse >= 2) that linearly interpolates a coarse 1-D grid to ``size`` points."""
    positions = np.linspace(0.0, coarse - 1.0, size)
    low = np.minimum(np.floor(positions).astype(np.int64), coarse - 2)
    weight = positions - low
    matrix = np.zeros((size, coarse))
    matrix[np.arange(size), low] = 1.0 - weight
    matrix[np.arange(size), low + 1] = weight
    return matrix


def _class_templates(num_classes: int, input_shape: InputShape, seed: int) -> npt.NDArray[np.float64]:
    """One smooth random image per class: Gaussian noise on a coarse grid, bilinearly upsampled."""
    channels, height, width = input_shape
    coarse_h, coarse_w = max(2, (height + 3) // 4), max(2, (width + 3) // 4)
    rng = np.random.default_rng([seed, 0])
    coarse = rng.standard_normal((num_classes, channels, coarse_h, coarse_w))
    rows, cols = _interpolation_matrix(height, coarse_h), _interpolation_matrix(width, coarse_w)
    templates: npt.NDArray[np.float64] = np.einsum("hi,kcij,wj->kchw", rows, coarse, cols)
    templates /= templates.std(axis=(1, 2, 3), keepdims=True)
    return templates


def _check_synthetic_arguments(
    n: int, num_classes: int, input_shape: InputShape, seed: int, noise: float
) -> InputShape:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be three positive integers (C, H, W), but got {input_shape}")
    for field, value in (("n", n), ("num_classes", num_classes)):
        if value < 1:
            raise ValueError(f"{field} must be >= 1, but got {value}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, but got {seed}")
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be finite and >= 0, but got {noise}")
    return shape[0], shape[1], shape[2]


def synthetic_dataset(
    n: int = DEFAULT_SYNTHETIC_SIZE,
    num_classes: int = 10,
    input_shape: InputShape = (3, 32, 32),
    seed: int = 0,
    split: Split = "train",
    noise: float = 1.0,
) -> Dataset:
    """Deterministic class-conditional images: a smooth per-class template plus Gaussian pixel noise.

    The templates depend only on ``seed``, so the train and test splits of one seed share their classes;
    the samples depend on ``seed`` and ``split``. Labels are balanced (counts differ by at most one) and
    shuffled, and pixels have unit variance. With the default ``noise`` a small CNN (or even a
    nearest-class-mean rule) separates the classes well, yet no two samples are equal.
    """
    split = _check_split(split)
    channels, height, width = _check_synthetic_arguments(n, num_classes, input_shape, seed, noise)
    templates = _class_templates(num_classes, (channels, height, width), seed)
    rng = np.random.default_rng([seed, 1 + SPLITS.index(split)])
    labels = rng.permutation(np.arange(n, dtype=np.int64) % num_classes)
    images = templates[labels] + noise * rng.standard_normal((n, channels, height, width))
    images /= np.sqrt(1.0 + noise**2)  # unit variance per pixel, like the standardised real datasets
    return Dataset("synthetic", images.astype(np.float32), labels, num_classes)


# --- specs and locations --------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """Directory holding the shared benchmark data.

    ``$NASFLEET_DATA`` when set and non-empty; otherwise ``shared/data`` beside the repository checkout
    that holds this package (``<checkout>/../shared/data``) when that directory exists; otherwise
    ``../shared/data`` relative to the current directory.
    """
    from_env = os.environ.get(DATA_ENV_VAR, "")
    if from_env:
        return Path(from_env).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    beside_checkout = checkout.parent / "shared" / "data"
    if beside_checkout.is_dir():
        return beside_checkout
    return Path.cwd().parent / "shared" / "data"


def _synthetic_size(argument: str, spec: str) -> int:
    try:
        size = int(argument)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"dataset spec 'synthetic:N' needs a positive integer N, but got {spec!r}")
    return size


def load_dataset(spec: str, split: Split = "train") -> Dataset:
    """The dataset named by ``spec``.

    Accepted forms: ``cifar10`` (``default_data_dir()/cifar-10-batches-py``), ``cifar10:DIR``, ``digits``,
    ``synthetic`` (`DEFAULT_SYNTHETIC_SIZE` samples) and ``synthetic:N``; synthetic data has 10 classes,
    3×32×32 images and seed 0, and N is the size of the requested split.
    """
    split = _check_split(split)
    name, has_argument, argument = spec.partition(":")
    if name == "cifar10" and not has_argument:
        return load_cifar10(default_data_dir() / CIFAR10_DIRNAME, split)
    if name == "cifar10" and argument:
        return load_cifar10(Path(argument).expanduser(), split)
    if name == "digits" and not has_argument:
        return load_digits(split)
    if name == "synthetic":
        size = _synthetic_size(argument, spec) if has_argument else DEFAULT_SYNTHETIC_SIZE
        return synthetic_dataset(size, split=split)
    raise ValueError(f"dataset spec must be one of {SPEC_FORMS}, but got {spec!r}")
