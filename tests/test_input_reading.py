"""Reading input files: chunked, decoded leniently, every line bounded."""

from __future__ import annotations

import io

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.files import MAX_INPUT_LINE, bounded_lines


class ChunkedReader:
    """A binary file that hands out its bytes in the given chunk sizes (as pipes do)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = io.BytesIO(data)
        self._sizes = sizes or [1 << 16]
        self._turn = 0

    async def read1(self, size: int) -> bytes:
        step = self._sizes[self._turn % len(self._sizes)]
        self._turn += 1
        await trio.lowlevel.checkpoint()
        return self._data.read1(min(size, step))


async def collect(data: bytes, sizes: list[int] | None = None) -> list[str]:
    return [line async for line in bounded_lines(ChunkedReader(data, sizes or []))]


async def test_lines_bom_crlf_and_a_missing_final_newline() -> None:
    assert await collect(b"\xef\xbb\xbfa.example\r\nb.example\nc.example") == [
        "a.example\r",
        "b.example",
        "c.example",
    ]


async def test_undecodable_bytes_are_replaced_not_fatal() -> None:
    assert await collect(b"\xffbad.example\nok.example\n") == ["\ufffdbad.example", "ok.example"]


async def test_an_overlong_line_is_cut_and_its_rest_skipped() -> None:
    lines = await collect(b"a.example\n" + b"x" * (MAX_INPUT_LINE * 5) + b"\nb.example\n", [700])
    assert lines[0] == "a.example"
    assert lines[1] == "x" * MAX_INPUT_LINE
    assert lines[2:] == ["b.example"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.from_regex(r"[a-z0-9.]{0,40}", fullmatch=True), max_size=30),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=5),
)
def test_any_chunking_gives_the_same_lines(lines: list[str], sizes: list[int]) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    assert trio.run(collect, data, sizes) == lines
