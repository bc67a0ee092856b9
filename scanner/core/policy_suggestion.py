"""A suggested MTA-STS policy and `_mta-sts` record for the MX set seen today.

Pure: MX names, the live policy and record, readiness and the time in; a
`Suggestion` out. `scanner.suggest` gathers the inputs with a fresh scan.

Rules (RFC 8461):

- §3.2 / §4.1 mx patterns: each MX host by its exact name. A `*.` wildcard is
  kept only where the live policy already has it, it matches at least one host
  seen today (one label, §4.1), and it is not directly under a public suffix
  (§10.4); the hosts it matches are then not listed again. Nothing seen is left
  uncovered, and no pattern matches none of the hosts seen.
- §5 mode: `testing` unless the domain is ready for `enforce` today.
- §3.2 max_age: "weeks or greater", at most 31557600. The live policy's max_age is
  kept unless another is asked for (changing it changes the policy's meaning and so
  needs a new id). Without a live policy, two weeks (1209600) in both modes: in
  `testing` a stale policy costs nothing but reports; when first switching to
  `enforce`, two weeks bounds how long senders hold a mistake (§3.2, §10.2 want it
  long enough to ride out a blocked refresh). Raise it towards 31557600 once enforce
  has run cleanly. Under a week is a warning in mode `enforce`, where a blocked
  refresh would let the policy lapse.
- RFC 8460 §3: a `_smtp._tls` record when the domain has none, so that senders report
  the failures a policy causes: `rua` the addresses given, else `mailto:tlsrpt@` the
  domain.
- §3.1 id: a new one (the UTC time, `YYYYMMDDhhmmss`) each time the policy
  changes; senders fetch the policy again only when the id changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from scanner.core.sts import (
    MAX_AGE_LIMIT,
    SHORT_MAX_AGE,
    STS_RECORD_VERSION,
    STS_VERSION,
    is_broad_pattern,
    mx_matches,
    mx_pattern_problem,
    normalise_host,
)
from scanner.core.tlsrpt_record import TLSRPT_RECORD_VERSION, rua_uri_problem
from scanner.models import Policy, PolicyMode

DEFAULT_MAX_AGE: Final = 1_209_600  # two weeks; see the module doc


@dataclass(frozen=True, slots=True)
class Suggestion:
    domain: str
    mode: PolicyMode
    max_age: int
    mx: tuple[str, ...]
    record_id: str
    changes: tuple[str, ...]  # how the live policy differs in meaning; empty when it does not
    warnings: tuple[str, ...]
    tlsrpt_rua: tuple[str, ...] = ()  # a `_smtp._tls` record to publish; () when there is one

    @property
    def policy_text(self) -> str:
        """The body for https://mta-sts.<domain>/.well-known/mta-sts.txt (LF line ends)."""
        lines = [f"version: {STS_VERSION}", f"mode: {self.mode.value}"]
        lines += [f"mx: {pattern}" for pattern in self.mx]
        lines.append(f"max_age: {self.max_age}")
        return "\n".join(lines) + "\n"

    @property
    def record(self) -> str:
        """The TXT record text at `_mta-sts.<domain>`."""
        return f"{STS_RECORD_VERSION}; id={self.record_id}"

    @property
    def tlsrpt_record(self) -> str | None:
        """The TXT record text at `_smtp._tls.<domain>` to publish, or None."""
        if not self.tlsrpt_rua:
            return None
        return f"{TLSRPT_RECORD_VERSION}; rua={','.join(self.tlsrpt_rua)}"


@dataclass(frozen=True, slots=True)
class SuggestionError:
    reason: str


def record_id_for(now: datetime, live_id: str | None) -> str:
    """A new id: the UTC time as 14 digits (RFC 8461 §3.1: 1 to 32 letters and digits),
    with a letter added when the live id happens to be the same."""
    new = now.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    return new + "a" if new == live_id else new


