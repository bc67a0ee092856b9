"""Finding reports in emails, mbox files, Maildir folders and report files."""

from __future__ import annotations

import io
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_received_builders import (
    POLICY_DOMAIN,
    REPORTER,
    dmarc_like_email,
    mbox,
    nested_email,
    plain_email,
    report_bytes,
    report_dict,
    report_email,
)

from scanner.received.items import MessageItem, PayloadItem, RejectedItem, SkippedItem, SourceBegins
from scanner.received.limits import DEFAULT_LIMITS, ReceivedLimits
from scanner.received.mail import extract_reports
from scanner.received.mailboxes import file_items, mbox_items
from scanner.received.report import ParsedReport, RejectedReport

STYLES = ["rfc", "rfc-json", "gzip-mixed", "octet-stream", "json-qp"]


@pytest.mark.parametrize("style", STYLES)
def test_every_sender_style_is_found(style: str) -> None:
    extracted = extract_reports(report_email(report_dict(), style=style))
    (found,) = extracted.reports
    assert isinstance(found.outcome, ParsedReport)
    assert found.outcome.report.report_id == "5065427c-23d3-47ca-b6e0-946ea0e8c4be"
    info = extracted.info
    assert info.submitter == REPORTER
    assert info.destinations == frozenset({f"mailto:tlsrpt@{POLICY_DOMAIN}"})
    assert info.report_type_tlsrpt is style.startswith("rfc")


def test_submitter_falls_back_to_the_from_domain() -> None:
    extracted = extract_reports(
        report_email(report_dict(), submitter=None, sender="Reports <r@Mail.Other.Example>")
    )
    assert extracted.info.submitter == "mail.other.example"


@pytest.mark.parametrize(
    "message",
    [plain_email(), dmarc_like_email(), b"", b"garbage\x00\xff", b"Subject: x\n\n{not json"],
    ids=["plain", "dmarc-gzip", "empty", "garbage", "braces"],
)
def test_messages_without_a_report(message: bytes) -> None:
    assert extract_reports(message).reports == ()


def test_declared_but_broken_report_is_rejected_not_ignored() -> None:
    extracted = extract_reports(report_email(b'{"organization-name": "X"'))
    (found,) = extracted.reports
    assert isinstance(found.outcome, RejectedReport)
    assert "not JSON" in found.outcome.summary
    assert "application/tlsrpt+gzip" in found.part


def test_undeclared_json_that_names_report_keys_is_judged() -> None:
    report = report_dict()
    del report["organization-name"]
    extracted = extract_reports(report_email(report, style="octet-stream"))
    (found,) = extracted.reports
    assert isinstance(found.outcome, RejectedReport)
    assert "organization-name: required, missing" in found.outcome.summary


def test_several_reports_in_one_message_and_a_bad_neighbour() -> None:
    second = MIMEApplication(report_bytes(report_dict(report_id="second")), "tlsrpt+gzip")
    corrupt = MIMEApplication(b"\x1f\x8b not really gzip", "tlsrpt+gzip")
    logo = MIMEBase("image", "png")
    logo.set_payload(b"\x89PNG....")
    message = report_email(report_dict(), extra_parts=[corrupt, second, logo])
    outcomes = [found.outcome for found in extract_reports(message).reports]
    assert [type(outcome) for outcome in outcomes] == [ParsedReport, RejectedReport, ParsedReport]
    assert isinstance(outcomes[2], ParsedReport)
    assert outcomes[2].report.report_id == "second"


def test_forwarded_report_is_found_inside_message_rfc822() -> None:
    from email import message_from_bytes
    from email.mime.message import MIMEMessage

    outer = MIMEMultipart("mixed")
    outer["From"] = "admin@company-y.example"
    outer.attach(MIMEMessage(message_from_bytes(report_email(report_dict()))))
    (found,) = extract_reports(outer.as_bytes()).reports
    assert isinstance(found.outcome, ParsedReport)


def test_message_limits() -> None:
    message = report_email(report_dict())
    small = ReceivedLimits(max_message_bytes=len(message) - 1)
    extracted = extract_reports(message, small)
    assert extracted.reports == ()
    assert "limit" in extracted.problems[0]
    assert extract_reports(
        message, ReceivedLimits(max_message_bytes=len(message))
    ).reports  # the twin
    parts = ReceivedLimits(max_mime_parts=1)  # the text part is the first leaf
    extracted = extract_reports(message, parts)
    assert extracted.reports == ()
    assert "more than 1 MIME parts" in extracted.problems[0]


def test_encoded_and_undecodable_headers() -> None:
    message = report_email(report_dict()).replace(
        b"Subject: Report", b"Subject: =?utf-8?q?=E2=9C=93?= \xff Report", 1
    )
    extracted = extract_reports(message)
    assert extracted.info.subject is not None
    assert "\ufffd" in extracted.info.subject
    assert extracted.info.subject.startswith("\u2713")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_as_an_email(data: bytes) -> None:
    extract_reports(data)
    extract_reports(b"Content-Type: multipart/mixed; boundary=x\n\n--x\n" + data + b"\n--x--\n")


