"""Builders for received-report tests: reports, emails as senders ship them, DKIM keys.

The reports follow the shape of RFC 8460 §4.5's example and what large senders
document (one policy per report, `policy-string` as a list, daily UTC ranges);
the emails follow RFC 8460 §5.3 and the variants seen in the field. Nothing is
copied from a real report. Other test modules import these; the tests at the
bottom check the builders themselves.
"""

from __future__ import annotations

import base64
import copy
import functools
import gzip
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scanner.received.authenticity import KeyAnswer, KeyLookup, verify_dkim
from scanner.received.mail import extract_reports
from scanner.received.report import ParsedReport

REPORTER = "reporter.example"
SELECTOR = "tlsrpt2026"
POLICY_DOMAIN = "company-y.example"


def report_dict(
    *,
    organization: str = "Company-X",
    report_id: str = "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    day: str = "2026-04-01",
    domain: str = POLICY_DOMAIN,
    successful: int = 5326,
    failed: int = 303,
    details: list[dict[str, Any]] | None = None,
    contact: str | None = "sts-reporting@company-x.example",
) -> dict[str, Any]:
    """A report in the shape of RFC 8460 §4.5's example (one sts policy, two details)."""
    if details is None:
        details = [
            {
                "result-type": "certificate-expired",
                "sending-mta-ip": "2001:db8:abcd:0012::1",
                "receiving-mx-hostname": f"mx1.mail.{domain}",
                "failed-session-count": 100,
            },
            {
                "result-type": "starttls-not-supported",
                "sending-mta-ip": "2001:db8:abcd:0013::1",
                "receiving-mx-hostname": f"mx2.mail.{domain}",
                "receiving-ip": "203.0.113.56",
                "failed-session-count": 200,
                "additional-information": f"https://reports.{domain}/starttls-failures",
            },
            {
                "result-type": "validation-failure",
                "sending-mta-ip": "198.51.100.62",
                "receiving-ip": "203.0.113.58",
                "failed-session-count": 3,
                "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
            },
        ]
    report: dict[str, Any] = {
        "organization-name": organization,
        "date-range": {
            "start-datetime": f"{day}T00:00:00Z",
            "end-datetime": f"{day}T23:59:59Z",
        },
        "report-id": report_id,
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-string": [
                        "version: STSv1",
                        "mode: testing",
                        f"mx: *.mail.{domain}",
                        "max_age: 86400",
                    ],
                    "policy-domain": domain,
                    "mx-host": [f"*.mail.{domain}"],
                },
                "summary": {
                    "total-successful-session-count": successful,
                    "total-failure-session-count": failed,
                },
                "failure-details": details,
            }
        ],
    }
    if contact is not None:
        report["contact-info"] = contact
    return report


def clean_report(**kwargs: Any) -> dict[str, Any]:
    """A report with no failures."""
    kwargs.setdefault("failed", 0)
    kwargs.setdefault("details", [])
    return report_dict(**kwargs)


def report_bytes(report: dict[str, Any], *, gzipped: bool = True) -> bytes:
    text = json.dumps(report, indent=1).encode("utf-8")
    return gzip.compress(text, mtime=0) if gzipped else text


