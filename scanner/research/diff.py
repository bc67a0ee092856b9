"""`scanner diff OLD NEW`: what changed for each domain between two scans.

Each file is reduced to one `DomainSnapshot` per domain (the last line of a domain
wins): what the comparison needs and nothing more, no transcripts, so two large
files fit in memory. `domain_changes` compares two snapshots of a domain and yields
typed `Change`s, each worse, better or neutral:

- MTA-STS adopted (a usable `_mta-sts` record appears) or dropped (it goes);
- the policy breaks (a policy result type appears) or is repaired;
- the mode changes (down is worse: enforce → testing → none);
- the policy changes in meaning (mode, max_age, the set of mx patterns; not line
  endings, order or repeated patterns) while the record's id stays the same: a stale
  id. RFC 8461 §3.1: senders fetch a policy again only when the id changes, so those
  that cached the old one keep applying it. Worse. With a new id, a neutral change;
- the MX set changes and the policy no longer covers every new host: worse;
- per (MX host, address): new and fixed RFC 8460 result types and indicators;
- a certificate newly within 14 days of expiry at the new scan: worse;
- the domain became ready for `enforce` (better) or not ready (worse);
- a blocker code appears (worse) or goes (better), for lines that carry codes (schema 3);
- a session's DANE status changes: to `fail` or `bogus` is worse, from them better;
- domains only in one file, and domains that could not be scanned, neutral.

Domains are listed by rank where the lines carry one, then the worst first, then by
name in natural order (d2 before d10).

Exit status (docs/research.md#diff): 0 when nothing got worse, 1 when something did.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Final

from scanner.models import PolicyMode
from scanner.research.lines import Policy, ScanLine, SkipTally, read_results
from scanner.research.taxonomy import EXPIRY_WARNING

# RFC 8461 §5: what a mode asks of senders, weakest first.
MODE_STRENGTH: Final = {
    PolicyMode.NONE.value: 0,
    PolicyMode.TESTING.value: 1,
    PolicyMode.ENFORCE.value: 2,
}


class ChangeKind(StrEnum):
    MTA_STS_ADOPTED = "mta-sts-adopted"
    MTA_STS_DROPPED = "mta-sts-dropped"
    POLICY_BROKEN = "policy-broken"
    POLICY_REPAIRED = "policy-repaired"
    MODE_CHANGED = "mode-changed"
    STALE_POLICY_ID = "stale-policy-id"
    POLICY_CHANGED = "policy-changed"
    MX_NOT_COVERED = "mx-changed-not-covered"
    MX_CHANGED = "mx-changed"
    FAILURE_NEW = "failure-new"
    FAILURE_FIXED = "failure-fixed"
    INDICATOR_NEW = "indicator-new"
    INDICATOR_FIXED = "indicator-fixed"
    CERTIFICATE_EXPIRING = "certificate-expiring"
    DOMAIN_ADDED = "domain-added"
    DOMAIN_REMOVED = "domain-removed"
    SCAN_ERROR_NEW = "scan-error-new"
    SCAN_ERROR_GONE = "scan-error-gone"
    BECAME_READY = "became-ready"
    BECAME_NOT_READY = "became-not-ready"
    BLOCKER_NEW = "blocker-new"
    BLOCKER_FIXED = "blocker-fixed"
    DANE_CHANGED = "dane-changed"


class Direction(StrEnum):
    WORSE = "worse"
    BETTER = "better"
    NEUTRAL = "neutral"


@dataclass(frozen=True, slots=True)
class Change:
    domain: str
    kind: ChangeKind
    direction: Direction
    detail: str
    old: str | None = None
    new: str | None = None
    mx: str | None = None
    ip: str | None = None
    # The code the change concerns (a result type, an indicator, a blocker or a policy
    # code), when there is one.
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    tested: bool
    result_types: frozenset[str]
    certificate: str | None  # SHA-256 of the leaf
    not_after: datetime | None
    dane: str | None = None  # the session's DANE status, when DANE was looked into


@dataclass(frozen=True, slots=True)
class DomainSnapshot:
    domain: str
    scanned_at: datetime | None
    error: str | None
    sts_id: str | None
    policy: Policy | None
    policy_error: str | None  # the policy result type, when there is a record
    policy_error_detail: str | None
    mx_hosts: frozenset[str]  # MX hosts from DNS
    uncovered: frozenset[str]  # of those, the ones no policy pattern matches
    sessions: Mapping[tuple[str, str], Session]  # (MX host, address) of the MX hosts from DNS
    indicators: frozenset[tuple[str, str | None, str | None]]  # (code, mx, ip)
    rank: int | None = None
    enforce_ready: bool = False
    policy_error_code: str | None = None
    blocker_codes: frozenset[str] | None = None  # None: the line carries no codes


def snapshot(line: ScanLine) -> DomainSnapshot:
    hosts = line.dns_hosts
    sessions = {
        (host.hostname, address.ip): Session(
            tested=address.tested,
            result_types=frozenset(address.result_types),
            certificate=address.certificate.sha256 if address.certificate else None,
            not_after=address.certificate.not_after if address.certificate else None,
            dane=address.dane_status,
        )
        for host in hosts
        for address in host.addresses
    }
    return DomainSnapshot(
        domain=line.domain,
        scanned_at=line.scanned_at,
        error=line.error,
        sts_id=line.sts_id,
        policy=line.policy,
        policy_error=line.sts_error_type if line.sts_record is not None else None,
        policy_error_detail=line.sts_error_detail if line.sts_record is not None else None,
        mx_hosts=frozenset(host.hostname for host in hosts),
        uncovered=frozenset(host.hostname for host in hosts if host.in_policy is False),
        sessions=MappingProxyType(sessions),
        indicators=frozenset((i.code, i.mx, i.ip) for i in line.indicators),
        rank=line.rank,
        enforce_ready=line.enforce_ready,
        policy_error_code=line.sts_error_code if line.sts_record is not None else None,
        blocker_codes=frozenset(line.blocker_codes) if line.blocker_codes is not None else None,
    )


def load_snapshots(path: Path, tally: SkipTally) -> dict[str, DomainSnapshot]:
    """Each domain's snapshot; a domain with several lines keeps the last."""
    return {line.domain: snapshot(line) for line in read_results(path, tally)}


