"""Untrusted text is data, never markup or control: one helper per view.

Theory of operation: every string a DNS record, an SMTP server, an HTTPS
policy host or a report carries is hostile until shown otherwise. It may hold
terminal escape sequences (CSI `ESC [ 2 J` clears the screen, OSC `ESC ] 0 ;`
retitles the window, OSC 8 plants hyperlinks), bidirectional overrides that
reorder what the reader sees (CVE-2021-42574, "Trojan Source"), line separators
that split one line in two, rich markup (`[bold green]Ready[/]`), emoji codes,
HTML, spreadsheet formulas, or path separators. Each view has exactly one
helper here, and the helper is the only way such text reaches that view:

=========  ==========================  ==============================================
view       helper                      what it neutralises
=========  ==========================  ==============================================
any text   `visible`                   control characters → visible escapes; length cut
terminal   `terminal`, `line`          the above, as a plain `rich.text.Text`: no markup,
                                       no emoji codes, no highlighting
JSON line  `dumps_json_line`           C1, DEL, bidi, line separators, lone surrogates
                                       → `\\uXXXX` (lossless: `json.loads` restores them)
CSV        `csv_cell`                  formula prefixes (OWASP CSV injection) + `visible`
disk       `safe_filename`             anything but one plain path component
HTML       `html_text`                 `visible`, then `html.escape(quote=True)`
=========  ==========================  ==============================================

Why `rich.text.Text` and not `rich.markup.escape`: `Console.print` runs markup,
emoji replacement and the highlighter only over `str` arguments
(`Console.render_str`); a `Text` is appended as is. `markup.escape` stops
markup only: `:white_check_mark:` still becomes an emoji and the highlighter
still colours numbers. A `Text`, for its part, removes only BEL, BS, VT, FF and
CR (`rich.control.strip_control_codes`) and expands TAB: ESC, C1 and bidi
controls go to the terminal raw. Hence `terminal` = `Text(visible(...))`.
Anything rich renders from a `str` (a `Table` cell, a `Panel` title, a
progress description) parses markup: give those a `Text` from here.

The forbidden class (`CONTROL_CODEPOINTS`): C0 U+0000–U+001F (TAB and LF
included: every view here is single-line), DEL U+007F, C1 U+0080–U+009F, the
bidi controls U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069, the
separators U+2028 and U+2029, and the surrogates U+D800–U+DFFF (a lone
surrogate cannot be encoded to UTF-8, so writing it would crash the writer).
They are shown as `\\x1b` (code points below U+0100) or `\\u202e`. A backslash
in the input is kept as is; the terminal view styles the escapes it makes
(`ESCAPE_STYLE`), so they stay distinguishable from a literal `\\x1b`.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from rich.style import StyleType
from rich.text import Text

DEFAULT_LIMIT: Final = 300  # characters shown of one untrusted value, escapes included
ESCAPE_STYLE: Final = "reverse"  # terminal style of the escapes `visible` makes
CUT_STYLE: Final = "dim"  # terminal style of the cut marker
MAX_FILENAME_BYTES: Final = 255  # NAME_MAX of Linux, ext4, XFS, APFS; 255 UTF-16 units on NTFS

_C0 = range(0x00, 0x20)
_DEL = 0x7F
_C1 = range(0x80, 0xA0)
_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_SEPARATORS = (0x2028, 0x2029)
_SURROGATES = range(0xD800, 0xE000)

CONTROL_CODEPOINTS: Final = frozenset((*_C0, _DEL, *_C1, *_BIDI, *_SEPARATORS, *_SURROGATES))


def _escape(codepoint: int) -> str:
    return f"\\x{codepoint:02x}" if codepoint < 0x100 else f"\\u{codepoint:04x}"


_VISIBLE_ESCAPES: Final[Mapping[int, str]] = MappingProxyType(
    {codepoint: _escape(codepoint) for codepoint in sorted(CONTROL_CODEPOINTS)}
)
# One capturing group: `split` alternates plain runs (even indexes) and single controls.
_CONTROL_SPLIT: Final = re.compile(
    "(["
    + "".join(
        f"\\u{first:04x}-\\u{last:04x}"
        for first, last in (
            (0x00, 0x1F),
            (0x7F, 0x9F),
            (0x061C, 0x061C),
            (0x200E, 0x200F),
            (0x202A, 0x202E),
            (0x2066, 0x2069),
            (0x2028, 0x2029),
            (0xD800, 0xDFFF),
        )
    )
    + "])"
)


def is_control(char: str) -> bool:
    """True when the one-character string `char` is in the forbidden class."""
    return ord(char) in CONTROL_CODEPOINTS


def cut_marker(omitted: int) -> str:
    """The marker `visible` appends after cutting `omitted` characters of the input."""
    return f"… ({omitted} more characters)"


def _shown_parts(text: str, limit: int | None) -> tuple[list[tuple[str, bool]], int]:
    """The shown pieces of `text` as (piece, is_escape) and how many input characters are cut.

    Plain runs may be cut anywhere; an escape is kept whole or not at all, so a cut
    never leaves a misleading `\\x1`. Only the first `limit` input characters are
    looked at: each yields at least one shown character.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or at least 0, got {limit}")
    head = text if limit is None else text[:limit]
    budget = limit
    parts: list[tuple[str, bool]] = []
    consumed = 0
    for index, chunk in enumerate(_CONTROL_SPLIT.split(head)):
        if not chunk:
            continue
        is_escape = index % 2 == 1
        shown = _VISIBLE_ESCAPES[ord(chunk)] if is_escape else chunk
        if budget is not None and len(shown) > budget:
            if not is_escape and budget > 0:
                parts.append((chunk[:budget], False))
                consumed += budget
            break
        parts.append((shown, is_escape))
        consumed += len(chunk)
        if budget is not None:
            budget -= len(shown)
    return parts, len(text) - consumed