def deep(report: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(report)


# ---------------------------------------------------------------- emails


def _headers(
    message: Any,
    *,
    sender: str,
    to: str,
    domain: str,
    report_id: str,
    submitter: str | None,
) -> None:
    message["From"] = sender
    message["To"] = to
    message["Subject"] = (
        f"Report Domain: {domain} Submitter: {submitter or REPORTER} Report-ID: <{report_id}>"
    )
    message["Date"] = format_datetime(datetime(2026, 4, 2, 3, 4, 5, tzinfo=UTC))
    message["Message-ID"] = f"<{report_id}@{REPORTER}>"
    if submitter is not None:
        message["TLS-Report-Domain"] = domain
        message["TLS-Report-Submitter"] = submitter


def report_email(
    report: dict[str, Any] | bytes,
    *,
    style: str = "rfc",
    sender: str = f"noreply-tls-reporting@{REPORTER}",
    to: str = f"tlsrpt@{POLICY_DOMAIN}",
    submitter: str | None = REPORTER,
    extra_parts: list[Any] | None = None,
) -> bytes:
    """One report as an email, in the style of a kind of sender.

    - `rfc`: multipart/report; report-type=tlsrpt, application/tlsrpt+gzip, base64 (RFC 8460 §5.3)
    - `rfc-json`: the same with application/tlsrpt+json, quoted-printable
    - `gzip-mixed`: multipart/mixed with application/gzip, base64
    - `octet-stream`: multipart/mixed with application/octet-stream, base64
    - `json-qp`: multipart/mixed with application/json, quoted-printable
    """
    if isinstance(report, bytes):
        payload_json = report
        domain, report_id = POLICY_DOMAIN, "raw"
    else:
        payload_json = json.dumps(report, indent=1).encode("utf-8")
        domain = (
            report["policies"][0]["policy"].get("policy-domain", POLICY_DOMAIN)
            if report.get("policies")
            else POLICY_DOMAIN
        )
        report_id = str(report.get("report-id", "none"))
    filename = f"{REPORTER}!{domain}!1775001600!1775087999"
    if style in ("rfc", "rfc-json"):
        outer = MIMEMultipart("report", report_type="tlsrpt")
    else:
        outer = MIMEMultipart("mixed")
    _headers(outer, sender=sender, to=to, domain=domain, report_id=report_id, submitter=submitter)
    outer.attach(
        MIMEText(f"This is an aggregate TLS report from {REPORTER} for {domain}.\n", "plain")
    )
    if style == "rfc":
        part = MIMEApplication(gzip.compress(payload_json, mtime=0), "tlsrpt+gzip")
        part.add_header("Content-Disposition", "attachment", filename=filename + ".json.gz")
    elif style == "rfc-json":
        part = MIMEApplication(payload_json, "tlsrpt+json", _encoder=_quoted_printable)
        part.add_header("Content-Disposition", "attachment", filename=filename + ".json")
    elif style == "gzip-mixed":
        part = MIMEApplication(gzip.compress(payload_json, mtime=0), "gzip")
        part.add_header("Content-Disposition", "attachment", filename=filename + ".json.gz")
    elif style == "octet-stream":
        part = MIMEApplication(gzip.compress(payload_json, mtime=0), "octet-stream")
        part.add_header("Content-Disposition", "attachment", filename=filename + ".gz")
    elif style == "json-qp":
        part = MIMEApplication(payload_json, "json", _encoder=_quoted_printable)
        part.add_header("Content-Disposition", "attachment", filename=filename + ".json")
    else:
        raise ValueError(style)
    outer.attach(part)
    for extra in extra_parts or []:
        outer.attach(extra)
    return outer.as_bytes()


def _quoted_printable(part: Any) -> None:
    import quopri

    data = part.get_payload(decode=False)
    raw = data if isinstance(data, bytes) else data.encode("utf-8")
    part.set_payload(quopri.encodestring(raw).decode("ascii"))
    part["Content-Transfer-Encoding"] = "quoted-printable"


def plain_email(text: str = "Hello, this is not a report.\n") -> bytes:
    message = EmailMessage()
    message["From"] = "someone@elsewhere.example"
    message["To"] = f"tlsrpt@{POLICY_DOMAIN}"
    message["Subject"] = "lunch?"
    message.set_content(text)
    return message.as_bytes()


def dmarc_like_email() -> bytes:
    """A neighbour that is gzip but no TLS-RPT report (a DMARC aggregate report is XML)."""
    outer = MIMEMultipart("mixed")
    outer["From"] = "dmarc@reporter.example"
    outer["To"] = f"tlsrpt@{POLICY_DOMAIN}"
    outer["Subject"] = "Report domain: company-y.example"
    part = MIMEApplication(gzip.compress(b"<?xml version='1.0'?><feedback/>", mtime=0), "gzip")
    part.add_header("Content-Disposition", "attachment", filename="dmarc.xml.gz")
    outer.attach(part)
    return outer.as_bytes()


def mbox(messages: list[bytes]) -> bytes:
    """An mboxrd file: a From_ line before each message, `From ` lines in bodies quoted."""
    out = bytearray()
    for message in messages:
        out += b"From MAILER-DAEMON Thu Apr  2 03:04:05 2026\n"
        for line in message.replace(b"\r\n", b"\n").split(b"\n"):
            if line.lstrip(b">").startswith(b"From "):
                line = b">" + line
            out += line + b"\n"
        out += b"\n"
    return bytes(out)


# ---------------------------------------------------------------- DKIM


@dataclass(frozen=True)
class SigningKey:
    private_pem: bytes
    record: bytes  # the TXT text at <selector>._domainkey.<domain>


@functools.cache
def signing_key(service: str | None = None) -> SigningKey:
    """A 2048-bit RSA DKIM key made for this test run, with its key record."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = (
        b"v=DKIM1; k=rsa; "
        + (f"s={service}; ".encode() if service else b"")
        + b"p="
        + base64.b64encode(public)
    )
    return SigningKey(pem, record)


class _TimedSigner(dkim.DKIM):  # type: ignore[misc]
    """dkimpy's signer with the t= and x= tags a sender chose (dkimpy writes no x=)."""

    def __init__(self, message: bytes, signed_at: int | None, expires: int | None) -> None:
        super().__init__(message, tlsrpt=True)
        self.signed_at = signed_at
        self.expires = expires

    def gen_header(self, fields: list[tuple[bytes, bytes]], *args: Any) -> Any:
        timed = [
            (b"t", str(self.signed_at).encode()) if name == b"t" and self.signed_at else (name, v)
            for name, v in fields
        ]
        if self.expires is not None:
            timed.insert(len(timed) - 1, (b"x", str(self.expires).encode()))
        return super().gen_header(timed, *args)


def sign(
    message: bytes,
    *,
    domain: str = REPORTER,
    selector: str = SELECTOR,
    key: SigningKey | None = None,
    signed_at: int | None = None,
    expires: int | None = None,
) -> bytes:
    """`message` with a DKIM-Signature by `domain` prepended (with t= `signed_at` and
    x= `expires`, seconds since the epoch, when given)."""
    key = key or signing_key()
    if signed_at is not None or expires is not None:
        signer = _TimedSigner(message, signed_at, expires)
        return (
            bytes(
                signer.sign(
                    selector.encode(), domain.encode(), key.private_pem, include_headers=SIGNED
                )
            )
            + message
        )
    signature = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key.private_pem,
        include_headers=[
            b"from",
            b"to",
            b"subject",
            b"date",
            b"message-id",
            b"content-type",
            b"tls-report-domain",
            b"tls-report-submitter",
        ],
        tlsrpt=True,
    )
    return signature + message


