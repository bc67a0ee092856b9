"""Commands run in-process, against a lab served from a thread of its own.

`python -m scanner` costs a second of imports before it does anything; most command
tests need none of what only a process gives (signals from outside, the exit of a
process, several at once), so they run the command here (`invoke`) with the lab it
scans in another thread (`lab_in_thread`). The command's `trio.run` then has the main
thread, signal handling included, as it has in `python -m scanner`.
"""

from __future__ import annotations

import gc
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio
from typer.testing import CliRunner, Result

from scanner.lab import Lab, World, open_lab


@contextmanager
def lab_in_thread(world: World, workdir: Path) -> Iterator[Lab]:
    """`world` served on loopback by a lab in a thread of its own, until the block ends."""
    started: list[tuple[Lab, trio.lowlevel.TrioToken, trio.Event]] = []
    ready = threading.Event()
    failure: list[BaseException] = []

    async def serve() -> None:
        stop = trio.Event()
        async with open_lab(world, workdir=workdir) as lab:
            started.append((lab, trio.lowlevel.current_trio_token(), stop))
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:  # raised again in the test's thread
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="lab", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        raise failure[0]
    lab, token, stop = started[0]
    try:
        yield lab
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join()
        if failure:
            raise failure[0]


def invoke(*args: str, stdin: bytes | None = None) -> Result:
    """`scanner ARGS` in this process, as `python -m scanner ARGS` runs it.

    Output in `.stdout` and `.stderr`, the exit status in `.exit_code`; an exception
    the command did not handle is raised here (the process would print a traceback).
    Rich gets a wide terminal, so that it never wraps a message inside its error box.
    What `scan` tunes of the garbage collector for a long run is undone afterwards.
    """
    from scanner.cli import app

    threshold = gc.get_threshold()
    try:
        result = CliRunner().invoke(app, list(args), input=stdin, env={"COLUMNS": "500"})
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    """`invoke`, answered as `subprocess.run` answers `python -m scanner ARGS`: the exit
    status in `.returncode`, the output in `.stdout` and `.stderr`."""
    result = invoke(*args)
    return subprocess.CompletedProcess(
        ["scanner", *args], result.exit_code, result.stdout, result.stderr
    )