def policy_meaning(policy: Policy) -> tuple[str, int | None, frozenset[str]]:
    """What a policy asks of senders: mode, max_age, the set of mx patterns (case-folded)."""
    return policy.mode, policy.max_age, frozenset(pattern.lower() for pattern in policy.mx)


def _meaning_changes(old: Policy, new: Policy) -> list[str]:
    changes: list[str] = []
    if old.mode != new.mode:
        changes.append(f"mode {old.mode} → {new.mode}")
    if old.max_age != new.max_age:
        changes.append(f"max_age {old.max_age} → {new.max_age}")
    before, after = policy_meaning(old)[2], policy_meaning(new)[2]
    if before != after:
        added = ", ".join(sorted(after - before)) or "none"
        removed = ", ".join(sorted(before - after)) or "none"
        changes.append(f"mx patterns added: {added}; removed: {removed}")
    return changes


def _expiring(session: Session | None, scanned_at: datetime | None) -> bool:
    if session is None or not session.tested or session.not_after is None or scanned_at is None:
        return False
    return timedelta(0) <= session.not_after - scanned_at <= EXPIRY_WARNING


def _policy_changes(old: DomainSnapshot, new: DomainSnapshot) -> Iterator[Change]:
    domain = new.domain
    if old.sts_id is None and new.sts_id is not None:
        yield Change(
            domain,
            ChangeKind.MTA_STS_ADOPTED,
            Direction.BETTER,
            "a usable _mta-sts record appeared",
            None,
            new.sts_id,
        )
    elif old.sts_id is not None and new.sts_id is None:
        yield Change(
            domain,
            ChangeKind.MTA_STS_DROPPED,
            Direction.WORSE,
            "the usable _mta-sts record is gone",
            old.sts_id,
            None,
        )
    if new.policy_error is not None and old.policy_error is None:
        detail = f"{new.policy_error}: {new.policy_error_detail or ''}"
        yield Change(
            domain,
            ChangeKind.POLICY_BROKEN,
            Direction.WORSE,
            detail,
            None,
            new.policy_error,
            code=new.policy_error_code,
        )
    elif old.policy_error is not None and new.policy_error is None and new.sts_id is not None:
        yield Change(
            domain,
            ChangeKind.POLICY_REPAIRED,
            Direction.BETTER,
            f"{old.policy_error} is gone",
            old.policy_error,
            None,
        )
    if old.policy is None or new.policy is None:
        return
    if old.policy.mode != new.policy.mode:
        weaker = MODE_STRENGTH.get(new.policy.mode, -1) < MODE_STRENGTH.get(old.policy.mode, -1)
        direction = Direction.WORSE if weaker else Direction.BETTER
        yield Change(
            domain,
            ChangeKind.MODE_CHANGED,
            direction,
            "the policy mode changed",
            old.policy.mode,
            new.policy.mode,
        )
    changes = _meaning_changes(old.policy, new.policy)
    if not changes:
        return
    if old.sts_id == new.sts_id:
        detail = (
            f"the policy changed ({'; '.join(changes)}) but the _mta-sts id stayed {new.sts_id}: "
            "senders that cached the old policy keep it (RFC 8461 §3.1); change the id"
        )
        yield Change(
            domain, ChangeKind.STALE_POLICY_ID, Direction.WORSE, detail, old.sts_id, new.sts_id
        )
    else:
        detail = f"the policy changed ({'; '.join(changes)}) with a new id"
        yield Change(
            domain, ChangeKind.POLICY_CHANGED, Direction.NEUTRAL, detail, old.sts_id, new.sts_id
        )


