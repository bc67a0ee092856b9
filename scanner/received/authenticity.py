"""Is an emailed report from the domain it claims? DKIM, or the receiving MTA's word.

Theory of operation: RFC 8460 §3 has emailed reports DKIM-signed (RFC 6376) by
the reporting domain, whose key record may say `s=tlsrpt`. The reporting
domain is the message's `TLS-Report-Submitter` (RFC 8460 §5.3), else the domain
of `From`. A signature counts when its `d=` is that domain or a parent or child
of it (relaxed alignment, as DMARC does it, without a public-suffix list; a
one-label `d=` never aligns).

Two ways to a verdict, both giving an `Authenticity` with a status:

- `verify_dkim`: dkimpy checks each DKIM-Signature (at most `max_signatures`),
  fetching keys through an injected `KeyLookup` (tests give a dict; the command
  line gives dnspython, `scanner.received.key_lookup`).
- `authentication_results_verdict`: when the operator names the receiving MTA
  (`--trust-authres HOST`), the fields whose authserv-id is HOST (RFC 8601) in
  the topmost run of `Authentication-Results` fields are believed (an MTA may
  add one field per check). Only that MTA's fields count, and only the topmost
  run: RFC 8601 §5 has the MTA remove fields claiming its own id from incoming
  mail, so a forged one sits below the real ones.

Statuses: `pass` (an aligned signature verified; one whose `x=` is past now but
was not when the message arrived passes, the expiry noted), `fail` (aligned
signatures, none verified), `key-unavailable` (the selector's key record does
not resolve: a retired selector; counted as `fail`, since a forger can name a
selector that does not exist), `temperror` (a key lookup failed for now: import
again later), `none` (no signature by the reporting domain, or not an email).

Pure apart from the injected lookup: no sockets, no DNS of its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

import dkim  # type: ignore[import-untyped]

from scanner.received.limits import DEFAULT_LIMITS, ReceivedLimits
from scanner.received.mail import MessageInfo


class AuthStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    # The selector's key record no longer resolves (retired): shown as such, counted as
    # `fail` for readiness, since a forger can name a selector that does not exist.
    KEY_UNAVAILABLE = "key-unavailable"


class AuthMethod(StrEnum):
    DKIM = "dkim"  # we verified the signature
    AUTHENTICATION_RESULTS = "authentication-results"  # the named MTA verified it
    NOT_EMAIL = "not-email"  # a file saved from an HTTPS POST: nothing to verify
    # POSTed to `scanner tlsrpt serve`, which stores only reports for its allowlisted policy
    # domains: no DKIM either, but the operator chose to receive them (readiness counts them).
    HTTPS_RECEIVER = "https-receiver"


@dataclass(frozen=True, slots=True)
class Authenticity:
    status: AuthStatus
    method: AuthMethod
    detail: str
    signer: str | None = None  # the d= that passed

    @property
    def verified(self) -> bool:
        return self.status is AuthStatus.PASS


NOT_EMAIL: Final = Authenticity(
    AuthStatus.NONE, AuthMethod.NOT_EMAIL, "not an email: RFC 8460 HTTPS reports carry no signature"
)
HTTPS_RECEIVED: Final = Authenticity(
    AuthStatus.NONE,
    AuthMethod.HTTPS_RECEIVER,
    "received over HTTPS (RFC 8460 §5.4) by scanner tlsrpt serve for an allowlisted policy "
    "domain; HTTPS reports carry no signature",
)


# The order in which copies of one report keep their authenticity: the higher wins.
def authenticity_rank(authenticity: Authenticity) -> int:
    """How much a copy's authenticity says: a verified copy, then our HTTPS receiver's,
    then an email's verdict (temperror, then key-unavailable and fail, then none), then a file."""
    if authenticity.verified:
        return 6
    if authenticity.method is AuthMethod.HTTPS_RECEIVER:
        return 5
    if authenticity.method is AuthMethod.NOT_EMAIL:
        return 0
    return {
        AuthStatus.TEMPERROR: 4,
        AuthStatus.KEY_UNAVAILABLE: 3,
        AuthStatus.FAIL: 2,
    }.get(authenticity.status, 1)


