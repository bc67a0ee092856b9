"""Input lines to domains (DESIGN §3), shard selection and duplicate detection.

An input line is blank, a `#` comment, or one domain name; surrounding space
and a trailing dot are dropped, case is folded and U-labels become A-labels.
A line that is not a valid domain name yields an `InvalidInput` value carrying
the text and the reason, so the scan can write an error record for it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from scanner.core.names import InvalidHostname, normalize_hostname


@dataclass(frozen=True, slots=True)
class InvalidInput:
    text: str
    reason: str

    @property
    def error(self) -> str:
        return f"invalid-domain: {self.reason}"


# RFC 1035 §2.3.4: a name is at most 253 characters in text form (255 octets on the wire).
MAX_NAME_LENGTH = 253
# How much of an unusable input line is kept in its error record.
MAX_ECHOED_INPUT = 200


def _printable(text: str) -> str:
    """Undecodable bytes (surrogate escapes) become visible escapes; nothing is lost silently."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _echo(text: str) -> str:
    return text if len(text) <= MAX_ECHOED_INPUT else text[:MAX_ECHOED_INPUT] + "…"


def parse_input_line(line: str) -> str | InvalidInput | None:
    """One input line → a normalised domain, an `InvalidInput`, or None (blank/comment).

    An `InvalidInput` keeps at most `MAX_ECHOED_INPUT` characters of the line, so a
    hostile input cannot blow up the output.
    """
    text = _printable(line).strip()
    if not text or text.startswith("#"):
        return None
    if len(text) > MAX_NAME_LENGTH + 1:  # a trailing dot may add one
        return InvalidInput(_echo(text), f"longer than {MAX_NAME_LENGTH} characters ({len(text)})")
    if any(ch.isspace() for ch in text):
        return InvalidInput(text, f"{text!r} contains whitespace")
    try:
        domain = normalize_hostname(text)
    except InvalidHostname as exc:
        return InvalidInput(text, str(exc))
    if "." not in domain:
        return InvalidInput(text, f"{text!r} is not a fully qualified domain name")
    return domain


def domain_digest(domain: str) -> int:
    """A stable 64-bit digest of a normalised domain, for shards and duplicate sets."""
    data = domain.encode("utf-8", "backslashreplace")
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class Shard:
    """`--shard K/N`: this run takes the domains whose stable hash modulo N is K (0 ≤ K < N)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        parts = text.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"invalid shard {text!r}: expected K/N, such as 0/4")
        index, count = int(parts[0]), int(parts[1])
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"invalid shard {text!r}: need N >= 1 and 0 <= K < N")
        return cls(index, count)

    def takes(self, domain: str) -> bool:
        return domain_digest(domain) % self.count == self.index
