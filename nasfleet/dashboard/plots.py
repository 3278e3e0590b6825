"""The dashboard's plots: matplotlib figures rendered on the server as inline SVG, so a page needs nothing
from the network and no script to show them.

Figures are built with `matplotlib.figure.Figure` (no pyplot: no global state, safe in the server's
threads) and written with text as ``<text>`` elements (``svg.fonttype = none``), which keeps them small
and lets the browser's fonts draw the labels. matplotlib is imported on first use, not at server start.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

WIDTH_IN, HEIGHT_IN = 7.0, 3.0
STYLE: Any = {  # matplotlib types the keys as literals
    "svg.fonttype": "none",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def _svg(figure: Any) -> str:
    """The figure as an ``<svg>`` element (XML declaration and doctype dropped), scaling to its box."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", text[text.index("<svg") :], count=1, flags=re.S)
    return svg.replace("<svg ", '<svg class="plot" preserveAspectRatio="xMinYMin meet" ', 1)


def _figure(rows: int = 1, columns: int = 1, height: float = HEIGHT_IN) -> tuple[Any, Any]:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context(STYLE):
        figure = Figure(figsize=(WIDTH_IN, height), layout="constrained")
        axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def best_so_far(history: Sequence[Mapping[str, Any]], budget: int) -> str | None:
    """The best-so-far curve: the best aggregate score (left) and best percentile (right) against
    evaluations; None before the first step."""
    if not history:
        return None
    from matplotlib import rc_context

    with rc_context(STYLE):
        figure, axes = _figure()
        score_axes = axes[0][0]
        done = [int(entry["evaluations"]) for entry in history]
        score_axes.step(done, [float(entry["score"]) for entry in history], where="post", marker="o",
                        markersize=3, color="#1f6fb2", label="best score")  # fmt: skip
        score_axes.set(xlabel="evaluations", ylabel="best score (aggregate)", xlim=(0, max(budget, *done)))
        percentile = score_axes.twinx()
        percentile.spines["right"].set_visible(True)
        percentile.step(done, [float(entry.get("best_percentile", 0.0)) for entry in history], where="post",
                        linestyle="--", color="#c0562c", label="best percentile")  # fmt: skip
        percentile.set(ylabel="best percentile", ylim=(0, 101))
        handles = score_axes.get_legend_handles_labels()[0] + percentile.get_legend_handles_labels()[0]
        score_axes.legend(handles=handles, loc="lower right", frameon=False)
        return _svg(figure)


def proxy_values(values: Sequence[Mapping[str, float]], chosen: int | None) -> str | None:
    """One small panel per proxy: its raw value for each evaluation in archive order, the delivered
    SubNet's marked; None for an empty archive. Non-finite values are left out."""
    names = sorted({name for entry in values for name in entry})
    if not names:
        return None
    from matplotlib import rc_context

    columns = min(len(names), 4)
    rows = math.ceil(len(names) / columns)
    with rc_context(STYLE):
        figure, axes = _figure(rows, columns, height=2.2 * rows)
        for index, name in enumerate(names):
            panel = axes[index // columns][index % columns]
            points = [(i + 1, float(entry[name])) for i, entry in enumerate(values)
                      if name in entry and math.isfinite(float(entry[name]))]  # fmt: skip
            panel.scatter([x for x, _ in points], [y for _, y in points], s=6, color="#1f6fb2")
            if chosen is not None and name in values[chosen] and math.isfinite(float(values[chosen][name])):
                panel.scatter([chosen + 1], [values[chosen][name]], s=40, marker="*", color="#c0562c",
                              label="delivered")  # fmt: skip
            panel.set_title(name)
            panel.set_xlabel("evaluation")
        for index in range(len(names), rows * columns):
            axes[index // columns][index % columns].set_visible(False)
        return _svg(figure)


def accuracy_by_round(series: Mapping[str, Sequence[tuple[int, float]]]) -> str | None:
    """Reported accuracy against federation round, one line per device; None without rounds."""
    if not any(series.values()):
        return None
    from matplotlib import rc_context

    with rc_context(STYLE):
        figure, axes = _figure()
        panel = axes[0][0]
        for device, points in sorted(series.items()):
            ordered = sorted(points)
            panel.plot(
                [r for r, _ in ordered], [a for _, a in ordered], marker="o", markersize=3, label=device
            )
        panel.set(xlabel="round", ylabel="accuracy")
        panel.xaxis.get_major_locator().set_params(integer=True)
        panel.legend(loc="best", frameon=False, fontsize=8)
        return _svg(figure)