def counts_for_readiness(authenticity: Authenticity) -> bool:
    """DKIM-verified, or received by our own HTTPS receiver (allowlisted domains only)."""
    return authenticity.verified or authenticity.method is AuthMethod.HTTPS_RECEIVER


@dataclass(frozen=True, slots=True)
class KeyAnswer:
    """The TXT text at `<selector>._domainkey.<domain>`, or why there is none.

    `text` None with `temporary` False: no such record (a permanent failure);
    `temporary` True: the lookup failed for now (timeout, SERVFAIL).
    """

    text: bytes | None
    temporary: bool = False
    detail: str = ""


KeyLookup = Callable[[str], KeyAnswer]  # name without trailing dot → answer


def aligned(signer: str, reporting_domain: str) -> bool:
    """`signer` (a DKIM d=) is the reporting domain, a parent of it or a child of it."""
    signer = signer.strip().lower().rstrip(".")
    domain = reporting_domain.strip().lower().rstrip(".")
    if "." not in signer or "." not in domain:
        return False
    return signer == domain or domain.endswith("." + signer) or signer.endswith("." + domain)


# ---------------------------------------------------------------- DKIM

_SILENT = logging.getLogger("scanner.received.dkim")
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False


@dataclass(frozen=True, slots=True)
class _SignatureResult:
    signer: str
    status: AuthStatus
    detail: str


_SIGNATURE_FIELD = re.compile(rb"^dkim-signature\s*:", re.IGNORECASE | re.MULTILINE)
_SIGNER_TAG = re.compile(rb"(?:^|;)\s*d\s*=\s*([^;\s]+)")


def _raw_signer(verifier: object, index: int) -> str:
    """The d= of the index-th signature as written, for a field too broken to parse."""
    headers = getattr(verifier, "headers", [])
    values = [value for name, value in headers if name.lower() == b"dkim-signature"]
    if index < len(values):
        match = _SIGNER_TAG.search(values[index])
        if match:
            return match.group(1).decode("ascii", "replace").strip().lower()
    return ""


def _signature_signer(fields: object) -> str:
    if isinstance(fields, dict):
        value = fields.get(b"d")
        if isinstance(value, bytes):
            return value.decode("ascii", "replace").strip().lower()
    return ""


# RFC 6376 §3.5, x=: "Signature Expiration ... verifiers MAY choose to ignore it"; a
# report read from a backlog is judged at the time it arrived, not at the time it is read.
EXPIRY_SLOP_SECONDS: Final = 36000  # as dkimpy allows for clocks that are off


def _expiry(signature: dict[bytes, bytes]) -> int | None:
    value = signature.get(b"x")
    if value is None or not re.fullmatch(rb"\d+", value):
        return None
    return int(value)


