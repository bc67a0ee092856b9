"""The SMTP reply grammar (RFC 5321 §4.2), EHLO parsing (§4.1.1.1) and mask detection."""

from __future__ import annotations

import itertools
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.core.smtp import (
    NEED_DATA,
    ConnectionClosed,
    LimitExceeded,
    MalformedReply,
    Reply,
    ReplyEvent,
    ReplyParser,
    SmtpLimits,
    find_masked_starttls,
    is_masked_banner,
    parse_ehlo_reply,
)

DEFAULT_LIMITS = SmtpLimits()


def parse_all(
    data: bytes, limits: SmtpLimits = DEFAULT_LIMITS, *, eof: bool = True
) -> list[ReplyEvent]:
    """Every event for `data` fed at once, then (optionally) end of stream."""
    return feed_chunks([data], limits, eof=eof)


def feed_chunks(
    chunks: list[bytes], limits: SmtpLimits = DEFAULT_LIMITS, *, eof: bool = True
) -> list[ReplyEvent]:
    parser = ReplyParser(limits)
    events: list[ReplyEvent] = []

    def drain() -> bool:
        while True:
            event = parser.next_reply()
            if event is NEED_DATA:
                return True
            events.append(event)
            if not isinstance(event, Reply):
                return False

    for chunk in chunks:
        parser.receive_data(chunk)
        if not drain():
            return events
    if eof:
        parser.receive_data(b"")
        drain()
    return events


# ---------------------------------------------------------------- reply shapes

SMALL = SmtpLimits(max_line_length=16, max_lines_per_reply=3, max_reply_bytes=40)

REPLY_SHAPES = [
    # (id, data, limits, expected first event)
    (
        "single-line",
        b"220 mx.example ESMTP\r\n",
        SmtpLimits(),
        Reply(220, ("mx.example ESMTP",), ("220 mx.example ESMTP",)),
    ),
    (
        "missing-space",
        b"220mx.example ESMTP\r\n",
        SmtpLimits(),
        MalformedReply("reply code not followed by space or hyphen: '220mx.example ESMTP'"),
    ),
    (
        "multi-line",
        b"250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
        SmtpLimits(),
        Reply(
            250,
            ("mx.example", "PIPELINING", "STARTTLS"),
            ("250-mx.example", "250-PIPELINING", "250 STARTTLS"),
        ),
    ),
    (
        "mismatched-codes",
        b"250-mx.example\r\n251 STARTTLS\r\n",
        SmtpLimits(),
        MalformedReply("reply lines carry different codes: 250 then 251"),
    ),
    (
        "final-line-no-text",
        b"250-mx.example\r\n250\r\n",
        SmtpLimits(),
        Reply(250, ("mx.example", ""), ("250-mx.example", "250")),
    ),
    (
        "two-digit-code",
        b"25\r\n",
        SmtpLimits(),
        MalformedReply("reply line does not start with a reply code: '25'"),
    ),
    (
        "continuation-no-text",
        b"250-\r\n250 ok\r\n",
        SmtpLimits(),
        Reply(250, ("", "ok"), ("250-", "250 ok")),
    ),
    (
        "non-digit-code",
        b"2x0 hello\r\n",
        SmtpLimits(),
        MalformedReply("reply line does not start with a reply code: '2x0 hello'"),
    ),
    (
        "code-in-range",
        b"554 no service\r\n",
        SmtpLimits(),
        Reply(554, ("no service",), ("554 no service",)),
    ),
    (
        "code-out-of-range",
        b"600 no\r\n",
        SmtpLimits(),
        MalformedReply("reply line does not start with a reply code: '600 no'"),
    ),
    (
        "second-digit-out-of-range",
        b"260 no\r\n",
        SmtpLimits(),
        MalformedReply("reply line does not start with a reply code: '260 no'"),
    ),
    ("bare-lf", b"220 hi\n", SmtpLimits(), Reply(220, ("hi",), ("220 hi",), bare_lf=True)),
    ("crlf", b"220 hi\r\n", SmtpLimits(), Reply(220, ("hi",), ("220 hi",), bare_lf=False)),
    (
        "empty-line",
        b"\r\n",
        SmtpLimits(),
        MalformedReply("reply line does not start with a reply code: ''"),
    ),
    (
        "trailing-spaces",
        b"250 STARTTLS   \r\n",
        SmtpLimits(),
        Reply(250, ("STARTTLS",), ("250 STARTTLS   ",)),
    ),
    (
        "line-at-limit",
        b"220 0123456789\r\n",
        SMALL,
        Reply(220, ("0123456789",), ("220 0123456789",)),
    ),
    (
        "line-over-limit",
        b"220 01234567890\r\n",
        SMALL,
        LimitExceeded("reply line longer than 16 bytes"),
    ),
    (
        "lines-at-limit",
        b"250-a\r\n250-b\r\n250 c\r\n",
        SMALL,
        Reply(250, ("a", "b", "c"), ("250-a", "250-b", "250 c")),
    ),
    (
        "lines-over-limit",
        b"250-a\r\n250-b\r\n250-c\r\n250 d\r\n",
        SMALL,
        LimitExceeded("more than 3 lines in one reply"),
    ),
    (
        "bytes-at-limit",
        b"250-0123456\r\n250-0123456\r\n250 0123\r\n",
        SmtpLimits(max_line_length=16, max_lines_per_reply=9, max_reply_bytes=36),
        Reply(250, ("0123456", "0123456", "0123"), ("250-0123456", "250-0123456", "250 0123")),
    ),
    (
        "bytes-over-limit",
        b"250-0123456\r\n250-0123456\r\n250 01234\r\n",
        SmtpLimits(max_line_length=16, max_lines_per_reply=9, max_reply_bytes=36),
        LimitExceeded("reply longer than 36 bytes"),
    ),
    ("complete-then-closed", b"220 hi\r\n", SmtpLimits(), Reply(220, ("hi",), ("220 hi",))),
    ("closed-mid-reply", b"250-a\r\n250 b", SmtpLimits(), ConnectionClosed(partial=True)),
]