SIGNED = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"content-type",
    b"tls-report-domain",
    b"tls-report-submitter",
]


def key_lookup(
    records: dict[str, bytes | None], *, temporary: frozenset[str] = frozenset()
) -> KeyLookup:
    """A `KeyLookup` answering from `records`; names in `temporary` fail for now."""

    def lookup(name: str) -> KeyAnswer:
        if name in temporary:
            return KeyAnswer(None, temporary=True, detail="test: SERVFAIL")
        return KeyAnswer(records.get(name))

    return lookup


def reporter_lookup(key: SigningKey | None = None) -> KeyLookup:
    return key_lookup({f"{SELECTOR}._domainkey.{REPORTER}": (key or signing_key()).record})


# ---------------------------------------------------------------- the builders' own tests


def test_report_email_styles_all_carry_the_report() -> None:
    for style in ("rfc", "rfc-json", "gzip-mixed", "octet-stream", "json-qp"):
        extracted = extract_reports(report_email(report_dict(), style=style))
        assert [type(found.outcome) for found in extracted.reports] == [ParsedReport], style


def test_signed_email_verifies_with_the_test_key() -> None:
    message = sign(report_email(report_dict()))
    verdict = verify_dkim(message, REPORTER, reporter_lookup())
    assert verdict.status.value == "pass"


def nested_email(depth: int, *, folded: bool = False) -> bytes:
    """An email of `depth` multiparts, each the only part of the one around it, around a
    report (application/tlsrpt+json), as a hostile sender builds it."""
    separator = b"\r\n " if folded else b" "
    head = b"From: noreply-tls-reporting@reporter.example\r\nSubject: nested\r\n"
    opening = b""
    closing = b""
    for level in range(depth):
        opening += b'Content-Type:%smultipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (
            separator,
            level,
            level,
        )
        closing = b"\r\n--b%d--\r\n" % level + closing
    body = b"Content-Type: application/tlsrpt+json\r\n\r\n" + json.dumps(report_dict()).encode()
    return head + opening + body + closing
