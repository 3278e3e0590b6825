"""Splitting a dataset's samples across the clients of a simulated fleet, IID or with label skew.

Every partitioner takes the labels of the whole dataset and returns one sorted int64 index array per
client. The arrays are disjoint and together cover every sample exactly once, and the result is a pure
function of the arguments and ``seed``. `partition` is the edge where a spec string picks a scheme.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Indices = npt.NDArray[np.int64]

PARTITION_FORMS = "'iid', 'dirichlet:ALPHA' (ALPHA > 0) or 'shards:K' (K >= 1)"
DEFAULT_MIN_SIZE = 1
MIN_DEVICE_SAMPLES = 2  # a device trains on some and holds some out (`nasfleet.clients.training`)
DEFAULT_MAX_ATTEMPTS = 10  # draws before the last one is mended


def _check_labels(labels: npt.ArrayLike) -> npt.NDArray[np.int64]:
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"labels must be a non-empty 1-D array of integers, but got dtype {array.dtype} "
            f"and shape {array.shape}"
        )
    return array.astype(np.int64)


def _check_clients(num_clients: int, num_samples: int) -> None:
    if not 1 <= num_clients <= num_samples:
        raise ValueError(
            f"num_clients must lie in [1, number of samples = {num_samples}], but got {num_clients}"
        )


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, but got {seed}")


def label_histogram(labels: npt.ArrayLike, num_classes: int) -> npt.NDArray[np.int64]:
    """Number of samples of each class, shape (num_classes,); every label must lie in [0, num_classes)."""
    array = np.asarray(labels)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"labels must be a 1-D array of integers, but got dtype {array.dtype} and shape {array.shape}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, but got {num_classes}")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, num_classes={num_classes}), "
            f"but got values in [{array.min()}, {array.max()}]"
        )
    return np.bincount(array.astype(np.int64), minlength=num_classes).astype(np.int64)


def partition_iid(labels: npt.ArrayLike, num_clients: int, seed: int) -> list[Indices]:
    """Uniformly random split ignoring labels; client sizes differ by at most one."""
    array = _check_labels(labels)
    _check_clients(num_clients, array.size)
    _check_seed(seed)
    order = np.random.default_rng(seed).permutation(array.size)
    return [np.sort(chunk).astype(np.int64) for chunk in np.array_split(order, num_clients)]


def _dirichlet_attempt(
    labels: npt.NDArray[np.int64], num_clients: int, alpha: float, rng: np.random.Generator
) -> list[Indices]:
    """One draw: every class is split across clients in Dirichlet(alpha, …, alpha) proportions."""
    parts: list[list[Indices]] = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        cuts = np.clip((np.cumsum(proportions)[:-1] * members.size).astype(np.int64), 0, members.size)
        for client, chunk in enumerate(np.split(members, cuts)):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]


def partition_dirichlet(
    labels: npt.ArrayLike,
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: int = DEFAULT_MIN_SIZE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> list[Indices]:
    """Label-skewed split: each class is divided across clients in Dirichlet(alpha) proportions.

    Small ``alpha`` concentrates each class on few clients (strong skew); large ``alpha`` approaches an
    IID split. Client sizes vary too (quantity skew follows from label skew). The whole draw is repeated,
    from the same generator, until every client holds at least ``min_size`` samples. If none of
    ``max_attempts`` draws does, the last one is mended (`_mend`): each client short of ``min_size``
    takes random samples from the largest clients, so the guarantee always holds.
    """
    array = _check_labels(labels)
    _check_clients(num_clients, array.size)
    _check_seed(seed)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be finite and > 0, but got {alpha}")
    if not 0 <= min_size <= array.size // num_clients:
        raise ValueError(
            f"min_size must lie in [0, number of samples // num_clients = {array.size // num_clients}], "
            f"but got {min_size}"
        )
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, but got {max_attempts}")
    rng = np.random.default_rng(seed)
    for _ in range(max_attempts):
        parts = _dirichlet_attempt(array, num_clients, alpha, rng)
        if min(part.size for part in parts) >= min_size:
            return parts
    return _mend(parts, min_size, rng)


def _mend(parts: list[Indices], min_size: int, rng: np.random.Generator) -> list[Indices]:
    """*parts* with every client raised to ``min_size``: in client order, each short client takes one
    random sample at a time from the largest client (the first of equal ones). Feasible whenever
    ``min_size * len(parts)`` samples exist, since a donor always holds more than ``min_size``."""
    mended = [list(part) for part in parts]
    for short in mended:
        while len(short) < min_size:
            donor = max(mended, key=len)
            short.append(donor.pop(int(rng.integers(len(donor)))))
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in mended]


def partition_shards(
    labels: npt.ArrayLike, num_clients: int, shards_per_client: int, seed: int
) -> list[Indices]:
    """Pathological non-IID split (McMahan et al., 2017): each client gets ``shards_per_client`` shards.

    Samples are sorted by label (in random order within a label), cut into
    ``num_clients * shards_per_client`` contiguous shards of equal size (±1), and the shards are dealt
    at random. A client therefore sees at most about ``shards_per_client`` labels; a shard that
    straddles a label boundary adds one more.
    """
    array = _check_labels(labels)
    _check_clients(num_clients, array.size)
    _check_seed(seed)
    if not 1 <= shards_per_client <= array.size // num_clients:
        raise ValueError(
            f"shards_per_client must lie in [1, number of samples // num_clients = "
            f"{array.size // num_clients}], but got {shards_per_client}"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(array.size)
    by_label = shuffled[np.argsort(array[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_clients * shards_per_client)
    dealt = rng.permutation(len(shards)).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])).astype(np.int64) for row in dealt]


def _spec_number(spec: str, argument: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(argument)
    except ValueError:
        raise ValueError(f"partition spec must be one of {PARTITION_FORMS}, but got {spec!r}") from None


def partition(
    labels: npt.ArrayLike, spec: str, num_clients: int, seed: int, min_size: int = DEFAULT_MIN_SIZE
) -> list[Indices]:
    """Split by the scheme that ``spec`` names: ``iid``, ``dirichlet:ALPHA`` or ``shards:K``.

    ``min_size`` applies to the Dirichlet scheme only (the others never leave a client empty).
    """
    name, has_argument, argument = spec.partition(":")
    if name == "iid" and not has_argument:
        return partition_iid(labels, num_clients, seed)
    if name == "dirichlet" and has_argument:
        alpha = _spec_number(spec, argument, float)
        return partition_dirichlet(labels, num_clients, alpha, seed, min_size=min_size)
    if name == "shards" and has_argument:
        shards = int(_spec_number(spec, argument, int))
        return partition_shards(labels, num_clients, shards, seed)
    raise ValueError(f"partition spec must be one of {PARTITION_FORMS}, but got {spec!r}")


def device_partition(labels: npt.ArrayLike, spec: str, num_clients: int, seed: int) -> list[Indices]:
    """`partition` for a simulated fleet: every device gets `MIN_DEVICE_SAMPLES` samples, so that it can
    train and hold some out, wherever the data has that many per device (else as many as it has)."""
    size = np.asarray(labels).size
    return partition(labels, spec, num_clients, seed, min(MIN_DEVICE_SAMPLES, size // max(num_clients, 1)))
