"""`scanner stats --html`: one self-contained, offline HTML page of the statistics.

The page is a Jinja2 template (`templates/statistics.html.j2`) rendered with
autoescaping on. Text that may come from a results file or a sidecar (provider names,
TLDs, file names, vantage names, notes) goes through the `untrusted` filter, which is
`scanner.untrusted.html_text` (control characters made visible, then escaped) marked
safe, so it is escaped exactly once; everything else is ours and autoescaped. Charts
are SVG images in `data:` URIs (`charts`). The page carries a Content-Security-Policy
that allows inline styles and `data:` images only: no script, no request, offline.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from scanner import __version__
from scanner.research.metadata import Problem
from scanner.research.statistics import Statistics
from scanner.research.tables import Cell, Share, TableData, statistics_json
from scanner.untrusted import html_text

TEMPLATE = "statistics.html.j2"
CHARTS_NOTE = (
    "Charts need matplotlib: pip install 'scanner[charts]'. This page shows the tables only."
)
PAGE_TITLE = "MTA-STS adoption statistics"


def untrusted(value: object) -> Markup:
    """The Jinja2 filter for text from files: `html_text`, then marked safe (escaped once)."""
    return Markup(html_text("" if value is None else str(value)))  # html_text escaped it


def environment(package: str = "scanner.research") -> Environment:
    """The pages' Jinja2 environment: `package`'s templates, autoescaped, strict, `untrusted` filter."""
    env = Environment(
        loader=PackageLoader(package, "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["untrusted"] = untrusted
    return env


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart on a page: an SVG image as a `data:` URI (drawn by a `charts` module)."""

    name: str
    title: str  # ours: the image's alt text
    data_uri: str


def charts_available() -> bool:
    """Whether matplotlib (the `charts` extra) can be imported: pages without it show tables."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ShownCell:
    text: str
    number: bool


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[ShownCell, ...], ...]
    chart: Chart | None


def _shown(cell: Cell) -> ShownCell:
    if isinstance(cell, Share):
        return ShownCell(cell.text(), True)
    if isinstance(cell, int):
        return ShownCell(str(cell), True)
    return ShownCell("" if cell is None else cell, False)


def sections(tables: Sequence[TableData], charts: Sequence[Chart]) -> list[Section]:
    """Each table with the chart of the same name above it."""
    by_name = {chart.name: chart for chart in charts}
    return [
        Section(
            table.name,
            table.title,
            tuple(column.title for column in table.columns),
            tuple(tuple(_shown(cell) for cell in row) for row in table.rows),
            by_name.get(table.name),
        )
        for table in tables
    ]


def render_page(
    statistics: Statistics,
    tables: Sequence[TableData],
    problems: Sequence[Problem],
    *,
    with_charts: bool = True,
) -> str:
    """The page; without `with_charts` (matplotlib missing) the tables only, and a note."""
    charts: list[Chart] = []
    if with_charts:
        from scanner.research.charts import statistics_charts

        charts = statistics_charts(statistics)
    document = statistics_json(statistics, problems)
    return (
        environment()
        .get_template(TEMPLATE)
        .render(
            title=PAGE_TITLE,
            version=__version__,
            scan_date=statistics.latest.date,
            files=document["files"],
            problems=problems,
            notes=statistics.skipped.notes,
            sections=sections(tables, charts),
            charts_note=None if with_charts else CHARTS_NOTE,
        )
    )
