"""Input lines to domains (docs/output.md#commands), shard selection and duplicate detection.

An input line is blank, a `#` comment, or one domain name; surrounding space
and a trailing dot are dropped, case is folded and U-labels become A-labels.
A line that is not a valid domain name yields an `InvalidInput` value carrying
the text and the reason, so the scan can write an error record for it.

A ranked top list (`rank,domain` per line, as Tranco publishes it) gives a
`RankedInput`: the domain (or `InvalidInput`) with its rank (`parse_list_line`).
`--shard auto` reads the shard from a batch system's environment (`Shard.parse`).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

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


class InputFormat(StrEnum):
    """`--input-format`: `auto` takes a `rank,domain` line as ranked, any other as a domain."""

    AUTO = "auto"
    CSV = "csv"
    LINES = "lines"


@dataclass(frozen=True, slots=True)
class RankedInput:
    """A line of a ranked list: its domain (or why it is none) and its rank (1 = first)."""

    item: str | InvalidInput
    rank: int


# A top list line: rank "," domain [ "," more ] (Tranco: `1,google.com`, no header).
_RANK = re.compile(r"[0-9]{1,9}")
_HEADER_NAMES = frozenset({"domain", "domain_name", "name", "host", "site"})


def _is_header(fields: list[str]) -> bool:
    return (
        len(fields) >= 2
        and fields[1].strip().lower() in _HEADER_NAMES
        and not _RANK.fullmatch(fields[0].strip())
    )


def parse_list_line(
    line: str, input_format: InputFormat = InputFormat.AUTO
) -> str | InvalidInput | RankedInput | None:
    """One line of an input list → a domain, a ranked domain, an `InvalidInput` or None.

    `lines`: exactly `parse_input_line`. `csv`: every line is `rank,domain` (a header
    such as `rank,domain` is skipped). `auto`: a line whose first CSV field is a rank
    is ranked; a header is skipped; any other line is one domain.
    """
    if input_format is InputFormat.LINES:
        return parse_input_line(line)
    text = _printable(line).strip()
    if not text or text.startswith("#"):
        return None
    fields = next(csv.reader([text]), [])
    if len(fields) >= 2 and _RANK.fullmatch(fields[0].strip()):
        rank = int(fields[0])
        if rank < 1:
            return InvalidInput(_echo(text), f"rank {rank} in {_echo(text)!r}: ranks start at 1")
        item = parse_input_line(fields[1])
        if item is None:
            return RankedInput(InvalidInput(_echo(text), "no domain after the rank"), rank)
        return RankedInput(item, rank)
    if _is_header(fields):
        return None
    if input_format is InputFormat.CSV:
        return InvalidInput(_echo(text), f"{_echo(text)!r} is not rank,domain")
    return parse_input_line(line)


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
    def parse(cls, text: str, environ: Mapping[str, str] | None = None) -> Shard:
        """`K/N`, or `auto` / `auto/N`: the shard from `environ` (`Shard.auto`)."""
        if text.strip() == "auto" or text.strip().startswith("auto/"):
            return cls.auto(text.strip(), environ or {})
        parts = text.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"invalid shard {text!r}: expected K/N, such as 0/4")
        index, count = int(parts[0]), int(parts[1])
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"invalid shard {text!r}: need N >= 1 and 0 <= K < N")
        return cls(index, count)

    @classmethod
    def auto(cls, text: str, environ: Mapping[str, str]) -> Shard:
        """`--shard auto[/N]` from a Kubernetes Indexed Job or a Slurm job array.

        Kubernetes sets `JOB_COMPLETION_INDEX` (0 … completions−1) but not the count:
        `auto/N` must give it. Slurm: index (ID − MIN) / STEP, count
        `SLURM_ARRAY_TASK_COUNT`; a sparse array (`--array=1,4,9`) is refused, since
        its indexes do not number 0 … count−1. ValueError when neither is set.
        """
        count: int | None = None
        _, slash, count_text = text.partition("/")
        if slash:
            if not count_text.strip().isdigit() or int(count_text) < 1:
                raise ValueError(f"invalid shard {text!r}: expected auto or auto/N with N >= 1")
            count = int(count_text)
        kubernetes = environ.get("JOB_COMPLETION_INDEX")
        slurm = environ.get("SLURM_ARRAY_TASK_ID")
        if kubernetes is not None and slurm is not None:
            raise ValueError(
                "invalid shard 'auto': both JOB_COMPLETION_INDEX and SLURM_ARRAY_TASK_ID are set"
            )
        if kubernetes is not None:
            index = _environment_integer(environ, "JOB_COMPLETION_INDEX")
            if count is None:
                raise ValueError(
                    "invalid shard 'auto': a Kubernetes Indexed Job does not tell the count; "
                    "give --shard auto/N with N = the Job's completions"
                )
        elif slurm is not None:
            index, array_count = _slurm_array_shard(environ)
            if count is not None and count != array_count:
                raise ValueError(
                    f"invalid shard {text!r}: SLURM_ARRAY_TASK_COUNT is {array_count}, not {count}"
                )
            count = array_count
        else:
            raise ValueError(
                "invalid shard 'auto': neither JOB_COMPLETION_INDEX (Kubernetes Indexed Job) "
                "nor SLURM_ARRAY_TASK_ID (Slurm job array) is set; give --shard K/N"
            )
        if not 0 <= index < count:
            raise ValueError(
                f"invalid shard {text!r}: index {index} is not below the count {count}"
            )
        return cls(index, count)

    def takes(self, domain: str) -> bool:
        return domain_digest(domain) % self.count == self.index


def _environment_integer(environ: Mapping[str, str], name: str) -> int:
    value = environ.get(name)
    if value is None or not value.strip().isdigit():
        raise ValueError(f"invalid shard 'auto': {name} is {value!r}, not a number")
    return int(value)


def _slurm_array_shard(environ: Mapping[str, str]) -> tuple[int, int]:
    """(index, count) of a dense Slurm array task: `--array=0-99`, `1-100`, `0-98:2`."""
    task, first, last, step, count = (
        _environment_integer(environ, f"SLURM_ARRAY_TASK_{name}")
        for name in ("ID", "MIN", "MAX", "STEP", "COUNT")
    )
    step = step or 1
    dense = (task - first) % step == 0 and (last - first) % step == 0
    if not dense or (last - first) // step + 1 != count or count < 1:
        raise ValueError(
            f"invalid shard 'auto': the Slurm array {first}-{last}:{step} with {count} tasks is "
            "sparse (a list such as --array=1,4,9); use a range such as --array=0-{N-1}"
        )
    return (task - first) // step, count
