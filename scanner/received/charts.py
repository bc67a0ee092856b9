"""Charts of received reports as SVG, for `scanner tlsrpt html`.

The approach of `scanner.research.charts`: matplotlib draws on a `Figure` with the
SVG canvas (no pyplot, no global backend), text stays SVG `<text>` (escaped by
matplotlib's SVG writer), a fixed hash salt makes the bytes repeatable, and every
label that comes from a report (organization names, result types, domains) goes
through `untrusted.visible` and is drawn with `parse_math=False` (mathtext is off
for every text as well, `SVG_STYLE`). The page shows each chart as an `<img>` with
a `data:` URI: an SVG in `<img>` runs no script and loads nothing.

Pure: summaries in, `Chart` values out. Needs matplotlib (the `charts` extra).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import Any, Final

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from scanner.received.summary import DomainSummary
from scanner.research.charts import COLOURS, SVG_STYLE, Chart
from scanner.untrusted import visible

LABEL_LIMIT: Final = 64  # characters of a label drawn on a chart
CHART_TOP: Final = 15  # bars of the result type and organization charts
MAX_DAY_TICKS: Final = 16
STYLE: Final[dict[Any, Any]] = {**SVG_STYLE, "svg.hashsalt": "scanner-tlsrpt"}
SUCCESS_COLOUR: Final = COLOURS[1]
FAILURE_COLOUR: Final = COLOURS[2]


def _label(text: str) -> str:
    return visible(text, LABEL_LIMIT)


def _data_uri(figure: Figure) -> str:
    FigureCanvasSVG(figure)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return "data:image/svg+xml;base64," + base64.b64encode(
        buffer.getvalue().encode("utf-8")
    ).decode("ascii")


def _chart(
    name: str, title: str, height: float, rows: int, draw: Callable[[Sequence[Axes]], None]
) -> Chart:
    """`title` is alt text and heading; it may quote a domain, so it is drawn without mathtext."""
    with rc_context(STYLE):
        figure = Figure(figsize=(8, height))
        axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
        draw(list(axes))
        axes[0].set_title(_label(title), loc="left", parse_math=False)
        return Chart(name, visible(title, 200), _data_uri(figure))


def _bars(axes: Axes, labels: Sequence[str], values: Sequence[int], colour: str) -> None:
    axes.barh(range(len(labels)), values, color=colour, height=0.7)
    axes.set_yticks(list(range(len(labels))), [_label(label) for label in labels], parse_math=False)
    axes.invert_yaxis()
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def daily_chart(summary: DomainSummary, index: int) -> Chart:
    """Successful (top) and failed (bottom) sessions per UTC day of one policy domain."""
    days = [day.day.isoformat() for day in summary.days]
    positions = list(range(len(days)))

    def draw(axes: Sequence[Axes]) -> None:
        top, bottom = axes
        top.bar(positions, [day.sessions.successful for day in summary.days], color=SUCCESS_COLOUR)
        top.set_ylabel("successful")
        bottom.bar(positions, [day.sessions.failed for day in summary.days], color=FAILURE_COLOUR)
        bottom.set_ylabel("failed")
        for each in axes:
            each.yaxis.set_major_locator(MaxNLocator(integer=True))
        step = max(1, -(-len(days) // MAX_DAY_TICKS))
        shown = positions[::step]
        bottom.set_xticks(shown, [days[p] for p in shown], rotation=45, ha="right")

    return _chart(f"daily-{index}", f"Sessions per day: {summary.shown_domain}", 4.2, 2, draw)


def result_type_chart(summary: DomainSummary, index: int) -> Chart:
    ranked = summary.failures_by_result_type[:CHART_TOP]

    def draw(axes: Sequence[Axes]) -> None:
        _bars(axes[0], [name for name, _ in ranked], [count for _, count in ranked], FAILURE_COLOUR)
        axes[0].set_xlabel("failed sessions")

    return _chart(
        f"result-types-{index}",
        f"Failures by result type: {summary.shown_domain}",
        0.9 + 0.3 * max(len(ranked), 1),
        1,
        draw,
    )


def organization_chart(summary: DomainSummary, index: int) -> Chart:
    ranked = sorted(
        (org for org in summary.organizations if org.sessions.failed),
        key=lambda org: (-org.sessions.failed, org.organization),
    )[:CHART_TOP]

    def draw(axes: Sequence[Axes]) -> None:
        _bars(
            axes[0],
            [org.organization for org in ranked],
            [org.sessions.failed for org in ranked],
            FAILURE_COLOUR,
        )
        axes[0].set_xlabel("failed sessions")

    return _chart(
        f"organizations-{index}",
        f"Failures by reporting organization: {summary.shown_domain}",
        0.9 + 0.3 * max(len(ranked), 1),
        1,
        draw,
    )


def domain_charts(summary: DomainSummary, index: int) -> list[Chart]:
    """The daily chart, and the failure charts when there are failures to show."""
    charts = [daily_chart(summary, index)]
    if summary.failures_by_result_type:
        charts.append(result_type_chart(summary, index))
    if any(org.sessions.failed for org in summary.organizations):
        charts.append(organization_chart(summary, index))
    return charts
