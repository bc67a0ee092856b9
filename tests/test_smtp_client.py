"""The sans-IO SMTP client: every legal transition, every illegal one, STARTTLS trailing data."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.core.smtp import (
    AWAITING_REPLY,
    EXPECTED_CODE,
    FINISHED,
    NEED_DATA,
    PARTIAL_GREETING_NOTE,
    PAUSED,
    TRANSITIONS,
    ClientInput,
    ClientState,
    ConnectionClosed,
    Event,
    LimitExceeded,
    MalformedReply,
    Reply,
    SmtpClient,
    SmtpLimits,
    SmtpProtocolError,
    is_partial_greeting,
)

NAME = "probe.example"


def feed(client: SmtpClient, data: bytes) -> Event:
    client.receive_data(data)
    return client.next_event()


# How to reach every state from a fresh client.
PATHS: dict[ClientState, list[Callable[[SmtpClient], object]]] = {}


def path(state: ClientState, *steps: Callable[[SmtpClient], object]) -> None:
    PATHS[state] = list(steps)


greet = lambda c: feed(c, b"220 mx.example ESMTP\r\n")  # noqa: E731
ehlo = lambda c: c.send_ehlo(NAME)  # noqa: E731
ok250 = lambda c: feed(c, b"250 ok\r\n")  # noqa: E731
starttls = lambda c: c.send_starttls()  # noqa: E731
go220 = lambda c: feed(c, b"220 go ahead\r\n")  # noqa: E731
tls = lambda c: c.tls_established()  # noqa: E731

path(ClientState.GREETING)
path(ClientState.GREETED, greet)
path(ClientState.GREETING_REFUSED, lambda c: feed(c, b"554 no service\r\n"))
path(ClientState.EHLO_SENT, greet, ehlo)
path(ClientState.EHLO_REFUSED, greet, ehlo, lambda c: feed(c, b"502 unknown\r\n"))
path(
    ClientState.HELO_SENT,
    greet,
    ehlo,
    lambda c: feed(c, b"502 unknown\r\n"),
    lambda c: c.send_helo(NAME),
)
path(ClientState.HELO_REFUSED, greet, lambda c: c.send_helo(NAME), lambda c: feed(c, b"501 no\r\n"))
path(ClientState.SESSION, greet, ehlo, ok250)
path(ClientState.STARTTLS_SENT, greet, ehlo, ok250, starttls)
path(
    ClientState.STARTTLS_REFUSED, greet, ehlo, ok250, starttls, lambda c: feed(c, b"454 later\r\n")
)
path(ClientState.TLS, greet, ehlo, ok250, starttls, go220)
path(ClientState.TLS_ESTABLISHED, greet, ehlo, ok250, starttls, go220, tls)
path(ClientState.EHLO_AFTER_TLS_SENT, greet, ehlo, ok250, starttls, go220, tls, ehlo)
path(ClientState.TLS_SESSION, greet, ehlo, ok250, starttls, go220, tls, ehlo, ok250)
path(ClientState.QUIT_SENT, greet, lambda c: c.send_quit())
path(ClientState.CLOSED, greet, lambda c: c.send_quit(), lambda c: feed(c, b"221 bye\r\n"))
path(ClientState.ERROR, greet, ehlo, lambda c: feed(c, b"hello\r\n"))
path(ClientState.GREETING_BROKEN, lambda c: feed(c, b"hello\r\n"))


def client_in(state: ClientState) -> SmtpClient:
    client = SmtpClient()
    for step in PATHS[state]:
        step(client)
    assert client.state is state
    return client


def test_every_state_is_reachable() -> None:
    assert set(PATHS) == set(ClientState)


def apply(client: SmtpClient, move: ClientInput) -> object:
    """Drive `move` through the public API; returns what the call returned."""
    state = client.state
    match move:
        case ClientInput.SEND_EHLO:
            return client.send_ehlo(NAME)
        case ClientInput.SEND_HELO:
            return client.send_helo(NAME)
        case ClientInput.SEND_STARTTLS:
            return client.send_starttls()
        case ClientInput.SEND_QUIT:
            return client.send_quit()
        case ClientInput.TLS_ESTABLISHED:
            client.tls_established()
            return None
        case ClientInput.REPLY_ACCEPTED:
            return feed(client, b"%d fine\r\n" % EXPECTED_CODE.get(state, 250))
        case ClientInput.REPLY_REJECTED:
            code = 421 if EXPECTED_CODE.get(state) != 421 else 500
            return feed(client, b"%d no\r\n" % code)
        case ClientInput.SERVER_CLOSED:
            return feed(client, b"")
        case ClientInput.SERVER_FAULT:
            return feed(client, b"2x0 garbage\r\n")
        case ClientInput.ABANDON:
            return client.abandon_with_quit()
    raise AssertionError(move)


ALL_PAIRS = [(state, move) for state in ClientState for move in ClientInput]


@pytest.mark.parametrize(
    ("state", "move"),
    [pytest.param(s, m, id=f"{s.value}+{m.value}") for s, m in ALL_PAIRS if (s, m) in TRANSITIONS],
)
def test_legal_transition(state: ClientState, move: ClientInput) -> None:
    client = client_in(state)
    apply(client, move)
    assert client.state is TRANSITIONS[(state, move)]


REPLY_MOVES = {
    ClientInput.REPLY_ACCEPTED,
    ClientInput.REPLY_REJECTED,
    ClientInput.SERVER_FAULT,
    ClientInput.SERVER_CLOSED,
}


@pytest.mark.parametrize(
    ("state", "move"),
    [
        pytest.param(s, m, id=f"{s.value}+{m.value}")
        for s, m in ALL_PAIRS
        if (s, m) not in TRANSITIONS
    ],
)
def test_illegal_transition(state: ClientState, move: ClientInput) -> None:
    client = client_in(state)
    if move in REPLY_MOVES:
        # Server bytes cannot be refused: they wait, unparsed, until a reply is due.
        assert state not in AWAITING_REPLY
        assert apply(client, move) is PAUSED
    else:
        with pytest.raises(SmtpProtocolError, match=f"in state {state.value}"):
            apply(client, move)
    assert client.state is state


def test_commands_are_single_crlf_lines() -> None:
    client = client_in(ClientState.GREETED)
    assert client.send_ehlo("probe.example") == b"EHLO probe.example\r\n"
    assert feed(client, b"502 what\r\n") == Reply(502, ("what",), ("502 what",))
    assert client.send_helo("probe.example") == b"HELO probe.example\r\n"
    assert feed(client, b"250 hi\r\n") == Reply(250, ("hi",), ("250 hi",))
    assert client.send_starttls() == b"STARTTLS\r\n"
    assert feed(client, b"454 no\r\n") == Reply(454, ("no",), ("454 no",))
    assert client.send_quit() == b"QUIT\r\n"


@pytest.mark.parametrize(
    ("state", "allowed"),
    [
        pytest.param(ClientState.EHLO_SENT, True, id="ehlo-outstanding"),
        pytest.param(ClientState.STARTTLS_SENT, True, id="starttls-outstanding"),
        pytest.param(ClientState.ERROR, True, id="server-fault"),
        # The twins: nothing outstanding (plain QUIT serves), or QUIT already sent.
        pytest.param(ClientState.SESSION, False, id="session"),
        pytest.param(ClientState.QUIT_SENT, False, id="quit-sent"),
        pytest.param(ClientState.TLS, False, id="mid-handshake"),
        # Nothing before a complete greeting: a greet pause (postscreen) logs it as PREGREET.
        pytest.param(ClientState.GREETING, False, id="greeting-outstanding"),
        pytest.param(ClientState.GREETING_BROKEN, False, id="greeting-broken"),
    ],
)
def test_abandon_with_quit(state: ClientState, allowed: bool) -> None:
    """docs/architecture.md#always-quit: a deadline or a server fault still gets a QUIT, once greeted."""
    client = client_in(state)
    if allowed:
        assert client.abandon_with_quit() == b"QUIT\r\n"
        assert client.state is ClientState.CLOSED
        assert client.next_event() is PAUSED
    else:
        with pytest.raises(SmtpProtocolError):
            client.abandon_with_quit()
        assert client.state is state


