"""`scanner diff --vantage A.jsonl B.jsonl ...`: one MX address seen from several vantages.

A middlebox on one network path (an SMTP-inspecting firewall, a provider that strips
STARTTLS) shows up as the same (MX host, address) answering differently depending on
where the scan comes from. Files are grouped by the vantage their sidecar names;
several files of one vantage are several scans from it.

Pass one reads every file and keeps, per file, the `Signature` of every tested
(MX host, address): STARTTLS status, leaf certificate (SHA-256) and TLS version.
Not-testable addresses are left out: a timeout says nothing about the path. A pair
seen by at least two vantages differs when some observation from one vantage differs
from some observation from another. It is `path-dependent` only when every vantage
that saw it saw it at least twice and always the same way, and the vantages disagree:
the difference repeats, scan after scan. Otherwise it `differs-once` (a flapping
server, a certificate renewed between scans). Pass two reads the files again for the
transcripts of the differing pairs only, so memory holds signatures, not dialogues.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import combinations
from pathlib import Path

from scanner.research.lines import ScanLine, SkipTally, read_results

Pair = tuple[str, str]  # (MX host, address)


@dataclass(frozen=True, slots=True)
class Signature:
    starttls: str | None
    certificate: str | None
    tls_version: str | None


SIGNATURE_FIELDS = (
    ("STARTTLS", "starttls"),
    ("certificate", "certificate"),
    ("TLS version", "tls_version"),
)


class Flag(StrEnum):
    PATH_DEPENDENT = "path-dependent"
    DIFFERS_ONCE = "differs-once"


@dataclass(frozen=True, slots=True)
class VantageScan:
    vantage: str
    path: Path


@dataclass(frozen=True, slots=True)
class Observation:
    scan: VantageScan
    signature: Signature


@dataclass(frozen=True, slots=True)
class Transcript:
    scan: VantageScan
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PairDifference:
    mx: str
    ip: str
    fields: tuple[str, ...]  # the SIGNATURE_FIELDS titles that differ across vantages
    flag: Flag
    observations: tuple[Observation, ...]  # in file order
    transcripts: tuple[Transcript, ...] = ()  # one per scan that tested the pair


def _tested_pairs(line: ScanLine) -> Iterator[tuple[Pair, Signature, tuple[str, ...]]]:
    for host in line.hosts:
        for address in host.addresses:
            if address.tested:
                signature = Signature(
                    address.starttls,
                    address.certificate.sha256 if address.certificate else None,
                    address.tls_version,
                )
                yield (host.hostname, address.ip), signature, address.transcript


def scan_signatures(path: Path, tally: SkipTally) -> dict[Pair, Signature]:
    """The first tested observation of every (MX host, address) in one file."""
    found: dict[Pair, Signature] = {}
    for line in read_results(path, tally):
        for pair, signature, _ in _tested_pairs(line):
            found.setdefault(pair, signature)
    return found


def differing_fields(first: Signature, second: Signature) -> set[str]:
    return {
        title for title, name in SIGNATURE_FIELDS if getattr(first, name) != getattr(second, name)
    }


def judge(observations: Sequence[Observation]) -> tuple[tuple[str, ...], Flag] | None:
    """The differing fields and the flag of one pair's observations; None when they agree."""
    by_vantage: dict[str, list[Signature]] = {}
    for observation in observations:
        by_vantage.setdefault(observation.scan.vantage, []).append(observation.signature)
    if len(by_vantage) < 2:
        return None
    fields: set[str] = set()
    for (_, first), (_, second) in combinations(by_vantage.items(), 2):
        for a in set(first):
            for b in set(second):
                fields |= differing_fields(a, b)
    if not fields:
        return None
    stable = all(len(seen) >= 2 and len(set(seen)) == 1 for seen in by_vantage.values())
    disagree = len({seen[0] for seen in by_vantage.values()}) > 1
    flag = Flag.PATH_DEPENDENT if stable and disagree else Flag.DIFFERS_ONCE
    ordered = tuple(title for title, _ in SIGNATURE_FIELDS if title in fields)
    return ordered, flag


def compare_vantages(scans: Sequence[VantageScan], tally: SkipTally) -> list[PairDifference]:
    """Every (MX host, address) that differs across vantages, with the transcripts."""
    observed: dict[Pair, list[Observation]] = {}
    for scan in scans:
        for pair, signature in scan_signatures(scan.path, tally).items():
            observed.setdefault(pair, []).append(Observation(scan, signature))
    judged: dict[Pair, tuple[tuple[str, ...], Flag]] = {}
    for pair, observations in observed.items():
        verdict = judge(observations)
        if verdict is not None:
            judged[pair] = verdict
    transcripts: dict[Pair, list[Transcript]] = {pair: [] for pair in judged}
    if judged:
        ignored = SkipTally()  # the first pass counted what is skipped
        for scan in scans:
            seen: set[Pair] = set()
            for line in read_results(scan.path, ignored):
                for pair, _, transcript in _tested_pairs(line):
                    if pair in judged and pair not in seen:
                        seen.add(pair)
                        transcripts[pair].append(Transcript(scan, transcript))
    return [
        PairDifference(
            mx=pair[0],
            ip=pair[1],
            fields=judged[pair][0],
            flag=judged[pair][1],
            observations=tuple(observed[pair]),
            transcripts=tuple(transcripts[pair]),
        )
        for pair in sorted(judged)
    ]


def signature_text(signature: Signature) -> str:
    certificate = (signature.certificate or "none")[:12]
    return f"{signature.starttls or '-'}, {signature.tls_version or 'no TLS'}, cert {certificate}"
