"""Shared fixtures: the demo world, a running lab serving it, and virtual time for lab tests."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from commands import LOOPBACK_IDLE, lab_in_command
from hypothesis import HealthCheck, settings
from trio.testing import MockClock

from scanner.lab import Lab, World, demo_world_path, lab_in_thread, load_world, open_lab
from scanner.workers import usable_cpus

# What a command prints does not depend on the terminal the tests were started from
# (pytest-xdist's workers are given COLUMNS=80): a test that wants a width sets it.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

# Compiled modules are cached (`__pycache__`, ignored by git) even where the environment
# sets PYTHONDONTWRITEBYTECODE: otherwise every test process, and every `python -m
# scanner` a test starts, compiles the package and rewrites the test modules' asserts
# again (about 7 s of CPU per process for the suite's modules alone).
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# Tests of Ctrl-C send SIGINT to the processes they start. A test run started in the
# background of a non-interactive shell (`pytest &`) inherits SIGINT ignored, and a
# process inherits an ignored signal: its Ctrl-C would be ignored too. Python's own
# handler is given back, which a started program inherits as the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Property tests judge results, never speed: an example, or its generation, slowed by a
# busy machine is not a failure (Hypothesis's default 200 ms deadline and its too_slow
# health check would call it one, at random).
settings.register_profile("scanner", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("scanner")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (the default, pyproject.toml): two test processes per usable CPU.

    A test process waits about a third of its time: for the processes its tests start,
    for the disk, and for virtual time's idle cushion (`LOOPBACK_IDLE`); a second one
    per CPU computes meanwhile.
    """
    return 2 * usable_cpus()


@pytest.fixture(scope="session")
def demo_world() -> World:
    """The bundled demo world, loaded once per test session."""
    return load_world(demo_world_path())


@pytest.fixture
async def demo_lab(demo_world: World, tmp_path: Path) -> AsyncIterator[Lab]:
    """The demo world served on loopback for one test; the CA file lives in tmp_path."""
    async with open_lab(demo_world, workdir=tmp_path / "lab") as lab:
        yield lab


@pytest.fixture
def demo_lab_command(demo_world: World, tmp_path: Path) -> Iterator[Lab]:
    """The demo world served inside each `trio.run` of a command run in-process
    (`commands.invoke`), on virtual time (`commands.lab_in_command`): no deadline of the
    command expires because the machine is busy. Not for commands that start worker
    processes (`scan --input` without `--workers 1`): those need `demo_lab_thread`."""
    with lab_in_command(demo_world, tmp_path / "lab") as lab:
        yield lab


@pytest.fixture
def demo_lab_thread(demo_world: World, tmp_path: Path) -> Iterator[Lab]:
    """The demo world served from a thread of its own, on real time, for commands run
    in-process that start worker processes; the CA file lives in tmp_path."""
    with lab_in_thread(demo_world, tmp_path / "lab") as lab:
        yield lab


@pytest.fixture
def loopback_clock() -> MockClock:
    """Virtual time for a test whose clients and servers talk over real loopback sockets.

    Take it as a test argument (pytest-trio runs the test on any `Clock` argument).
    Every trio deadline and sleep, the scanner's and the lab servers' alike, then
    runs on this clock: it stands still while anything runs, so CPU time on a
    loaded machine never expires a deadline, and it jumps to the next deadline
    once every task has waited for `LOOPBACK_IDLE` real seconds with no socket
    ready, so a test that waits out a 1 s deadline takes milliseconds.

    Unlike pytest-trio's `autojump_clock` (which jumps the moment all tasks
    block), the small real-time cushion lets bytes already written to a loopback
    socket reach the peer's receive queue before time moves on (trio's MockClock
    documentation asks for exactly that with real I/O). Not for tests with
    worker threads: a task waiting for a thread looks idle.
    """
    return MockClock(autojump_threshold=LOOPBACK_IDLE)


@pytest.fixture(scope="module")
def bulk_world() -> World:
    """`fixtures/world-bulk.toml`: shared providers, small hosters, slow and silent hosts."""
    return load_world(FIXTURES / "world-bulk.toml")


@pytest.fixture
async def bulk_lab(bulk_world: World, tmp_path: Path) -> AsyncIterator[Lab]:
    """The bulk world served on loopback for one test."""
    async with open_lab(bulk_world, workdir=tmp_path / "lab") as lab:
        yield lab


@pytest.fixture
def bulk_lab_command(bulk_world: World, tmp_path: Path) -> Iterator[Lab]:
    """The bulk world served inside each command run in-process, on virtual time (as
    `demo_lab_command`)."""
    with lab_in_command(bulk_world, tmp_path / "lab") as lab:
        yield lab
