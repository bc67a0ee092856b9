"""What a scan is doing now, said to a person waiting on `scanner check`.

The shell calls `doing(words)` as a scan moves on (the DNS lookups, the policy fetch,
each probe, a busy server's pause before it is tried again). Nobody listens unless a
command sets `LISTENER`, as `check` does on a terminal: the words then replace one
status line on stderr. A bulk scan sets nothing, so each call costs one context
variable read: the words are formatted only for a listener.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

LISTENER: ContextVar[Callable[[str], None] | None] = ContextVar("activity_listener", default=None)


def doing(template: str, *values: object) -> None:
    """Tell the listener, if any, what the scan does now: `template.format(*values)` (our
    words and names from DNS), formatted only when someone listens."""
    listener = LISTENER.get()
    if listener is not None:
        listener(template.format(*values))