@settings(max_examples=100, deadline=None)
@given(
    st.text(max_size=200),
    st.sampled_from(["base64", "quoted-printable", "7bit", "x-uuencode", "bogus"]),
)
def test_any_part_body_and_encoding(body: str, encoding: str) -> None:
    message = (
        "From: a@b.example\nContent-Type: multipart/report; report-type=tlsrpt; boundary=b\n\n--b\n"
        f"Content-Type: application/tlsrpt+json\nContent-Transfer-Encoding: {encoding}\n\n{body}\n--b--\n"
    ).encode("utf-8", "surrogatepass")
    extracted = extract_reports(message)
    assert all(
        isinstance(found.outcome, ParsedReport | RejectedReport) for found in extracted.reports
    )


# ---------------------------------------------------------------- mbox


def _items(data: bytes, limits: ReceivedLimits = DEFAULT_LIMITS) -> list[object]:
    return list(mbox_items(io.BytesIO(data), "box", limits))


def test_mbox_splits_messages_and_unquotes_from_lines() -> None:
    body = "a line\nFrom the start of a line\n>From quoted already\n"
    first = plain_email(body)
    second = report_email(report_dict())
    items = _items(mbox([first, second, first]))
    assert [type(item) for item in items] == [MessageItem, MessageItem, MessageItem]
    assert [item.origin for item in items if isinstance(item, MessageItem)] == [
        "box message 1",
        "box message 2",
        "box message 3",
    ]
    assert isinstance(items[0], MessageItem)
    assert b"\nFrom the start of a line\n>From quoted already\n" in items[0].data
    assert isinstance(items[1], MessageItem)
    assert extract_reports(items[1].data).reports


def test_mbox_from_inside_a_paragraph_is_not_a_separator() -> None:
    data = (
        b"From x\nSubject: one\n\nline\nFrom inside a paragraph\n\nFrom y\nSubject: two\n\nbody\n"
    )
    items = _items(data)
    assert len(items) == 2
    assert isinstance(items[0], MessageItem)
    assert b"From inside a paragraph" in items[0].data


def test_mbox_oversize_message_costs_only_itself() -> None:
    big = plain_email("x" * 5000)
    good = report_email(report_dict())
    limits = ReceivedLimits(max_message_bytes=len(good) + 100)
    items = _items(mbox([good, big, good]), limits)
    assert [type(item) for item in items] == [MessageItem, RejectedItem, MessageItem]


def test_mbox_long_lines_are_read_in_pieces() -> None:
    long_line = b"X-Long: " + b"y" * 200_000
    message = b"Subject: long\n" + long_line + b"\n\nbody\nFrom here not a separator\n"
    items = _items(b"From a\n" + message + b"\nFrom b\nSubject: next\n\nbody\n")
    assert len(items) == 2
    assert isinstance(items[0], MessageItem)
    assert long_line in items[0].data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_mbox_never_loses_or_invents_a_message(bodies: list[bytes]) -> None:
    messages = [b"Subject: m\n\n" + body.replace(b"\r", b"") for body in bodies]
    items = _items(mbox(messages))
    assert len(items) == len(messages)


# ---------------------------------------------------------------- files and folders


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_folder_of_everything(tmp_path: Path) -> None:
    _write(tmp_path / "a.json", report_bytes(report_dict(report_id="a"), gzipped=False))
    _write(tmp_path / "b.json.gz", report_bytes(report_dict(report_id="b")))
    _write(tmp_path / "sub" / "c.eml", report_email(report_dict(report_id="c")))
    _write(
        tmp_path / "sub" / "box.mbox",
        mbox([report_email(report_dict(report_id="d")), plain_email()]),
    )
    maildir = tmp_path / "Maildir"
    _write(maildir / "new" / "1.host", report_email(report_dict(report_id="e")))
    _write(
        maildir / "cur" / "2.host:2,S", report_email(report_dict(report_id="f"), style="json-qp")
    )
    _write(maildir / "tmp" / "3.host", b"half-delivered")
    _write(maildir / "dovecot.index.log", b"\x00\x01binary index")
    _write(maildir / ".Archive" / "cur" / "4.host:2,S", report_email(report_dict(report_id="g")))
    (maildir / ".Archive" / "new").mkdir()
    _write(maildir / ".Archive" / "maildirfolder", b"")
    _write(tmp_path / "notes.txt", b"just some notes\n")
    _write(tmp_path / "empty.json", b"")
    items = list(file_items([tmp_path]))
    assert isinstance(items[0], SourceBegins)
    assert items[0].unit == "bytes"
    kinds = {
        item.origin.removeprefix(str(tmp_path) + "/"): type(item).__name__ for item in items[1:]
    }
    assert kinds == {
        "Maildir/.Archive/cur/4.host:2,S": "MessageItem",
        "Maildir/new/1.host": "MessageItem",
        "Maildir/cur/2.host:2,S": "MessageItem",
        "a.json": "PayloadItem",
        "b.json.gz": "PayloadItem",
        "empty.json": "SkippedItem",
        "notes.txt": "SkippedItem",
        "sub/box.mbox message 1": "MessageItem",
        "sub/box.mbox message 2": "MessageItem",
        "sub/c.eml": "MessageItem",
    }
    counted = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file()
        and "tmp" not in path.relative_to(tmp_path).parts
        and path.name not in ("dovecot.index.log", "maildirfolder")
    ]
    assert items[0].total == sum(path.stat().st_size for path in counted)


