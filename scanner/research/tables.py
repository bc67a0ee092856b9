"""The statistics as neutral tables (for the terminal, CSV and HTML) and as JSON.

A `TableData` is a title, columns and rows of cells: text (always treated as
untrusted by the views: it may come from a file), counts, and `Share`s. Each view
(`views.render_tables`, `views.write_csv`, `page.render_page`) shows every table the
same way, so the tables are built once, here. `statistics_json` is the `--json`
document (docs/research.md#json).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from scanner.research.groups import shown_buckets
from scanner.research.measures import BESIDE, DANE_MEASURES, FUNNEL, STAGE_SHORT, STAGES, Stage
from scanner.research.metadata import Problem
from scanner.research.statistics import GroupCounts, ScanStatistics, Statistics
from scanner.research.taxonomy import CATEGORIES

DEFAULT_TOP: Final = 25
NOT_MEASURED: Final = "not measured"
OTHER_GROUPS: Final = "(all others)"


@dataclass(frozen=True, slots=True)
class Share:
    """A fraction of a base; None when the base is empty."""

    value: float | None

    @classmethod
    def of(cls, part: int, whole: int) -> Share:
        return cls(part / whole if whole else None)

    def text(self) -> str:
        return "–" if self.value is None else f"{100 * self.value:.1f} %"


Cell = str | int | Share | None


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    numeric: bool = True
    key: str | None = None  # the machine id of the CSV header; by default from the title

    @property
    def id(self) -> str:
        """A CSV column id: lower case, digits and `_` (`of previous stage` → `of_previous_stage`)."""
        return self.key or re.sub(r"[^a-z0-9]+", "_", self.title.lower()).strip("_")


@dataclass(frozen=True, slots=True)
class TableData:
    name: str  # a plain word: the CSV file stem and the HTML id
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]


def _stage_index(stage: Stage) -> int:
    return STAGES.index(stage)


def funnel_table(scan: ScanStatistics) -> TableData:
    counts = scan.total.funnel
    rows: list[tuple[Cell, ...]] = []
    for index, test in enumerate(FUNNEL):
        previous = counts[index - 1] if index else counts[0]
        rows.append(
            (
                test.title,
                test.stage.value,
                counts[index],
                Share.of(counts[index], previous),
                Share.of(counts[index], counts[0]),
            )
        )
    return TableData(
        "funnel",
        f"Adoption funnel (scan of {scan.date})",
        (
            Column("stage", False),
            Column("id", False),
            Column("domains"),
            Column("of previous stage"),
            Column("of all domains"),
        ),
        tuple(rows),
    )


def beside_count(counts: GroupCounts, name: str) -> int | None:
    """A measure's count; None ("not measured") for DANE where no lookup was validated."""
    if name in DANE_MEASURES and not counts.beside["dane-measured"]:
        return None
    return counts.beside[name]


def beside_table(scan: ScanStatistics) -> TableData:
    total = scan.total.domains
    rows: list[tuple[Cell, ...]] = []
    for measure in BESIDE:
        count = beside_count(scan.total, measure.name)
        rows.append(
            (
                measure.title,
                measure.name,
                count if count is not None else NOT_MEASURED,
                Share.of(count, total) if count is not None else Share(None),
            )
        )
    return TableData(
        "beside",
        "Beside the funnel",
        (
            Column("measure", False),
            Column("id", False),
            Column("domains"),
            Column("of all domains"),
        ),
        tuple(rows),
    )


def taxonomy_table(scan: ScanStatistics) -> TableData:
    rows: list[tuple[Cell, ...]] = []
    for category in CATEGORIES:
        base = scan.total.funnel[_stage_index(category.base)]
        kinds = [kind for (name, kind) in scan.taxonomy_domains if name == category.name]
        kinds.sort(key=lambda kind: (-scan.taxonomy_domains[(category.name, kind)], kind))
        for kind in kinds:
            domains = scan.taxonomy_domains[(category.name, kind)]
            sessions = scan.taxonomy_addresses.get((category.name, kind))
            rows.append(
                (
                    category.title,
                    kind,
                    domains,
                    Share.of(domains, base),
                    STAGE_SHORT[category.base],
                    sessions,
                )
            )
    return TableData(
        "taxonomy",
        "Misconfigurations by kind",
        (
            Column("category", False),
            Column("kind", False),
            Column("domains"),
            Column("share of base"),
            Column("base", False),
            Column("sessions"),
        ),
        tuple(rows),
    )


