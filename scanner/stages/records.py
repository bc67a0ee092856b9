"""The files of a staged scan in its shared directory: their names, records and completeness.

Each stage shard writes its files under a hidden temporary name and renames them when
it has finished, so a file under its own name is complete, and a shard that failed or
was killed leaves no file a later stage could take for a whole one. A probe shard that
stops on purpose (its network blocks port 25) writes `probe-K-of-N.failed` with the
reason instead. Files are compressed as results files are (`scanner.files`): gzip
by default, `.zst` or plain on request; readers take any of the three.

| file | written by | each line after the header |
|---|---|---|
| `discover-K-of-N.facts.jsonl.gz` | discover shard K | `Discovered`: a domain's facts, probes left open |
| `discover-K-of-N.targets.jsonl.gz` | discover shard K | `Target`: (MX host, address, port) and the host's TLSA facts |
| `probe-K-of-M.jsonl.gz` | probe shard K | `Probed`: the outcome of one target |

The first line of each file is its `Header`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO, TypeVar

from scanner.core.inputs import Shard, domain_digest
from scanner.core.result import ScanError
from scanner.files import Compression, open_results, text_lines
from scanner.models import (
    AddressStatus,
    DomainFacts,
    HostDane,
    Interruption,
    InterruptionKind,
    ProbeOutcome,
)
from scanner.output import dumps_line
from scanner.stages.codec import Undecodable, decode, encode

if TYPE_CHECKING:
    from collections.abc import Callable

_T = TypeVar("_T")

# The version of the stage files' records: stages of one scanner version read each
# other's files; another version's files are refused.
STAGE_FORMAT: Final = 1

SUFFIXES: Final = {
    Compression.GZIP: ".jsonl.gz",
    Compression.ZSTD: ".jsonl.zst",
    Compression.NONE: ".jsonl",
}

# What discover writes in place of a probe: the probe stage's outcome replaces it.
LEFT_TO_PROBE: Final = Interruption(InterruptionKind.NOT_PROBED, None, "left to the probe stage")


class StageRefusal(Exception):
    """A stage cannot go on: its inputs are missing, incomplete or of another run."""


@dataclass(frozen=True, slots=True)
class Header:
    """The first line of every stage file."""

    stage: str  # "discover-facts", "discover-targets" or "probe"
    shard: int
    count: int
    sources: int = 0  # the discover shards a probe shard read
    format: int = STAGE_FORMAT


@dataclass(frozen=True, slots=True)
class Discovered:
    """One domain as discover saw it: facts whose admitted probes are `LEFT_TO_PROBE`."""

    domain: str
    scanned_at: datetime
    finished_at: datetime
    port: int  # the SMTP port of its targets
    facts: DomainFacts | None = None
    error: ScanError | None = None
    rank: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """One (MX host, address, port) to probe, with the TLSA facts of its host."""

    hostname: str
    ip: str
    port: int
    dane: HostDane | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.hostname, self.ip, self.port)


@dataclass(frozen=True, slots=True)
class Probed:
    """The outcome of one target, as a probe shard observed it."""

    hostname: str
    ip: str
    port: int
    outcome: ProbeOutcome

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.hostname, self.ip, self.port)


def left_to_probe(hostname: str, ip: str) -> ProbeOutcome:
    return ProbeOutcome(hostname, ip, AddressStatus.NOT_TESTABLE, interruption=LEFT_TO_PROBE)


def is_left_to_probe(outcome: ProbeOutcome) -> bool:
    return outcome.status is AddressStatus.NOT_TESTABLE and outcome.interruption == LEFT_TO_PROBE


def address_shard(ip: str, count: int) -> int:
    """The probe shard of an address: a stable hash, so each address has exactly one."""
    return domain_digest(ip) % count


def facts_name(shard: Shard, compression: Compression) -> str:
    return f"discover-{shard.index}-of-{shard.count}.facts{SUFFIXES[compression]}"


def targets_name(shard: Shard, compression: Compression) -> str:
    return f"discover-{shard.index}-of-{shard.count}.targets{SUFFIXES[compression]}"


def probe_name(shard: Shard, compression: Compression) -> str:
    return f"probe-{shard.index}-of-{shard.count}{SUFFIXES[compression]}"


def failed_name(shard: Shard) -> str:
    return f"probe-{shard.index}-of-{shard.count}.failed"


_NAME = re.compile(
    r"^(?P<stage>discover|probe)-(?P<index>\d+)-of-(?P<count>\d+)(?P<part>\.facts|\.targets)?"
    r"\.jsonl(\.gz|\.zst)?$"
)


def shard_files(directory: Path, stage: str, part: str = "") -> dict[int, dict[int, Path]]:
    """The complete files of one stage (and part) in `directory`: count → index → path."""
    found: dict[int, dict[int, Path]] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise StageRefusal(f"cannot read {directory}: {exc.strerror or exc}") from None
    for name in names:
        match = _NAME.match(name)
        if match is None or match["stage"] != stage or (match["part"] or "") != part:
            continue
        index, count = int(match["index"]), int(match["count"])
        if 0 <= index < count:
            found.setdefault(count, {})[index] = directory / name
    return found


def complete_set(directory: Path, stage: str, part: str, what: str) -> tuple[int, list[Path]]:
    """Every shard's file of one stage, from one shard count: (the count, the files by index).

    `StageRefusal` names what is missing: a shard that was not run, still runs or failed
    (with a probe shard's reason, when it wrote one).
    """
    found = shard_files(directory, stage, part)
    if not found:
        raise StageRefusal(f"{directory} holds no {what} files: run that stage first")
    if len(found) > 1:
        counts = ", ".join(str(count) for count in sorted(found))
        raise StageRefusal(
            f"{directory} holds {what} files of several shard counts ({counts}): one run's "
            "files only, please"
        )
    ((count, files),) = found.items()
    missing = [index for index in range(count) if index not in files]
    if missing:
        reasons = []
        for index in missing[:5]:
            failed = directory / failed_name(Shard(index, count))
            words = f"shard {index}/{count}"
            if stage == "probe" and failed.exists():
                with contextlib.suppress(OSError):
                    words += f" failed: {failed.read_text(encoding='utf-8').strip()[:500]}"
            reasons.append(words)
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise StageRefusal(
            f"{directory} lacks the {what} of {len(missing)} of {count} shards "
            f"({'; '.join(reasons)}{more}): a shard that was not run, still runs or failed "
            "leaves no file; run it (again), then this stage"
        )
    return count, [files[index] for index in range(count)]


def read_records(
    path: Path,
    kind: type[_T],
    header: Callable[[Header], str | None],
    wanted: Callable[[dict[str, object]], bool] | None = None,
) -> Iterator[_T]:
    """The records of a stage file after its header; `header` says what is wrong with it.

    `wanted`, when given, sees each record as JSON first: only those it takes are decoded.
    """
    for number, data in raw_records(path, header):
        if wanted is not None and not wanted(data):
            continue
        try:
            yield decode(kind, data)
        except Undecodable as exc:
            raise StageRefusal(f"{path} line {number} is damaged: {exc}") from None


def raw_records(
    path: Path, header: Callable[[Header], str | None]
) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, the record as JSON) for each record of a stage file after its header."""
    lines = text_lines(path)
    try:
        first = next(lines, None)
        if first is None:
            raise StageRefusal(f"{path} is empty")
        try:
            head = decode(Header, json.loads(first))
        except (ValueError, Undecodable) as exc:
            raise StageRefusal(f"{path} has no stage header: {exc}") from None
        if head.format != STAGE_FORMAT:
            raise StageRefusal(
                f"{path} holds stage records of format {head.format}, this scanner reads "
                f"{STAGE_FORMAT}: run every stage with one scanner version"
            )
        problem = header(head)
        if problem is not None:
            raise StageRefusal(f"{path}: {problem}")
        for number, line in enumerate(lines, 2):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise StageRefusal(f"{path} line {number} is damaged: {exc}") from None
            if not isinstance(data, dict):
                raise StageRefusal(f"{path} line {number} is damaged: not an object")
            yield number, data
    except OSError as exc:
        raise StageRefusal(f"cannot read {path}: {exc.strerror or exc}") from None


class StageWriter:
    """A stage file (or the verdict's results file, `header` None) written under a hidden
    name and renamed when `commit` is called."""

    def __init__(self, path: Path, header: Header | None) -> None:
        self.path = path
        self._partial = path.with_name(f".partial-{path.name}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle: TextIO = open_results(self._partial, "w")
        except OSError as exc:
            raise StageRefusal(f"cannot write {path}: {exc.strerror or exc}") from None
        self.records = 0
        if header is not None:
            self.write(header)
            self.records = 0

    def write(self, record: object) -> None:
        self._handle.write(dumps_line(encode(record)) + "\n")
        self._handle.flush()
        self.records += 1

    def write_line(self, line: str) -> None:
        self._handle.write(line + "\n")
        self._handle.flush()
        self.records += 1

    def commit(self) -> None:
        self._handle.close()
        os.replace(self._partial, self.path)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()
        with contextlib.suppress(OSError):
            self._partial.unlink()