def _verify_one(
    message: bytes,
    index: int,
    lookup: KeyLookup,
    now: datetime | None,
    arrived: datetime | None,
) -> _SignatureResult:
    temporary: list[str] = []
    missing: list[str] = []

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        answer = lookup(text.rstrip("."))
        if answer.temporary:
            temporary.append(answer.detail or "temporary DNS failure")
            raise dkim.DnsTimeoutError(answer.detail or "temporary DNS failure")
        if answer.text is None:
            missing.append(f"{text.rstrip('.')}: {answer.detail or 'no key record'}")
        return answer.text

    signer = ""
    expired_note = ""
    try:
        verifier = dkim.DKIM(message, logger=_SILENT, minkey=1024, tlsrpt=True)
        signer = _raw_signer(verifier, index)
        fields = [field for field in verifier.headers if field[0].lower() == b"dkim-signature"]
        try:
            signature = dkim.util.parse_tag_value(fields[index][1])
        except dkim.util.InvalidTagValueList as exc:
            raise dkim.MessageFormatError(exc) from None
        signer = _signature_signer(signature) or signer
        expires = _expiry(signature)
        # dkimpy checks x= against its own clock; the check is ours (`now`, `arrived`).
        dkim.validate_signature_fields({k: v for k, v in signature.items() if k != b"x"})
        if b"x" in signature and expires is None:
            raise dkim.ValidationError(f"x= value is not a decimal integer ({signature[b'x']!r})")
        if expires is not None and now is not None:
            moment = now.timestamp()
            if expires < moment - EXPIRY_SLOP_SECONDS:
                if arrived is None or expires < arrived.timestamp() - EXPIRY_SLOP_SECONDS:
                    when = (
                        "when it arrived" if arrived is not None else "and its arrival is unknown"
                    )
                    raise dkim.ValidationError(f"signature expired (x={expires}) {when}")
                expired_note = (
                    f"; its x= ({_utc_text(expires)}) is past, but it was valid when the "
                    f"message arrived ({arrived.astimezone(UTC).isoformat(timespec='seconds')})"
                )
        verifier.signature_fields = signature
        verifier.domain = signature[b"d"]
        verifier.selector = signature[b"s"]
        include = [x.lower() for x in re.split(rb"\s*:\s*", signature[b"h"])]
        verifier.include_headers = tuple(include)
        ok = verifier.verify_sig(signature, include, fields[index], dnsfunc)
    except dkim.DKIMException as exc:
        if missing and not temporary:
            return _key_unavailable(signer, missing[0])
        return _SignatureResult(signer, AuthStatus.FAIL, f"d={signer or '?'}: {exc}")
    if missing and not temporary:
        return _key_unavailable(signer, missing[0])
    if temporary:
        return _SignatureResult(signer, AuthStatus.TEMPERROR, f"d={signer}: {temporary[0]}")
    if ok:
        return _SignatureResult(
            signer, AuthStatus.PASS, f"d={signer}: signature verified{expired_note}"
        )
    return _SignatureResult(signer, AuthStatus.FAIL, f"d={signer}: signature did not verify")


def _key_unavailable(signer: str, missing: str) -> _SignatureResult:
    return _SignatureResult(
        signer,
        AuthStatus.KEY_UNAVAILABLE,
        f"d={signer or '?'}: the key record does not resolve ({missing}): the selector "
        "was retired, or never existed",
    )


