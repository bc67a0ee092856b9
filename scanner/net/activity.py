"""What a scan is doing now, said to a person waiting on `scanner check`.

The shell calls `doing(words)` as a scan moves on (the DNS lookups, the policy fetch,
each probe, a busy server's pause before it is tried again). Nobody listens unless a
command sets `LISTENER`, as `check` does on a terminal: the words then replace one
status line on stderr. A bulk scan sets nothing, so each call costs one context
variable read.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

LISTENER: ContextVar[Callable[[str], None] | None] = ContextVar("activity_listener", default=None)


def doing(words: str) -> None:
    """Tell the listener, if any, what the scan does now (our words and names from DNS)."""
    listener = LISTENER.get()
    if listener is not None:
        listener(words)
