"""The bounds of the received-reports importer: every read and every parse is capped.

A report comes from a stranger: a gzip bomb, a million failure details or a
mailbox of one endless message must cost a bounded amount of memory and time,
and must cost only the item that carries it (its neighbours are still read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

KIB: Final = 1024
MIB: Final = 1024 * KIB


@dataclass(frozen=True, slots=True)
class ReceivedLimits:
    """Caps on one item; the defaults are `DEFAULT_LIMITS`.

    - `max_compressed_bytes`: one report as delivered (a `.json.gz` file, a decoded
      attachment). Google's and Microsoft's daily reports are a few KiB.
    - `max_decompressed_bytes`: the JSON text of one report after gunzip (a gzip
      bomb stops here, the rest of the stream is never inflated). 10,000 failure
      details of 300 bytes each are 3 MiB.
    - `max_gzip_members`: gzip members of one report (RFC 1952 §2.2 allows several;
      senders write one).
    - `max_json_depth`: nesting of arrays and objects, checked before the JSON is
      parsed (a report needs 5 levels; extensions get the rest).
    - `max_json_values`: values (array elements, object members, arrays and objects)
      in one report, counted before it is parsed (about ten per failure detail).
    - `max_policies`, `max_failure_details`: entries of one report (details
      counted over all its policies).
    - `max_session_count`: any one count; far above a day of traffic, and far
      below SQLite's 64-bit integers when summed.
    - `max_message_bytes`: one email (an `.eml` file, an mbox message, an IMAP
      message by its RFC822.SIZE).
    - `max_mime_parts`: leaf parts of one email looked at.
    - `max_mime_containers`: multipart and message parts of one email (which bound
      its nesting), counted before the email is parsed.
    - `max_report_days`, `earliest_year`, `latest_year`: a plausible date range (RFC
      8460 §4.1: reports cover a day; a little more is tolerated).
    - `max_signatures`: DKIM-Signature fields of one email verified.
    """

    max_compressed_bytes: int = 5 * MIB
    max_decompressed_bytes: int = 4 * MIB
    max_gzip_members: int = 16
    max_json_depth: int = 32
    max_json_values: int = 200_000
    max_policies: int = 100
    max_failure_details: int = 10_000
    max_session_count: int = 10**12
    max_message_bytes: int = 25 * MIB
    max_mime_parts: int = 100
    max_mime_containers: int = 20
    max_signatures: int = 5
    max_report_days: int = 31
    earliest_year: int = 2000
    latest_year: int = 2100


DEFAULT_LIMITS: Final = ReceivedLimits()

# Reports read back from the database were checked when they were stored; the limits
# in force then may have been larger than today's, so reading back does not re-apply them.
# The nesting bound stays: it is what keeps the parser within the stack.
STORED_LIMITS: Final = ReceivedLimits(
    max_compressed_bytes=2**62,
    max_decompressed_bytes=2**62,
    max_gzip_members=2**62,
    max_json_values=2**62,
    max_policies=2**62,
    max_failure_details=2**62,
    max_session_count=2**62,
    max_message_bytes=2**62,
    max_mime_parts=2**62,
    max_mime_containers=2**62,
    max_signatures=2**62,
    max_report_days=2**62,
    earliest_year=1,
    latest_year=9999,
)
