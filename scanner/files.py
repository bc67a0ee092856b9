"""Input lists and results files on disk: the one place that reads and writes them.

Input: `iterate_lines` streams domains from arguments, files and stdin in bounded
lines; `InputReader` applies the shard, duplicate and resume filters.

Results: a results file is JSON lines, plain (`.jsonl`) or compressed (`.jsonl.gz`, or
`.jsonl.zst` with the `zstandard` package), chosen by the file name. `open_results`
writes it so that a killed run leaves whole lines: each flush that is due ends one
gzip member (zstd frame) holding whole lines, at most one a second or every 256 KiB.
`text_lines` is the one reader of results files every command uses (`stats`, `diff`,
`report`); a compressed file cut short (a run killed mid-write) ends at its last whole
member. `completed_domains` reads a file for `--resume` and cuts it back to its last
whole line (member, frame), so appending stays valid.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import IO, Final, Protocol, TextIO, cast

import trio

from scanner.core.inputs import (
    InputFormat,
    InvalidInput,
    RankedInput,
    Shard,
    domain_digest,
    parse_list_line,
)
from scanner.output import SCHEMA_VERSION, schema_problem

# ---------------------------------------------------------------- input


class InputReader:
    """Streams input lines into domains: dedupe, resume and shard filters applied.

    The duplicate filter keeps 64-bit digests of the domains seen (about 80
    bytes each), the only state that grows with the input.
    """

    def __init__(
        self,
        *,
        skip: set[str] | None = None,
        shard: Shard | None = None,
        input_format: InputFormat = InputFormat.AUTO,
    ) -> None:
        self._skip = skip or set()
        self._shard = shard
        self._format = input_format
        self._seen: set[int] = set()
        self.duplicates = 0
        self.skipped = 0
        self.accepted = 0

    def accept(self, line: str) -> str | InvalidInput | RankedInput | None:
        """The line's domain when this run scans it; None for a header, blank line, another
        shard's domain, a duplicate (counted among this shard's domains only) or a domain
        `--resume` skips."""
        parsed = parse_list_line(line, self._format)
        if parsed is None:
            return None
        item = parsed.item if isinstance(parsed, RankedInput) else parsed
        key = item.text if isinstance(item, InvalidInput) else item
        if self._shard is not None and not self._shard.takes(key):
            return None
        digest = domain_digest(key)
        if digest in self._seen:
            self.duplicates += 1
            return None
        self._seen.add(digest)
        if key in self._skip:
            self.skipped += 1
            return None
        self.accepted += 1
        return parsed

    async def stream(
        self, lines: AsyncIterator[str]
    ) -> AsyncIterator[str | InvalidInput | RankedInput]:
        async for line in lines:
            item = self.accept(line)
            if item is not None:
                yield item


# Longer input lines are cut here while reading (they cannot be domain names anyway), so
# one hostile line cannot take the memory of a whole file.
MAX_INPUT_LINE = 1024
READ_SIZE = 1 << 16


async def iterate_lines(sources: Iterable[str], files: Iterable[Path | None]) -> AsyncIterator[str]:
    """Arguments first, then each file (None is stdin), line by line without reading it whole.

    Files are read in binary chunks in a worker thread (one call per chunk, not per
    line), decoded as UTF-8 with undecodable bytes replaced, and every line is cut
    at `MAX_INPUT_LINE` bytes.
    """
    for source in sources:
        yield source
    for path in files:
        if path is None:
            async for line in bounded_lines(trio.wrap_file(sys.stdin.buffer)):
                yield line
        else:
            async with await trio.open_file(path, "rb") as handle:
                async for line in bounded_lines(handle):
                    yield line


class ChunkReader(Protocol):
    """A binary async file: trio's wrapped files and `trio.open_file(..., "rb")`."""

    async def read1(self, size: int = -1, /) -> bytes: ...


async def bounded_lines(handle: ChunkReader) -> AsyncIterator[str]:
    """Split a binary async file into decoded lines of at most `MAX_INPUT_LINE` bytes."""
    pending = b""
    skipping = False  # inside an overlong line, after its first MAX_INPUT_LINE bytes
    while True:
        chunk: bytes = await handle.read1(READ_SIZE)
        if not chunk:
            break
        pieces = (pending + chunk).split(b"\n")
        pending = pieces.pop()
        for piece in pieces:
            if skipping:
                skipping = False
                continue
            yield _decode_line(piece)
        if len(pending) > MAX_INPUT_LINE:
            if not skipping:
                yield _decode_line(pending)
            pending = b""
            skipping = True
    if pending and not skipping:
        yield _decode_line(pending)