@pytest.mark.parametrize(
    ("data", "limits", "expected"),
    [pytest.param(d, lim, e, id=i) for i, d, lim, e in REPLY_SHAPES],
)
def test_reply_shapes(data: bytes, limits: SmtpLimits, expected: ReplyEvent) -> None:
    assert parse_all(data, limits)[0] == expected


def test_clean_end_of_stream_is_not_partial() -> None:
    assert parse_all(b"220 hi\r\n") == [Reply(220, ("hi",), ("220 hi",)), ConnectionClosed()]


def test_errors_are_sticky_and_drop_the_buffer() -> None:
    parser = ReplyParser()
    parser.receive_data(b"xyz\r\n220 fine\r\n")
    first = parser.next_reply()
    assert isinstance(first, MalformedReply)
    parser.receive_data(b"220 more\r\n")
    assert parser.next_reply() == first
    assert parser.buffered == b""


def test_reply_text_joins_lines() -> None:
    (reply, *_) = parse_all(b"421-busy\r\n421 try later\r\n")
    assert isinstance(reply, Reply)
    assert reply.text == "busy try later"
    assert not reply.is_positive


# ---------------------------------------------------------------- properties

reply_texts = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
    str.strip
)
reply_codes = st.builds(
    lambda a, b, c: 100 * a + 10 * b + c,
    st.integers(2, 5),
    st.integers(0, 5),
    st.integers(0, 9),
)


@st.composite
def replies(draw: st.DrawFn) -> tuple[int, list[str], bytes]:
    code = draw(reply_codes)
    texts = draw(st.lists(reply_texts, min_size=1, max_size=5))
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    wire = b""
    for index, text in enumerate(texts):
        last = index == len(texts) - 1
        sep = b" " if last else b"-"
        wire += str(code).encode() + (sep + text.encode() if text or not last else b"") + eol
    return code, texts, wire


@given(st.lists(replies(), min_size=1, max_size=5))
def test_well_formed_replies_round_trip(stream: list[tuple[int, list[str], bytes]]) -> None:
    events = parse_all(b"".join(wire for _, _, wire in stream))
    assert events[-1] == ConnectionClosed()
    parsed = events[:-1]
    assert [(e.code, list(e.texts)) for e in parsed if isinstance(e, Reply)] == [
        (code, texts) for code, texts, _ in stream
    ]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    # An empty chunk would mean end of stream, so none is produced.
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


