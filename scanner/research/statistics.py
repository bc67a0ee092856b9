"""Counting over result lines: funnel, beside measures, taxonomy and breakdowns, per scan date.

`StatisticsBuilder` takes lines one at a time and keeps counters only, so memory grows
with the number of providers and TLDs, not with the number of lines. Error lines are
counted as skipped (they say nothing about a domain's mail), as the reader counts
lines that are not JSON, foreign lines and lines of an unknown schema version.

Files are grouped by scan date: the date the sidecar says the scan started, else the
date of the file's first line. Files of one date are counted together (the shards of
one scan); several dates give the same measures per date (`Statistics.scans`), and
the other views show the latest date. Within a date a domain counts once: its latest
line (`StatisticsBuilder`), the others reported as overlap.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scanner.research.groups import mx_provider, rank_buckets, tld
from scanner.research.lines import ScanLine, SkipTally, classify_record, read_results, scan_line
from scanner.research.measures import BESIDE, STAGES, stages_reached
from scanner.research.measures import reached as reached_stage
from scanner.research.metadata import (
    Comparison,
    FileMetadata,
    Problem,
    missing_metadata,
    rule_problems,
)
from scanner.research.taxonomy import CATEGORIES, Unit

UNKNOWN_DATE = "unknown"


@dataclass(slots=True)
class GroupCounts:
    """The funnel and beside measures of one group of domains."""

    funnel: list[int] = field(default_factory=lambda: [0] * len(STAGES))
    beside: Counter[str] = field(default_factory=Counter)

    @property
    def domains(self) -> int:
        return self.funnel[0]

    def add(self, reached: int, hits: Iterable[str]) -> None:
        for index in range(reached):
            self.funnel[index] += 1
        self.beside.update(hits)

    def merge(self, other: GroupCounts) -> None:
        for index, value in enumerate(other.funnel):
            self.funnel[index] += value
        self.beside.update(other.beside)


@dataclass(slots=True)
class Overlap:
    """Lines left out because a later line of the same domain and scan date counts instead.

    `by_file` counts them per file: concatenated files, two full scans of one list on
    one day, or a shard beside an unsharded scan all show here.
    """

    superseded: int = 0
    by_file: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class ScanStatistics:
    """Everything counted over the lines of one scan date."""

    date: str
    files: list[str] = field(default_factory=list)
    total: GroupCounts = field(default_factory=GroupCounts)
    # (category, kind) → domains with at least one such problem / sessions with it
    taxonomy_domains: Counter[tuple[str, str]] = field(default_factory=Counter)
    taxonomy_addresses: Counter[tuple[str, str]] = field(default_factory=Counter)
    providers: dict[str, GroupCounts] = field(default_factory=dict)
    tlds: dict[str, GroupCounts] = field(default_factory=dict)
    ranks: dict[str, GroupCounts] = field(default_factory=dict)
    error_lines: int = 0
    ranked: int = 0
    highest_rank: int = 0
    overlap: Overlap = field(default_factory=Overlap)

    def add(self, line: ScanLine) -> None:
        if line.error is not None:
            self.error_lines += 1
            return
        reached = stages_reached(line)
        hits = [measure.name for measure in BESIDE if measure.passes(line, reached)]
        self.total.add(reached, hits)
        for category in CATEGORIES:
            if not reached_stage(reached, category.base):
                continue  # a category counts among the domains of its base stage only
            addresses: dict[str, set[str]] = {}
            for observation in category.observe(line):
                seen = addresses.setdefault(observation.kind, set())
                if observation.address is not None:
                    seen.add(observation.address)
            for kind, seen in addresses.items():
                self.taxonomy_domains[(category.name, kind)] += 1
                if category.unit is Unit.ADDRESS and seen:  # a domain-wide one has no session
                    self.taxonomy_addresses[(category.name, kind)] += len(seen)
        self.providers.setdefault(mx_provider(line), GroupCounts()).add(reached, hits)
        self.tlds.setdefault(tld(line.domain), GroupCounts()).add(reached, hits)
        buckets = rank_buckets(line.rank)
        if buckets:
            self.ranked += 1
            self.highest_rank = max(self.highest_rank, line.rank or 0)
        for bucket in buckets:
            self.ranks.setdefault(bucket, GroupCounts()).add(reached, hits)


@dataclass(frozen=True, slots=True)
class Statistics:
    """The statistics of every scan date, oldest first, and what reading skipped."""

    scans: tuple[ScanStatistics, ...]
    skipped: SkipTally
    files: tuple[FileMetadata, ...]

    @property
    def latest(self) -> ScanStatistics:
        return self.scans[-1] if self.scans else ScanStatistics(UNKNOWN_DATE)

    @property
    def error_lines(self) -> int:
        return sum(scan.error_lines for scan in self.scans)

    @property
    def superseded(self) -> int:
        """Lines left out for a later line of the same domain and date."""
        return sum(scan.overlap.superseded for scan in self.scans)


def _first_date(lines: Iterator[ScanLine]) -> tuple[str, list[ScanLine]]:
    """The date of the first line that has one, and the lines read to find it."""
    taken: list[ScanLine] = []
    for line in lines:
        taken.append(line)
        if line.scanned_at is not None:
            return line.scanned_at.date().isoformat(), taken
    return UNKNOWN_DATE, taken


# Where a line stands among the lines of its scan date: (its time, file, line number).
# Of a domain's lines, the greatest counts: the latest, the last written on a tie.
_Position = tuple[float, int, int]


@dataclass(slots=True)
class _Source:
    label: str
    scan_date: str | None  # from the sidecar; None: the first line's date
    read: Callable[[SkipTally], Iterable[ScanLine]]  # again for a second pass


class StatisticsBuilder:
    """Feed files (or lines) in; `result()` gives the `Statistics`.

    One invariant keeps counts honest: a domain counts once per scan date, its latest
    line wins (by `scanned_at`, then by file and line order), and the lines left out are
    reported per file (`Overlap`). Shards of one scan hold different domains and add up;
    the same list scanned twice on one day counts once.
    """

    def __init__(self) -> None:
        self.skipped = SkipTally()
        self._files: list[FileMetadata] = []
        self._sources: list[_Source] = []

    def add_lines(
        self,
        lines: Iterable[ScanLine],
        scan_date: str | None = None,
        *,
        source: str | None = None,
    ) -> None:
        """Count lines under `scan_date`, else under the first line's date."""
        kept = list(lines)
        self._sources.append(_Source(source or "(lines)", scan_date, lambda _: kept))

    def add_file(self, path: Path, file_metadata: FileMetadata) -> None:
        """Count a results file under the date its sidecar gives, else its first line's."""
        self._files.append(file_metadata)
        known = file_metadata.metadata
        scan_date = known.scan_date.isoformat() if known is not None else None
        self._sources.append(_Source(str(path), scan_date, lambda tally: read_results(path, tally)))

    def result(self) -> Statistics:
        """Count every source: one pass, and a second only when some domain has two lines.

        ResultFileError when a file cannot be read.
        """
        winners: dict[str, dict[str, _Position]] = {}
        scans, duplicates = self._count(winners, None)
        if duplicates:
            scans, _ = self._count(winners, winners)
        ordered = tuple(scans[key] for key in sorted(scans))
        return Statistics(scans=ordered, skipped=self.skipped, files=tuple(self._files))

    def _count(
        self,
        winners: dict[str, dict[str, _Position]],
        only: Mapping[str, Mapping[str, _Position]] | None,
    ) -> tuple[dict[str, ScanStatistics], bool]:
        """Count each source's lines; with `only`, a line only where it is its domain's winner.

        Without `only`, `winners` is filled in and the result says whether a domain had
        several lines of one date.
        """
        scans: dict[str, ScanStatistics] = {}
        duplicates = False
        first_pass = only is None
        for number, source in enumerate(self._sources):
            # What reading skips is counted once, in the first pass.
            lines = iter(source.read(self.skipped if first_pass else SkipTally()))
            scan_date = source.scan_date
            head: list[ScanLine] = []
            if scan_date is None:
                scan_date, head = _first_date(lines)
            target = scans.setdefault(scan_date, ScanStatistics(scan_date))
            target.files.append(source.label)
            best = winners.setdefault(scan_date, {})
            for index, line in enumerate(itertools.chain(head, lines)):
                position = (
                    line.scanned_at.timestamp() if line.scanned_at is not None else float("-inf"),
                    number,
                    index,
                )
                if first_pass:
                    known = best.get(line.domain)
                    if known is not None:
                        duplicates = True
                    if known is None or position > known:
                        best[line.domain] = position
                    target.add(line)
                elif only is not None and only[scan_date][line.domain] == position:
                    target.add(line)
                else:
                    target.overlap.superseded += 1
                    target.overlap.by_file[source.label] += 1
        return scans, duplicates


