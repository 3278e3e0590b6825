"""The synthetic proxy batch a worker rebuilds from a device's characteristics.

A device never sends a sample, so the server scores candidate networks on a batch drawn from the
device's released sketches: for group g, ``x = mean_g + class_bases[g].T @ z`` with z standard normal,
i.e. a Gaussian with the sketch's mean and low-rank covariance. Labels follow the label histogram exactly
in proportion (largest-remainder allocation, then shuffled). Everything is a pure function of the
characteristics and the seed, so every worker rebuilds the same batch.

When the device opted out of sketches, the batch comes from the *generic prior*: i.i.d. standard normal
values in the input shape (the scale every loader standardises to), with labels still allocated from
the histogram when there is one.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch

from nasfleet.bounds import MAX_BATCH_SIZE
from nasfleet.protocol.messages import DataCharacteristics
from nasfleet.proxies.probe import ProbeBatch

MIN_BATCH_SIZE = 2
MAX_SEED = 2**63 - 1

Labels = npt.NDArray[np.int64]
Samples = npt.NDArray[np.float32]


def allocate_labels(histogram: tuple[int, ...], batch_size: int, seed: int) -> Labels:
    """``batch_size`` labels in proportion to ``histogram``, shuffled with ``seed``.

    Largest-remainder (Hamilton) allocation: each class gets the floor of its exact quota
    ``batch_size * count / total`` and the remaining slots go to the largest fractional parts, ties
    broken by the lower class index; a class with count 0 never appears.
    """
    counts = np.asarray(histogram, dtype=np.int64)
    if counts.ndim != 1 or counts.size == 0 or counts.min() < 0 or counts.sum() == 0:
        raise ValueError(f"histogram must hold non-negative counts with a positive sum, but got {histogram}")
    quotas = batch_size * counts / counts.sum()
    allocation = np.floor(quotas).astype(np.int64)
    remainders = quotas - allocation
    order = sorted(range(counts.size), key=lambda label: (-remainders[label], label))
    for label in order[: batch_size - int(allocation.sum())]:
        allocation[label] += 1
    labels = np.repeat(np.arange(counts.size, dtype=np.int64), allocation)
    shuffled: Labels = np.random.default_rng([seed, 0]).permutation(labels)
    return shuffled


def _groups(characteristics: DataCharacteristics, batch_size: int, seed: int) -> tuple[Labels, Labels | None]:
    """Which sketch group each sample comes from, and the labels (None when unlabeled)."""
    if characteristics.labeled:
        labels = allocate_labels(characteristics.label_histogram, batch_size, seed)
        return labels, labels
    return np.zeros(batch_size, dtype=np.int64), None


def _sketch_samples(characteristics: DataCharacteristics, groups: Labels, seed: int) -> Samples:
    """``mean_g + bases_g.T @ z`` per sample, z standard normal, drawn in batch order from ``seed``."""
    means, bases = characteristics.class_means, characteristics.class_bases
    assert means is not None and bases is not None
    z = np.random.default_rng([seed, 1]).standard_normal((groups.size, bases.shape[1]))
    samples = np.empty((groups.size, means.shape[1]))
    for group in np.unique(groups):
        members = groups == group
        samples[members] = means[group] + z[members] @ bases[group].astype(np.float64)
    return samples.astype(np.float32)


def generic_prior_samples(input_shape: tuple[int, int, int], batch_size: int, seed: int) -> Samples:
    """The data-agnostic fallback: i.i.d. standard normal values, shape (batch_size, C*H*W)."""
    rng = np.random.default_rng([seed, 2])
    return rng.standard_normal((batch_size, math.prod(input_shape))).astype(np.float32)


def synthetic_probe_batch(characteristics: DataCharacteristics, batch_size: int, seed: int) -> ProbeBatch:
    """A deterministic probe batch rebuilt from ``characteristics`` alone.

    Parameters
    ----------
    characteristics
        A device's released characteristics; with sketches, samples are drawn from each group's Gaussian
        (mean and low-rank covariance), without them from the generic prior (standard normal values).
    batch_size
        Number of samples, in [`MIN_BATCH_SIZE`, `MAX_BATCH_SIZE`].
    seed
        Seed of the labels' shuffle and of the samples; the same seed gives the same batch.

    Returns
    -------
    ProbeBatch
        Inputs (batch_size, C, H, W) float32; labels in histogram proportion, or None when unlabeled.
    """
    _check_arguments(characteristics, batch_size, seed)
    groups, labels = _groups(characteristics, batch_size, seed)
    if characteristics.has_sketches:
        flat = _sketch_samples(characteristics, groups, seed)
    else:
        flat = generic_prior_samples(characteristics.input_shape, batch_size, seed)
    inputs = torch.from_numpy(flat.reshape(batch_size, *characteristics.input_shape))
    tensor_labels = None if labels is None else torch.from_numpy(labels)
    return ProbeBatch(inputs, tensor_labels, characteristics.num_classes)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_arguments(characteristics: DataCharacteristics, batch_size: int, seed: int) -> None:
    if not isinstance(characteristics, DataCharacteristics):
        raise TypeError(
            f"characteristics must be a DataCharacteristics, but got {type(characteristics).__name__}"
        )
    if not (_is_int(batch_size) and MIN_BATCH_SIZE <= batch_size <= MAX_BATCH_SIZE):
        raise ValueError(
            f"batch_size must be an integer in [{MIN_BATCH_SIZE}, {MAX_BATCH_SIZE}], but got {batch_size!r}"
        )
    if not (_is_int(seed) and 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed must be an integer in [0, {MAX_SEED}], but got {seed!r}")
    if characteristics.has_sketches:
        _check_sketch_shapes(characteristics)


def _check_sketch_shapes(characteristics: DataCharacteristics) -> None:
    """Sketches built in-process skip `DataCharacteristics.from_wire`: check the shapes it would."""
    means, bases = characteristics.class_means, characteristics.class_bases
    groups = characteristics.num_classes if characteristics.labeled else 1
    dim = math.prod(characteristics.input_shape)
    if means is None or means.shape != (groups, dim):
        shape = None if means is None else means.shape
        raise ValueError(f"class_means must have shape ({groups}, {dim}), but got {shape}")
    if bases is None or bases.ndim != 3 or bases.shape[0] != groups or bases.shape[2] != dim:
        shape = None if bases is None else bases.shape
        raise ValueError(f"class_bases must have shape ({groups}, r, {dim}), but got {shape}")