GROUP_STAGES: Final = (
    Stage.WITH_MX,
    Stage.WITH_RECORD,
    Stage.POLICY_VALID,
    Stage.MODE_TESTING_OR_ENFORCE,
    Stage.ENFORCE_READY,
)


def _group_columns(label: str) -> tuple[Column, ...]:
    return (
        Column(label, False),
        Column("domains"),
        *(Column(STAGE_SHORT[stage], key=stage.value.replace("-", "_")) for stage in GROUP_STAGES),
        Column("mode enforce"),
        Column("ready share"),
        Column("DANE all pass"),
    )


def _group_row(label: str, counts: GroupCounts) -> tuple[Cell, ...]:
    ready = counts.funnel[_stage_index(Stage.ENFORCE_READY)]
    return (
        label,
        counts.domains,
        *(counts.funnel[_stage_index(stage)] for stage in GROUP_STAGES),
        counts.beside["mode-enforce"],
        Share.of(ready, counts.domains),
        dane if (dane := beside_count(counts, "dane-all-pass")) is not None else NOT_MEASURED,
    )


def top_groups(groups: dict[str, GroupCounts], top: int) -> list[tuple[str, GroupCounts]]:
    """The `top` largest groups by domains (ties by name), then one row for all the others."""
    ordered = sorted(groups.items(), key=lambda item: (-item[1].domains, item[0]))
    shown = ordered[:top]
    rest = ordered[top:]
    if rest:
        others = GroupCounts()
        for _, counts in rest:
            others.merge(counts)
        shown.append((f"{OTHER_GROUPS} ({len(rest)})", others))
    return shown


def group_table(
    name: str, title: str, label: str, groups: Iterable[tuple[str, GroupCounts]]
) -> TableData:
    return TableData(
        name, title, _group_columns(label), tuple(_group_row(key, counts) for key, counts in groups)
    )


def rank_groups(scan: ScanStatistics) -> list[tuple[str, GroupCounts]]:
    """The rank buckets the ranks present make different, smallest first."""
    return [
        (bucket, scan.ranks[bucket])
        for bucket in shown_buckets(scan.highest_rank)
        if bucket in scan.ranks
    ]


def over_time_table(statistics: Statistics) -> TableData:
    rows: list[tuple[Cell, ...]] = []
    for scan in statistics.scans:
        ready = scan.total.funnel[_stage_index(Stage.ENFORCE_READY)]
        rows.append(
            (scan.date, len(scan.files), *scan.total.funnel, Share.of(ready, scan.total.domains))
        )
    return TableData(
        "over_time",
        "Over time: the funnel per scan date",
        (
            Column("scan date", False),
            Column("files"),
            *(Column(test.short, key=test.stage.value.replace("-", "_")) for test in FUNNEL),
            Column("ready share"),
        ),
        tuple(rows),
    )


def skipped_table(statistics: Statistics) -> TableData:
    skipped = statistics.skipped
    rows: list[tuple[Cell, ...]] = [
        ("error lines (could not scan)", statistics.error_lines),
        ("superseded (a later line of the same domain and date counts)", statistics.superseded),
        ("not JSON", skipped.not_json),
        ("foreign (no result line)", skipped.foreign),
    ]
    rows += [
        (f"schema_version {version}", count)
        for version, count in sorted(skipped.unknown_versions.items())
    ]
    return TableData(
        "skipped", "Lines skipped", (Column("why", False), Column("lines")), tuple(rows)
    )


