"""Commands run in-process, against a lab in their own event loop or in a thread.

`python -m scanner` costs a second of imports before it does anything; most command
tests need none of what only a process gives (signals from outside, the exit of a
process, several at once), so they run the command here (`invoke`), with the lab it
scans served inside the command's own `trio.run` on virtual time (`lab_in_command`) or
in another thread (`scanner.lab.lab_in_thread`). The command's `trio.run` then has the
main thread, signal handling included, as it has in `python -m scanner`.

Also here: what several command tests share (the results line validator, `process_of`
for the processes a test starts and waits for itself, `line_count` of a file another
process writes).
"""

from __future__ import annotations

import gc
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import trio
from trio.testing import MockClock
from typer.testing import CliRunner, Result

from scanner.lab import Lab, World, bind_lab, serve_bound
from scanner.options import NetworkOptions, network_options
from scanner.output import load_schema

# Real seconds every task must have been idle before virtual time moves on
# (`loopback_clock`, `lab_in_command`).
LOOPBACK_IDLE = 0.02


@cache
def line_validator() -> jsonschema.Draft202012Validator:
    """The results line schema's validator, built once: `jsonschema.validate` checks the
    schema itself on every call (about 0.1 s)."""
    return jsonschema.Draft202012Validator(load_schema())


@contextmanager
def lab_in_command(world: World, workdir: Path) -> Iterator[Lab]:
    """`world` served inside each `trio.run` of a command run in-process, on virtual time.

    The lab's sockets are bound first, so the command can be given its ports; each
    `trio.run` the command then makes serves the lab beside the command's own tasks in
    one event loop, on `MockClock(autojump_threshold=LOOPBACK_IDLE)` (`loopback_clock`):
    a silent server's timeout costs milliseconds, and as both sides share the loop,
    time moves on only when both wait, however loaded the machine. Unlike
    `lab_in_thread`, not for commands that wait for other processes or threads
    (`--workers` above 1): a task waiting for those looks idle.
    """
    bound = bind_lab(world, workdir)
    real_run = trio.run

    def run_beside_the_lab(async_fn: Any, *args: Any, **options: Any) -> Any:
        async def beside_the_lab() -> Any:
            async with serve_bound(bound):
                return await async_fn(*args)

        options.setdefault("clock", MockClock(autojump_threshold=LOOPBACK_IDLE))
        return real_run(beside_the_lab, **options)

    trio.run = run_beside_the_lab
    try:
        yield bound.lab
    finally:
        trio.run = real_run
        bound.close()


def lab_options(lab: Lab, **changes: Any) -> NetworkOptions:
    """The options `lab.scanner_args()` and the deadlines of these tests give `scan` on
    the command line, for scans run through `build_scanner`; `changes` override them."""
    return network_options(
        resolver=[f"{lab.resolver[0]}:{lab.resolver[1]}"],
        ca_file=[lab.ca_file],
        allow_private=True,
        smtp_port=lab.smtp_port,
        https_port=lab.https_port,
        **{"timeout": 1.0, "greeting_timeout": 1.0, **changes},
    )


async def items_of(names: list[str]) -> AsyncIterator[str]:
    """`names` as the async input stream `Scanner.run` reads."""
    for name in names:
        yield name


def invoke(
    *args: str, stdin: bytes | None = None, env: dict[str, str | None] | None = None
) -> Result:
    """`scanner ARGS` in this process, as `python -m scanner ARGS` runs it.

    Output in `.stdout` and `.stderr`, the exit status in `.exit_code`; an exception
    the command did not handle is raised here (the process would print a traceback).
    Rich gets a wide terminal, so that it never wraps a message inside its error box.
    `env` sets (or, with None, unsets) environment variables for the command alone.
    What `scan` tunes of the garbage collector for a long run is undone afterwards.
    """
    from scanner.cli import app

    threshold = gc.get_threshold()
    try:
        result = CliRunner().invoke(
            app, list(args), input=stdin, env={"COLUMNS": "500", **(env or {})}
        )
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def run_command(
    *args: str, env: dict[str, str | None] | None = None
) -> subprocess.CompletedProcess[str]:
    """`invoke`, answered as `subprocess.run` answers `python -m scanner ARGS`: the exit
    status in `.returncode`, the output in `.stdout` and `.stderr`."""
    result = invoke(*args, env=env)
    return subprocess.CompletedProcess(
        ["scanner", *args], result.exit_code, result.stdout, result.stderr
    )


@asynccontextmanager
async def process_of(command: Sequence[str], **options: Any) -> AsyncIterator[trio.Process]:
    """`trio.lowlevel.open_process(command, **options)` for a test that waits for the
    process itself: should the test fail first, the process is killed, not left running."""
    process = await trio.lowlevel.open_process(list(command), **options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            await process.wait()


def line_count(path: Path) -> int:
    """Lines another process has written to `path` so far (0 before it exists)."""
    return path.read_text(encoding="utf-8").count("\n") if path.exists() else 0