def choose_patterns(hosts: Sequence[str], live_patterns: Sequence[str] = ()) -> tuple[str, ...]:
    """mx patterns covering exactly `hosts` (see the module doc), sorted, without repeats."""
    names = sorted({normalise_host(host) for host in hosts if normalise_host(host)})
    wildcards = sorted(
        {
            pattern.lower()
            for pattern in live_patterns
            if pattern.startswith("*.")
            and mx_pattern_problem(pattern) is None
            and not is_broad_pattern(pattern)
            and any(mx_matches(pattern, name) for name in names)
        }
    )
    exact = [name for name in names if not any(mx_matches(pattern, name) for pattern in wildcards)]
    return tuple(sorted([*exact, *wildcards]))


def policy_changes(
    live: Policy, mode: PolicyMode, max_age: int, mx: Sequence[str]
) -> tuple[str, ...]:
    """What differs in meaning between the live policy and (mode, max_age, mx)."""
    changes: list[str] = []
    if live.mode is not mode:
        changes.append(f"mode {live.mode.value} → {mode.value}")
    if live.max_age != max_age:
        changes.append(f"max_age {live.max_age} → {max_age}")
    old = {pattern.lower() for pattern in live.mx}
    new = {pattern.lower() for pattern in mx}
    if old != new:
        added = ", ".join(sorted(new - old)) or "none"
        removed = ", ".join(sorted(old - new)) or "none"
        changes.append(f"mx patterns added: {added}; removed: {removed}")
    return tuple(changes)


def suggest_policy(
    domain: str,
    mx_hosts: Sequence[str],
    *,
    ready: bool,
    now: datetime,
    live_policy: Policy | None = None,
    live_id: str | None = None,
    max_age: int | None = None,
    tlsrpt_missing: bool = False,
    rua: Sequence[str] = (),
) -> Suggestion | SuggestionError:
    """The policy and record that would be valid for `mx_hosts` today (see the module doc).

    With `tlsrpt_missing`, a `_smtp._tls` record too: `rua` (checked as RFC 8460 §3 URIs),
    else `mailto:tlsrpt@<domain>`.
    """
    if not mx_hosts:
        return SuggestionError(f"{domain} has no MX hosts to name in a policy")
    bad = [host for host in mx_hosts if mx_pattern_problem(normalise_host(host)) is not None]
    if bad:
        return SuggestionError(
            f"MX host {bad[0]!r} is not a name an mx pattern can hold: "
            f"{mx_pattern_problem(normalise_host(bad[0]))}"
        )
    if max_age is not None:
        age = max_age
    else:
        age = live_policy.max_age if live_policy is not None else DEFAULT_MAX_AGE
    if not 1 <= age <= MAX_AGE_LIMIT:
        return SuggestionError(f"max_age must be 1 to {MAX_AGE_LIMIT} (RFC 8461 §3.2), not {age}")
    for uri in rua:
        if (problem := rua_uri_problem(uri)) is not None:
            return SuggestionError(f"--rua {uri!r}: {problem}")
    mode = PolicyMode.ENFORCE if ready else PolicyMode.TESTING
    mx = choose_patterns(mx_hosts, live_policy.mx if live_policy is not None else ())
    warnings: list[str] = []
    if age < SHORT_MAX_AGE and mode is PolicyMode.ENFORCE:
        warnings.append(
            f"max_age {age} is under one week; RFC 8461 §3.2 expects weeks or more, and in "
            "mode enforce a refresh that fails for longer lets the policy lapse"
        )
    changes: tuple[str, ...] = ()
    if live_policy is not None:
        changes = policy_changes(live_policy, mode, age, mx)
        if changes and live_id is not None:
            warnings.append(
                f"the live policy differs in meaning ({'; '.join(changes)}) and senders refresh "
                f"their cached policy only when the id changes: publish the new policy first, "
                f"then the record with the new id ({live_id} → the one below) (RFC 8461 §3.1, §3.3)"
            )
    if not ready:
        warnings.append(
            "mode testing: the domain is not ready for enforce today (see `scanner check`)"
        )
    return Suggestion(
        domain=domain,
        mode=mode,
        max_age=age,
        mx=mx,
        record_id=record_id_for(now, live_id),
        changes=changes,
        warnings=tuple(warnings),
        tlsrpt_rua=(tuple(rua) or (f"mailto:tlsrpt@{domain}",)) if tlsrpt_missing else (),
    )
