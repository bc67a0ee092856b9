"""Reports from an IMAP mailbox over TLS (IMAPS, RFC 8314), with the standard library's imaplib.

Theory of operation: `parse_imap_url` reads `imaps://USER@HOST[:PORT][/FOLDER]`
(RFC 5092's shape; USER and FOLDER percent-decoded; a password in the URL is
refused, it would sit in shell history, and `redacted_url` is what a message
shows of the URL). `imap_items` logs in, selects the
folder, searches UNSEEN (or ALL), and yields each message, fetched with
`BODY.PEEK[]` so reading alone changes nothing. Each message's
`acknowledge` sets `\\Seen` once the importer has committed its reports, so
the next unseen-only run fetches only new mail. A message over
`max_message_bytes` (by its RFC822.SIZE) is rejected without being fetched.

Failures are values: connection, TLS, login and protocol errors become one
`UnreadableSource` naming the step (`_STEP_ERRORS` is the table of what is
caught), and the mailbox's remaining messages are left for the next run.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import unquote, urlsplit

from scanner.received.items import (
    MessageItem,
    RejectedItem,
    SourceBegins,
    SourceItem,
    UnreadableSource,
)
from scanner.received.limits import DEFAULT_LIMITS, ReceivedLimits

IMAPS_PORT: Final = 993
DEFAULT_FOLDER: Final = "INBOX"
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID = re.compile(rb"UID (\d+)")


@dataclass(frozen=True, slots=True)
class ImapTarget:
    host: str
    port: int
    user: str
    folder: str

    @property
    def label(self) -> str:
        """The URL without secrets, for messages and origins."""
        return f"imaps://{self.user}@{self.host}:{self.port}/{self.folder}"


@dataclass(frozen=True, slots=True)
class ImapUrlError:
    reason: str


# The userinfo's password runs from its first ":" to the netloc's last "@" (as urlsplit reads it).
_URL_PASSWORD = re.compile(r"^(?P<head>[^:/]*://[^/:@]*):[^/]*@")


def redacted_url(url: str) -> str:
    """The URL as a message may show it: a password in it replaced by `***`."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", url.strip(), count=1)


def parse_imap_url(url: str) -> ImapTarget | ImapUrlError:
    """`imaps://USER@HOST[:PORT][/FOLDER]`, or why not."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or IMAPS_PORT
    except ValueError as exc:
        return ImapUrlError(f"not a URL: {exc}")
    if parts.scheme.lower() == "imap":
        return ImapUrlError("plain imap:// is refused; use imaps:// (IMAP over TLS, port 993)")
    if parts.scheme.lower() != "imaps":
        return ImapUrlError("the URL must start with imaps://")
    if parts.password is not None:
        return ImapUrlError(
            "a password in the URL is refused; give it with --imap-password-env or --imap-password-file"
        )
    if not parts.hostname:
        return ImapUrlError("the URL names no host")
    if not parts.username:
        return ImapUrlError("the URL names no user (imaps://USER@HOST/FOLDER)")
    folder = unquote(parts.path.lstrip("/")) or DEFAULT_FOLDER
    if not folder.isascii() or any(char in folder for char in "\r\n\x00"):
        return ImapUrlError("the folder name must be plain ASCII")
    return ImapTarget(parts.hostname, port, unquote(parts.username), folder)


@dataclass(frozen=True, slots=True)
class ImapSettings:
    password: str
    ssl_context: ssl.SSLContext
    timeout: float = 30.0
    unseen_only: bool = True


class _StepFailed(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")


# What can go wrong talking to the server, and how it reads: mapped once, here.
_STEP_ERRORS: Final = (imaplib.IMAP4.error, OSError, EOFError, ValueError)


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _checked(step: str, response: tuple[str, Sequence[object]]) -> Sequence[object]:
    status, data = response
    if status != "OK":
        detail = b" ".join(item for item in data if isinstance(item, bytes)).decode(
            "utf-8", "replace"
        )
        raise _StepFailed(step, f"{status} {detail}".strip())
    return data


def imap_items(
    target: ImapTarget, settings: ImapSettings, limits: ReceivedLimits = DEFAULT_LIMITS
) -> Iterator[SourceItem]:
    """The messages of one IMAP folder (see the module doc)."""
    step = "connect"
    client: imaplib.IMAP4_SSL | None = None
    try:
        client = imaplib.IMAP4_SSL(
            target.host, target.port, ssl_context=settings.ssl_context, timeout=settings.timeout
        )
        step = "login"
        client.login(target.user, settings.password)
        step = f"select {target.folder}"
        _checked(step, client.select(_quoted(target.folder)))
        step = "search"
        criteria = "UNSEEN" if settings.unseen_only else "ALL"
        found = _checked(step, client.uid("SEARCH", criteria))
        uids = [uid.decode() for uid in b" ".join(x for x in found if isinstance(x, bytes)).split()]
        yield SourceBegins(target.label, len(uids), "messages")
        for uid in uids:
            origin = f"{target.label} uid {uid}"
            step = f"fetch uid {uid}"
            sizes = _checked(step, client.uid("FETCH", uid, "(RFC822.SIZE INTERNALDATE)"))
            size = _size_of(sizes)
            arrived = _internal_date(sizes)
            if size is not None and size > limits.max_message_bytes:
                yield RejectedItem(
                    origin, f"the email is {size} bytes; the limit is {limits.max_message_bytes}", 1
                )
                continue
            data = _message_of(_checked(step, client.uid("FETCH", uid, "(BODY.PEEK[])")))
            if data is None:
                yield UnreadableSource(origin, "the server sent no message body", 1)
                continue
            if len(data) > limits.max_message_bytes:
                yield RejectedItem(
                    origin, f"the email is over the limit of {limits.max_message_bytes} bytes", 1
                )
                continue
            yield MessageItem(origin, data, 1, acknowledge=_marker(client, uid), arrived=arrived)
        step = "logout"
    except _StepFailed as exc:
        yield UnreadableSource(target.label, str(exc))
    except _STEP_ERRORS as exc:
        yield UnreadableSource(target.label, f"{step}: {_describe(exc)}")
    finally:
        if client is not None:
            _close(client)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not valid: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _size_of(data: Sequence[object]) -> int | None:
    for item in data:
        raw = item[0] if isinstance(item, tuple) else item
        if isinstance(raw, bytes):
            match = _SIZE.search(raw)
            if match:
                return int(match.group(1))
    return None


def _internal_date(data: Sequence[object]) -> datetime | None:
    """RFC 3501 §2.3.3 INTERNALDATE: when the server received the message, aware UTC."""
    for item in data:
        raw = item[0] if isinstance(item, tuple) else item
        if isinstance(raw, bytes):
            parts = imaplib.Internaldate2tuple(raw)
            if parts is not None:
                return datetime.fromtimestamp(time.mktime(parts), UTC)
    return None


def _message_of(data: Sequence[object]) -> bytes | None:
    for item in data:
        if isinstance(item, tuple) and len(item) >= 2 and isinstance(item[1], bytes):
            return item[1]
    return None


def _marker(client: imaplib.IMAP4_SSL, uid: str) -> Callable[[], None]:
    def mark_seen() -> None:
        # On failure the message stays unseen; the next run finds its reports duplicates.
        with contextlib.suppress(*_STEP_ERRORS):
            client.uid("STORE", uid, "+FLAGS.SILENT", "(\\Seen)")

    return mark_seen


def _close(client: imaplib.IMAP4_SSL) -> None:
    try:
        if client.state == "SELECTED":
            client.close()
        client.logout()
    except _STEP_ERRORS:
        pass  # the connection is going away anyway
