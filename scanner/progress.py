"""Progress of a bulk scan on stderr: done of total, percentage, rate, ETA, not ready, errors.

Two views of one `Tally`: `Progress` draws a rich progress line on a terminal;
`StatusLines` writes a plain line every `--status-interval` seconds when stderr is no
terminal (nohup, Slurm, `kubectl logs`), so a batch log shows a live run. The total is
an estimate from the input files' line count until the input has been read to its end,
then exact (`set_total`): the estimate is marked `~`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Self, TextIO

from scanner.core.result import ResultView

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress


@dataclass(slots=True)
class Tally:
    """What the views show: counts, the (estimated) total and the clock."""

    total: int | None = None
    exact: bool = False
    done: int = 0
    not_ready: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, result: ResultView) -> None:
        self.done += 1
        if result.error is not None:
            self.errors += 1
        elif not result.enforce_ready:
            self.not_ready += 1

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-6)

    def remaining_seconds(self) -> float | None:
        if self.total is None or not self.done:
            return None
        return max(self.total - self.done, 0) / max(self.rate, 1e-9)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def status_text(tally: Tally, dns_timeouts: int | None = None) -> str:
    """One plain line: `status: 1200/~4000 (30.0 %), 21.0 domains/s, ETA 0:02:13, ...`."""
    if tally.total is not None:
        shown = max(tally.total, tally.done)
        mark = "" if tally.exact else "~"
        share = f" ({100 * tally.done / shown:.1f} %)" if shown else ""
        done = f"{tally.done}/{mark}{shown}{share}"
    else:
        done = f"{tally.done}/?"
    remaining = tally.remaining_seconds()
    eta = f", ETA {_clock(remaining)}" if remaining is not None else ""
    dns = f", DNS timeouts {dns_timeouts}" if dns_timeouts is not None else ""
    return (
        f"status: {done} domains, {tally.rate:.1f} domains/s{eta}, elapsed "
        f"{_clock(time.monotonic() - tally.started)}, not ready {tally.not_ready}, "
        f"errors {tally.errors}{dns}"
    )


class ProgressView:
    """A progress display, started and stopped as a context manager."""

    tally: Tally

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def domain_done(self, result: ResultView) -> None:
        self.tally.add(result)

    def set_total(self, total: int, *, exact: bool) -> None:
        self.tally.total = total
        self.tally.exact = exact

    def tick(self) -> None:
        """Called about once a second by the run, whether or not a domain finished."""


class LiveDisplay:
    """A rich progress display (`_progress`), shown while entered as a context manager."""

    _progress: RichProgress

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()


class Progress(LiveDisplay, ProgressView):
    """A `scanner.scan.ProgressSink` that draws a rich progress line on a terminal."""

    def __init__(self, console: Console, total: int | None = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self.tally = Tally(total=total)
        self._progress = RichProgress(
            TextColumn("[bold]scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]:.1f} domains/s"),
            TextColumn("not ready {task.fields[not_ready]}  errors {task.fields[errors]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("scan", total=total, rate=0.0, not_ready=0, errors=0)

    def domain_done(self, result: ResultView) -> None:
        super().domain_done(result)
        tally = self.tally
        self._progress.update(
            self._task,
            completed=tally.done,
            total=max(tally.total, tally.done) if tally.total is not None else None,
            rate=tally.rate,
            not_ready=tally.not_ready,
            errors=tally.errors,
        )

    def set_total(self, total: int, *, exact: bool) -> None:
        super().set_total(total, exact=exact)
        self._progress.update(self._task, total=max(total, self.tally.done))


class StatusLines(ProgressView):
    """A `scanner.scan.ProgressSink` for a batch log: a plain status line every `interval` s.

    Writes one line at the start, one every `interval` seconds while the run lasts, and
    one at the end; `dns_timeouts` (when given) adds the DNS tries that timed out.
    """

    def __init__(
        self,
        stream: TextIO,
        interval: float,
        total: int | None = None,
        dns_timeouts: Callable[[], int] | None = None,
    ) -> None:
        self.tally = Tally(total=total)
        self._stream = stream
        self._interval = interval
        self._dns_timeouts = dns_timeouts
        self._last = 0.0

    def __enter__(self) -> Self:
        self._write()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._write()

    def tick(self) -> None:
        if time.monotonic() - self._last >= self._interval:
            self._write()

    def _write(self) -> None:
        self._last = time.monotonic()
        timeouts = self._dns_timeouts() if self._dns_timeouts is not None else None
        self._stream.write(status_text(self.tally, timeouts) + "\n")
        self._stream.flush()