def _mx_changes(old: DomainSnapshot, new: DomainSnapshot) -> Iterator[Change]:
    if old.mx_hosts == new.mx_hosts:
        return
    added = ", ".join(sorted(new.mx_hosts - old.mx_hosts)) or "none"
    removed = ", ".join(sorted(old.mx_hosts - new.mx_hosts)) or "none"
    newly = sorted(new.uncovered - old.uncovered)
    listed_old = ", ".join(sorted(old.mx_hosts)) or "none"
    listed_new = ", ".join(sorted(new.mx_hosts)) or "none"
    if new.policy is not None and newly:
        detail = (
            f"MX added: {added}; removed: {removed}; not covered by the policy: {', '.join(newly)}"
        )
        yield Change(
            new.domain, ChangeKind.MX_NOT_COVERED, Direction.WORSE, detail, listed_old, listed_new
        )
    else:
        detail = f"MX added: {added}; removed: {removed}"
        yield Change(
            new.domain, ChangeKind.MX_CHANGED, Direction.NEUTRAL, detail, listed_old, listed_new
        )


def _session_changes(old: DomainSnapshot, new: DomainSnapshot) -> Iterator[Change]:
    domain = new.domain
    for (mx, ip), session in sorted(new.sessions.items()):
        if not session.tested:
            continue
        before = old.sessions.get((mx, ip))
        compared = before is not None and before.tested
        previous = before.result_types if before is not None and before.tested else frozenset()
        note = "" if compared else " (not tested in the old scan)"
        for result_type in sorted(session.result_types - previous):
            yield Change(
                domain,
                ChangeKind.FAILURE_NEW,
                Direction.WORSE,
                f"{result_type}{note}",
                None,
                result_type,
                mx,
                ip,
                result_type,
            )
        if compared:
            for result_type in sorted(previous - session.result_types):
                yield Change(
                    domain,
                    ChangeKind.FAILURE_FIXED,
                    Direction.BETTER,
                    result_type,
                    result_type,
                    None,
                    mx,
                    ip,
                    result_type,
                )
        if _expiring(session, new.scanned_at) and not _expiring(before, old.scanned_at):
            expiry = session.not_after.strftime("%Y-%m-%d") if session.not_after else "?"
            detail = f"the certificate ({(session.certificate or '?')[:16]}…) expires on {expiry}, within 14 days of the scan"
            yield Change(
                domain,
                ChangeKind.CERTIFICATE_EXPIRING,
                Direction.WORSE,
                detail,
                None,
                expiry,
                mx,
                ip,
            )


def _comparable(snapshot_: DomainSnapshot, mx: str | None, ip: str | None) -> bool:
    """Indicators of a session count only when the session was tested; domain-wide ones always."""
    if mx is None or ip is None:
        return True
    session = snapshot_.sessions.get((mx, ip))
    return session is not None and session.tested


def _indicator_changes(old: DomainSnapshot, new: DomainSnapshot) -> Iterator[Change]:
    domain = new.domain
    for code, mx, ip in sorted(new.indicators - old.indicators, key=str):
        if _comparable(new, mx, ip):
            yield Change(
                domain, ChangeKind.INDICATOR_NEW, Direction.WORSE, code, None, code, mx, ip, code
            )
    for code, mx, ip in sorted(old.indicators - new.indicators, key=str):
        if _comparable(new, mx, ip) and _comparable(old, mx, ip):
            yield Change(
                domain, ChangeKind.INDICATOR_FIXED, Direction.BETTER, code, code, None, mx, ip, code
            )


