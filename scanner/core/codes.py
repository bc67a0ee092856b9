"""Stable codes for every problem the scanner reports (docs/output.md#codes).

A problem gets its code where it is detected, and the code travels with it to every
reader: the verdict, the JSON line (schema 3), `check`, `stats` and `diff`. The text
beside a code is for people and may change between releases; the code does not.

One string enum per family, each value the wire string:

* `RecordCode`: why a domain has no usable `_mta-sts` or `_smtp._tls` record;
* `PolicyCode`: why the MTA-STS policy could not be fetched or is invalid;
* `ProblemCode`: the blockers and warnings of a verdict.

A `Problem` is one blocker or warning: its code, its text, and the fields a reader
needs to act on it without reading the text (`host`, `address`, `cause`: the code of
the lower-level problem behind it, such as a `PolicyCode` or a not-testable reason).

Pure vocabulary: imports nothing of the scanner.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RecordCode(StrEnum):
    """Why there is no usable `_mta-sts` (RFC 8461 §3.1) or `_smtp._tls` (RFC 8460 §3) record."""

    NO_RECORD = "no-record"  # NXDOMAIN, NODATA, or no TXT record of the version
    LOOKUP_FAILED = "lookup-failed"  # SERVFAIL, timeout, refused: nothing is known
    NEAR_MISS = "near-miss"  # a record meant as one, not taken (case, version, order)
    SEVERAL_RECORDS = "several-records"  # more than one record of the version
    INVALID_ID = "invalid-id"  # `_mta-sts`: an id that is not 1 to 32 letters and digits
    MISSING_ID = "missing-id"  # `_mta-sts`: no id field
    MISSING_RUA = "missing-rua"  # `_smtp._tls`: no rua field
    INVALID_RECORD = "invalid-record"  # any other syntax error of the record


# Record codes that mean "the domain publishes something there meant as a record".
PUBLISHED_RECORD_CODES = frozenset(
    {
        RecordCode.NEAR_MISS,
        RecordCode.SEVERAL_RECORDS,
        RecordCode.INVALID_ID,
        RecordCode.MISSING_ID,
        RecordCode.MISSING_RUA,
        RecordCode.INVALID_RECORD,
    }
)


class PolicyCode(StrEnum):
    """Why the policy of `https://mta-sts.<domain>/.well-known/mta-sts.txt` is not usable.

    The RFC 8460 result type says which of the three `sts-*` families a failure is in;
    the code says what exactly went wrong.
    """

    # sts-policy-fetch-error: the policy could not be fetched
    NOT_CONTACTED = "not-contacted"  # excluded, or only addresses the guard refuses
    DNS = "dns"  # the policy host does not resolve
    CONNECT = "connect"
    TLS_HANDSHAKE = "tls-handshake"
    HTTP_TIMEOUT = "http-timeout"
    REDIRECT = "redirect"  # a 3xx (RFC 8461 §3.3: never followed)
    HTTP_STATUS = "http-status"  # any other status than 200
    SIZE = "size"  # a body over the size cap
    HTTP_PROTOCOL = "http-protocol"  # a malformed HTTP response
    # sts-webpki-invalid: the policy host's certificate
    WEBPKI_NO_CERTIFICATE = "webpki:no-certificate"
    WEBPKI_EXPIRED = "webpki:expired"
    WEBPKI_NOT_YET_VALID = "webpki:not-yet-valid"
    WEBPKI_UNTRUSTED = "webpki:untrusted"
    WEBPKI_NAME_MISMATCH = "webpki:name-mismatch"
    # sts-policy-invalid, because of how it was served
    CONTENT_TYPE = "content-type"  # not text/plain
    # sts-policy-invalid: the policy text
    NOT_UTF8 = "not-utf8"
    EMPTY = "empty"
    MISSING_FIELD = "missing-field"
    VERSION = "version"
    MODE = "mode"
    MAX_AGE = "max-age"
    NO_MX = "no-mx"
    MX_PATTERN = "mx-pattern"
    LINE_SYNTAX = "line-syntax"


# Policy codes that are a problem of fetching the policy, whatever their result type:
# a policy served as text/html may be fine text, how it was served is not.
FETCH_POLICY_CODES = frozenset(
    {
        PolicyCode.NOT_CONTACTED,
        PolicyCode.DNS,
        PolicyCode.CONNECT,
        PolicyCode.TLS_HANDSHAKE,
        PolicyCode.HTTP_TIMEOUT,
        PolicyCode.REDIRECT,
        PolicyCode.HTTP_STATUS,
        PolicyCode.SIZE,
        PolicyCode.HTTP_PROTOCOL,
        PolicyCode.WEBPKI_NO_CERTIFICATE,
        PolicyCode.WEBPKI_EXPIRED,
        PolicyCode.WEBPKI_NOT_YET_VALID,
        PolicyCode.WEBPKI_UNTRUSTED,
        PolicyCode.WEBPKI_NAME_MISMATCH,
        PolicyCode.CONTENT_TYPE,
    }
)


class ProblemCode(StrEnum):
    """The code of a blocker or warning (docs/output.md#blocker-and-warning-codes).

    A session's finding uses its downgrade indicator's code (`starttls-missing`,
    `certificate-expired`, ...: docs/output.md#indicators); those are not repeated here.
    """

    # the domain and its MX records
    COULD_NOT_SCAN = "could-not-scan"  # an error line; cause: the error kind
    NULL_MX = "null-mx"
    NXDOMAIN = "nxdomain"
    MX_LOOKUP_FAILED = "mx-lookup-failed"  # cause: the DNS status
    NO_MX = "no-mx"  # no MX record and no address
    NO_MX_ADDRESS = "no-mx-address"  # no MX host has an address
    IMPLICIT_MX = "implicit-mx"
    # MTA-STS
    NO_STS_RECORD = "no-sts-record"  # cause: a RecordCode
    POLICY_NOT_FETCHED = "policy-not-fetched"
    POLICY_FETCH_ERROR = "sts-policy-fetch-error"  # cause: a PolicyCode
    POLICY_INVALID = "sts-policy-invalid"  # cause: a PolicyCode
    POLICY_WEBPKI_INVALID = "sts-webpki-invalid"  # cause: a PolicyCode
    MODE_NONE = "mode-none"
    MX_NOT_IN_POLICY = "mx-not-in-policy"  # host
    STS_RECORD_WARNING = "sts-record-warning"  # a record strict senders may refuse
    POLICY_SYNTAX_WARNING = "policy-syntax-warning"  # a policy line strict senders may refuse
    SHORT_MAX_AGE = "short-max-age"
    BROAD_MX_PATTERN = "broad-mx-pattern"  # cause: the pattern
    UNUSED_MX_PATTERN = "unused-mx-pattern"  # cause: the pattern
    POLICY_CERTIFICATE_EXPIRES_SOON = "policy-certificate-expires-soon"
    # TLS-RPT
    NO_TLSRPT_RECORD = "no-tlsrpt-record"  # cause: a RecordCode
    # MX hosts and their sessions
    ADDRESS_LOOKUP_FAILED = "address-lookup-failed"  # host; cause: the DNS status
    NO_ADDRESS = "no-address"  # host
    NOT_TESTABLE = "not-testable"  # host, address; cause: the reason code
    # The scanning host's network could not reach the address (no IPv6 route): a warning,
    # never the domain's blocker. host, address; cause: the reason code.
    NOT_TESTABLE_FROM_HERE = "not-testable-from-here"
    # No address of the DNS MX hosts could be tested, some only because of the scanning
    # host's network: readiness is undetermined (a blocker, for the scanner's sake).
    READINESS_UNDETERMINED = "readiness-undetermined"
    EHLO_AFTER_TLS_FAILED = "ehlo-after-tls-failed"  # host, address
    STARTTLS_AFTER_TLS = "starttls-after-tls"  # host, address
    MASKED_BANNER = "masked-banner"  # host, address
    CERTIFICATE_EXPIRES_SOON = "certificate-expires-soon"  # host, address
    OVER_LIMIT = "over-limit"  # cause: the cap
    # DANE (docs/dane.md)
    DANE_REQUIRES_STARTTLS = "dane-requires-starttls"  # host, address
    DANE_WARNING = "dane-warning"  # host
    # received TLS-RPT reports (docs/received-reports.md#readiness-evidence)
    REPORTED_FAILURE_RATE = "reported-failure-rate"
    REPORTED_FAILURES = "reported-failures"
    REPORTED_POLICY_FAILURES = "reported-policy-failures"
    REPORTS_FEW_SESSIONS = "reports-few-sessions"
    REPORTS_NONE = "reports-none"
    REPORTS_UNVERIFIED = "reports-unverified"
    REPORTS_UNVERIFIED_FAILURES = "reports-unverified-failures"  # uncounted or unsigned, failing
    REPORTS_UNREADABLE = "reports-unreadable"  # stored rows that no longer read back
    REPORTS_CONFLICTING = "reports-conflicting"
    REPORTS_DESTINATION = "reports-destination"
    REPORTS_NOT_READ = "reports-not-read"


@dataclass(frozen=True, slots=True)
class Problem:
    """One blocker or warning: a stable code, the words, and what it concerns.

    `code` is a `ProblemCode` or, for a session's finding, the indicator's code;
    `host` the MX host and `address` the IP it concerns, when it concerns one;
    `cause` the code of the problem behind it (a `PolicyCode`, a `RecordCode`, a
    not-testable reason code, a cap), when there is one.
    """

    code: str
    text: str
    host: str | None = None
    address: str | None = None
    cause: str | None = None

    def __str__(self) -> str:
        return self.text
