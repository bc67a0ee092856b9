"""Charts of received reports as SVG, for `scanner tlsrpt html`.

The approach of `scanner.research.charts`: matplotlib draws on a `Figure` with the
SVG canvas (no pyplot, no global backend), text stays SVG `<text>` (escaped by
matplotlib's SVG writer), a fixed hash salt makes the bytes repeatable, and every
label that comes from a report (organization names, result types, addresses) goes
through `untrusted.visible` and is drawn with `parse_math=False` (mathtext is off
for every text as well, `SVG_STYLE`). The page shows each chart as an `<img>` with
a `data:` URI: an SVG in `<img>` runs no script and loads nothing.

Days are drawn on a true time axis (one bar per UTC day, the period's days without a
report shaded and named in the legend). Every axis carries a title, drawn in an SVG
group with the id `x-axis-title`, `y-axis-title` or `y2-axis-title`. A chart with
nothing to show is not drawn: each function returns None, and the page says so in
words (`page.py`).

Pure: summaries in, `Chart` values out. Needs matplotlib (the `charts` extra).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from typing import Any, Final

from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from scanner.received.summary import DayCount, DomainSummary, Period, SendingIpFailures
from scanner.research.charts import COLOURS, SVG_STYLE
from scanner.research.page import Chart
from scanner.untrusted import visible

LABEL_LIMIT: Final = 64  # characters of a label drawn on a chart
CHART_TOP: Final = 15  # bars of the organization and sending-IP charts
RESULT_TYPES_SHOWN: Final = 6  # result types drawn apart over time; the rest as one
OTHER_TYPES: Final = "other result types"
WIDE: Final = 11.0  # inches: the page scales each image to its width
STYLE: Final[dict[Any, Any]] = {**SVG_STYLE, "svg.hashsalt": "scanner-tlsrpt"}
SUCCESS_COLOUR: Final = COLOURS[1]
FAILURE_COLOUR: Final = COLOURS[2]
RATE_COLOUR: Final = "#222222"
NO_REPORT_COLOUR: Final = "#e4e4e4"
MAX_DAY_TICKS: Final = 12
TICK_STEPS: Final = (1, 2, 7, 14, 28, 56, 91, 182, 364)  # days between dated ticks
BAR_WIDTH: Final = 0.8  # days
TYPE_COLOURS: Final = ("#c44e52", "#dd8452", "#8172b2", "#ccb974", "#64b5cd", "#937860", "#999999")


def _label(text: str) -> str:
    return visible(text, LABEL_LIMIT)


def _data_uri(figure: Figure) -> str:
    FigureCanvasSVG(figure)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return "data:image/svg+xml;base64," + base64.b64encode(
        buffer.getvalue().encode("utf-8")
    ).decode("ascii")


def _axis_titles(axes: Axes, x: str, y: str, gid: str = "y-axis-title") -> None:
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    axes.xaxis.label.set_gid("x-axis-title")
    axes.yaxis.label.set_gid(gid)


def _chart(name: str, title: str, size: tuple[float, float], draw: Callable[[Axes], None]) -> Chart:
    """`title` is the image's alt text (the page heads each panel with its own words)."""
    with rc_context(STYLE):
        figure = Figure(figsize=size)
        axes = figure.add_subplot()
        draw(axes)
        return Chart(name, visible(title, 200), _data_uri(figure))


def _day_axis(axes: Axes, period: Period, days: Sequence[DayCount]) -> None:
    """A time axis over `period`: the days without a report shaded, named once in the legend."""
    named = False
    for first, last in _runs(period.without_reports(days)):
        axes.axvspan(
            _position(period, first) - 0.5,
            _position(period, last) + 0.5,
            color=NO_REPORT_COLOUR,
            zorder=0,
            label=None if named else "no report",
        )
        named = True
    length = len(period.days)
    axes.set_xlim(-0.6, length - 0.4)
    step = next((days for days in TICK_STEPS if length / days <= MAX_DAY_TICKS), TICK_STEPS[-1])
    ticks = list(range(0, length, step))
    axes.set_xticks(
        ticks,
        [(period.first + timedelta(days=tick)).isoformat() for tick in ticks],
        rotation=30,
        ha="right",
    )


