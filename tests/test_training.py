"""Local SubNet training: it learns, it is deterministic, it keeps its budget, and it rejects bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from nasfleet.clients import training
from nasfleet.clients.training import VALIDATION_FRACTION, augmented, stratified_split, train_subnet
from nasfleet.data.datasets import Dataset, load_dataset, synthetic_dataset
from nasfleet.protocol.messages import MessageError, SubNetAssignment, TrainConfig, TrainingReport
from nasfleet.spaces import ArchitectureError, MBV2Space, NB201Space

#: A cheap cell (two 1x1 convs, one 3x3): one epoch on digits with the standard network takes ~0.6 s.
CHEAP_ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
DIGITS_SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _assignment(arch: str = CHEAP_ARCH, **train: Any) -> SubNetAssignment:
    config = TrainConfig(**train)
    return SubNetAssignment("job-1", "nb201", arch, 10, DIGITS_SHAPE, config)


def test_one_epoch_on_digits_beats_chance_and_the_report_crosses_the_wire(digits: Dataset) -> None:
    # Execute: the space's standard network (C=16, N=5)
    report = train_subnet(_assignment(epochs=1), digits, slowdown=4.0)

    # Assert: chance is 0.1; one epoch reaches ~0.96 on this host
    assert report.accuracy > 0.6, report
    assert 0 < report.loss < 1.5
    assert report.epochs_done == 1 and report.num_train + report.num_test == len(digits)
    assert report.num_test == round(0.2 * len(digits))
    assert report.train_seconds > 0 and report.latency_ms > 0
    assert (report.job_id, report.arch) == ("job-1", CHEAP_ARCH)
    assert TrainingReport.from_wire(*report.to_wire()) == report


def test_training_is_deterministic_under_the_seed(digits: Dataset) -> None:
    # Prepare: a narrow network (C=8, N=1) keeps this fast
    narrow = NB201Space(channels=8, cells_per_stage=1)
    assignment = _assignment(epochs=1, seed=7)

    caller_state = torch.get_rng_state()

    # Execute
    first = train_subnet(assignment, digits, space=narrow)
    second = train_subnet(assignment, digits, space=narrow)

    # Assert
    assert (first.accuracy, first.loss) == (second.accuracy, second.loss)
    assert torch.equal(torch.get_rng_state(), caller_state)
    assert first.accuracy > 0.3


def test_init_seed_changes_the_weights_and_never_the_splits(
    digits: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: record the seed of every split drawn
    narrow = NB201Space(channels=8, cells_per_stage=1)
    assignment = _assignment(epochs=1, seed=7, patience=1)
    split_seeds: list[int] = []

    def recording_split(labels: Any, fraction: float, seed: int) -> Any:
        split_seeds.append(seed)
        return stratified_split(labels, fraction, seed)

    monkeypatch.setattr(training, "stratified_split", recording_split)

    # Execute
    default = train_subnet(assignment, digits, space=narrow)
    same = train_subnet(assignment, digits, space=narrow, init_seed=7)
    other = train_subnet(assignment, digits, space=narrow, init_seed=8)

    # Assert: the train seed is the default init seed; another init seed trains other weights, while
    # the held-out and validation splits are drawn from the train seed every time
    assert (same.accuracy, same.loss) == (default.accuracy, default.loss)
    assert other.loss != default.loss
    assert split_seeds == [7, 8] * 3


def test_max_seconds_stops_training_early(digits: Dataset) -> None:
    # Execute
    report = train_subnet(_assignment(epochs=100, max_seconds=0.2), digits)

    # Assert: one batch (~20 ms) may overrun the budget, never a whole epoch more
    assert report.epochs_done < 100
    assert report.train_seconds < 5.0
    assert 0 <= report.accuracy <= 1 and TrainingReport.from_wire(*report.to_wire()) == report


def test_stratified_split_holds_out_every_class_in_proportion() -> None:
    # Prepare
    labels = np.repeat(np.arange(4), [10, 20, 30, 40]).astype(np.int64)

    # Execute
    train, test = stratified_split(labels, 0.2, seed=1)

    # Assert
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(labels.size))
    assert test.size == 20
    np.testing.assert_array_equal(np.bincount(labels[test]), [2, 4, 6, 8])
    same_train, same_test = stratified_split(labels, 0.2, seed=1)
    assert (same_train == train).all() and (same_test == test).all()
    assert not (stratified_split(labels, 0.2, seed=2)[1] == test).all()


@pytest.mark.parametrize(("size", "fraction", "match"), [(1, 0.2, ">= 2 samples"), (10, 1.0, r"\(0, 1\)")])
def test_stratified_split_rejects_what_it_cannot_split(size: int, fraction: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stratified_split(np.zeros(size, dtype=np.int64), fraction, seed=0)


def test_a_tiny_dataset_still_holds_out_one_sample() -> None:
    train, test = stratified_split(np.array([0, 1, 1], dtype=np.int64), 0.01, seed=0)

    assert (train.size, test.size) == (2, 1)


def test_mismatched_input_shape_is_named(digits: Dataset) -> None:
    cifar_like = synthetic_dataset(20, num_classes=10, input_shape=(3, 32, 32))

    with pytest.raises(ValueError, match=r"input_shape .* \(1, 8, 8\), but got \(3, 32, 32\)"):
        train_subnet(_assignment(), cifar_like)


def test_mismatched_class_count_is_named() -> None:
    five_classes = synthetic_dataset(20, num_classes=5, input_shape=DIGITS_SHAPE)

    with pytest.raises(ValueError, match=r"num_classes .* 10, but got 5"):
        train_subnet(_assignment(), five_classes)


@pytest.mark.parametrize("arch", ["|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "resnet18"])
def test_an_arch_outside_the_space_is_an_architecture_error(digits: Dataset, arch: str) -> None:
    with pytest.raises(ArchitectureError, match="arch must be an architecture of space 'nb201'"):
        train_subnet(_assignment(arch), digits)


def test_a_malformed_assignment_is_rejected_at_the_boundary(digits: Dataset) -> None:
    with pytest.raises(MessageError, match="train_epochs must be an integer"):
        train_subnet(_assignment(epochs=0), digits)
    unknown = SubNetAssignment("job-1", "darts", CHEAP_ARCH, 10, DIGITS_SHAPE, TrainConfig())
    with pytest.raises(ValueError, match="space must be one of"):
        train_subnet(unknown, digits)
    with pytest.raises(ValueError, match="space must be a 'nb201' space, but got 'mbv2'"):
        train_subnet(_assignment(), digits, space=MBV2Space())


def _shifts(image: torch.Tensor, pad: int) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
    height, width = image.shape[1:]
    return [padded[:, y : y + height, x : x + width] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]


def test_augmentation_shifts_digits_without_mirroring_and_flips_rgb_images() -> None:
    generator = torch.Generator().manual_seed(0)
    digits = torch.rand(64, 1, 8, 8, generator=generator)
    out = augmented(digits, generator)
    assert out.shape == digits.shape
    shifted = 0
    for image, result in zip(digits, out, strict=True):
        assert any(torch.equal(result, s) for s in _shifts(image, 1)), "a 1-channel image is only shifted"
        shifted += not torch.equal(result, image)
    assert shifted > 32
    rgb = torch.rand(64, 3, 32, 32, generator=generator)
    flipped = 0
    for image, result in zip(rgb, augmented(rgb, generator), strict=True):
        plain = any(torch.equal(result, s) for s in _shifts(image, 4))
        mirrored = any(torch.equal(result, s.flip(dims=(2,))) for s in _shifts(image, 4))
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 16 < flipped < 48


def test_patience_holds_out_a_validation_part_and_stops_early(digits: Dataset) -> None:
    narrow = NB201Space(channels=8, cells_per_stage=1)
    plain = train_subnet(_assignment(epochs=30, seed=3), digits, space=narrow)
    stopped = train_subnet(_assignment(epochs=30, seed=3, patience=2), digits, space=narrow)
    assert plain.epochs_done == 30 and 2 < stopped.epochs_done < 30
    assert stopped.num_test == plain.num_test and stopped.num_train == plain.num_train - round(
        VALIDATION_FRACTION * plain.num_train
    )
    assert stopped.accuracy > 0.8