def _decode_line(raw: bytes) -> str:
    return raw[:MAX_INPUT_LINE].decode("utf-8", "replace").removeprefix("\ufeff")


def count_lines(paths: Iterable[Path | None], chunk: int = 1 << 20) -> int | None:
    """The lines of the input files, counted on bytes (no parsing); None for stdin."""
    total = 0
    for path in paths:
        if path is None or not path.is_file():
            return None
        with path.open("rb") as handle:
            ends_open = False
            while block := handle.read(chunk):
                total += block.count(b"\n")
                ends_open = not block.endswith(b"\n")
            total += ends_open
    return total


# ---------------------------------------------------------------- results files


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


def compression_of(path: Path) -> Compression:
    """By the file name: `.gz` gzip, `.zst` zstd, anything else plain JSON lines."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return Compression.GZIP
    if name.endswith(".zst"):
        return Compression.ZSTD
    return Compression.NONE


class CompressionUnavailable(OSError):
    """A `.zst` file without the `zstandard` package."""


def _zstandard() -> ModuleType:
    try:
        import zstandard
    except ImportError:
        raise CompressionUnavailable(
            "a .zst results file needs the zstandard package: pip install 'scanner[zstd]'"
        ) from None
    return zstandard


# One member (frame) per flush that is due: often enough that a killed run loses at most
# about a second of lines, seldom enough that the members compress well.
MEMBER_INTERVAL = 1.0
MEMBER_BYTES = 256 * 1024


class MemberWriter(io.TextIOBase):
    """Text in, whole compressed members out: each flush that is due writes the lines
    buffered so far as one gzip member or zstd frame, so the file is always a sequence of
    whole members (or ends in the torn one a kill left, which readers skip)."""

    def __init__(self, raw: IO[bytes], compress: Callable[[bytes], bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._compress = compress
        self._pending: list[bytes] = []
        self._size = 0
        self._last = time.monotonic()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        self._pending.append(data)
        self._size += len(data)
        return len(text)

    def flush(self) -> None:
        if self._size >= MEMBER_BYTES or time.monotonic() - self._last >= MEMBER_INTERVAL:
            self.end_member()

    def end_member(self) -> None:
        """Write what is buffered as one member (frame) now."""
        self._last = time.monotonic()
        if not self._pending:
            return
        self._raw.write(self._compress(b"".join(self._pending)))
        self._raw.flush()
        self._pending.clear()
        self._size = 0

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.end_member()
        finally:
            self._raw.close()
            super().close()


def open_results(path: Path, mode: str) -> TextIO:
    """The results file opened for writing lines (`mode` "x", "w" or "a"), compressed as its
    name says."""
    compression = compression_of(path)
    if compression is Compression.NONE:
        return cast(TextIO, open(path, mode, encoding="utf-8"))
    compress: Callable[[bytes], bytes]
    if compression is Compression.GZIP:
        compress = gzip.compress
    else:
        compressor = _zstandard().ZstdCompressor()
        compress = compressor.compress
    raw = open(path, mode + "b")  # noqa: SIM115 (closed by the writer)
    return cast(TextIO, MemberWriter(raw, compress))


class _Decompressor(Protocol):
    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes) -> bytes: ...


def _decompressor(
    compression: Compression,
) -> tuple[Callable[[], _Decompressor], tuple[type[Exception], ...]]:
    """A new decompressor for each member, and the errors of bytes that are no member."""
    if compression is Compression.GZIP:
        return lambda: cast(_Decompressor, zlib.decompressobj(wbits=31)), (zlib.error,)
    module = _zstandard()
    errors: tuple[type[Exception], ...] = (module.ZstdError,)
    return lambda: cast(_Decompressor, module.ZstdDecompressor().decompressobj()), errors


READ_CHUNK = 1 << 20


def whole_members(handle: IO[bytes], compression: Compression) -> Iterator[tuple[bytes, int]]:
    """Each whole member (frame) of a compressed file: its text and the offset it ends at.

    A member cut short, or bytes that are no member, end the iteration: what follows the
    last whole member is what a killed run left.
    """
    new, damaged = _decompressor(compression)
    decompressor = new()
    parts: list[bytes] = []
    offset = 0  # where the current member starts
    consumed = 0  # bytes given to the current member's decompressor
    data = handle.read(READ_CHUNK)
    while data:
        try:
            parts.append(decompressor.decompress(data))
        except damaged:
            return  # no member: not compressed as the name says, or damaged
        consumed += len(data)
        if decompressor.eof:
            rest = decompressor.unused_data
            end = offset + consumed - len(rest)
            yield b"".join(parts), end
            parts, offset, consumed = [], end, 0
            decompressor = new()
            data = rest or handle.read(READ_CHUNK)
        else:
            data = handle.read(READ_CHUNK)


def text_lines(path: Path) -> Iterator[str]:
    """Every line of a results file, decoded (undecodable bytes replaced), plain or compressed.

    OSError when the file cannot be opened or read (and `CompressionUnavailable` for a
    `.zst` file without the `zstandard` package).
    """
    compression = compression_of(path)
    if compression is Compression.NONE:
        with path.open(encoding="utf-8", errors="replace") as handle:
            yield from handle
        return
    with path.open("rb") as handle:
        for text, _ in whole_members(handle, compression):
            yield from io.StringIO(text.decode("utf-8", "replace"), newline=None)


# What `decoded_lines` yields for a line that is not JSON.
NOT_JSON: Final = object()


def decoded_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, the line decoded from JSON, or `NOT_JSON`) for each non-blank line of
    a results file: the one reader of `stats`, `diff` and `report`."""
    for number, raw in enumerate(text_lines(path), 1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except ValueError:
            yield number, NOT_JSON


class CannotResume(ValueError):
    """A results file `--resume` must not append to (the message says why)."""


class UnknownSchemaVersion(CannotResume):
    """A results file to resume holds lines of a schema version other than the one written."""


# The first bytes of a gzip member and of a zstd frame.
_MAGIC: Final = {Compression.GZIP: b"\x1f\x8b", Compression.ZSTD: b"\x28\xb5\x2f\xfd"}


def _whole_lines(path: Path) -> tuple[Iterator[bytes], Callable[[], int]]:
    """The file's whole lines (as bytes) and, once they are read, the length they end at."""
    compression = compression_of(path)
    state = {"end": 0}

    def plain() -> Iterator[bytes]:
        with path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    return  # a torn final line
                state["end"] += len(raw)
                yield raw

    def members() -> Iterator[bytes]:
        with path.open("rb") as handle:
            for text, end in whole_members(handle, compression):
                lines = text.splitlines(keepends=True)
                if lines and not lines[-1].endswith(b"\n"):
                    return  # a member that ends inside a line: not one of ours
                yield from lines
                state["end"] = end

    return (plain() if compression is Compression.NONE else members()), lambda: state["end"]


def completed_domains(path: Path) -> set[str]:
    """Domains with a complete line in an existing results file (`--resume`).

    A torn end (an interrupted write: a last line without its newline, a compressed
    member cut short) is cut off so appending stays valid. A line of another schema
    version than the one this scanner writes raises `UnknownSchemaVersion`: appending to
    it would mix versions in one file, and a query over the file (duckdb, jq) would meet
    `blockers` of two shapes.
    """
    done: set[str] = set()
    if not path.exists():
        return done
    lines, good_length = _whole_lines(path)
    for raw in lines:
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("domain"), str):
            problem = schema_problem(record)
            if problem is not None:
                raise UnknownSchemaVersion(f"{path}: {problem}; resume it with that scanner")
            if record.get("schema_version") != SCHEMA_VERSION:
                raise UnknownSchemaVersion(
                    f"{path}: its lines have schema_version {record.get('schema_version')}, "
                    f"and this scanner writes version {SCHEMA_VERSION}; it does not append "
                    "lines of another version to a file: scan into a new file (stats, diff "
                    "and report read both versions, also side by side)"
                )
            done.add(record["domain"])
    if good_length() != path.stat().st_size:
        compression = compression_of(path)
        if good_length() == 0 and compression is not Compression.NONE:
            with path.open("rb") as handle:
                start = handle.read(4)
            if not start.startswith(_MAGIC[compression]):
                # Not a torn member: another format under a compressed name. Never cut it.
                raise CannotResume(
                    f"{path} is named as {compression.value} but does not start as "
                    f"{compression.value} data; it is left as it is: resume into the file's "
                    "own name, or scan into a new file"
                )
        with path.open("r+b") as handle:
            handle.truncate(good_length())
    return done
