"""Input lines, shards and the duplicate filter (docs/output.md#commands)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.core.inputs import InvalidInput, Shard, domain_digest, parse_input_line
from scanner.files import InputReader


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
    ("text", "index", "count"),
    [("0/1", 0, 1), ("3/4", 3, 4), (" 2 / 5 ", 2, 5)],
)
def test_shard_parsing(text: str, index: int, count: int) -> None:
    assert Shard.parse(text) == Shard(index, count)


@pytest.mark.parametrize("text", ["4/4", "1/0", "a/4", "1", "-1/4", "1/2/3"])
def test_invalid_shards(text: str) -> None:
    with pytest.raises(ValueError, match="invalid shard"):
        Shard.parse(text)


@pytest.mark.parametrize(
    ("domain", "digest", "shard_of_7"),
    [("example.com", 11779629879860902309, 5), ("xn--bcher-kva.example", 10884257705408538160, 3)],
)
def test_shard_assignment_is_stable_across_runs_and_machines(
    domain: str, digest: int, shard_of_7: int
) -> None:
    # --shard K/N promises the same slice everywhere: the first 8 bytes of SHA-256, big-endian.
    assert domain_digest(domain) == digest
    assert [k for k in range(7) if Shard(k, 7).takes(domain)] == [shard_of_7]


@given(
    st.lists(st.from_regex(r"[a-z]{1,10}\.example", fullmatch=True), max_size=60, unique=True),
    st.integers(min_value=1, max_value=7),
)
def test_shards_partition_the_input(domains: list[str], count: int) -> None:
    taken = [[d for d in domains if Shard(k, count).takes(d)] for k in range(count)]
    flat = [d for part in taken for d in part]
    assert sorted(flat) == sorted(domains)  # union is everything, no domain twice


def test_undecodable_and_overlong_lines_are_invalid_and_echoed_briefly() -> None:
    undecodable = parse_input_line("\udcffbad.example")  # how Python passes a 0xff byte
    assert isinstance(undecodable, InvalidInput)
    assert "\\udcff" in undecodable.text
    overlong = parse_input_line("a" * 100_000)
    assert isinstance(overlong, InvalidInput)
    assert len(overlong.text) <= 201
    assert "longer than 253" in overlong.reason
