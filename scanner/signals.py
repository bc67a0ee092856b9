"""Ctrl-C and SIGTERM as cancellation: the one place that listens for them."""

from __future__ import annotations

import signal
from collections.abc import Callable

import trio

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def cancel_on_signals(
    scope: trio.CancelScope, on_signal: Callable[[], None] | None = None
) -> None:
    """Cancel `scope` at the first SIGINT or SIGTERM, after calling `on_signal`.

    Run it in a nursery beside the work, inside `scope`; it returns after the
    first signal, and is cancelled with the rest when the work ends first.
    """
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for _ in signals:
            if on_signal is not None:
                on_signal()
            scope.cancel()
            return
