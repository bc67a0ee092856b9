"""The adoption funnel: stages a domain passes, each conditional on every stage before it.

`FUNNEL` is the ordered table of stages and their tests. `stages_reached` runs the
tests in order and stops at the first that fails, so a domain counts in a stage only
when it passed every earlier one: every stage's count is at most the one before it,
by construction. `BESIDE` holds the measures shown next to the funnel (null MX,
`_mta-sts` without any MX, the policy modes, TLS-RPT), each a test over the line and
the stages it reached.

Definitions (docs/research.md#the-adoption-funnel):

- with MX: MX records naming at least one host, or the implicit MX of RFC 5321 §5.1
  (no MX records, an address); a null MX (RFC 7505, `0 .`) never counts, even
  beside other records;
- with `_mta-sts` record: a usable `v=STSv1` record, or something published there
  that was meant as one (several records, an invalid one, a near miss);
- record valid: the usable record of RFC 8461 §3.1;
- policy fetched: the policy was served over valid HTTPS with a 200 and
  `text/plain` (no `sts-policy-fetch-error`, no `sts-webpki-invalid`, no wrong
  Content-Type);
- policy valid: it parsed (RFC 8461 §3.2);
- mode testing or enforce: the policy asks senders to do something (§5);
- enforce-ready: the scanner's readiness verdict (docs/output.md#readiness).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from scanner.core.codes import PUBLISHED_RECORD_CODES, RecordCode
from scanner.models import PolicyMode
from scanner.research.kinds import policy_problem
from scanner.research.lines import ScanLine


class Stage(StrEnum):
    DOMAINS = "domains"
    WITH_MX = "with-mx"
    WITH_RECORD = "with-mta-sts-record"
    RECORD_VALID = "record-valid"
    POLICY_FETCHED = "policy-fetched"
    POLICY_VALID = "policy-valid"
    MODE_TESTING_OR_ENFORCE = "mode-testing-or-enforce"
    ENFORCE_READY = "enforce-ready"


def has_mx(line: ScanLine) -> bool:
    """MX hosts to deliver to: MX records or the implicit MX, a null MX apart."""
    if line.null_mx:
        return False
    return line.implicit_mx or bool(line.dns_hosts)


def publishes_record(line: ScanLine) -> bool:
    if line.sts_record is not None:
        return True
    return line.sts_error_code in PUBLISHED_RECORD_CODES


def policy_fetched(line: ScanLine) -> bool:
    problem = policy_problem(line.sts_error_type, line.sts_error_code)
    return problem is None or problem[0] != "fetch"


def testing_or_enforce(line: ScanLine) -> bool:
    return line.policy is not None and line.policy.mode in (PolicyMode.TESTING, PolicyMode.ENFORCE)


@dataclass(frozen=True, slots=True)
class StageTest:
    stage: Stage
    title: str
    short: str  # a column title
    passes: Callable[[ScanLine], bool]


FUNNEL: Final[tuple[StageTest, ...]] = (
    StageTest(Stage.DOMAINS, "domains scanned", "domains", lambda line: True),
    StageTest(Stage.WITH_MX, "with MX (explicit or implicit, null MX apart)", "with MX", has_mx),
    StageTest(Stage.WITH_RECORD, "with an _mta-sts record", "_mta-sts", publishes_record),
    StageTest(
        Stage.RECORD_VALID, "record valid", "record valid", lambda line: line.sts_record is not None
    ),
    StageTest(Stage.POLICY_FETCHED, "policy fetched", "fetched", policy_fetched),
    StageTest(
        Stage.POLICY_VALID, "policy valid", "policy valid", lambda line: line.policy is not None
    ),
    StageTest(
        Stage.MODE_TESTING_OR_ENFORCE,
        "mode testing or enforce",
        "testing/enforce",
        testing_or_enforce,
    ),
    StageTest(Stage.ENFORCE_READY, "enforce-ready", "ready", lambda line: line.enforce_ready),
)
STAGES: Final = tuple(test.stage for test in FUNNEL)
STAGE_SHORT: Final = {test.stage: test.short for test in FUNNEL}


def stages_reached(line: ScanLine) -> int:
    """How many stages of `FUNNEL`, from the first, the line passes (at least 1)."""
    reached = 0
    for test in FUNNEL:
        if not test.passes(line):
            break
        reached += 1
    return reached


def reached(count: int, stage: Stage) -> bool:
    """Whether `count` stages reached include `stage`."""
    return count > STAGES.index(stage)


@dataclass(frozen=True, slots=True)
class Measure:
    """A count beside the funnel: `passes(line, stages reached)`."""

    name: str
    title: str
    passes: Callable[[ScanLine, int], bool]


def _mode(mode: PolicyMode) -> Callable[[ScanLine, int], bool]:
    def passes(line: ScanLine, count: int) -> bool:
        return (
            reached(count, Stage.POLICY_VALID)
            and line.policy is not None
            and line.policy.mode == mode
        )

    return passes


def _tlsrpt_present(line: ScanLine, count: int) -> bool:
    if line.tlsrpt_record is not None:
        return True
    return line.tlsrpt_error_code in PUBLISHED_RECORD_CODES


# DNSSEC statuses of a validating resolver: DANE was measured (docs/dane.md#statuses).
VALIDATED: Final = frozenset({"secure", "insecure", "bogus"})


def dane_measured(line: ScanLine, count: int) -> bool:
    """The resolver validated the domain's MX lookup: DANE can be said yes or no."""
    return any(host.mx_dnssec in VALIDATED for host in line.dns_hosts)


