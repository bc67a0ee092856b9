"""Untrusted text through every view: terminal, JSON, CSV, file names, HTML.

Each hostile string of `HOSTILE` goes through each helper; property tests then
check the same promises for any text. The rich tests also pin down the library
behaviour the terminal helpers rely on (and why `Text` alone is not enough).
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table
from rich.text import Text

from scanner.untrusted import (
    CONTROL_CODEPOINTS,
    CSV_FORMULA_PREFIXES,
    CUT_STYLE,
    DEFAULT_LIMIT,
    ESCAPE_STYLE,
    JSON_ESCAPE_TABLE,
    MAX_FILENAME_BYTES,
    UnsafeFilenameError,
    csv_cell,
    cut_marker,
    dumps_json_line,
    html_text,
    is_control,
    line,
    safe_filename,
    terminal,
    visible,
)

# rich's own colour and attribute codes: CSI parameters ending in "m" (SGR).
SGR = re.compile(r"\x1b\[[0-9;]*m")
# What `visible` gives when it cuts: the kept part, then `cut_marker(omitted)`.
CUT = re.compile(r"(.*)… \((\d+) more characters\)", re.DOTALL)

HOSTILE = [
    pytest.param("[/bold]", id="markup-unbalanced-close"),
    pytest.param("[bold green]Ready for mode: enforce[/]", id="markup-balanced"),
    pytest.param("[link=https://evil.example]x[/link]", id="markup-link"),
    pytest.param(":white_check_mark: :cross_mark:", id="emoji-codes"),
    pytest.param("\x1b]0;owned title\x07", id="osc-title"),
    pytest.param("\x1b[2J\x1b[H", id="csi-clear"),
    pytest.param("\x1b]8;;", id="osc8-half-open"),
    pytest.param("\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", id="osc8-link"),
    pytest.param("\x9b2J\x9d0;title\x9c", id="c1-csi-osc-st"),
    pytest.param("invoice\u202egnp.exe", id="bidi-override"),
    pytest.param("\u2066\u2067\u2068\u2069\u061c\u200e\u200f", id="bidi-isolates-marks"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("line one\r\nline two\u2028three\u2029four\x85five", id="line-breaks"),
    pytest.param("tab\there\x7fdel\x08bs", id="tab-del-backspace"),
    pytest.param("x" * 100_000, id="very-long-line"),
    pytest.param("\x1b" * 5_000, id="very-long-escapes"),
    pytest.param("<img src=x onerror=alert(1)>\"'&", id="html"),
    pytest.param('=HYPERLINK("https://evil.example","click")', id="formula-hyperlink"),
    pytest.param("+1", id="formula-plus"),
    pytest.param("-2+3", id="formula-minus"),
    pytest.param("@SUM(A1:A2)", id="formula-at"),
    pytest.param("\t=1+1", id="formula-tab"),
    pytest.param("\r=1+1", id="formula-cr"),
    pytest.param("   =1+1", id="formula-after-spaces"),
    pytest.param("../../etc/passwd", id="path-traversal"),
    pytest.param("v=STSv1; id=1; ext=[/bold][red]x[/red]", id="sts-record-markup"),
    pytest.param("\\x1b literal backslash", id="literal-backslash-escape"),
]


def render(*objects: object, width: int = 200) -> str:
    """What a colour terminal receives from `Console.print(*objects)`."""
    file = io.StringIO()
    console = Console(file=file, force_terminal=True, color_system="truecolor", width=width)
    console.print(*objects)
    return file.getvalue()


def without_sgr(output: str) -> str:
    return SGR.sub("", output)


def assert_terminal_safe(output: str) -> None:
    """No escape sequence but SGR, and no control character but the line ends rich adds."""
    rest = without_sgr(output)
    assert "\x1b" not in rest
    assert not [c for c in rest if is_control(c) and c != "\n"]


# ---------------------------------------------------------------- visible


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("\x1b[2J", "\\x1b[2J", id="esc"),
        pytest.param("\x00", "\\x00", id="nul"),
        pytest.param("a\tb\nc\rd", "a\\x09b\\x0ac\\x0dd", id="tab-lf-cr"),
        pytest.param("\x7f", "\\x7f", id="del"),
        pytest.param("\x80\x85\x9b\x9f", "\\x80\\x85\\x9b\\x9f", id="c1"),
        pytest.param("\u061c\u200e\u200f", "\\u061c\\u200e\\u200f", id="bidi-marks"),
        pytest.param("\u202a\u202e", "\\u202a\\u202e", id="bidi-embeddings"),
        pytest.param("\u2066\u2069", "\\u2066\\u2069", id="bidi-isolates"),
        pytest.param("\u2028\u2029", "\\u2028\\u2029", id="separators"),
        pytest.param("\ud800", "\\ud800", id="lone-surrogate"),
        # Failing twins: ordinary text, non-ASCII included, passes unchanged.
        pytest.param("mx1.example.org", "mx1.example.org", id="ascii-twin"),
        pytest.param("été 日本 ✅ \u00a0\u00ff", "été 日本 ✅ \u00a0\u00ff", id="non-ascii-twin"),
        pytest.param("[bold]:smile:", "[bold]:smile:", id="markup-is-not-control"),
        pytest.param("\u200b\u2060\u202f", "\u200b\u2060\u202f", id="neighbours-kept"),
    ],
)
def test_visible_escapes_exactly_the_control_class(text: str, shown: str) -> None:
    assert visible(text) == shown


@pytest.mark.parametrize(
    ("text", "limit", "shown"),
    [
        pytest.param("abcdef", 6, "abcdef", id="fits"),
        pytest.param("abcdefg", 6, "abcdef" + cut_marker(1), id="one-over"),
        pytest.param("abc", 0, cut_marker(3), id="zero"),
        pytest.param("ab\x1b", 5, "ab" + cut_marker(1), id="escape-never-split"),
        pytest.param("ab\x1b", 6, "ab\\x1b", id="escape-fits-exactly"),
        pytest.param("\x1b\x1b", 7, "\\x1b" + cut_marker(1), id="escapes-count-when-shown"),
        pytest.param("x" * 10_000, None, "x" * 10_000, id="no-limit"),
    ],
)
def test_visible_cuts_at_limit_with_a_marker(text: str, limit: int | None, shown: str) -> None:
    assert visible(text, limit) == shown


def test_visible_default_limit() -> None:
    assert visible("x" * DEFAULT_LIMIT) == "x" * DEFAULT_LIMIT
    assert visible("x" * (DEFAULT_LIMIT + 5)) == "x" * DEFAULT_LIMIT + cut_marker(5)


def test_visible_refuses_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        visible("x", -1)


# ---------------------------------------------------------------- rich, as it is


def test_rich_text_alone_passes_esc_through() -> None:
    """Why `terminal` exists: a bare Text strips BEL/BS/VT/FF/CR only, not ESC, C1 or bidi."""
    output = render(Text("a\x1b[2Jb\x9bc\u202ed\x07e"))
    assert "\x1b[2J" in output
    assert "\x9b" in output
    assert "\u202e" in output
    assert "\x07" not in output


def test_rich_str_is_markup_emoji_and_highlighting() -> None:
    """A str given to print is parsed: markup applied, emoji codes replaced, numbers coloured."""
    output = render("[bold]x[/bold] :white_check_mark: 10.0.0.1")
    assert "[bold]" not in output
    assert "✅" in output
    assert ":white_check_mark:" not in output
    assert without_sgr(output) == "x ✅ 10.0.0.1\n"
    assert SGR.search(output)


def test_rich_str_in_a_table_cell_is_markup() -> None:
    table = Table()
    table.add_column("reason")
    table.add_row("[bold]x[/bold] :white_check_mark:")
    assert "[bold]" not in render(table)


def test_rich_text_is_printed_literally() -> None:
    """A Text skips markup, emoji codes and the highlighter, whatever the console defaults."""
    text = Text("[bold]x[/bold] :white_check_mark: 10.0.0.1")
    for options in ({}, {"markup": True, "emoji": True, "highlight": True}):
        file = io.StringIO()
        console = Console(file=file, force_terminal=True, color_system="truecolor", width=200)
        console.print(text, **options)  # type: ignore[arg-type]
        assert file.getvalue() == "[bold]x[/bold] :white_check_mark: 10.0.0.1\n"


# ---------------------------------------------------------------- terminal and line


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_through_terminal(text: str) -> None:
    rendered = terminal(text)
    assert rendered.plain == visible(text)
    output = render(rendered)
    assert_terminal_safe(output)
    assert without_sgr(output).replace("\n", "") == visible(text).replace("\n", "")


@pytest.mark.parametrize(
    "text",
    [
        "[/bold]",
        "[bold green]Ready for mode: enforce[/]",
        "[link=https://evil.example]x[/link]",
        ":white_check_mark:",
        "ext=[/bold][red]x[/red]",
        "10.0.0.1 https://evil.example",
    ],
)
def test_terminal_shows_markup_and_emoji_codes_literally(text: str) -> None:
    output = render(terminal(text))
    assert output == text + "\n"  # not even a highlighting SGR
    assert "\x1b]8;" not in render(terminal(text))  # no hyperlink


def test_terminal_styles_escapes_and_cut_marker() -> None:
    rendered = terminal("a\x1bb" + "c" * 20, limit=10, style="green")
    assert rendered.plain == "a\\x1bbcccc" + cut_marker(16)
    assert rendered.style == "green"
    spans = {(span.start, span.end, str(span.style)) for span in rendered.spans}
    assert (1, 5, ESCAPE_STYLE) in spans
    assert (10, 10 + len(cut_marker(16)), CUT_STYLE) in spans


def test_terminal_twin_plain_text_has_no_spans() -> None:
    rendered = terminal("mx.example.org")
    assert rendered.spans == []
    assert render(rendered) == "mx.example.org\n"


def test_line_keeps_trusted_styles_and_escapes_untrusted_parts() -> None:
    composed = line(
        Text("verdict: ", style="bold"),
        "[bold green]Ready for mode: enforce[/] \x1b[2J",
        (" :white_check_mark:", "red"),
    )
    assert composed.plain == (
        "verdict: [bold green]Ready for mode: enforce[/] \\x1b[2J :white_check_mark:"
    )
    output = render(composed)
    assert_terminal_safe(output)
    assert output.startswith("\x1b[1mverdict: \x1b[0m")  # the trusted fragment is bold
    assert "\x1b[31m :white_check_mark:\x1b[0m" in output  # the trusted style applied
    assert "[bold green]Ready for mode: enforce[/]" in without_sgr(output)


def test_line_cuts_each_untrusted_part() -> None:
    composed = line(Text("> "), "x" * 20, limit=5)
    assert composed.plain == "> xxxxx" + cut_marker(15)


@pytest.mark.parametrize("part", [42, None, b"bytes", ("a",), (1, "red")], ids=repr)
def test_line_refuses_other_parts(part: object) -> None:
    with pytest.raises(TypeError, match="line"):
        line("ok", part)  # type: ignore[arg-type]


# ---------------------------------------------------------------- JSON


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_through_json(text: str) -> None:
    dumped = dumps_json_line({"x": text})
    assert json.loads(dumped)["x"] == text
    assert len(dumped.splitlines()) == 1
    assert not [c for c in dumped if is_control(c)]


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        pytest.param("\x85", "\\u0085", id="nel"),
        pytest.param("\x9b", "\\u009b", id="c1-csi"),
        pytest.param("\x7f", "\\u007f", id="del"),
        pytest.param("\u202e", "\\u202e", id="rlo"),
        pytest.param("\u2028\u2029", "\\u2028\\u2029", id="separators"),
        pytest.param("\u061c", "\\u061c", id="alm"),
        pytest.param("\x1b", "\\u001b", id="esc-by-json-itself"),
        pytest.param("\ud800", "\\ud800", id="lone-surrogate"),
        pytest.param("été ✅", "été ✅", id="non-ascii-kept-twin"),
    ],
)
def test_json_escapes(text: str, escaped: str) -> None:
    dumped = dumps_json_line({"x": text})
    assert dumped == '{"x":"' + escaped + '"}'
    assert json.loads(dumped) == {"x": text}
    dumped.encode("utf-8")  # a lone surrogate no longer breaks the writer


def test_json_escapes_keys_too_and_stays_compact() -> None:
    dumped = dumps_json_line({"\u202ek": [1, 2.5, None, True]})
    assert dumped == '{"\\u202ek":[1,2.5,null,true]}'


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_json_refuses_non_finite_numbers(number: float) -> None:
    with pytest.raises(ValueError, match="JSON"):
        dumps_json_line({"x": number})


def test_json_escape_table_covers_the_class_above_c0() -> None:
    assert set(JSON_ESCAPE_TABLE) == {c for c in CONTROL_CODEPOINTS if c >= 0x20}


# ---------------------------------------------------------------- CSV


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_through_csv(text: str) -> None:
    cell = csv_cell(text)
    assert isinstance(cell, str)
    assert not cell.lstrip(" ").startswith(CSV_FORMULA_PREFIXES)
    assert not [c for c in cell if is_control(c)]


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        pytest.param('=HYPERLINK("https://evil.example")', '\'=HYPERLINK("https://evil.example")'),
        pytest.param("+1", "'+1", id="plus"),
        pytest.param("-2+3", "'-2+3", id="minus"),
        pytest.param("@SUM(A1)", "'@SUM(A1)", id="at"),
        pytest.param("\t=1", "'\\x09=1", id="tab"),
        pytest.param("\r=1", "'\\x0d=1", id="cr"),
        pytest.param("  =1", "'  =1", id="spaces-then-formula"),
        pytest.param("a\x1b[2J", "a\\x1b[2J", id="control-made-visible"),
        # Failing twins: text with formula characters later on, and numbers.
        pytest.param("a=b", "a=b", id="equals-inside-twin"),
        pytest.param("1-2", "1-2", id="minus-inside-twin"),
        pytest.param("", "", id="empty-twin"),
        pytest.param(-2, -2, id="negative-int-stays-a-number"),
        pytest.param(2.5, 2.5, id="float-stays-a-number"),
        pytest.param(None, "", id="none-is-empty"),
    ],
)
def test_csv_cell(value: str | int | float | None, cell: str | int | float) -> None:
    assert csv_cell(value) == cell
    assert type(csv_cell(value)) is type(cell)


def test_csv_cell_survives_the_csv_module() -> None:
    file = io.StringIO()
    csv.writer(file).writerow([csv_cell('=HYPERLINK("x","y")'), csv_cell(-2)])
    assert file.getvalue() == '"\'=HYPERLINK(""x"",""y"")",-2\r\n'


def test_csv_cell_keeps_long_text_unless_told() -> None:
    assert csv_cell("x" * 1000) == "x" * 1000
    assert csv_cell("x" * 1000, limit=3) == "xxx" + cut_marker(997)


# ---------------------------------------------------------------- file names


@pytest.mark.parametrize(
    "name",
    [
        "reporter.example!example.org!1700000000!1700086400.json",
        "reporter.example!example.org!1700000000!1700086400!abc123.json.gz",
        "été.json",
        "x" * MAX_FILENAME_BYTES,
        "é" * (MAX_FILENAME_BYTES // 2),
    ],
    ids=["rfc8460", "rfc8460-unique-gzip", "non-ascii", "max-bytes", "max-bytes-multibyte"],
)
def test_safe_filename_returns_a_good_name(name: str) -> None:
    assert safe_filename(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("a/b.json", "'/'", id="slash"),
        pytest.param("..", "starts with '.'", id="dot-dot"),
        pytest.param("../../etc/passwd", "'/'", id="traversal"),
        pytest.param("a\\b.json", "'\\'", id="backslash"),
        pytest.param("a\x00b", "NUL", id="nul"),
        pytest.param(".hidden", "starts with '.'", id="hidden"),
        pytest.param("-rf", "starts with '-'", id="option"),
        pytest.param("a\x1b[2Jb", "control characters (\\x1b)", id="esc"),
        pytest.param("invoice\u202egnp.json", "control characters (\\u202e)", id="bidi"),
        pytest.param("a\nb", "control characters (\\x0a)", id="newline"),
        pytest.param("x" * (MAX_FILENAME_BYTES + 1), "256 bytes", id="too-long"),
        pytest.param("é" * 128, "256 bytes", id="too-long-multibyte"),
        pytest.param("a\ud800", "not encodable", id="surrogate"),
    ],
)
def test_safe_filename_names_the_problem(name: str, problem: str) -> None:
    with pytest.raises(UnsafeFilenameError) as raised:
        safe_filename(name)
    assert isinstance(raised.value, ValueError)
    assert problem in str(raised.value)
    assert not [c for c in str(raised.value) if is_control(c)]  # the message is safe to show


def test_safe_filename_lists_every_problem() -> None:
    with pytest.raises(UnsafeFilenameError) as raised:
        safe_filename(".a/\x1b")
    assert len(raised.value.problems) == 3


# ---------------------------------------------------------------- HTML


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_through_html(text: str) -> None:
    page = html_text(text)
    assert not set(page) & set("<>\"'")
    assert not [c for c in page if is_control(c)]


def test_html_text() -> None:
    assert html_text("<img src=x onerror=alert(1)>\"'&\x1b") == (
        "&lt;img src=x onerror=alert(1)&gt;&quot;&#x27;&amp;\\x1b"
    )
    assert html_text("mx.example.org") == "mx.example.org"


# ---------------------------------------------------------------- properties

# Any character, with the forbidden class and markup/formula characters made frequent.
HOSTILE_CHARACTERS = st.sampled_from(
    sorted({chr(c) for c in CONTROL_CODEPOINTS if not 0xD800 <= c <= 0xDFFF})
    + list("[]/:\\=+-@<>&\"' ")
)
ANY_TEXT = st.text(st.one_of(st.characters(codec="utf-8"), HOSTILE_CHARACTERS), max_size=400)
WITH_SURROGATES = st.text(
    st.one_of(st.characters(), HOSTILE_CHARACTERS, st.characters(categories=["Cs"]))
)
LIMITS = st.one_of(st.none(), st.integers(min_value=0, max_value=400))


@given(WITH_SURROGATES, LIMITS)
def test_visible_property(text: str, limit: int | None) -> None:
    shown = visible(text, limit)
    assert not [c for c in shown if is_control(c)]
    whole = "".join(escape(c) if is_control(c) else c for c in text)
    if limit is None or len(whole) <= limit:
        assert shown == whole
    else:
        assert len(shown) <= limit + len(cut_marker(len(text)))
        cut = CUT.fullmatch(shown)
        assert cut is not None
        kept, omitted = cut.group(1), int(cut.group(2))
        assert len(kept) <= limit
        assert whole.startswith(kept)
        assert 1 <= omitted <= len(text)


def escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


@settings(deadline=None)  # the first rich render loads its cell-width tables
@given(ANY_TEXT, st.integers(min_value=10, max_value=120))
def test_terminal_property(text: str, width: int) -> None:
    rendered = terminal(text)
    assert rendered.plain == visible(text)
    output = render(rendered, line("mx ", text, (text, "bold red")), width=width)
    assert_terminal_safe(output)


@given(ANY_TEXT)
def test_json_property(text: str) -> None:
    dumped = dumps_json_line({"x": text, text: [text]})
    assert json.loads(dumped) == {"x": text, text: [text]}
    assert not [c for c in dumped if ord(c) in JSON_ESCAPE_TABLE or is_control(c)]
    assert "\n" not in dumped
    assert len(dumped.splitlines()) == 1


@given(st.one_of(ANY_TEXT, st.integers(), st.floats(allow_nan=False)))
def test_csv_property(value: str | int | float) -> None:
    cell = csv_cell(value)
    if isinstance(value, str):
        assert isinstance(cell, str)
        assert not cell.lstrip(" ").startswith(CSV_FORMULA_PREFIXES)
        assert not [c for c in cell if is_control(c)]
    else:
        assert cell == value


@given(ANY_TEXT)
def test_safe_filename_property(name: str) -> None:
    acceptable = (
        "/" not in name
        and "\\" not in name
        and not name.startswith((".", "-"))
        and not [c for c in name if is_control(c)]
        and 0 < len(name.encode("utf-8")) <= MAX_FILENAME_BYTES
    )
    if acceptable:
        assert safe_filename(name) == name
        return
    with pytest.raises(UnsafeFilenameError) as raised:
        safe_filename(name)
    assert raised.value.problems