@pytest.mark.parametrize(
    ("name", "usable"),
    [
        pytest.param("probe.example", True, id="hostname"),
        pytest.param("[192.0.2.1]", True, id="address-literal"),
        pytest.param("probe.example\r\nMAIL FROM:<>", False, id="crlf-injection"),
        pytest.param("probe example", False, id="space"),
        pytest.param("", False, id="empty"),
        pytest.param("prøbe.example", False, id="non-ascii"),
        pytest.param("a" * 505, True, id="longest"),
        pytest.param("a" * 506, False, id="too-long"),
    ],
)
def test_ehlo_name_must_be_one_word(name: str, usable: bool) -> None:
    client = client_in(ClientState.GREETED)
    if usable:
        assert client.send_ehlo(name) == f"EHLO {name}\r\n".encode()
    else:
        with pytest.raises(ValueError, match="EHLO name"):
            client.send_ehlo(name)
        assert client.state is ClientState.GREETED


# ---------------------------------------------------------------- STARTTLS and trailing data


@pytest.mark.parametrize(
    ("wire", "trailing"),
    [
        pytest.param(b"220 go ahead\r\n", b"", id="clean"),
        pytest.param(b"220 go ahead\r\n250 injected\r\n", b"250 injected\r\n", id="injected-reply"),
        pytest.param(b"220 go ahead\r\n\x16\x03\x01", b"\x16\x03\x01", id="injected-bytes"),
    ],
)
def test_bytes_after_starttls_220_are_trailing_data(wire: bytes, trailing: bytes) -> None:
    client = client_in(ClientState.STARTTLS_SENT)
    event = feed(client, wire)
    assert isinstance(event, Reply)
    assert event.code == 220
    assert client.state is ClientState.TLS
    assert client.trailing_data == trailing
    assert client.next_event() is PAUSED  # never parsed as a reply
    client.tls_established()
    assert client.trailing_data == b""  # RFC 3207 §4.2: plaintext leftovers are dropped
    client.send_ehlo(NAME)
    assert feed(client, b"250 secure\r\n") == Reply(250, ("secure",), ("250 secure",))


