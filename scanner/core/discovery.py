"""From DNS answers to what a domain publishes: its `_mta-sts` and `_smtp._tls` records,
and the standby hosts its policy names (docs/architecture.md#data-flow).

Pure: takes the resolver's typed answers and parsed policies, returns records or the
reason there is none, in words an operator can act on.
"""

from __future__ import annotations

from collections.abc import Sequence

from scanner.core.codes import RecordCode
from scanner.core.sts import select_sts_record
from scanner.core.tlsrpt_record import select_tlsrpt_record
from scanner.models import DnsStatus, Policy, RecordError, StsRecord, TlsRptRecord, TxtAnswer


def txt_problem(answer: TxtAnswer, what: str) -> RecordError | None:
    """Why a TXT lookup gave no records to choose from, or None when it did."""
    if answer.status is DnsStatus.ANSWER:
        return None
    if answer.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA):
        return RecordError(RecordCode.NO_RECORD, f"no {what} TXT record ({answer.status.value})")
    return RecordError(
        RecordCode.LOOKUP_FAILED,
        f"{what} TXT lookup failed ({answer.status.value}: {answer.detail})",
    )


def sts_record_from(answer: TxtAnswer) -> tuple[StsRecord | None, RecordError | None]:
    """RFC 8461 §3.1: the usable `_mta-sts` record, or None and the reason there is none."""
    problem = txt_problem(answer, "_mta-sts")
    if problem is not None:
        return None, problem
    selected = select_sts_record(answer.records)
    if isinstance(selected, StsRecord):
        return selected, None
    return None, RecordError(selected.code, selected.reason)


def tlsrpt_record_from(answer: TxtAnswer) -> tuple[TlsRptRecord | None, RecordError | None]:
    """RFC 8460 §3: the usable `_smtp._tls` record, or None and the reason there is none."""
    problem = txt_problem(answer, "_smtp._tls")
    if problem is not None:
        return None, problem
    selected = select_tlsrpt_record(answer.records)
    if isinstance(selected, TlsRptRecord):
        return selected, None
    return None, RecordError(selected.code, selected.reason)


def policy_only_hosts(policy: Policy, mx_hosts: Sequence[str]) -> list[str]:
    """Exact (non-wildcard) `mx:` names of the policy that are not among the MX hosts.

    docs/output.md#policy-only-hosts: they are probed too, so an operator sees whether a
    standby MX is ready, but they never block and never count in the report.
    """
    known = {host.lower().rstrip(".") for host in mx_hosts}
    names = (pattern.lower().rstrip(".") for pattern in policy.mx if not pattern.startswith("*"))
    return list(dict.fromkeys(name for name in names if name not in known))
