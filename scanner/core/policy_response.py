"""The rules a policy response must meet (RFC 8461 §3.2, §3.3), apart from moving its bytes.

`net/policy_fetch.py` moves the bytes (DNS, connect, TLS, h11) and asks these pure
functions what the response means: the policy host's certificate, the status line and
announced length, then the body's length, encoding and media type, and the policy text.
Each failure carries its RFC 8460 result type and its code (`PolicyCode`).
"""

from __future__ import annotations

from datetime import datetime

from scanner.core.codes import PolicyCode
from scanner.core.names import names_shown
from scanner.core.sts import parse_policy
from scanner.models import CertificateCheck, Policy, PolicyFailure, ResultType

# RFC 8461 §3.3: the policy is at this path of the policy host.
POLICY_PATH = "/.well-known/mta-sts.txt"


def fetch_error(code: PolicyCode, detail: str) -> PolicyFailure:
    return PolicyFailure(ResultType.STS_POLICY_FETCH_ERROR, detail, code)


def _moment(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%SZ}" if moment is not None else "a date that does not parse"


def certificate_failure(where: str, host: str, check: CertificateCheck) -> PolicyFailure | None:
    """RFC 8461 §3.3: the policy host's certificate must be valid for it (`sts-webpki-invalid`).

    The code is the first problem found: dates, then trust, then the name.
    """
    problems: list[tuple[PolicyCode, str]] = []
    error = check.chain.verify_error
    if check.chain.expired:
        problems.append(
            (
                PolicyCode.WEBPKI_EXPIRED,
                f"certificate expired on {_moment(check.leaf.not_after)} ({error})",
            )
        )
    elif check.chain.not_yet_valid:
        problems.append(
            (
                PolicyCode.WEBPKI_NOT_YET_VALID,
                f"certificate is not valid before {_moment(check.leaf.not_before)} ({error})",
            )
        )
    elif not check.chain.trusted:
        problems.append(
            (
                PolicyCode.WEBPKI_UNTRUSTED,
                f"certificate does not chain to a trusted root ({error})",
            )
        )
    if not check.name_matches:
        names = names_shown(check.leaf.san, check.leaf.san_total) or "none"
        problems.append(
            (
                PolicyCode.WEBPKI_NAME_MISMATCH,
                f"certificate is not valid for {host} (SAN dNSNames: {names}; "
                "the subject CN is not used)",
            )
        )
    if not problems:
        return None
    words = "; ".join(text for _, text in problems)
    return PolicyFailure(ResultType.STS_WEBPKI_INVALID, f"{where}: {words}", problems[0][0])


def head_failure(
    where: str,
    host: str,
    *,
    status: int,
    reason: str,
    location: str | None,
    content_length: str | None,
    max_body: int,
) -> PolicyFailure | None:
    """The response head: only 200 is a policy, redirects are never followed (RFC 8461 §3.3),
    and an announced body over `max_body` is refused before it is read."""
    if 300 <= status < 400:
        return fetch_error(
            PolicyCode.REDIRECT,
            f"{where} answered HTTP {status} redirect to {location or '(no Location)'}; "
            f"redirects are never followed, serve the policy at https://{host}{POLICY_PATH} "
            "directly",
        )
    if status != 200:
        words = f"{status} {reason}".strip()
        return fetch_error(
            PolicyCode.HTTP_STATUS,
            f"{where} answered HTTP {words} for {POLICY_PATH}; only 200 is a policy",
        )
    if content_length is not None and content_length.isdigit() and int(content_length) > max_body:
        return fetch_error(
            PolicyCode.SIZE,
            f"{where} announced a {int(content_length)}-byte policy (Content-Length), over the "
            f"{max_body}-byte limit senders apply",
        )
    return None


def oversized_body(where: str, max_body: int) -> PolicyFailure:
    return fetch_error(
        PolicyCode.SIZE,
        f"{where} sent a policy body over the {max_body}-byte limit senders apply; "
        "reading stopped there",
    )


def is_text_plain(content_type: str | None) -> bool:
    """RFC 8461 §3.2: media type text/plain; parameters (charset) are allowed."""
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip(" \t").lower() == "text/plain"


def decode_body(where: str, body: bytes) -> str | PolicyFailure:
    """RFC 8461 §3.2: the policy is UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        return PolicyFailure(
            ResultType.STS_POLICY_INVALID,
            f"the policy served by {where} is not valid UTF-8 (byte offset {error.start})",
            PolicyCode.NOT_UTF8,
        )


def policy_of(where: str, text: str, content_type: str | None) -> Policy | PolicyFailure:
    """The policy a decoded body holds, served as `content_type` (checked after the body is
    read, so the report's policy-string still shows what was served)."""
    if not is_text_plain(content_type):
        return PolicyFailure(
            ResultType.STS_POLICY_INVALID,
            f"{where} served the policy as {content_type or 'no Content-Type'!r}, "
            "not text/plain; strict senders reject it (lenient ones may still accept it)",
            PolicyCode.CONTENT_TYPE,
        )
    return parse_policy(text)
