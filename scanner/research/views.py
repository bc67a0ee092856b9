"""Terminal and CSV views of the research tables.

Every text cell may come from a results file (a provider name is an MX host name a
stranger chose), so it reaches the terminal through `untrusted.terminal` as a plain
`Text` and a CSV file through `untrusted.csv_cell`; titles and headers are ours but go
in as `Text` too, so rich never reads markup anywhere in a table.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from scanner.research.statistics import Statistics
from scanner.research.tables import Cell, Share, TableData, statistics_tables
from scanner.untrusted import csv_cell, terminal


def cell_text(cell: Cell) -> Text:
    if isinstance(cell, str):
        return terminal(cell)
    if isinstance(cell, Share):
        return Text(cell.text())
    return Text("" if cell is None else str(cell))


def rich_table(table: TableData) -> Table:
    shown = Table(title=Text(table.title, style="bold"), title_justify="left")
    for column in table.columns:
        shown.add_column(Text(column.title), justify="right" if column.numeric else "left")
    for row in table.rows:
        shown.add_row(*(cell_text(cell) for cell in row))
    return shown


def render_tables(console: Console, tables: Sequence[TableData]) -> None:
    for table in tables:
        console.print(rich_table(table))


def render_statistics(console: Console, statistics: Statistics) -> None:
    """Every table of `scanner stats`."""
    render_tables(console, statistics_tables(statistics))


def csv_value(cell: Cell) -> str | int | float:
    if isinstance(cell, Share):
        return round(cell.value, 6) if cell.value is not None else ""
    return csv_cell(cell)


def write_csv(
    directory: Path, tables: Sequence[TableData], *, scan_date: str, input_list: str
) -> list[Path]:
    """One `<table name>.csv` per table in `directory` (created); the paths written.

    The header holds machine ids (`domains`, `of_previous_stage`), and every row starts
    with the scan date and the input list's name, so the CSV files of several scans
    concatenate into one table.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for table in tables:
        path = directory / f"{table.name}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["scan_date", "input", *(column.id for column in table.columns)])
            for row in table.rows:
                writer.writerow(
                    [scan_date, csv_cell(input_list), *(csv_value(cell) for cell in row)]
                )
        written.append(path)
    return written
