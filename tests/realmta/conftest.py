"""Fixtures of the realmta tests: real Postfix instances on loopback (`postfix_instance`).

Every test here carries the `realmta` marker; all of them skip, with the reason, when
Postfix cannot run (not root, no Postfix and no way to install it, no mount
namespaces).
"""

from __future__ import annotations

import pytest
from postfix_instance import ensure_postfix


@pytest.fixture(scope="session")
def postfix_ready() -> None:
    """Skip unless Postfix can run private instances (installing it if it is missing)."""
    why_not = ensure_postfix()
    if why_not is not None:
        pytest.skip(why_not)
