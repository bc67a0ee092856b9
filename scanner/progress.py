"""Progress of a bulk scan on stderr: domains done, rate, not ready, errors."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from scanner.core.result import ResultView


class ProgressView:
    """A rich progress display, started and stopped as a context manager."""

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


class Progress(ProgressView):
    """A `scanner.scan.ProgressSink` that draws a rich progress line.

    The input is streamed, so the total is unknown: the bar counts up.
    """

    def __init__(self, console: Console) -> None:
        self._progress = RichProgress(
            TextColumn("[bold]scanning"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} domains/s"),
            TextColumn("not ready {task.fields[not_ready]}  errors {task.fields[errors]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("scan", total=None, rate=0.0, not_ready=0, errors=0)
        self._started = time.monotonic()
        self._done = 0
        self._not_ready = 0
        self._errors = 0

    def domain_done(self, result: ResultView) -> None:
        self._done += 1
        if result.error is not None:
            self._errors += 1
        elif not result.enforce_ready:
            self._not_ready += 1
        elapsed = max(time.monotonic() - self._started, 1e-6)
        self._progress.update(
            self._task,
            completed=self._done,
            rate=self._done / elapsed,
            not_ready=self._not_ready,
            errors=self._errors,
        )