mixed_streams = st.one_of(
    st.binary(max_size=300),
    st.lists(replies(), max_size=4).map(lambda rs: b"".join(w for _, _, w in rs)),
    st.lists(
        st.one_of(
            replies().map(lambda r: r[2]),
            st.sampled_from(
                [b"250-", b"250 ", b"\r\n", b"\n", b"2", b"x", b"251-a\r\n", b"0" * 20]
            ),
        ),
        max_size=12,
    ).map(b"".join),
)
limit_choices = st.sampled_from(
    [SmtpLimits(), SMALL, SmtpLimits(max_line_length=8, max_lines_per_reply=2, max_reply_bytes=12)]
)


@given(mixed_streams, st.lists(st.integers(min_value=0), max_size=20), limit_choices)
def test_events_do_not_depend_on_how_bytes_are_split(
    data: bytes, cuts: list[int], limits: SmtpLimits
) -> None:
    whole = parse_all(data, limits)
    assert feed_chunks(split(data, cuts), limits) == whole
    assert feed_chunks([bytes([b]) for b in data], limits) == whole


@given(mixed_streams, st.lists(st.integers(min_value=0), max_size=20), limit_choices)
def test_buffers_stay_within_limits(data: bytes, cuts: list[int], limits: SmtpLimits) -> None:
    parser = ReplyParser(limits)
    for chunk in split(data, cuts):
        parser.receive_data(chunk)
        while True:
            event = parser.next_reply()
            assert parser.pending_lines <= limits.max_lines_per_reply
            assert parser.pending_bytes <= limits.max_reply_bytes
            if event is NEED_DATA:
                # Drained: at most one partial line is held.
                assert len(parser.buffered) < limits.max_line_length
                break
            if not isinstance(event, Reply):
                assert parser.buffered == b""
                return


# ---------------------------------------------------------------- EHLO


def ehlo(*lines: str) -> Reply:
    (reply, *_) = parse_all("".join(lines).encode())
    assert isinstance(reply, Reply)
    return reply


EHLO_CASES = [
    ("one-line", ehlo("250 mx.example\r\n"), "mx.example", {}),
    (
        "greeting-and-keywords",
        ehlo(
            "250-mx.example at your service\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n250 STARTTLS\r\n"
        ),
        "mx.example",
        {"SIZE": ("35882577",), "8BITMIME": (), "STARTTLS": ()},
    ),
    (
        "lower-case-keywords",
        ehlo("250-mx.example\r\n250-starttls\r\n250 auth PLAIN LOGIN\r\n"),
        "mx.example",
        {"STARTTLS": (), "AUTH": ("PLAIN", "LOGIN")},
    ),
    (
        "mixed-case-trailing-space",
        ehlo("250-mx.example\r\n250 StartTLS  \r\n"),
        "mx.example",
        {"STARTTLS": ()},
    ),
    ("no-starttls", ehlo("250-mx.example\r\n250 PIPELINING\r\n"), "mx.example", {"PIPELINING": ()}),
    (
        "masked",
        ehlo("250-mx.example\r\n250-XXXXXXXA\r\n250 PIPELINING\r\n"),
        "mx.example",
        {"XXXXXXXA": (), "PIPELINING": ()},
    ),
]


@pytest.mark.parametrize(
    ("reply", "domain", "extensions"),
    [pytest.param(r, d, e, id=i) for i, r, d, e in EHLO_CASES],
)
def test_parse_ehlo_reply(
    reply: Reply, domain: str, extensions: dict[str, tuple[str, ...]]
) -> None:
    parsed = parse_ehlo_reply(reply)
    assert parsed.domain == domain
    assert dict(parsed.extensions) == extensions
    assert parsed.keywords == tuple(extensions)
    assert parsed.invalid_lines == ()


