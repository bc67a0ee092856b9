"""Ranked input (`rank,domain` top lists) and `--shard auto` (Kubernetes, Slurm)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.core.inputs import (
    InputFormat,
    InvalidInput,
    RankedInput,
    Shard,
    parse_input_line,
    parse_list_line,
)
from scanner.files import InputReader

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


# ---------------------------------------------------------------- ranked lines


@pytest.mark.parametrize(
    ("line", "input_format", "expected"),
    [
        ("1,google.com", InputFormat.AUTO, RankedInput("google.com", 1)),
        ("1,google.com", InputFormat.CSV, RankedInput("google.com", 1)),
        ("42,Bücher.Example.\r", InputFormat.AUTO, RankedInput("xn--bcher-kva.example", 42)),
        ('"7","quoted.example"', InputFormat.CSV, RankedInput("quoted.example", 7)),
        ("3,extra.example,ignored", InputFormat.CSV, RankedInput("extra.example", 3)),
        ("example.org", InputFormat.AUTO, "example.org"),
        ("rank,domain", InputFormat.AUTO, None),
        ("Rank,Domain", InputFormat.CSV, None),
        ("# comment", InputFormat.CSV, None),
        ("", InputFormat.CSV, None),
    ],
    ids=[
        "tranco-auto",
        "tranco-csv",
        "idn-crlf",
        "quoted",
        "extra-column",
        "plain-auto",
        "header-auto",
        "header-csv",
        "comment",
        "blank",
    ],
)
def test_list_lines(line: str, input_format: InputFormat, expected: object) -> None:
    assert parse_list_line(line, input_format) == expected


@pytest.mark.parametrize(
    ("line", "input_format", "reason"),
    [
        ("1,google.com", InputFormat.LINES, "invalid characters"),  # lines: a comma is no domain
        ("example.org", InputFormat.CSV, "is not rank,domain"),
        ("0,zero.example", InputFormat.CSV, "ranks start at 1"),
        ("5,", InputFormat.CSV, "no domain after the rank"),
        ("5,bad..name", InputFormat.AUTO, ""),
    ],
    ids=[
        "lines-keeps-comma",
        "csv-needs-rank",
        "rank-zero",
        "rank-without-domain",
        "ranked-invalid",
    ],
)
def test_list_lines_that_are_no_domain(line: str, input_format: InputFormat, reason: str) -> None:
    parsed = parse_list_line(line, input_format)
    invalid = parsed.item if isinstance(parsed, RankedInput) else parsed
    assert isinstance(invalid, InvalidInput)
    assert reason in invalid.reason
    if line.startswith("5,"):
        assert isinstance(parsed, RankedInput)
        assert parsed.rank == 5  # the error line keeps its rank


@given(st.text(max_size=80))
def test_lines_format_is_exactly_the_plain_parser(line: str) -> None:
    assert parse_list_line(line, InputFormat.LINES) == parse_input_line(line)


@given(
    st.integers(min_value=1, max_value=999_999_999),
    st.from_regex(r"[a-z]{1,12}\.[a-z]{2,6}", fullmatch=True),
)
def test_every_ranked_line_keeps_its_rank(rank: int, domain: str) -> None:
    assert parse_list_line(f"{rank},{domain}", InputFormat.AUTO) == RankedInput(domain, rank)


def test_reader_dedupes_ranked_domains_and_filters_shards() -> None:
    reader = InputReader(shard=Shard(0, 1), input_format=InputFormat.CSV)
    items = [reader.accept(line) for line in ["1,a.example", "2,A.example.", "3,b.example"]]
    assert items == [RankedInput("a.example", 1), None, RankedInput("b.example", 3)]
    assert reader.duplicates == 1


# ---------------------------------------------------------------- --shard auto


KUBERNETES = {"JOB_COMPLETION_INDEX": "3"}


def slurm(task: int, first: int, last: int, step: int, count: int) -> dict[str, str]:
    return {
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(first),
        "SLURM_ARRAY_TASK_MAX": str(last),
        "SLURM_ARRAY_TASK_STEP": str(step),
        "SLURM_ARRAY_TASK_COUNT": str(count),
    }


@pytest.mark.parametrize(
    ("text", "environ", "shard"),
    [
        ("auto/8", KUBERNETES, Shard(3, 8)),
        (" auto/4 ", {"JOB_COMPLETION_INDEX": "0"}, Shard(0, 4)),
        ("auto", slurm(5, 0, 7, 1, 8), Shard(5, 8)),
        ("auto", slurm(1, 1, 8, 1, 8), Shard(0, 8)),  # --array=1-8
        ("auto/8", slurm(8, 1, 8, 1, 8), Shard(7, 8)),
        ("auto", slurm(4, 0, 6, 2, 4), Shard(2, 4)),  # --array=0-6:2
        ("2/5", {"JOB_COMPLETION_INDEX": "4"}, Shard(2, 5)),  # explicit K/N ignores the environment
    ],
    ids=[
        "k8s",
        "k8s-index-0",
        "slurm-from-0",
        "slurm-from-1",
        "slurm-count-agrees",
        "slurm-step",
        "explicit",
    ],
)
def test_auto_shards(text: str, environ: dict[str, str], shard: Shard) -> None:
    assert Shard.parse(text, environ) == shard


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("auto", {}, "neither JOB_COMPLETION_INDEX"),
        ("auto/4", {"PATH": "/bin"}, "neither JOB_COMPLETION_INDEX"),
        ("auto", KUBERNETES, "give --shard auto/N"),
        ("auto/3", KUBERNETES, "index 3 is not below the count 3"),
        ("auto/0", KUBERNETES, "auto/N with N >= 1"),
        ("auto/x", KUBERNETES, "auto/N with N >= 1"),
        ("auto/8", {"JOB_COMPLETION_INDEX": "one"}, "not a number"),
        ("auto", {**KUBERNETES, **slurm(0, 0, 7, 1, 8)}, "both"),
        ("auto", slurm(5, 1, 9, 1, 3), "sparse"),  # --array=1,5,9
        ("auto", slurm(3, 0, 6, 2, 4), "sparse"),  # an ID off the step
        ("auto/4", slurm(0, 0, 7, 1, 8), "SLURM_ARRAY_TASK_COUNT is 8, not 4"),
        ("auto", {"SLURM_ARRAY_TASK_ID": "3"}, "not a number"),  # an incomplete environment
    ],
    ids=[
        "nothing-set",
        "unrelated-env",
        "k8s-without-count",
        "k8s-index-too-big",
        "count-zero",
        "count-not-number",
        "k8s-index-not-number",
        "both-set",
        "slurm-list",
        "slurm-off-step",
        "slurm-count-disagrees",
        "slurm-incomplete",
    ],
)
def test_auto_shard_refusals(text: str, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Shard.parse(text, environ)


def test_auto_without_environment_is_refused_by_default() -> None:
    with pytest.raises(ValueError, match="neither"):
        Shard.parse("auto")


DOMAINS = [f"d{index}.example" for index in range(500)]


def covered_once(shards: list[Shard]) -> None:
    taken = [[d for d in DOMAINS if InputReader(shard=s).accept(d) is not None] for s in shards]
    flat = sorted(d for part in taken for d in part)
    assert flat == sorted(DOMAINS)  # every domain, none twice
    assert all(part for part in taken)


@pytest.mark.parametrize("count", [1, 2, 7, 8])
def test_kubernetes_auto_shards_cover_the_list_exactly_once(count: int) -> None:
    shards = [Shard.parse(f"auto/{count}", {"JOB_COMPLETION_INDEX": str(k)}) for k in range(count)]
    assert sorted(s.index for s in shards) == list(range(count))
    covered_once(shards)


def test_the_slurm_script_array_covers_the_list_exactly_once() -> None:
    """The array of deploy/slurm-array.sh, task by task as Slurm would set the environment."""
    text = (DEPLOY / "slurm-array.sh").read_text(encoding="utf-8")
    found = re.search(r"^#SBATCH --array=(\d+)-(\d+)(?::(\d+))?$", text, re.MULTILINE)
    assert found is not None
    first, last, step = int(found[1]), int(found[2]), int(found[3] or 1)
    tasks = list(range(first, last + 1, step))
    shards = [Shard.parse("auto", slurm(task, first, last, step, len(tasks))) for task in tasks]
    assert sorted(s.index for s in shards) == list(range(len(tasks)))
    covered_once(shards)
    assert "--shard auto" in text
