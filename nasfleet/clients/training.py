"""Local training of a delivered SubNet on the device's own data.

`train_subnet` is the device's answer to a ``train`` message: it rebuilds the SubNet from its arch string,
holds out a stratified part of the local data, trains with SGD within the message's epoch and time budget,
and reports held-out accuracy and loss, the training wall time and the emulated inference latency.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from nasfleet.clients.device import measure_latency_ms
from nasfleet.data.datasets import Dataset
from nasfleet.data.partition import MIN_DEVICE_SAMPLES
from nasfleet.protocol.messages import SubNetAssignment, TrainConfig, TrainingReport
from nasfleet.spaces import ArchitectureError, Genome, SearchSpace, get_space

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
#: Gradient-norm clip, as NAS-Bench-201 trains its cells; it keeps short high-LR runs from diverging.
GRAD_CLIP = 5.0
EVAL_BATCH_SIZE = 256
LATENCY_REPEATS = 7
#: Early stopping's validation part of the training split, and the fewest samples it may hold.
VALIDATION_FRACTION = 0.15
VALIDATION_MIN = 10

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
    if size < MIN_DEVICE_SAMPLES:
        raise ValueError(
            f"the local dataset must hold >= {MIN_DEVICE_SAMPLES} samples to hold some out, but got {size}"
        )
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


def augmented(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random shift of each image by up to 1/8 of its side (zero padding, as CIFAR's random crop with
    padding 4 at 32x32), and a random horizontal flip of 3-channel images (digits must not be mirrored)."""
    count, channels, height, width = images.shape
    pad = max(1, min(height, width) // 8)
    padded = nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (count,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (count,), generator=generator)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + height, dx[i] : dx[i] + width] for i in range(count)])
    if channels == 3:
        flip = torch.rand(count, generator=generator) < 0.5
        out[flip] = out[flip].flip(dims=(3,))
    return out


def _fit(
    network: nn.Module, train: Dataset, config: TrainConfig, validation: Dataset | None
) -> tuple[int, float]:
    """SGD with a per-step cosine schedule, stopping before any batch that starts past ``max_seconds``,
    and (with a *validation* set) after ``patience`` epochs without a better validation accuracy, keeping
    the best epoch's weights.

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
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    network.train()
    start, epoch = time.perf_counter(), 0
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(train), generator=generator)
        for begin in range(0, len(train), config.batch_size):
            if time.perf_counter() - start > config.max_seconds:
                _restore(network, best)
                return epoch - 1, time.perf_counter() - start
            batch = order[begin : begin + config.batch_size]
            if batch.numel() < 2 <= len(train):
                continue  # train-mode batch norm fails on one sample once a feature map is 1x1
            inputs = augmented(images[batch], generator) if config.augment else images[batch]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(network(inputs), labels[batch]).backward()
            nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP)
            optimizer.step()
            schedule.step()
        if validation is not None:
            accuracy = evaluate(network, validation)[0]
            if best is None or accuracy > best[0]:
                best = (accuracy, epoch, {k: v.detach().clone() for k, v in network.state_dict().items()})
            elif epoch - best[1] >= config.patience:
                break
    _restore(network, best)
    return epoch, time.perf_counter() - start


def _restore(network: nn.Module, best: tuple[float, int, dict[str, torch.Tensor]] | None) -> None:
    if best is not None:
        network.load_state_dict(best[2])


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
    init_seed: int | None = None,
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
    init_seed
        The seed of the initial weights, the batch order and the augmentation, for experiments that
        measure training noise on fixed splits. Default: the assignment's train seed, which always draws
        the splits.

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
    validation = None
    if config.patience > 0 and len(train) >= 2 * VALIDATION_MIN:
        fit_index, val_index = stratified_split(train.labels, VALIDATION_FRACTION, config.seed + 1)
        train, validation = train.subset(fit_index), train.subset(val_index)
    with torch.random.fork_rng(devices=[]):  # seed the weights without disturbing the caller's stream
        torch.manual_seed(config.seed if init_seed is None else init_seed)
        network = space.build(arch, assignment.num_classes, assignment.input_shape)
    fit_config = config if init_seed is None else replace(config, seed=init_seed)
    epochs_done, seconds = _fit(network, train, fit_config, validation)
    accuracy, loss = evaluate(network, test)
    if not math.isfinite(loss):
        raise TrainingError(f"the held-out loss must be finite, but got {loss} (training diverged)")
    latency = measure_latency_ms(network, assignment.input_shape, slowdown, LATENCY_REPEATS)
    return TrainingReport(
        assignment.job_id, assignment.arch, accuracy, loss, seconds, latency,
        len(train), len(test), epochs_done,
    )  # fmt: skip