def _position(period: Period, day: date) -> int:
    """Where a day lies on a time axis: days since the period's first (one unit a day)."""
    return (day - period.first).days


def _runs(days: Sequence[date]) -> list[tuple[date, date]]:
    """Consecutive days as (first, last) runs."""
    runs: list[tuple[date, date]] = []
    for day in days:
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def _period_words(period: Period) -> str:
    return f"UTC day, {period.first.isoformat()} to {period.last.isoformat()}"


def daily_chart(summary: DomainSummary, period: Period, index: int) -> Chart | None:
    """Successful and failed sessions per UTC day, stacked, and the failure rate as a line."""
    days = [day for day in summary.days if period.first <= day.day <= period.last]
    if not any(day.sessions.total for day in days):
        return None
    positions = [_position(period, day.day) for day in days]
    successful = [day.sessions.successful for day in days]
    failed = [day.sessions.failed for day in days]
    # The rate over every day of the period: a day without a report (or without sessions)
    # is a gap in the line, never a zero.
    by_day = {day.day: day.sessions.failure_rate for day in days}
    rate_positions = list(range(len(period.days)))
    rates = [
        100 * rate if (rate := by_day.get(day)) is not None else math.nan for day in period.days
    ]

    def draw(axes: Axes) -> None:
        _day_axis(axes, period, days)
        axes.bar(positions, successful, width=BAR_WIDTH, color=SUCCESS_COLOUR, label="successful")
        axes.bar(
            positions,
            failed,
            width=BAR_WIDTH,
            bottom=successful,
            color=FAILURE_COLOUR,
            label="failed",
        )
        axes.set_ylim(bottom=0)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        _axis_titles(axes, _period_words(period), "sessions")
        rate_axes = axes.twinx()
        rate_axes.plot(
            rate_positions,
            rates,
            color=RATE_COLOUR,
            marker="o",
            markersize=3,
            linewidth=1.2,
            label="failure rate (%)",
        )
        top = max((rate for rate in rates if not math.isnan(rate)), default=0.0)
        rate_axes.set_ylim(0, top * 1.15 if top > 0 else 1.0)
        rate_axes.set_ylabel("failure rate (%)")
        rate_axes.yaxis.label.set_gid("y2-axis-title")
        rate_axes.spines["right"].set_visible(True)
        handles, labels = axes.get_legend_handles_labels()
        rate_handles, rate_labels = rate_axes.get_legend_handles_labels()
        axes.legend(
            handles + rate_handles,
            labels + rate_labels,
            loc="upper left",
            bbox_to_anchor=(1.07, 1.0),
            frameon=False,
        )

    return _chart(f"daily-{index}", f"Sessions per day: {summary.shown_domain}", (WIDE, 3.6), draw)


def result_types_over_time_chart(
    summary: DomainSummary, period: Period, index: int
) -> Chart | None:
    """Failed sessions per UTC day by result type (from the failure details), stacked."""
    days = [day for day in summary.days if period.first <= day.day <= period.last]
    totals: dict[str, int] = {}
    for day in days:
        for name, count in day.failures_by_result_type:
            totals[name] = totals.get(name, 0) + count
    if not any(totals.values()):
        return None
    ranked = sorted(totals, key=lambda name: (-totals[name], name))
    shown = ranked[:RESULT_TYPES_SHOWN]
    series: list[tuple[str, list[int]]] = []
    for name in shown:
        series.append((name, [dict(day.failures_by_result_type).get(name, 0) for day in days]))
    if len(ranked) > len(shown):
        rest = set(ranked[len(shown) :])
        series.append(
            (
                OTHER_TYPES,
                [sum(c for n, c in day.failures_by_result_type if n in rest) for day in days],
            )
        )
    positions = [_position(period, day.day) for day in days]

    def draw(axes: Axes) -> None:
        _day_axis(axes, period, days)
        bottom = [0] * len(days)
        for number, (name, values) in enumerate(series):
            colour = TYPE_COLOURS[number % len(TYPE_COLOURS)]
            axes.bar(
                positions, values, width=BAR_WIDTH, bottom=bottom, color=colour, label=_label(name)
            )
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        axes.set_ylim(bottom=0)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        _axis_titles(axes, _period_words(period), "failed sessions")
        legend = axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        for text in legend.get_texts():
            text.set_parse_math(False)

    return _chart(
        f"result-types-{index}",
        f"Failures by result type over time: {summary.shown_domain}",
        (WIDE, 3.4),
        draw,
    )