def visible(text: str, limit: int | None = DEFAULT_LIMIT) -> str:
    """`text` with every control character (see the module doc) shown as an escape.

    When the escaped text is longer than `limit` characters it is cut to at most
    `limit` and `cut_marker(n)` is appended, `n` being the number of input
    characters left out. `limit=None` never cuts. The result holds no character of
    `CONTROL_CODEPOINTS`.
    """
    if limit is None:
        return text.translate(_VISIBLE_ESCAPES)
    parts, omitted = _shown_parts(text, limit)
    shown = "".join(piece for piece, _ in parts)
    return shown + cut_marker(omitted) if omitted else shown


def terminal(text: str, limit: int | None = DEFAULT_LIMIT, style: StyleType | None = None) -> Text:
    """`visible(text, limit)` as a plain `Text`: never parsed as markup or emoji codes.

    `style` (trusted, chosen by our code) applies to the whole value; the escapes
    get `ESCAPE_STYLE` on top and the cut marker `CUT_STYLE`.
    """
    result = Text(style=style or "")
    parts, omitted = _shown_parts(text, limit)
    for piece, is_escape in parts:
        result.append(piece, ESCAPE_STYLE if is_escape else None)
    if omitted:
        result.append(cut_marker(omitted), CUT_STYLE)
    return result


Part = str | Text | tuple[str, StyleType]


def line(*parts: Part, limit: int | None = DEFAULT_LIMIT) -> Text:
    """One `Text` from trusted and untrusted parts, in order.

    A `Text` is trusted: our own styled fragment, appended as it is. A `str` is
    untrusted and goes through `terminal(part, limit)`; so does the text of a
    `(str, style)` pair, styled with the (trusted) style. Anything else is a
    TypeError: convert numbers with `str()` on purpose.

        line(Text("MX ", style="bold"), hostname, (": " + reason, "red"))
    """
    result = Text()
    for part in parts:
        if isinstance(part, Text):
            result.append_text(part)
        elif isinstance(part, str):
            result.append_text(terminal(part, limit))
        elif isinstance(part, tuple) and len(part) == 2 and isinstance(part[0], str):
            result.append_text(terminal(part[0], limit, part[1]))
        else:
            raise TypeError(f"line() takes str, Text or (str, style) parts, got {part!r}")
    return result


# ---------------------------------------------------------------- JSON

# RFC 8259 §7: any character may be written as \uXXXX. json.dumps(ensure_ascii=False)
# escapes C0, '"' and '\\' itself and leaves the rest raw; these are escaped on top.
# Structural JSON is ASCII, so these characters can only sit inside strings, where
# the escape is valid. A high surrogate followed by a low one is read back by any
# JSON decoder as the pair's character: such (ill-formed) strings cannot round-trip.
JSON_ESCAPE_TABLE: Final[Mapping[int, str]] = MappingProxyType(
    {
        codepoint: f"\\u{codepoint:04x}"
        for codepoint in sorted(CONTROL_CODEPOINTS)
        if codepoint >= 0x20  # C0: json.dumps escapes these itself
    }
)