def dane_published(line: ScanLine, count: int) -> bool:
    """Any MX host from DNS has TLSA records in a secure RRset (RFC 7672 §2.2)."""
    return any(host.tlsa_records and host.tlsa_dnssec == "secure" for host in line.dns_hosts)


def mx_secure(line: ScanLine, count: int) -> bool:
    """The domain's MX RRset is DNSSEC-secure: DANE can apply to its hosts at all."""
    return any(host.mx_dnssec == "secure" for host in line.dns_hosts)


def dane_passing(line: ScanLine, count: int) -> bool:
    """Every tested session of every MX host from DNS matched its TLSA records (DANE pass):
    DANE protects all mail to the domain, not only some of it."""
    statuses = [a.dane_status for host in line.dns_hosts for a in host.addresses if a.tested]
    return bool(statuses) and all(status == "pass" for status in statuses)


def no_record_with_mx(line: ScanLine, count: int) -> bool:
    """Not adopting MTA-STS: no `_mta-sts` record at all, among domains that take mail."""
    return reached(count, Stage.WITH_MX) and line.sts_error_code in NOT_ADOPTED


def no_tlsrpt_with_mx(line: ScanLine, count: int) -> bool:
    return reached(count, Stage.WITH_MX) and line.tlsrpt_error_code in NOT_ADOPTED


# Record codes that say "nothing published": not adopting, no misconfiguration.
NOT_ADOPTED: Final = frozenset({RecordCode.NO_RECORD.value})

# The DANE measures: "not measured" (null), never 0, when no domain's MX lookup was
# validated (a resolver that does not validate: docs/dane.md).
DANE_MEASURES: Final = frozenset({"dane-mx-secure", "dane-tlsa-published", "dane-all-pass"})

BESIDE: Final[tuple[Measure, ...]] = (
    Measure("null-mx", "null MX (accepts no mail)", lambda line, count: line.null_mx),
    Measure(
        "mta-sts-without-mx",
        "_mta-sts record without any MX",
        lambda line, count: publishes_record(line) and not has_mx(line),
    ),
    Measure("mode-testing", "valid policy in mode testing", _mode(PolicyMode.TESTING)),
    Measure("mode-enforce", "valid policy in mode enforce", _mode(PolicyMode.ENFORCE)),
    Measure("mode-none", "valid policy in mode none", _mode(PolicyMode.NONE)),
    Measure("tlsrpt-record-present", "TLS-RPT record present", _tlsrpt_present),
    Measure(
        "tlsrpt-record-valid",
        "TLS-RPT record valid",
        lambda line, count: line.tlsrpt_record is not None,
    ),
    Measure(
        "with-indicators",
        "with downgrade indicators",
        lambda line, count: bool(line.indicators),
    ),
    Measure(
        "mta-sts-not-adopted",
        "no _mta-sts record (not adopting; with MX, null MX apart)",
        no_record_with_mx,
    ),
    Measure(
        "tlsrpt-not-adopted",
        "no _smtp._tls record (not adopting; with MX, null MX apart)",
        no_tlsrpt_with_mx,
    ),
    Measure("dane-measured", "DANE measured (the MX lookup was validated)", dane_measured),
    Measure("dane-mx-secure", "DANE: MX RRset DNSSEC-secure", mx_secure),
    Measure("dane-tlsa-published", "DANE: TLSA published for any MX host", dane_published),
    Measure("dane-all-pass", "DANE: every tested MX session passes", dane_passing),
)