def statistics_tables(statistics: Statistics, *, top: int = DEFAULT_TOP) -> list[TableData]:
    """Every table of `scanner stats`, in order; the breakdowns are of the latest scan date."""
    scan = statistics.latest
    tables = [
        funnel_table(scan),
        beside_table(scan),
        taxonomy_table(scan),
        group_table(
            "providers", f"By MX provider (top {top})", "provider", top_groups(scan.providers, top)
        ),
        group_table("tlds", f"By TLD (top {top})", "TLD", top_groups(scan.tlds, top)),
    ]
    if scan.ranked:
        tables.append(
            group_table("ranks", "By rank bucket (cumulative)", "bucket", rank_groups(scan))
        )
    if len(statistics.scans) > 1:
        tables.append(over_time_table(statistics))
    tables.append(skipped_table(statistics))
    return tables


# ---------------------------------------------------------------- JSON


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def _group_json(name: str, counts: GroupCounts) -> dict[str, object]:
    return {
        "name": name,
        "domains": counts.domains,
        "funnel": {stage.value: counts.funnel[index] for index, stage in enumerate(STAGES)},
        "beside": {measure.name: beside_count(counts, measure.name) for measure in BESIDE},
    }


def _scan_json(scan: ScanStatistics) -> dict[str, object]:
    return {
        "date": scan.date,
        "files": list(scan.files),
        **_group_json("all", scan.total),
        "error_lines": scan.error_lines,
    }


def statistics_json(
    statistics: Statistics, problems: Sequence[Problem], *, top: int = DEFAULT_TOP
) -> dict[str, object]:
    scan = statistics.latest
    counts = scan.total.funnel
    skipped = statistics.skipped
    taxonomy: list[dict[str, object]] = []
    for category in CATEGORIES:
        base = counts[_stage_index(category.base)]
        kinds = sorted(
            (kind for (name, kind) in scan.taxonomy_domains if name == category.name),
            key=lambda kind: (-scan.taxonomy_domains[(category.name, kind)], kind),
        )
        for kind in kinds:
            domains = scan.taxonomy_domains[(category.name, kind)]
            taxonomy.append(
                {
                    "category": category.name,
                    "kind": kind,
                    "unit": category.unit.value,
                    "base": category.base.value,
                    "domains": domains,
                    "share_of_base": _share(domains, base),
                    "sessions": scan.taxonomy_addresses.get((category.name, kind)),
                }
            )
    return {
        "scan_date": scan.date,
        "files": [
            {
                "path": entry.label,
                "scan_date": entry.metadata.scan_date.isoformat() if entry.metadata else None,
                "vantage": entry.metadata.vantage if entry.metadata else None,
                "input_list": entry.metadata.input.name
                if entry.metadata and entry.metadata.input
                else None,
            }
            for entry in statistics.files
        ],
        "domains": counts[0],
        "funnel": [
            {
                "stage": test.stage.value,
                "domains": counts[index],
                "share_of_previous": _share(
                    counts[index], counts[index - 1] if index else counts[0]
                ),
                "share_of_domains": _share(counts[index], counts[0]),
            }
            for index, test in enumerate(FUNNEL)
        ],
        "beside": {measure.name: beside_count(scan.total, measure.name) for measure in BESIDE},
        "taxonomy": taxonomy,
        "providers": [_group_json(name, c) for name, c in top_groups(scan.providers, top)],
        "tlds": [_group_json(name, c) for name, c in top_groups(scan.tlds, top)],
        "rank_buckets": [_group_json(name, c) for name, c in rank_groups(scan)],
        "over_time": [_scan_json(each) for each in statistics.scans],
        "skipped": {
            "error_lines": statistics.error_lines,
            "superseded_lines": statistics.superseded,
            "superseded_by_file": {
                label: count
                for scan in statistics.scans
                for label, count in sorted(scan.overlap.by_file.items())
            },
            "not_json": skipped.not_json,
            "foreign": skipped.foreign,
            "unknown_schema_versions": dict(sorted(skipped.unknown_versions.items())),
            "notes": list(skipped.notes),
        },
        "problems": [{"severity": p.severity.value, "text": p.text} for p in problems],
    }