def test_refused_starttls_is_not_a_switch() -> None:
    client = client_in(ClientState.STARTTLS_SENT)
    feed(client, b"454 TLS not available\r\n250 extra\r\n")
    assert client.state is ClientState.STARTTLS_REFUSED
    with pytest.raises(SmtpProtocolError):
        client.tls_established()


def test_paused_data_is_recorded_as_unsolicited() -> None:
    """Bytes sent before the command still parse as its reply, but never silently."""
    client = SmtpClient()
    assert feed(client, b"220 hi\r\n250 early\r\n") == Reply(220, ("hi",), ("220 hi",))
    assert client.next_event() is PAUSED
    assert client.unsolicited_data == b""  # nothing sent yet
    client.send_ehlo(NAME)
    assert client.unsolicited_data == b"250 early\r\n"
    assert client.next_event() == Reply(250, ("early",), ("250 early",))


def test_reply_after_the_command_is_not_unsolicited() -> None:
    """The twin: the same reply, arriving after the command was sent."""
    client = SmtpClient()
    assert feed(client, b"220 hi\r\n") == Reply(220, ("hi",), ("220 hi",))
    client.send_ehlo(NAME)
    assert client.unsolicited_data == b""
    assert feed(client, b"250 on time\r\n") == Reply(250, ("on time",), ("250 on time",))