def _utc_text(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def verify_dkim(
    message: bytes,
    reporting_domain: str | None,
    lookup: KeyLookup,
    limits: ReceivedLimits = DEFAULT_LIMITS,
    *,
    now: datetime | None = None,
    arrived: datetime | None = None,
) -> Authenticity:
    """The DKIM verdict on `message` for `reporting_domain` (see the module doc).

    `now` is the time an `x=` expiry is judged at (None: expiry is not checked);
    `arrived` when the message arrived (IMAP INTERNALDATE, the receiving MTA's
    `Received` time): a signature expired now but valid then still passes, noted.
    """
    count = len(_SIGNATURE_FIELD.findall(message.split(b"\n\n", 1)[0].replace(b"\r", b"")))
    if count == 0:
        return Authenticity(AuthStatus.NONE, AuthMethod.DKIM, "no DKIM signature")
    results = [
        _verify_one(message, index, lookup, now, arrived)
        for index in range(min(count, limits.max_signatures))
    ]
    if reporting_domain is None:
        return Authenticity(
            AuthStatus.NONE,
            AuthMethod.DKIM,
            "no reporting domain (neither TLS-Report-Submitter nor From) to align a signature with",
        )
    mine = [result for result in results if aligned(result.signer, reporting_domain)]
    for status in (
        AuthStatus.PASS,
        AuthStatus.TEMPERROR,
        AuthStatus.KEY_UNAVAILABLE,
        AuthStatus.FAIL,
    ):
        chosen = [result for result in mine if result.status is status]
        if chosen:
            signer = chosen[0].signer if status is AuthStatus.PASS else None
            return Authenticity(status, AuthMethod.DKIM, chosen[0].detail, signer)
    others = ", ".join(sorted({f"d={result.signer or '?'}" for result in results}))
    return Authenticity(
        AuthStatus.NONE,
        AuthMethod.DKIM,
        f"no DKIM signature by the reporting domain {reporting_domain} (signed by {others})",
    )


# ---------------------------------------------------------------- Authentication-Results


@dataclass(frozen=True, slots=True)
class MethodResult:
    """One resinfo of an Authentication-Results field: method, result and properties."""

    method: str
    result: str
    properties: tuple[tuple[str, str], ...]

    def property(self, name: str) -> str | None:
        for key, value in self.properties:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class AuthenticationResults:
    authserv_id: str
    results: tuple[MethodResult, ...]


def _tokens(text: str) -> list[str]:
    """RFC 8601 text as tokens: comments dropped, quoted strings whole, `;` and `=` apart.

    A quoted string's token keeps a leading `"` so it is never taken for `;` or `=`.
    """
    tokens: list[str] = []
    current: list[str] = []
    depth = 0
    index = 0

    def flush() -> None:
        if current:
            tokens.append("".join(current))
            current.clear()

    while index < len(text):
        char = text[index]
        if depth:
            if char == "\\":
                index += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif char == "(":
            flush()
            depth = 1
        elif char == '"':
            flush()
            end = index + 1
            quoted: list[str] = []
            while end < len(text) and text[end] != '"':
                if text[end] == "\\" and end + 1 < len(text):
                    end += 1
                quoted.append(text[end])
                end += 1
            tokens.append('"' + "".join(quoted))
            index = end
        elif char in ";=":
            flush()
            tokens.append(char)
        elif char.isspace():
            flush()
        else:
            current.append(char)
        index += 1
    flush()
    return tokens


def _unquote(token: str) -> str:
    return token[1:] if token.startswith('"') else token


# RFC 8601 §2.2:
#   authres-payload = [CFWS] authserv-id [ CFWS authres-version ] ( no-result / 1*resinfo ) [CFWS] CRLF
#   resinfo    = [CFWS] ";" methodspec [ CFWS reasonspec ] [ CFWS 1*propspec ]
#   methodspec = [CFWS] method [CFWS] "=" [CFWS] result      ; method [ "/" version ]
#   reasonspec = "reason" [CFWS] "=" [CFWS] value
#   propspec   = ptype [CFWS] "." [CFWS] property [CFWS] "=" pvalue
# (CFWS around the "." of a propspec is allowed but unseen; it is not supported.)
def parse_authentication_results(value: str) -> AuthenticationResults | None:
    """One Authentication-Results field value, or None when it has no authserv-id."""
    groups: list[list[str]] = [[]]
    for token in _tokens(value):
        if token == ";":
            groups.append([])
        else:
            groups[-1].append(token)
    head = groups[0]
    if not head or head[0] == "=":
        return None
    authserv_id = _unquote(head[0]).lower()
    results: list[MethodResult] = []
    for group in groups[1:]:
        if len(group) < 3 or group[1] != "=" or group[0].startswith('"'):
            continue
        method = group[0].partition("/")[0].lower()
        result = _unquote(group[2]).lower()
        properties: list[tuple[str, str]] = []
        rest = group[3:]
        index = 0
        while index < len(rest):
            if index + 2 < len(rest) and rest[index + 1] == "=" and rest[index] != "=":
                properties.append((_unquote(rest[index]).lower(), _unquote(rest[index + 2])))
                index += 3
            else:
                index += 1
        results.append(MethodResult(method, result, tuple(properties)))
    return AuthenticationResults(authserv_id, tuple(results))


_AUTHRES_STATUS: Final = {
    "pass": AuthStatus.PASS,
    "fail": AuthStatus.FAIL,
    "permerror": AuthStatus.FAIL,
    "neutral": AuthStatus.FAIL,
    "policy": AuthStatus.FAIL,
    "temperror": AuthStatus.TEMPERROR,
    "none": AuthStatus.NONE,
}


def _dkim_domain(result: MethodResult) -> str:
    signer = result.property("header.d")
    if signer:
        return signer.strip().lower()
    identity = result.property("header.i") or ""
    return identity.rpartition("@")[2].strip().lower()


def topmost_run(field_values: list[str], authserv_id: str) -> list[AuthenticationResults]:
    """The fields of `authserv_id` in the topmost run of Authentication-Results fields: from
    the first field of that id down to the first field of another (or none)."""
    wanted = authserv_id.strip().lower()
    run: list[AuthenticationResults] = []
    for value in field_values:
        parsed = parse_authentication_results(value)
        if parsed is not None and parsed.authserv_id == wanted:
            run.append(parsed)
        elif run:
            break
    return run


def authentication_results_verdict(
    field_values: list[str], authserv_id: str, reporting_domain: str | None
) -> Authenticity | None:
    """The DKIM verdict the named MTA recorded, or None when it recorded none
    (no field of that authserv-id, or no dkim result in its topmost run of fields).

    `field_values` are the message's Authentication-Results values, topmost first.
    An MTA may add several fields (one per check); every field of the topmost run
    is read (`topmost_run`). A field of that id further down, below another MTA's,
    is not the MTA's own (RFC 8601 §5: it removes fields claiming its id from
    incoming mail) and is never read.
    """
    wanted = authserv_id.strip().lower()
    dkim_results = [
        result
        for parsed in topmost_run(field_values, wanted)
        for result in parsed.results
        if result.method == "dkim"
    ]
    if not dkim_results:
        return None  # the MTA did not check DKIM: verify it ourselves
    if reporting_domain is None:
        return Authenticity(
            AuthStatus.NONE,
            AuthMethod.AUTHENTICATION_RESULTS,
            "no reporting domain (neither TLS-Report-Submitter nor From) to align a signature with",
        )
    mine = [r for r in dkim_results if aligned(_dkim_domain(r), reporting_domain)]
    for status in (AuthStatus.PASS, AuthStatus.TEMPERROR, AuthStatus.FAIL):
        for result in mine:
            if _AUTHRES_STATUS.get(result.result, AuthStatus.FAIL) is status:
                signer = _dkim_domain(result)
                return Authenticity(
                    status,
                    AuthMethod.AUTHENTICATION_RESULTS,
                    f"{wanted}: dkim={result.result} header.d={signer}",
                    signer if status is AuthStatus.PASS else None,
                )
    others = ", ".join(sorted({f"d={_dkim_domain(r) or '?'}" for r in dkim_results}))
    return Authenticity(
        AuthStatus.NONE,
        AuthMethod.AUTHENTICATION_RESULTS,
        f"{wanted}: no DKIM result for the reporting domain {reporting_domain} ({others})",
    )


# ---------------------------------------------------------------- the verdict for one message


Verifier = Callable[[bytes, MessageInfo], Authenticity]


def build_verifier(
    lookup: KeyLookup,
    trust_authres: str | None = None,
    limits: ReceivedLimits = DEFAULT_LIMITS,
    *,
    now: Callable[[], datetime] | None = None,
) -> Verifier:
    """How the importer judges a message: the named MTA's Authentication-Results when it
    recorded a DKIM verdict there, else our own DKIM verification, with `x=` judged
    at `now()` and the message's arrival (`MessageInfo.arrived`)."""

    def verify(message: bytes, info: MessageInfo) -> Authenticity:
        if trust_authres:
            verdict = authentication_results_verdict(
                list(info.authentication_results), trust_authres, info.submitter
            )
            if verdict is not None:
                return verdict
        return verify_dkim(
            message,
            info.submitter,
            lookup,
            limits,
            now=now() if now is not None else None,
            arrived=info.arrived,
        )

    return verify