def _readiness_changes(old: DomainSnapshot, new: DomainSnapshot) -> Iterator[Change]:
    """Readiness for `enforce` flipped; blocker codes that appeared or went (schema 3 both)."""
    domain = new.domain
    if new.enforce_ready and not old.enforce_ready:
        yield Change(
            domain, ChangeKind.BECAME_READY, Direction.BETTER, "now ready for mode enforce"
        )
    elif old.enforce_ready and not new.enforce_ready:
        yield Change(
            domain, ChangeKind.BECAME_NOT_READY, Direction.WORSE, "no longer ready for mode enforce"
        )
    if old.blocker_codes is None or new.blocker_codes is None:
        return
    for code in sorted(new.blocker_codes - old.blocker_codes):
        yield Change(domain, ChangeKind.BLOCKER_NEW, Direction.WORSE, code, None, code, code=code)
    for code in sorted(old.blocker_codes - new.blocker_codes):
        yield Change(
            domain, ChangeKind.BLOCKER_FIXED, Direction.BETTER, code, code, None, code=code
        )


# DANE statuses that make DANE senders fail or defer (docs/dane.md#statuses).
_DANE_FAILING: Final = frozenset({"fail", "bogus"})


def _dane_changes(old: DomainSnapshot, new: DomainSnapshot) -> Iterator[Change]:
    for (mx, ip), session in sorted(new.sessions.items()):
        before = old.sessions.get((mx, ip))
        if before is None or not session.tested or not before.tested:
            continue
        if before.dane is None or session.dane is None or before.dane == session.dane:
            continue
        if session.dane in _DANE_FAILING and before.dane not in _DANE_FAILING:
            direction = Direction.WORSE
        elif before.dane in _DANE_FAILING and session.dane not in _DANE_FAILING:
            direction = Direction.BETTER
        else:
            direction = Direction.NEUTRAL
        yield Change(
            new.domain,
            ChangeKind.DANE_CHANGED,
            direction,
            f"DANE {before.dane} → {session.dane}",
            before.dane,
            session.dane,
            mx,
            ip,
            session.dane,
        )


def domain_changes(old: DomainSnapshot | None, new: DomainSnapshot | None) -> list[Change]:
    """Every change of one domain from `old` to `new` (either may be missing)."""
    if old is None and new is not None:
        return [
            Change(new.domain, ChangeKind.DOMAIN_ADDED, Direction.NEUTRAL, "only in the new file")
        ]
    if new is None and old is not None:
        return [
            Change(old.domain, ChangeKind.DOMAIN_REMOVED, Direction.NEUTRAL, "only in the old file")
        ]
    if old is None or new is None:
        return []
    if old.error is not None or new.error is not None:
        if new.error is not None and old.error is None:
            return [
                Change(
                    new.domain,
                    ChangeKind.SCAN_ERROR_NEW,
                    Direction.NEUTRAL,
                    new.error,
                    None,
                    new.error,
                )
            ]
        if old.error is not None and new.error is None:
            return [
                Change(
                    new.domain,
                    ChangeKind.SCAN_ERROR_GONE,
                    Direction.NEUTRAL,
                    old.error,
                    old.error,
                    None,
                )
            ]
        return []
    return [
        *_readiness_changes(old, new),
        *_policy_changes(old, new),
        *_mx_changes(old, new),
        *_session_changes(old, new),
        *_dane_changes(old, new),
        *_indicator_changes(old, new),
    ]


def compare_snapshots(
    old: Mapping[str, DomainSnapshot], new: Mapping[str, DomainSnapshot]
) -> list[Change]:
    """Every change of every domain: by rank where there is one, the worst first, then by name."""
    per_domain = [
        (domain, domain_changes(old.get(domain), new.get(domain)))
        for domain in old.keys() | new.keys()
    ]

    def order(item: tuple[str, list[Change]]) -> tuple[float, int, list[str | int]]:
        domain, changes = item
        ranks = [s.rank for s in (new.get(domain), old.get(domain)) if s is not None and s.rank]
        worst = min((_SEVERITY[change.direction] for change in changes), default=3)
        return (ranks[0] if ranks else float("inf"), worst, natural_key(domain))

    return [change for _, changes in sorted(per_domain, key=order) for change in changes]


_SEVERITY: Final = {Direction.WORSE: 0, Direction.BETTER: 1, Direction.NEUTRAL: 2}


def natural_key(text: str) -> list[str | int]:
    """`d2` before `d10`: runs of digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"([0-9]+)", text)]


def change_summary(changes: Iterable[Change]) -> list[tuple[ChangeKind, Direction, int]]:
    """How many changes of each kind and direction, the worse first, then the most frequent."""
    counts = Counter((change.kind, change.direction) for change in changes)
    return sorted(
        ((kind, direction, count) for (kind, direction), count in counts.items()),
        key=lambda row: (_SEVERITY[row[1]], -row[2], row[0].value),
    )


def got_worse(changes: Iterable[Change]) -> bool:
    return any(change.direction is Direction.WORSE for change in changes)