def stats_problems(files: Iterable[FileMetadata]) -> list[Problem]:
    """Soundness of counting `files` together: per scan date, and across dates.

    Files of one date are one scan (`STATS_COMBINED`); several dates are a time
    series (`STATS_OVER_TIME`). Only sidecars give a date up front: files without
    one are compared unchecked (a warning each).
    """
    entries = list(files)
    by_date: dict[str, list[FileMetadata]] = {}
    for entry in entries:
        if entry.metadata is not None:
            by_date.setdefault(entry.metadata.scan_date.isoformat(), []).append(entry)
    problems = missing_metadata(entries)
    for group in by_date.values():
        if len(group) > 1:
            problems += rule_problems(Comparison.STATS_COMBINED, group)
    if len(by_date) > 1:
        problems += rule_problems(
            Comparison.STATS_OVER_TIME, [e for g in by_date.values() for e in g]
        )
    return problems


def adoption_statistics(records: Iterable[Mapping[str, object]]) -> Statistics:
    """Statistics over decoded result lines (from memory, not files), skipped ones counted."""
    builder = StatisticsBuilder()

    def known() -> Iterator[ScanLine]:
        for record in records:
            kind = classify_record(record)
            if isinstance(kind, int):
                builder.skipped.read += 1
                yield scan_line(record, kind)
            elif kind == "foreign":
                builder.skipped.foreign += 1
            else:
                builder.skipped.unknown_versions[kind] += 1

    builder.add_lines(known())
    return builder.result()
