"""Input lines, shards and the duplicate filter (DESIGN §3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.core.inputs import InvalidInput, Shard, parse_input_line
from scanner.scan import InputReader


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("example.com", "example.com"),
        ("  Example.COM.  \n", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("", None),
        ("   ", None),
        ("# a comment", None),
    ],
    ids=["plain", "case-space-dot", "u-label", "empty", "blank", "comment"],
)
def test_valid_and_skipped_lines(line: str, expected: str | None) -> None:
    assert parse_input_line(line) == expected


@pytest.mark.parametrize(
    "line",
    ["exa mple.com", "-bad-.com", "a..b", "localhost", "x" * 64 + ".com", "ex@mple.com"],
    ids=["space", "hyphens", "empty-label", "single-label", "long-label", "at-sign"],
)
def test_invalid_lines_give_an_error_value(line: str) -> None:
    item = parse_input_line(line)
    assert isinstance(item, InvalidInput)
    assert item.error.startswith("invalid-domain: ")


def test_reader_dedupes_across_spellings_and_skips_resumed() -> None:
    reader = InputReader(skip={"done.example"})
    items = [
        reader.accept(line) for line in ["A.example", "a.example.", "done.example", "b.example"]
    ]
    assert items == ["a.example", None, None, "b.example"]
    assert reader.duplicates == 1
    assert reader.skipped == 1


@pytest.mark.parametrize(
    ("text", "valid"),
    [("0/1", True), ("3/4", True), ("4/4", False), ("1/0", False), ("a/4", False), ("1", False)],
)
def test_shard_parsing(text: str, valid: bool) -> None:
    if valid:
        assert Shard.parse(text).count >= 1
    else:
        with pytest.raises(ValueError, match="invalid shard"):
            Shard.parse(text)


@given(
    st.lists(st.from_regex(r"[a-z]{1,10}\.example", fullmatch=True), max_size=60, unique=True),
    st.integers(min_value=1, max_value=7),
)
def test_shards_partition_the_input(domains: list[str], count: int) -> None:
    taken = [[d for d in domains if Shard(k, count).takes(d)] for k in range(count)]
    flat = [d for part in taken for d in part]
    assert sorted(flat) == sorted(domains)  # union is everything, no domain twice