@pytest.mark.parametrize(
    ("ehlo_wire", "early"),
    [
        pytest.param(b"250 STARTTLS\r\n", b"", id="clean"),
        pytest.param(b"250 STARTTLS\r\n220 go ahead\r\n", b"220 go ahead\r\n", id="queued-220"),
        pytest.param(b"250 STARTTLS\r\n22", b"22", id="queued-partial-line"),
    ],
)
def test_unsolicited_data_before_starttls(ehlo_wire: bytes, early: bytes) -> None:
    """Pre-command response injection: a 220 queued before STARTTLS is sent."""
    client = client_in(ClientState.EHLO_SENT)
    assert feed(client, ehlo_wire) == Reply(250, ("STARTTLS",), ("250 STARTTLS",))
    client.send_starttls()
    assert client.unsolicited_data == early
    if early == b"220 go ahead\r\n":
        assert client.next_event() == Reply(220, ("go ahead",), ("220 go ahead",))
        assert client.state is ClientState.TLS


def test_unsolicited_record_follows_the_last_command() -> None:
    client = client_in(ClientState.EHLO_SENT)
    feed(client, b"250 STARTTLS\r\n454 early\r\n")
    client.send_starttls()
    assert client.unsolicited_data == b"454 early\r\n"
    assert client.next_event() == Reply(454, ("early",), ("454 early",))
    client.send_quit()
    assert client.unsolicited_data == b""  # a fresh command, nothing waiting this time


def test_abandon_keeps_the_unsolicited_record() -> None:
    """A partial reply outstanding at an abandon is no unsolicited data."""
    client = client_in(ClientState.EHLO_SENT)
    feed(client, b"250 STARTTLS\r\n220 early\r\n")
    client.send_starttls()
    client.abandon_with_quit()
    assert client.unsolicited_data == b"220 early\r\n"
    client = client_in(ClientState.STARTTLS_SENT)
    assert feed(client, b"220-partial\r\n") is NEED_DATA
    client.abandon_with_quit()
    assert client.unsolicited_data == b""


def test_need_data_until_reply_complete() -> None:
    client = SmtpClient()
    assert feed(client, b"220-mx.example\r\n220 ES") is NEED_DATA
    assert feed(client, b"MTP\r\n") == Reply(
        220, ("mx.example", "ESMTP"), ("220-mx.example", "220 ESMTP")
    )


@pytest.mark.parametrize(
    ("wire", "event", "state"),
    [
        pytest.param(b"220 hi\r\n", Reply(220, ("hi",), ("220 hi",)), ClientState.GREETED, id="ok"),
        pytest.param(
            b"220-hi\r\n221 x\r\n",
            MalformedReply("reply lines carry different codes: 220 then 221"),
            ClientState.GREETING_BROKEN,
            id="malformed",
        ),
        pytest.param(
            b"220-" + b"x" * 30 + b"\r\n",
            LimitExceeded("reply line longer than 16 bytes"),
            ClientState.GREETING_BROKEN,
            id="line-limit",
        ),
        pytest.param(
            b"220-a\r\n" * 5,
            LimitExceeded("more than 3 lines in one reply"),
            ClientState.GREETING_BROKEN,
            id="lines-limit",
        ),
        pytest.param(
            b"220-a\r\n", ConnectionClosed(partial=True), ClientState.CLOSED, id="cut-short"
        ),
        pytest.param(b"", ConnectionClosed(partial=False), ClientState.CLOSED, id="silent-close"),
    ],
)
def test_greeting_outcomes(wire: bytes, event: Event, state: ClientState) -> None:
    client = SmtpClient(SmtpLimits(max_line_length=16, max_lines_per_reply=3, max_reply_bytes=40))
    client.receive_data(wire)
    if wire:
        client.receive_data(b"")
    assert client.next_event() == event
    assert client.state is state


