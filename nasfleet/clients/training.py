"""Local training of a delivered SubNet on the device's own data.

`train_subnet` is the device's answer to a ``train`` message: it rebuilds the SubNet from its arch string,
holds out a stratified part of the local data, trains with SGD within the message's epoch and time budget,
and reports held-out accuracy and loss, the training wall time and the emulated inference latency.
"""

from __future__ import annotations

import math
import time

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from nasfleet.clients.device import measure_latency_ms
from nasfleet.data.datasets import Dataset
from nasfleet.protocol.messages import SubNetAssignment, TrainConfig, TrainingReport
from nasfleet.spaces import ArchitectureError, Genome, SearchSpace, get_space

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
#: Gradient-norm clip, as NAS-Bench-201 trains its cells; it keeps short high-LR runs from diverging.
GRAD_CLIP = 5.0
EVAL_BATCH_SIZE = 256
LATENCY_REPEATS = 7

Indices = npt.NDArray[np.int64]


class TrainingError(RuntimeError):
    """Local training produced no usable result (e.g. the held-out loss is not finite)."""


def stratified_split(labels: Indices, test_fraction: float, seed: int) -> tuple[Indices, Indices]:
    """Sorted (train, test) indices with about ``test_fraction`` of every class held out.

    Each class is shuffled by ``seed`` and its members get the keys ``(rank + 0.5) / class_size``;
    the ``round(test_fraction * N)`` samples (clipped to ``[1, N - 1]``) with the smallest keys, ties
    broken at random, form the test split. Every class thus contributes in proportion to its size, and
    the split is a pure function of the labels, the fraction and the seed.
    """
    size = labels.size
    if size < 2:
        raise ValueError(f"the local dataset must hold >= 2 samples to hold some out, but got {size}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), but got {test_fraction}")
    rng = np.random.default_rng(seed)
    keys = np.empty(size)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        keys[members] = (np.arange(members.size) + 0.5) / members.size
    order = np.lexsort((rng.random(size), keys))
    num_test = min(max(round(test_fraction * size), 1), size - 1)
    return np.sort(order[num_test:]).astype(np.int64), np.sort(order[:num_test]).astype(np.int64)


def _check_assignment(assignment: SubNetAssignment, dataset: Dataset) -> tuple[SearchSpace, Genome]:
    """Validate the message (schema, space, arch) and that the local data matches it."""
    checked = SubNetAssignment.from_wire(*assignment.to_wire())
    space = get_space(checked.space)
    try:
        arch = space.decode(checked.arch)
    except ArchitectureError as error:
        raise ArchitectureError(
            f"arch must be an architecture of space {checked.space!r}, but got {checked.arch!r}: {error}"
        ) from None
    if dataset.input_shape != checked.input_shape:
        raise ValueError(
            f"input_shape of the local dataset must equal the assignment's {checked.input_shape}, "
            f"but got {dataset.input_shape}"
        )
    if dataset.num_classes != checked.num_classes:
        raise ValueError(
            f"num_classes of the local dataset must equal the assignment's {checked.num_classes}, "
            f"but got {dataset.num_classes}"
        )
    return space, arch


def _tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(dataset.images), torch.from_numpy(dataset.labels)


def _fit(network: nn.Module, train: Dataset, config: TrainConfig) -> tuple[int, float]:
    """SGD with a per-step cosine schedule, stopping before any batch that starts past ``max_seconds``.

    Returns the number of completed epochs and the training wall time in seconds. At least one batch
    is always trained, so the last batch may overrun the budget by its own duration.
    """
    images, labels = _tensors(train)
    batches_per_epoch = math.ceil(len(train) / config.batch_size)
    optimizer = torch.optim.SGD(
        network.parameters(), lr=config.learning_rate, momentum=MOMENTUM, nesterov=True,
        weight_decay=WEIGHT_DECAY,
    )  # fmt: skip
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * batches_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    loss_fn = nn.CrossEntropyLoss()
    network.train()
    start = time.perf_counter()
    for epoch in range(config.epochs):
        order = torch.randperm(len(train), generator=generator)
        for begin in range(0, len(train), config.batch_size):
            if time.perf_counter() - start > config.max_seconds:
                return epoch, time.perf_counter() - start
            batch = order[begin : begin + config.batch_size]
            if batch.numel() < 2 <= len(train):
                continue  # train-mode batch norm fails on one sample once a feature map is 1x1
            optimizer.zero_grad(set_to_none=True)
            loss_fn(network(images[batch]), labels[batch]).backward()
            nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP)
            optimizer.step()
            schedule.step()
    return config.epochs, time.perf_counter() - start


def evaluate(network: nn.Module, dataset: Dataset) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``network`` on ``dataset``, in eval mode."""
    images, labels = _tensors(dataset)
    correct, total_loss = 0, 0.0
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            for begin in range(0, len(dataset), EVAL_BATCH_SIZE):
                chunk = slice(begin, begin + EVAL_BATCH_SIZE)
                logits = network(images[chunk])
                total_loss += float(nn.functional.cross_entropy(logits, labels[chunk], reduction="sum"))
                correct += int((logits.argmax(dim=1) == labels[chunk]).sum())
    finally:
        network.train(was_training)
    return correct / len(dataset), total_loss / len(dataset)


def train_subnet(
    assignment: SubNetAssignment,
    dataset: Dataset,
    *,
    slowdown: float = 1.0,
    space: SearchSpace | None = None,
) -> TrainingReport:
    """Build, train and evaluate the assigned SubNet on the local ``dataset``.

    Parameters
    ----------
    assignment
        The server's ``train`` message; it is validated like a received message, and its arch must
        belong to its space (`ArchitectureError` otherwise).
    dataset
        The device's local data; its input shape and class count must match the assignment.
    slowdown
        The device tier's emulation factor for the reported latency (``train_seconds`` is real time).
    space
        The space instance to build with, for experiments with non-default widths; its ``name`` must be
        the assignment's space. Default: ``get_space(assignment.space)``, the space's standard network.

    Returns
    -------
    TrainingReport
        Held-out accuracy and mean cross-entropy, training wall time, batch-1 latency × ``slowdown``,
        split sizes and completed epochs (fewer than configured when ``max_seconds`` ran out).
    """
    named_space, arch = _check_assignment(assignment, dataset)
    if space is not None and space.name != named_space.name:
        raise ValueError(f"space must be a {assignment.space!r} space, but got {space.name!r}")
    space = space or named_space
    config = assignment.train
    train_index, test_index = stratified_split(dataset.labels, config.test_fraction, config.seed)
    train, test = dataset.subset(train_index), dataset.subset(test_index)
    with torch.random.fork_rng(devices=[]):  # seed the weights without disturbing the caller's stream
        torch.manual_seed(config.seed)
        network = space.build(arch, assignment.num_classes, assignment.input_shape)
    epochs_done, seconds = _fit(network, train, config)
    accuracy, loss = evaluate(network, test)
    if not math.isfinite(loss):
        raise TrainingError(f"the held-out loss must be finite, but got {loss} (training diverged)")
    latency = measure_latency_ms(network, assignment.input_shape, slowdown, LATENCY_REPEATS)
    return TrainingReport(
        assignment.job_id, assignment.arch, accuracy, loss, seconds, latency,
        len(train), len(test), epochs_done,
    )  # fmt: skip