def _bar_height(rows: int) -> float:
    return 1.1 + 0.32 * max(rows, 1)


def organization_chart(summary: DomainSummary, index: int) -> Chart | None:
    """Successful and failed sessions per sending organization (who vouches), stacked;
    hatched bars are organizations not verified by DKIM."""
    ranked = [org for org in summary.organizations if org.sessions.total][:CHART_TOP]
    if not ranked:
        return None
    rows = list(range(len(ranked)))

    def draw(axes: Axes) -> None:
        successful = [org.sessions.successful for org in ranked]
        failed = [org.sessions.failed for org in ranked]
        hatches = [None if org.verified else "//" for org in ranked]
        axes.barh(
            rows, successful, height=0.7, color=SUCCESS_COLOUR, hatch=hatches, label="successful"
        )
        bars = axes.barh(
            rows,
            failed,
            height=0.7,
            left=successful,
            color=FAILURE_COLOUR,
            hatch=hatches,
            label="failed",
        )
        texts = [
            f"{org.sessions.total:,} sessions, {org.sessions.failed:,} failed"
            + (f" ({100 * org.sessions.failure_rate:.3g}%)" if org.sessions.failure_rate else "")
            for org in ranked
        ]
        axes.bar_label(bars, texts, padding=3, fontsize=7)
        axes.set_yticks(rows, [_label(org.organization) for org in ranked], parse_math=False)
        axes.invert_yaxis()
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
        axes.set_xlim(0, max(org.sessions.total for org in ranked) * 1.45)
        _axis_titles(axes, "sessions", "sending organization")
        legend = [
            Patch(facecolor=SUCCESS_COLOUR, label="successful"),
            Patch(facecolor=FAILURE_COLOUR, label="failed"),
        ]
        if any(hatches):
            legend.append(
                Patch(facecolor="white", edgecolor="black", hatch="//", label="not DKIM-verified")
            )
        axes.legend(
            handles=legend,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncols=len(legend),
            frameon=False,
        )

    return _chart(
        f"organizations-{index}",
        f"Sessions by sending organization: {summary.shown_domain}",
        (WIDE, _bar_height(len(ranked))),
        draw,
    )


def sending_ip_chart(
    sending_ips: Sequence[SendingIpFailures], shown_domain: str, index: int
) -> Chart | None:
    """Failed sessions per sending MTA IP (RFC 8460 names sending IPs in failures only)."""
    ranked = [source for source in sending_ips if source.failed_sessions][:CHART_TOP]
    if not ranked:
        return None
    rows = list(range(len(ranked)))

    def draw(axes: Axes) -> None:
        bars = axes.barh(
            rows, [s.failed_sessions for s in ranked], height=0.7, color=FAILURE_COLOUR
        )
        axes.bar_label(
            bars,
            [_label(", ".join(s.organizations)) for s in ranked],
            padding=3,
            fontsize=7,
        )
        axes.set_yticks(rows, [_label(s.sending_mta_ip) for s in ranked], parse_math=False)
        axes.invert_yaxis()
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlim(0, max(s.failed_sessions for s in ranked) * 1.6)
        _axis_titles(
            axes, "failed sessions (labelled with the reporting organizations)", "sending MTA IP"
        )

    return _chart(
        f"sending-ips-{index}",
        f"Failures by sending MTA IP: {shown_domain}",
        (WIDE, _bar_height(len(ranked))),
        draw,
    )