def test_data_after_end_of_stream_is_a_caller_bug() -> None:
    client = SmtpClient()
    client.receive_data(b"")
    with pytest.raises(SmtpProtocolError, match="after the end"):
        client.receive_data(b"220 hi\r\n")


MAX_EVENTS_PER_CHUNK = 100


@given(st.binary(max_size=200), st.integers(min_value=1, max_value=17))
def test_client_holds_bounded_bytes(data: bytes, chunk: int) -> None:
    limits = SmtpLimits(max_line_length=16, max_lines_per_reply=3, max_reply_bytes=40)
    client = SmtpClient(limits)
    for start in range(0, len(data), chunk):
        client.receive_data(data[start : start + chunk])
        # Bounded, so that a client that stops making progress fails here instead of
        # hanging the suite: every event either needs data, ends the client, or (once)
        # answers a greeting with QUIT.
        for _ in range(MAX_EVENTS_PER_CHUNK):
            event = client.next_event()
            if client.state in (ClientState.GREETED, ClientState.GREETING_REFUSED):
                client.send_quit()
                continue
            if event is NEED_DATA:
                assert len(client.trailing_data) < limits.max_line_length
                assert client.buffered_bytes < limits.max_line_length + limits.max_reply_bytes
                break
            if client.state in FINISHED:
                return
            assert not isinstance(event, Reply)
        else:
            pytest.fail(f"no NEED_DATA nor end in {MAX_EVENTS_PER_CHUNK} events ({client.state})")


# ---------------------------------------------------------------- a reply cut short


GREET_PAUSE_WIRE = b"220-mx.example greet pause\r\n220-still waiting\r\n220 mx.example ESMTP\r\n"


@given(
    st.integers(min_value=0, max_value=len(GREET_PAUSE_WIRE)), st.integers(min_value=1, max_value=9)
)
def test_partial_reply_holds_the_lines_received(cut: int, chunk: int) -> None:
    """However the bytes are split, the lines of the greeting so far, complete lines only."""
    client = SmtpClient()
    prefix = GREET_PAUSE_WIRE[:cut]
    for start in range(0, len(prefix), chunk):
        client.receive_data(prefix[start : start + chunk])
        event = client.next_event()
    complete = [line.decode() for line in prefix.split(b"\r\n")[:-1]]
    if len(complete) == 3:
        assert isinstance(event, Reply)
        assert client.partial_reply == ()  # a complete reply is an event, not a partial one
    else:
        assert client.next_event() is NEED_DATA
        assert client.partial_reply == tuple(complete)
        assert is_partial_greeting(client.partial_reply) is bool(complete)


def test_partial_reply_only_while_a_reply_is_awaited() -> None:
    client = client_in(ClientState.GREETED)
    client.receive_data(b"250-unasked\r\n")
    assert client.next_event() is PAUSED
    assert client.partial_reply == ()  # bytes nobody asked for are no reply under way
    client = client_in(ClientState.EHLO_SENT)
    assert feed(client, b"250-mx.example\r\n250-SIZE 1000\r\n") is NEED_DATA
    assert client.partial_reply == ("250-mx.example", "250-SIZE 1000")


@pytest.mark.parametrize(
    ("lines", "partial"),
    [
        pytest.param(("220-mx.example greet pause",), True, id="postscreen-teaser"),
        pytest.param(("220-a", "220-b"), True, id="two-lines"),
        # The twins: nothing arrived, or another reply was under way.
        pytest.param((), False, id="nothing"),
        pytest.param(("421-4.7.0 busy",), False, id="busy"),
        pytest.param(("2200-odd",), False, id="no-separator"),
    ],
)
def test_is_partial_greeting(lines: tuple[str, ...], partial: bool) -> None:
    assert is_partial_greeting(lines) is partial
    assert PARTIAL_GREETING_NOTE == "partial 220- received"