@pytest.mark.parametrize(
    ("line", "valid", "starttls"),
    [
        pytest.param("250 STARTTLS", True, True, id="keyword"),
        pytest.param("250 -STARTTLS", False, False, id="leading-hyphen"),
        pytest.param("250 8BITMIME", True, False, id="leading-digit"),
        pytest.param("250 ***TLS", False, False, id="asterisks"),
        pytest.param("250 AUTH=LOGIN", False, False, id="old-auth-equals"),
        pytest.param("250 AUTH LOGIN", True, False, id="auth-with-params"),
        pytest.param("250 starttls", True, True, id="lower-case"),
        # U+017F LATIN SMALL LETTER LONG S upper-cases to "S".
        pytest.param("250 \u017ftarttls", False, False, id="long-s-look-alike"),
        # U+FB06 LATIN SMALL LIGATURE ST upper-cases to "ST".
        pytest.param("250 \ufb06arttls", False, False, id="st-ligature-look-alike"),
        pytest.param("250 STARTTLS  ", True, True, id="trailing-spaces"),
        pytest.param("250 STARTTLS\x0b", False, False, id="trailing-vertical-tab"),
        pytest.param("250 STARTTLS\x0c", False, False, id="trailing-form-feed"),
        pytest.param("250 STARTTLS\u0085", False, False, id="trailing-next-line"),
        pytest.param("250 STARTTLS\u00a0", False, False, id="trailing-no-break-space"),
        pytest.param("250 STARTTLS\x0bX", False, False, id="vertical-tab-separator"),
        pytest.param("250 AUTH\tLOGIN", False, False, id="tab-separator"),
    ],
)
def test_ehlo_keyword_grammar(line: str, valid: bool, starttls: bool) -> None:
    parsed = parse_ehlo_reply(ehlo("250-mx.example\r\n", line + "\r\n"))
    assert (parsed.invalid_lines == ()) is valid
    assert len(parsed.keywords) == (1 if valid else 0)  # only grammatical keywords count
    assert len(parsed.extensions) == (1 if valid else 0)
    assert parsed.has("STARTTLS") is starttls


@pytest.mark.parametrize(
    ("text", "starttls"),
    [
        pytest.param("STARTTLS", True, id="ascii"),
        pytest.param("sTaRtTlS", True, id="ascii-mixed-case"),
        pytest.param("\u017ftarttls", False, id="long-s"),
        pytest.param("\ufb06arttls", False, id="st-ligature"),
        pytest.param("STARTTL\u017f", False, id="long-s-last"),
        pytest.param("STARTTLS\x0b", False, id="vertical-tab"),
        pytest.param("STARTTLS\u0085", False, id="next-line"),
        pytest.param("STARTTLS\u2028", False, id="line-separator"),
        pytest.param("STARTTLS PARAM", True, id="space-then-param"),
        pytest.param("STARTTLS\u3000PARAM", False, id="ideographic-space"),
    ],
)
def test_ehlo_keyword_checked_before_upper_casing(text: str, starttls: bool) -> None:
    """Replies built directly: no reply-parser stripping stands between text and grammar."""
    parsed = parse_ehlo_reply(Reply(250, ("mx", text), ()))
    assert parsed.has("STARTTLS") is starttls
    assert parsed.params("STARTTLS") == (None if not starttls else tuple(text.split(" ")[1:]))
    assert parsed.keywords == (("STARTTLS",) if starttls else ())
    assert parsed.invalid_lines == (() if starttls else (text,))


@given(st.lists(st.text(max_size=20), max_size=6))
def test_ehlo_keywords_are_always_grammatical(texts: list[str]) -> None:
    parsed = parse_ehlo_reply(Reply(250, ("mx", *texts), ()))
    assert len(parsed.keywords) + len(parsed.invalid_lines) == len(texts)
    for keyword in (*parsed.keywords, *parsed.extensions):
        assert keyword.isascii()
        assert keyword == keyword.upper()
        assert re.fullmatch(r"[A-Z0-9][A-Z0-9-]*", keyword)
    for keyword, params in parsed.extensions.items():
        assert all(param and " " not in param for param in params)
        assert keyword in parsed.keywords


def test_ehlo_first_occurrence_wins() -> None:
    parsed = parse_ehlo_reply(ehlo("250-mx\r\n250-SIZE 1\r\n250 size 2\r\n"))
    assert parsed.params("size") == ("1",)
    assert parsed.keywords == ("SIZE", "SIZE")
    assert parsed.has("Size")
    assert not parsed.has("STARTTLS")
    assert parsed.params("STARTTLS") is None


# What r"\A[A-Za-z0-9][A-Za-z0-9-]{0,15}\Z" and r"\A[!-~]{1,10}\Z" match, drawn as whole
# strings (a regex strategy draws each character on its own).
ALNUM = string.ascii_letters + string.digits
ehlo_keywords = st.builds(
    str.__add__, st.sampled_from(ALNUM), st.text(alphabet=ALNUM + "-", max_size=15)
)
ehlo_params = st.lists(
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=10
    ),
    max_size=3,
)


