"""The correlation benchmark's metrics, on examples small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nasfleet.bench_metrics import (
    mean_and_std,
    measure,
    ndcg_at_top,
    precision_at_top,
    summarize,
    top_count,
    top_weights,
)

LOG2_3 = math.log2(3)


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [(15_625, 0.05, 782), (20, 0.05, 1), (10, 0.05, 1), (100, 0.07, 7), (4, 0.5, 2), (3, 1.0, 3)],
)
def test_top_count_is_the_ceiling_of_the_fraction(n: int, fraction: float, expected: int) -> None:
    assert top_count(n, fraction) == expected


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.0), (10, 1.5), (0, 0.05)])
def test_top_count_refuses_an_empty_top(n: int, fraction: float) -> None:
    with pytest.raises(ValueError, match="must"):
        top_count(n, fraction)


def test_top_weights_share_a_tie_at_the_boundary() -> None:
    np.testing.assert_array_equal(top_weights(np.array([3.0, 1.0, 2.0, 2.0]), 2), [1, 0, 0.5, 0.5])
    np.testing.assert_array_equal(top_weights(np.array([3.0, 1.0, 2.0, 2.0]), 3), [1, 0, 1, 1])
    np.testing.assert_array_equal(top_weights(np.array([5.0, 5.0, 5.0]), 1), [1 / 3, 1 / 3, 1 / 3])


def test_precision_counts_the_overlap_of_the_two_tops() -> None:
    accuracy = np.arange(20.0)  # the true top 2 (fraction 0.1) are archs 19 and 18
    score = accuracy.copy()
    score[[18, 0]] = score[[0, 18]]  # arch 0 takes arch 18's place in the score's top 2
    assert precision_at_top(score, accuracy, 0.1) == 0.5
    assert precision_at_top(accuracy, accuracy, 0.1) == 1.0
    assert precision_at_top(-accuracy, accuracy, 0.1) == 0.0


def test_precision_takes_a_tied_score_in_expectation() -> None:
    # P = 2; the score ties archs 0, 1, 2 for both places (2/3 each); only arch 0 is in the true top 2
    score = np.array([5.0, 5.0, 5.0, 1.0, 0.0, 0.0])
    accuracy = np.array([90.0, 10.0, 20.0, 30.0, 95.0, 15.0])
    assert precision_at_top(score, accuracy, 2 / 6) == pytest.approx((2 / 3) / 2)


def test_ndcg_on_a_hand_example() -> None:
    accuracy = np.array([1.0, 2.0, 3.0, 4.0])  # P = 2 at fraction 0.5
    ideal = 4 + 3 / LOG2_3
    assert ndcg_at_top(accuracy, accuracy, 0.5) == pytest.approx(1.0)
    assert ndcg_at_top(-accuracy, accuracy, 0.5) == pytest.approx((1 + 2 / LOG2_3) / ideal)  # 0.3838
    # all tied: each of the two places gets the mean gain 2.5
    assert ndcg_at_top(np.zeros(4), accuracy, 0.5) == pytest.approx(2.5 * (1 + 1 / LOG2_3) / ideal)
    # archs 2 and 3 tied first: places 1 and 2 both get (3 + 4) / 2, i.e. the ideal DCG
    assert ndcg_at_top(np.array([0.0, 1.0, 2.0, 2.0]), accuracy, 0.5) == pytest.approx(
        3.5 * (1 + 1 / LOG2_3) / ideal
    )


def test_ndcg_refuses_negative_gains_and_is_undefined_without_gain() -> None:
    with pytest.raises(ValueError, match="accuracy is the nDCG gain, so it must be >= 0"):
        ndcg_at_top(np.arange(3.0), np.array([1.0, -1.0, 2.0]))
    assert ndcg_at_top(np.arange(3.0), np.zeros(3)) is None


def test_metrics_refuse_vectors_of_different_lengths_or_non_finite_values() -> None:
    with pytest.raises(ValueError, match="must have the same length, but got 3 and 2"):
        precision_at_top(np.arange(3.0), np.arange(2.0))
    with pytest.raises(ValueError, match="score must be a non-empty 1-D array of finite numbers"):
        ndcg_at_top(np.array([1.0, np.nan]), np.arange(2.0))


def test_measure_gives_every_metric_per_column() -> None:
    accuracy = np.array([70.0, 80.0, 90.0, 60.0])
    result = measure(np.array([2.0, 3.0, 4.0, 1.0]), {"a": accuracy, "b": -accuracy + 100}, 0.25)
    assert result["a"] == {"spearman": 1.0, "kendall": 1.0, "precision_top": 1.0, "ndcg_top": 1.0}
    assert result["b"]["spearman"] == pytest.approx(-1.0) and result["b"]["precision_top"] == 0.0
    constant = measure(np.ones(4), {"a": accuracy}, 0.25)["a"]
    assert constant["spearman"] is None and constant["kendall"] is None
    assert constant["precision_top"] == 0.25  # one place shared by four archs, one of them the best


def test_mean_and_std_over_repeats() -> None:
    mean, std = mean_and_std([0.5, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(math.sqrt(0.02))  # ddof = 1
    assert mean_and_std([0.5]) == (0.5, None)
    assert mean_and_std([None, 0.3]) == (None, None)


def test_summarize_averages_each_column_and_metric() -> None:
    repeats: list[dict[str, dict[str, float | None]]] = [
        {"a": {"spearman": 0.2, "kendall": None}},
        {"a": {"spearman": 0.4, "kendall": 0.1}},
    ]
    summary = summarize(repeats)
    assert summary["mean"]["a"]["spearman"] == pytest.approx(0.3)
    assert summary["std"]["a"]["spearman"] == pytest.approx(math.sqrt(0.02))
    assert summary["mean"]["a"]["kendall"] is None
