"""How well one score ranks architectures like their accuracy: the correlation benchmark's four metrics.

Every function takes a score already in its better direction (higher means "predicted better") and the
true accuracies of the same architectures, in the same order. None of them looks at anything but these
two vectors.

- Spearman ρ and Kendall τ-b (scipy; ties get average ranks, τ-b corrects for them).
- Precision among the true top ``f`` (`precision_at_top`): of the P archs the score ranks best, the share
  that are among the P most accurate, P = ⌈f·N⌉.
- nDCG@P (`ndcg_at_top`): the discounted gain of the score's first P archs over that of the ideal order,
  with the accuracy (in percent) as the graded relevance.

Ties are resolved in expectation, never by looking at the other vector: a tie straddling the P-th place
(of the score, or of the accuracy) counts each tied arch with the probability that a uniformly random
order of the tie would put it inside the top P. This matters for size proxies (#params, FLOPs), whose
values repeat across the NB201 cells.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr

TOP_FRACTION = 0.05
METRICS = ("spearman", "kendall", "precision_top", "ndcg_top")
Metrics = dict[str, float | None]  # one value per name of METRICS; None where undefined


def _vector(name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be a non-empty 1-D array of finite numbers, but got {array!r}")
    return array


def _pair(score: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, a = _vector("score", score), _vector("accuracy", accuracy)
    if s.shape != a.shape:
        raise ValueError(f"score and accuracy must have the same length, but got {s.size} and {a.size}")
    return s, a


def top_count(n: int, fraction: float = TOP_FRACTION) -> int:
    """P = ⌈fraction·n⌉, at least 1: the size of "the top ``fraction``" of ``n`` archs (782 of 15,625)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"top fraction must lie in (0, 1], but got {fraction}")
    if n < 1:
        raise ValueError(f"the population must hold >= 1 arch, but got {n}")
    return max(1, math.ceil(fraction * n - 1e-9))  # 1e-9: 0.07 * 100 is 7.000000000000001


def top_weights(values: np.ndarray, k: int) -> np.ndarray:
    """Each arch's probability of being among the ``k`` highest ``values`` under random tie-breaking.

    With t the k-th highest value: 1 above t, (k − #above) / #tied for the archs equal to t, 0 below; the
    weights sum to k.
    """
    array = _vector("values", values)
    if not 1 <= k <= array.size:
        raise ValueError(f"k must lie in [1, {array.size}], but got {k}")
    threshold = np.sort(array)[::-1][k - 1]
    above, tied = array > threshold, array == threshold
    weights: np.ndarray = above.astype(float)
    weights[tied] = (k - int(above.sum())) / int(tied.sum())
    return weights


def precision_at_top(score: np.ndarray, accuracy: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Share of the score's top P that is in the true top P, P = `top_count` (N, fraction).

    precision = (1/P) · Σ_i w_score(i) · w_acc(i), with w the `top_weights` of each vector: exactly
    |top_P(score) ∩ top_P(accuracy)| / P without ties, its expectation over random tie-breaks with them.
    """
    s, a = _pair(score, accuracy)
    k = top_count(s.size, fraction)
    return float(top_weights(s, k) @ top_weights(a, k)) / k


def _discounts(k: int) -> np.ndarray:
    return np.asarray(1.0 / np.log2(np.arange(2, k + 2)), dtype=float)


def ndcg_at_top(score: np.ndarray, accuracy: np.ndarray, fraction: float = TOP_FRACTION) -> float | None:
    """nDCG@P of the score's order, with the accuracy as gain; None if every gain is 0.

    DCG@P = Σ_{r=1..P} g(π(r)) / log2(r + 1), with π the archs ordered by descending score and g the
    accuracy (graded relevance, in the ground truth's units: percent for NB201); IDCG@P is the same sum
    over the archs ordered by descending accuracy; nDCG@P = DCG@P / IDCG@P ∈ [0, 1]. A run of tied scores
    occupying ranks a..b contributes the mean gain of its archs times Σ_{r=a..b, r≤P} 1/log2(r + 1): the
    expected DCG over random orders of the tie. Gains must be >= 0.
    """
    s, a = _pair(score, accuracy)
    if a.min() < 0:
        raise ValueError(f"accuracy is the nDCG gain, so it must be >= 0, but its minimum is {a.min()}")
    k = top_count(s.size, fraction)
    discounts = _discounts(k)
    ideal = float(np.sort(a)[::-1][:k] @ discounts)
    if ideal == 0:
        return None
    order = np.argsort(-s, kind="stable")
    ordered_scores, ordered_gains = s[order], a[order]
    dcg, start = 0.0, 0
    while start < k:
        stop = start + int(np.count_nonzero(ordered_scores[start:] == ordered_scores[start]))
        dcg += float(ordered_gains[start:stop].mean()) * float(discounts[start : min(stop, k)].sum())
        start = stop
    return dcg / ideal


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def measure(
    score: np.ndarray, accuracies: Mapping[str, np.ndarray], fraction: float = TOP_FRACTION
) -> dict[str, Metrics]:
    """Every metric of `METRICS` of one score against each accuracy column; None where undefined
    (a constant score has no rank correlation)."""
    result: dict[str, Metrics] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on a constant input: reported as None
        for column, accuracy in accuracies.items():
            result[column] = {
                "spearman": _finite_or_none(spearmanr(score, accuracy).statistic),
                "kendall": _finite_or_none(kendalltau(score, accuracy).statistic),
                "precision_top": precision_at_top(score, accuracy, fraction),
                "ndcg_top": ndcg_at_top(score, accuracy, fraction),
            }
    return result


def mean_and_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof = 1) over repeats; the std is None for one repeat, both
    are None if any repeat is undefined."""
    if not values or any(value is None for value in values):
        return None, None
    array = np.array(values, dtype=float)
    return float(array.mean()), (float(array.std(ddof=1)) if array.size > 1 else None)


def summarize(repeats: Sequence[Mapping[str, Mapping[str, float | None]]]) -> dict[str, Any]:
    """Per column and metric, the mean and std over repeats of `measure`'s results:
    ``{"mean": {column: metrics}, "std": {column: metrics}}``."""
    mean: dict[str, Metrics] = {}
    std: dict[str, Metrics] = {}
    for column in repeats[0]:
        mean[column], std[column] = {}, {}
        for metric in repeats[0][column]:
            mean[column][metric], std[column][metric] = mean_and_std([r[column][metric] for r in repeats])
    return {"mean": mean, "std": std}