@given(st.lists(st.tuples(ehlo_keywords, ehlo_params), max_size=8))
def test_ehlo_parse_recovers_every_keyword(lines: list[tuple[str, list[str]]]) -> None:
    wire = "".join(
        f"250-{kw} {' '.join(params)}\r\n" if params else f"250-{kw}\r\n" for kw, params in lines
    )
    parsed = parse_ehlo_reply(ehlo("250-mx.example hello\r\n", wire, "250 HELP\r\n"))
    assert parsed.domain == "mx.example"
    assert parsed.greeting == "hello"
    assert parsed.keywords == (*(kw.upper() for kw, _ in lines), "HELP")
    assert parsed.invalid_lines == ()
    first: dict[str, tuple[str, ...]] = {}
    for kw, params in lines:
        assert parsed.has(kw)
        first.setdefault(kw.upper(), tuple(params))
    for kw, expected in first.items():
        assert parsed.params(kw) == expected


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize(
    ("keywords", "found"),
    [
        pytest.param(["PIPELINING", "XXXXXXXA"], "XXXXXXXA", id="cisco-mask"),
        pytest.param(["PIPELINING", "STARTTLS"], None, id="plain-starttls"),
        pytest.param(["XXXXXXXX"], "XXXXXXXX", id="all-x"),
        pytest.param(["XXXXXXA"], None, id="seven-chars"),
        pytest.param(["xxxxxxxa"], "XXXXXXXA", id="lower-case"),
        pytest.param(["XXXXXXXAB"], None, id="nine-chars"),
        pytest.param(["XXXXAXXX"], None, id="letter-inside"),
        pytest.param(["XXXXXXX1"], None, id="trailing-digit"),
        pytest.param([], None, id="no-keywords"),
        # Cisco masks other extensions the same way; STARTTLS itself is then still there.
        pytest.param(["STARTTLS", "XXXXXXXB"], None, id="other-extension-masked"),
        pytest.param(["XXXXXXXB", "starttls"], None, id="other-extension-masked-lower-case"),
        pytest.param(["STARTTLSX", "XXXXXXXB"], "XXXXXXXB", id="no-real-starttls"),
        # A look-alike of STARTTLS is no STARTTLS: the mask still stands for it.
        pytest.param(["\u017ftarttls", "XXXXXXXA"], "XXXXXXXA", id="look-alike-beside-mask"),
        pytest.param(["starttls", "XXXXXXXA"], None, id="real-beside-mask"),
        # IGNORECASE would match U+017F and U+212A (Kelvin sign) to [A-Z].
        pytest.param(["XXXXXXX\u017f"], None, id="long-s-mask"),
        pytest.param(["XXXXXXX\u212a"], None, id="kelvin-mask"),
        pytest.param(["XXXXXXXs"], "XXXXXXXS", id="ascii-s-mask"),
    ],
)
def test_find_masked_starttls(keywords: list[str], found: str | None) -> None:
    assert find_masked_starttls(keywords) == found


@given(st.lists(ehlo_keywords.filter(lambda k: len(k) != 8 or k.upper().count("X") < 7)))
def test_no_mask_found_without_seven_xs(keywords: list[str]) -> None:
    assert find_masked_starttls(keywords) is None


@given(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), st.lists(ehlo_keywords, max_size=4))
def test_mask_found_among_other_keywords(letter: str, others: list[str]) -> None:
    others = [k for k in others if find_masked_starttls([k]) is None and k.upper() != "STARTTLS"]
    assert find_masked_starttls([*others, "X" * 7 + letter, *others]) == "X" * 7 + letter


@given(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), st.lists(ehlo_keywords, max_size=4))
def test_no_mask_beside_a_real_starttls(letter: str, others: list[str]) -> None:
    assert find_masked_starttls([*others, "X" * 7 + letter, "StartTLS", *others]) is None


@pytest.mark.parametrize(
    ("banner", "masked"),
    [
        pytest.param("****************************2***0*0****", True, id="mailguard"),
        pytest.param("mx.example ESMTP Postfix", False, id="ordinary"),
        pytest.param("********", True, id="just-stars"),
        pytest.param("*******", False, id="too-few-stars"),
        pytest.param("mx.example ******** ESMTP Postfix (Debian/GNU)", False, id="some-stars"),
        pytest.param("", False, id="empty"),
    ],
)
def test_is_masked_banner(banner: str, masked: bool) -> None:
    assert is_masked_banner(banner) is masked