def test_oversize_files_are_rejected_unread(tmp_path: Path) -> None:
    limits = ReceivedLimits(max_compressed_bytes=100, max_message_bytes=100)
    _write(tmp_path / "big.json", b"{" + b" " * 200 + b"}")
    _write(tmp_path / "big.eml", b"Subject: x\n\n" + b"y" * 200)
    _write(tmp_path / "small.json", b"{}")
    items = [item for item in file_items([tmp_path], limits) if not isinstance(item, SourceBegins)]
    assert [type(item) for item in items] == [RejectedItem, RejectedItem, PayloadItem]


def test_missing_path_is_unreadable_not_fatal(tmp_path: Path) -> None:
    _write(tmp_path / "a.json", b"{}")
    items = list(file_items([tmp_path / "nope", tmp_path / "a.json"]))
    assert [type(item).__name__ for item in items] == [
        "SourceBegins",
        "UnreadableSource",
        "PayloadItem",
    ]


def test_symlinked_folders_are_not_followed(tmp_path: Path) -> None:
    _write(tmp_path / "real" / "a.json", b"{}")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "real")
    items = [item for item in file_items([tmp_path / "real"]) if not isinstance(item, SourceBegins)]
    assert [item.origin for item in items if isinstance(item, PayloadItem | SkippedItem)] == [
        str(tmp_path / "real" / "a.json")
    ]


@pytest.mark.parametrize("folded", [False, True], ids=["plain", "folded"])
def test_deeply_nested_multipart_is_refused_before_parsing(folded: bool) -> None:
    extracted = extract_reports(nested_email(1000, folded=folded))
    assert extracted.reports == ()
    assert extracted.problems == (
        "the message declares 1000 multipart or message parts; the limit is 20",
    )
    (found,) = extract_reports(nested_email(20, folded=folded)).reports  # the twin
    assert isinstance(found.outcome, ParsedReport)


def test_a_deep_email_costs_only_itself_and_its_neighbours_are_read(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from scanner.received.authenticity import NOT_EMAIL
    from scanner.received.importer import EventKind, Importer
    from scanner.received.store import ReportStore

    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder / "1-deep.eml", nested_email(1000))
    _write(folder / "2-good.json", report_bytes(report_dict(), gzipped=False))
    with ReportStore.open(tmp_path / "db.sqlite") as store:
        importer = Importer(
            store, verify=lambda data, info: NOT_EMAIL, now=lambda: datetime.now(UTC)
        )
        tally = importer.run(file_items([folder]))
        assert tally.count(EventKind.IMPORTED) == 1
        (rejected,) = tally.notable
        assert rejected.origin == str(folder / "1-deep.eml")
        assert "1000 multipart or message parts" in rejected.detail


def test_an_unexpected_failure_rejects_that_message_which_is_still_marked(tmp_path: Path) -> None:
    """A bug one message finds (here: in the injected verifier) costs that message only; it is
    acknowledged (IMAP: marked seen) with the reason, and the next message is imported."""
    from datetime import UTC, datetime

    from scanner.received.authenticity import NOT_EMAIL, Authenticity
    from scanner.received.importer import EventKind, Importer
    from scanner.received.mail import MessageInfo
    from scanner.received.store import ReportStore

    def verify(data: bytes, info: MessageInfo) -> Authenticity:
        if b"poison" in data:
            raise RecursionError("maximum recursion depth exceeded")
        return NOT_EMAIL

    marked: list[str] = []
    items = [
        MessageItem(
            f"uid {uid}",
            report_email(report_dict(report_id=report_id)),
            1,
            acknowledge=lambda uid=uid: marked.append(uid),
        )
        for uid, report_id in (("1", "poison"), ("2", "good"))
    ]
    with ReportStore.open(tmp_path / "db.sqlite") as store:
        tally = Importer(store, verify=verify, now=lambda: datetime.now(UTC)).run(items)
        assert [stored.report.report_id for stored in store.reports()] == ["good"]
    assert marked == ["1", "2"]
    assert tally.count(EventKind.IMPORTED) == 1
    (rejected,) = tally.notable
    assert rejected.origin == "uid 1"
    assert rejected.detail == (
        "could not be handled (RecursionError: maximum recursion depth exceeded)"
    )
