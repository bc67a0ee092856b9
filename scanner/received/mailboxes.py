"""Reports and emails from files and folders: `.json`, `.json.gz`, `.eml`, mbox, Maildir.

Theory of operation: each path given is a file or a folder. Folders are walked
recursively without following symbolic links; a folder holding `cur/` and
`new/` is a Maildir, of which only those two hold messages (`tmp/` holds
deliveries in progress, the rest is the mail server's index). Every file is
recognised by its first bytes, not its name:

- the gzip magic, or `{` (after a byte-order mark or spaces): a report file;
- `From ` at the start: an mbox, split into messages as it is read (a message
  starts at a `From ` line after a blank line or at the start of the file;
  `>From ` quoting, mboxrd, is undone);
- a header field (`Name:`): one email;
- anything else: skipped, and counted.

Every read is bounded by `ReceivedLimits` before it happens: a file is checked
by size before it is read, an mbox is read line by line and a message over the
limit is dropped (and reported) while the rest of the mbox is still read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Final

from scanner.received.items import (
    MessageItem,
    PayloadItem,
    RejectedItem,
    SkippedItem,
    SourceBegins,
    SourceItem,
    UnreadableSource,
)
from scanner.received.limits import DEFAULT_LIMITS, ReceivedLimits
from scanner.received.report import GZIP_MAGIC, UTF8_BOM

SNIFF_BYTES: Final = 512
READ_CHUNK: Final = 64 * 1024  # longest piece of an mbox line read at once
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
_MBOX_QUOTED_FROM = re.compile(rb">+From ")


def _origin(path: Path) -> str:
    return str(path)


def expand_paths(paths: Sequence[Path]) -> tuple[list[Path], list[UnreadableSource]]:
    """The files the paths name, in a stable order, and the paths that cannot be listed."""
    files: list[Path] = []
    problems: list[UnreadableSource] = []
    for path in paths:
        if path.is_dir():
            _walk(path, files, problems)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(UnreadableSource(_origin(path), "no such file or folder"))
    return files, problems


def _walk(folder: Path, files: list[Path], problems: list[UnreadableSource]) -> None:
    def on_error(error: OSError) -> None:
        problems.append(UnreadableSource(str(error.filename), error.strerror or str(error)))

    for root, folders, names in os.walk(folder, onerror=on_error, followlinks=False):
        folders.sort()
        here = Path(root)
        if "cur" in folders and "new" in folders:  # a Maildir: messages live in cur/ and new/
            for part in ("new", "cur"):
                try:
                    entries = sorted(os.scandir(here / part), key=lambda entry: entry.name)
                except OSError as exc:
                    problems.append(UnreadableSource(str(here / part), exc.strerror or str(exc)))
                    continue
                files.extend(
                    Path(entry.path) for entry in entries if entry.is_file(follow_symlinks=False)
                )
            folders[:] = [name for name in folders if name not in ("cur", "new", "tmp")]
            continue
        files.extend(
            here / name
            for name in sorted(names)
            if (here / name).is_file() and not (here / name).is_symlink()
        )


def file_items(
    paths: Sequence[Path], limits: ReceivedLimits = DEFAULT_LIMITS
) -> Iterator[SourceItem]:
    """Every item of the files and folders in `paths` (see the module doc)."""
    files, problems = expand_paths(paths)
    sizes: list[int] = []
    for path in files:
        try:
            sizes.append(path.stat().st_size)
        except OSError:
            sizes.append(0)
    yield SourceBegins("files", sum(sizes), "bytes")
    yield from problems
    for path, size in zip(files, sizes, strict=True):
        try:
            yield from _items_of_file(path, size, limits)
        except OSError as exc:
            yield UnreadableSource(_origin(path), exc.strerror or str(exc), 0)


def _kind(head: bytes) -> str:
    stripped = head[len(UTF8_BOM) :] if head.startswith(UTF8_BOM) else head
    if head.startswith(GZIP_MAGIC) or stripped.lstrip(b" \t\r\n").startswith(b"{"):
        return "report"
    if head.startswith(b"From "):
        return "mbox"
    if _HEADER_LINE.match(head):
        return "message"
    return "other"


def _items_of_file(path: Path, size: int, limits: ReceivedLimits) -> Iterator[SourceItem]:
    origin = _origin(path)
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
        if not head:
            yield SkippedItem(origin, "empty file", size)
            return
        kind = _kind(head)
        if kind == "mbox":
            handle.seek(0)
            yield from mbox_items(handle, origin, limits)
            return
        if kind == "other":
            yield SkippedItem(origin, "neither a report, an email nor an mbox", size)
            return
        cap = limits.max_compressed_bytes if kind == "report" else limits.max_message_bytes
        if size > cap:
            what = "report file" if kind == "report" else "email"
            yield RejectedItem(origin, f"the {what} is {size} bytes; the limit is {cap}", size)
            return
        data = head + handle.read(cap + 1 - len(head))
        if len(data) > cap:  # grew since stat
            yield RejectedItem(origin, f"the file is larger than the limit of {cap} bytes", size)
            return
    if kind == "report":
        yield PayloadItem(origin, data, size)
    else:
        yield MessageItem(origin, data, size)


def mbox_items(handle: BinaryIO, origin: str, limits: ReceivedLimits) -> Iterator[SourceItem]:
    """The messages of an mbox, read line by line; a message over the limit is rejected alone."""
    number = 0
    lines: list[bytes] = []
    size = 0
    oversize = False
    at_line_start = True
    previous_blank = True
    consumed = 0

    def finish() -> SourceItem | None:
        if number == 0:
            return None
        label = f"{origin} message {number}"
        if oversize:
            return RejectedItem(
                label, f"the email is over the limit of {limits.max_message_bytes} bytes", consumed
            )
        return MessageItem(label, b"".join(lines), consumed)

    current_blank = True  # the line being read is blank so far
    while True:
        piece = handle.readline(READ_CHUNK)
        if not piece:
            break
        starts_message = at_line_start and previous_blank and piece.startswith(b"From ")
        if starts_message:
            item = finish()
            if item is not None:
                yield item
            number += 1
            lines, size, oversize, consumed = [], 0, False, 0
        consumed += len(piece)
        if at_line_start:
            current_blank = True
        current_blank = current_blank and piece.strip(b"\r\n") == b""
        if not starts_message and number > 0:
            if at_line_start and _MBOX_QUOTED_FROM.match(piece):
                piece = piece[1:]
            size += len(piece)
            if size > limits.max_message_bytes:
                oversize = True
                lines = []
            elif not oversize:
                lines.append(piece)
        at_line_start = piece.endswith(b"\n")
        if at_line_start:
            previous_blank = current_blank
    item = finish()
    if item is not None:
        yield item