_JSON_ESCAPED: Final = re.compile(
    "[" + "".join(re.escape(chr(codepoint)) for codepoint in JSON_ESCAPE_TABLE) + "]"
)


def dumps_document(obj: object) -> str:
    """Indented JSON for a person or a program reading a command's `--json`: the same
    escapes as `dumps_json_line`, two spaces of indent, one way in every command."""
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False).translate(
        JSON_ESCAPE_TABLE
    )


def dumps_json_line(obj: object) -> str:
    """Compact JSON on one line, no trailing newline; non-ASCII kept, key order kept.

    DEL, C1 (U+0085 among them), bidi controls, U+2028, U+2029 and lone
    surrogates inside strings are written as `\\uXXXX` (`JSON_ESCAPE_TABLE`):
    line-splitting readers (`str.splitlines`) would otherwise cut the line, a
    terminal showing it would obey them, and a UTF-8 writer would fail on a
    surrogate. `json.loads` gives the original back. NaN and infinities raise
    ValueError (they are not JSON).
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if _JSON_ESCAPED.search(text) is None:  # a search costs less than a translated copy
        return text
    return text.translate(JSON_ESCAPE_TABLE)


# ---------------------------------------------------------------- CSV

# OWASP "CSV Injection": a cell beginning with one of these is read as a formula by
# spreadsheet programs; prefixing a single quote makes it text.
CSV_FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: str | int | float | None, limit: int | None = None) -> str | int | float:
    """A CSV cell for `value`: numbers stay numbers, None is empty, text is neutralised.

    Text goes through `visible(value, limit)` (no cut by default: an export keeps
    everything) and gets a leading `'` when it begins, possibly after spaces, with
    a formula character (`CSV_FORMULA_PREFIXES`). Quoting of separators and quotes
    is the `csv` module's job.
    """
    if value is None:
        return ""
    if isinstance(value, int | float):
        return value
    shown = visible(value, limit)
    if value.lstrip(" ").startswith(CSV_FORMULA_PREFIXES) or shown.lstrip(" ").startswith(
        CSV_FORMULA_PREFIXES
    ):
        return "'" + shown
    return shown


# ---------------------------------------------------------------- file names


class UnsafeFilenameError(ValueError):
    """A file name that is not exactly one plain path component; `problems` says why."""

    def __init__(self, name: str, problems: tuple[str, ...]) -> None:
        self.name = name
        self.problems = problems
        super().__init__(f'unsafe file name "{visible(name, 80)}": {"; ".join(problems)}')


def safe_filename(name: str) -> str:
    """`name` itself when it is safe as one path component, else UnsafeFilenameError.

    Report file names are built from untrusted parts (RFC 8460 §5.1:
    `<submitter>!<policy-domain>!<begin-timestamp>!<end-timestamp>[!<unique-id>].json`),
    so the result of joining them is checked, never repaired: not empty, no `/`,
    `\\` or NUL, no other control character (`CONTROL_CODEPOINTS`), not starting
    with `.` (hidden files, `.` and `..`) or `-` (read as an option by command-line
    tools), encodable as UTF-8 and at most `MAX_FILENAME_BYTES` bytes. Every
    problem found is named in the error.
    """
    problems: list[str] = []
    if not name:
        problems.append("it is empty")
    if "/" in name:
        problems.append("it contains '/'")
    if "\\" in name:
        problems.append("it contains '\\'")
    if "\x00" in name:
        problems.append("it contains NUL")
    controls = sorted({char for char in name if is_control(char) and char != "\x00"})
    if controls:
        listed = ", ".join(_VISIBLE_ESCAPES[ord(char)] for char in controls)
        problems.append(f"it contains control characters ({listed})")
    if name.startswith("."):
        problems.append("it starts with '.'")
    if name.startswith("-"):
        problems.append("it starts with '-'")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        problems.append("it is not encodable as UTF-8")
    else:
        if size > MAX_FILENAME_BYTES:
            problems.append(f"it is {size} bytes long (at most {MAX_FILENAME_BYTES})")
    if problems:
        raise UnsafeFilenameError(name, tuple(problems))
    return name


# ---------------------------------------------------------------- HTML


def html_text(value: str, limit: int | None = DEFAULT_LIMIT) -> str:
    """`visible(value, limit)` escaped for HTML text and attribute values.

    `html.escape(quote=True)` turns `& < > " '` into character references. For
    pages to come: a template engine must autoescape (Jinja2 `autoescape=True`)
    and be given `visible(value)`, or be given this and mark it safe, never both.
    """
    return html.escape(visible(value, limit), quote=True)
