"""Charts of the statistics as SVG, for the offline HTML page.

matplotlib draws each chart on a `Figure` with its SVG canvas (no pyplot, no global
backend, no display), text kept as SVG `<text>` (escaped by matplotlib's SVG writer)
and a fixed hash salt, so the same statistics give the same bytes. Labels that come
from files (provider names, TLDs) go through `untrusted.visible` and are drawn with
`parse_math=False`: a `$` in a name is a dollar sign, never mathtext. The page shows
each chart as an `<img>` with a `data:` URI: an SVG inside `<img>` runs no script and
loads nothing, and the page's Content-Security-Policy allows images only from `data:`.
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

from scanner.research.measures import FUNNEL, STAGES, Stage
from scanner.research.page import Chart
from scanner.research.statistics import GroupCounts, ScanStatistics, Statistics
from scanner.research.tables import DEFAULT_TOP, rank_groups, top_groups
from scanner.research.taxonomy import CATEGORIES
from scanner.untrusted import visible

LABEL_LIMIT: Final = 64  # characters of a label drawn on a chart
CHART_TOP: Final = 15  # bars of the provider and taxonomy charts
SVG_STYLE: Final[dict[Any, Any]] = {
    "svg.fonttype": "none",
    "text.parse_math": False,  # every text, not only the labels passed parse_math=False
    "svg.hashsalt": "scanner-research",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
COLOURS: Final = ("#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd")
MARKERS: Final = ("o", "s", "^", "D")
DASHES: Final = ("-", "--", "-.", ":")


def _label(text: str) -> str:
    return visible(text, LABEL_LIMIT)


def _svg(figure: Figure) -> str:
    FigureCanvasSVG(figure)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buffer.getvalue()


def _data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _horizontal_bars(
    axes: Axes,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    counts: bool = True,
    shares: Sequence[Sequence[float | None]] | None = None,
) -> None:
    """Bars per label (top to bottom), one bar per series side by side, labels drawn safely.

    Each bar carries its value at its end: the count and, with `shares` (per series, per
    label, a fraction or None), its percentage; bars of percentages carry the percentage.
    """
    height = 0.8 / max(len(series), 1)
    for index, (name, values) in enumerate(series):
        positions = [row - 0.4 + height * (index + 0.5) for row in range(len(labels))]
        bars = axes.barh(
            positions, values, color=COLOURS[index % len(COLOURS)], label=name, height=height
        )
        fractions = shares[index] if shares is not None else [None] * len(values)
        texts = [
            _bar_text(value, fraction, counts=counts)
            for value, fraction in zip(values, fractions, strict=True)
        ]
        axes.bar_label(bars, texts, padding=2, fontsize=7)
    axes.set_yticks(list(range(len(labels))), [_label(label) for label in labels], parse_math=False)
    axes.invert_yaxis()
    if counts:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(series) > 1:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _bar_text(value: float, fraction: float | None, *, counts: bool) -> str:
    if not counts:
        return f"{value:.1f} %"
    text = f"{int(value):,}"
    return f"{text} ({100 * fraction:.1f} %)" if fraction is not None else text


def _chart(name: str, title: str, height: float, draw: Callable[[Axes], None]) -> Chart:
    with rc_context(SVG_STYLE):
        figure = Figure(figsize=(8, height))
        axes = figure.add_subplot()
        draw(axes)
        axes.set_title(title, loc="left", parse_math=False)
        return Chart(name, title, _data_uri(_svg(figure)))


def funnel_chart(scan: ScanStatistics) -> Chart:
    def draw(axes: Axes) -> None:
        funnel = scan.total.funnel
        whole = funnel[0]
        _horizontal_bars(
            axes,
            [test.title for test in FUNNEL],
            [("domains", funnel)],
            shares=[[count / whole if whole else None for count in funnel]],
        )
        axes.set_xlabel("domains (share of all scanned)")

    return _chart("funnel", f"Adoption funnel ({scan.date})", 3.2, draw)


def taxonomy_chart(scan: ScanStatistics) -> Chart:
    titles = {category.name: category.name for category in CATEGORIES}
    bases = {c.name: scan.total.funnel[STAGES.index(c.base)] for c in CATEGORIES}
    ranked = sorted(scan.taxonomy_domains.items(), key=lambda item: (-item[1], item[0]))[:CHART_TOP]
    labels = [f"{titles.get(category, category)}: {kind}" for (category, kind), _ in ranked]
    shares = [
        count / bases[category] if bases.get(category) else None for (category, _), count in ranked
    ]

    def draw(axes: Axes) -> None:
        _horizontal_bars(
            axes, labels, [("domains", [count for _, count in ranked])], shares=[shares]
        )
        axes.set_xlabel("domains affected")

    return _chart(
        "taxonomy", "Most frequent misconfigurations", 0.8 + 0.3 * max(len(ranked), 1), draw
    )


def _group_series(groups: Sequence[tuple[str, GroupCounts]]) -> list[tuple[str, list[float]]]:
    valid = STAGES.index(Stage.POLICY_VALID)
    ready = STAGES.index(Stage.ENFORCE_READY)
    return [
        ("domains", [float(counts.domains) for _, counts in groups]),
        ("valid policy", [float(counts.funnel[valid]) for _, counts in groups]),
        ("enforce-ready", [float(counts.funnel[ready]) for _, counts in groups]),
    ]


def providers_chart(scan: ScanStatistics, top: int = CHART_TOP) -> Chart:
    groups = top_groups(scan.providers, min(top, DEFAULT_TOP))

    def draw(axes: Axes) -> None:
        series = _group_series(groups)
        totals = series[0][1]
        shares = [
            [value / total if total else None for value, total in zip(values, totals, strict=True)]
            for _, values in series
        ]
        _horizontal_bars(axes, [name for name, _ in groups], series, shares=shares)
        axes.set_xlabel("domains")

    return _chart("providers", "Domains by MX provider", 0.8 + 0.3 * max(len(groups), 1), draw)


def ranks_chart(scan: ScanStatistics) -> Chart:
    groups = rank_groups(scan)
    valid = STAGES.index(Stage.POLICY_VALID)
    ready = STAGES.index(Stage.ENFORCE_READY)

    def share(part: int, whole: int) -> float:
        return 100 * part / whole if whole else 0.0

    def draw(axes: Axes) -> None:
        series = [
            ("valid policy %", [share(c.funnel[valid], c.domains) for _, c in groups]),
            ("enforce-ready %", [share(c.funnel[ready], c.domains) for _, c in groups]),
        ]
        _horizontal_bars(axes, [name for name, _ in groups], series, counts=False)
        axes.set_xlabel("share of the bucket's domains (%)")

    return _chart("ranks", "Adoption by rank bucket", 2.4, draw)


def over_time_chart(statistics: Statistics) -> Chart:
    shown = (
        Stage.WITH_RECORD,
        Stage.POLICY_VALID,
        Stage.MODE_TESTING_OR_ENFORCE,
        Stage.ENFORCE_READY,
    )
    dates = [scan.date for scan in statistics.scans]

    def draw(axes: Axes) -> None:
        for index, stage in enumerate(shown):
            position = STAGES.index(stage)
            values = [
                100 * scan.total.funnel[position] / scan.total.domains
                if scan.total.domains
                else 0.0
                for scan in statistics.scans
            ]
            # Lines of equal values would hide each other: each has its own marker and dash.
            axes.plot(
                range(len(dates)),
                values,
                marker=MARKERS[index % len(MARKERS)],
                linestyle=DASHES[index % len(DASHES)],
                color=COLOURS[index],
                label=FUNNEL[position].title,
            )
        axes.set_xticks(list(range(len(dates))), [_label(d) for d in dates], parse_math=False)
        axes.set_ylabel("share of domains (%)")
        axes.set_ylim(0, 100)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)

    return _chart("over_time", "Over time", 3.2, draw)


def statistics_charts(statistics: Statistics) -> list[Chart]:
    scan = statistics.latest
    charts = [funnel_chart(scan), taxonomy_chart(scan), providers_chart(scan)]
    if scan.ranked:
        charts.append(ranks_chart(scan))
    if len(statistics.scans) > 1:
        charts.append(over_time_chart(statistics))
    return charts
